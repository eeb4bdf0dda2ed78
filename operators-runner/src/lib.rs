//! # operators-runner
//!
//! The `operator` runner — the original toolkit's command line over this library — and
//! its job server, `operator serve`, which takes jobs the way a Flink session cluster
//! did (REST, and Flink's own command-line client). The examples of pipelines written in
//! plain Rust are in the `operators-examples` package.
//!
//! ```text
//! cargo run --release -p operators-runner --bin operator -- \
//!     --source.type csv --source.path examples/data/csv --source.firstLine.schema true \
//!     --source.watch.type PROCESS_ONCE --sink.type file --sink.path /tmp/out
//! ```
//!
//! The runner's library part is public so that tests and embedding services can resolve
//! and plan jobs from the same parameters:
//!
//! ```
//! use operators_runner::runner::params::resolve;
//! let inv = resolve(
//!     ["--source.type", "csv", "--source.path", "/nonexistent"].map(String::from),
//!     Vec::new(),
//!     std::path::Path::new("."),
//! )
//! .unwrap();
//! let err = operators_runner::runner::plan::plan(&inv.params).unwrap_err();
//! assert_eq!(err.key(), Some("source.path"));
//! ```

#![warn(missing_docs)]

pub mod logging;
pub mod runner;
pub mod server;

/// Registers the file systems of this build with [`operators_core::fs`] (`hdfs://` with
/// the `hdfs` feature), so that checkpoint, savepoint and sink directories may name
/// them. Repeating it is harmless.
pub fn register_file_systems() -> operators_core::Result<()> {
    // An embedding service may have registered its own (another timeout, say): kept.
    #[cfg(feature = "hdfs")]
    if operators_core::fs::registered("hdfs").is_none() {
        operators_hdfs::register()?;
    }
    Ok(())
}
