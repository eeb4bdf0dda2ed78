//! # operators-sinks
//!
//! Sinks for the operators runtime. Each connector sits behind a cargo feature.
//!
//! ```no_run
//! use operators_core::builtins::GeneratorSource;
//! use operators_core::checkpoint::CheckpointConfig;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sinks::file::{FileFormat, FileSink};
//!
//! # async fn run() -> operators_core::Result<()> {
//! let pipeline = Pipeline::new();
//! pipeline
//!     .source("numbers", GeneratorSource::bounded(1_000))
//!     .sink("files", FileSink::new("/tmp/out", FileFormat::JsonLines));
//! // Exactly once: parts become visible only when their checkpoint completes.
//! let config = JobConfig::new("to files").with_checkpointing(CheckpointConfig::new("/tmp/checkpoints"));
//! pipeline.run(config).await?;
//! # Ok(()) }
//! ```
//!
//! | feature | default | sink | delivery |
//! |---|---|---|---|
//! | `file` | yes | [`file::FileSink`]: JSON lines, CSV, Parquet part files | exactly once |
//! | `jdbc` | no | `jdbc::JdbcSink`: PostgreSQL, MySQL/MariaDB, SQLite, insert or upsert | at least once, or exactly once with checkpoints |
//! | `elasticsearch` | no | `elasticsearch::EsSink`: documents by id, incremental / finite / full sync | at least once, effectively once (same ids on replay) |
//! | `kafka` | no | `kafka::KafkaSink`: JSON messages to a topic | at least once, or exactly once (transactions) with checkpoints |
//! | — | always | [`stdout::StdoutSink`] | at least once |

#![warn(missing_docs)]

#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
mod error;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "jdbc")]
pub mod jdbc;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod stdout;

pub use error::SinkError;

/// The result of this crate's own functions (settings, parsing); operators themselves
/// return [`operators_core::Result`], into which [`SinkError`] converts.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;
