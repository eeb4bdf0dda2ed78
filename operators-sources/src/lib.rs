//! # operators-sources
//!
//! Sources for the operators runtime. Each connector sits behind a cargo feature.
//!
//! ```no_run
//! use operators_core::builtins::DiscardSink;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sources::file::{DirectorySource, Location, WatchMode, text::TextFormat};
//!
//! # async fn run() -> operators_core::Result<()> {
//! let csv = DirectorySource::new(Location::parse("source.path", "/data/in")?, TextFormat::csv().with_header(true))
//!     .with_watch(WatchMode::ProcessOnce);
//! let pipeline = Pipeline::new();
//! pipeline.source("csv", csv).sink("discard", DiscardSink::default());
//! pipeline.run(JobConfig::new("read csv")).await?;
//! # Ok(()) }
//! ```
//!
//! | feature | default | source |
//! |---|---|---|
//! | `csv` | yes | [`file::text`]: CSV, TSV, TXT with any delimiter and charset |
//! | `parquet` | yes | [`file::parquet`]: Parquet files |
//! | `orc` | yes | [`file::orc`]: ORC files |
//! | `jdbc` | no | `jdbc::JdbcSource`: PostgreSQL, MySQL/MariaDB, SQLite queries |
//! | `kafka` | no | `kafka::KafkaSource`: JSON records from Kafka topics (librdkafka) |
//! | `mysql-cdc` | no | `cdc::mysql::MySqlCdcSource`: a MySQL/MariaDB table, then its changes from the binary log |
//! | `postgres-cdc` | no | `cdc::postgres::PostgresCdcSource`: a PostgreSQL table, then its changes from logical replication |
//! | `hive` | no | `hive::HiveSource`: Hive tables and queries through HiveServer2 |

#![warn(missing_docs)]

#[cfg(feature = "jdbc")]
pub mod cdc;
mod error;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "hive")]
pub mod hive;
#[cfg(feature = "jdbc")]
pub mod jdbc;
#[cfg(feature = "kafka")]
pub mod kafka;

pub use error::SourceError;

/// The result of this crate's own functions (settings, parsing); operators themselves
/// return [`operators_core::Result`], into which [`SourceError`] converts.
pub type Result<T, E = SourceError> = std::result::Result<T, E>;
