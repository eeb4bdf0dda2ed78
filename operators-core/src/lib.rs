//! # operators-core
//!
//! An embeddable dataflow runtime with Flink's guarantees and no cluster: streams of
//! Arrow [`RecordBatch`](arrow::record_batch::RecordBatch)es flow from sources through
//! transforms to sinks over bounded channels, with barrier-aligned checkpoints, keyed
//! state that survives a crash, exactly-once or at-least-once delivery, restart
//! strategies and savepoints.
//!
//! ```
//! use std::time::Duration;
//! use operators_core::builtins::{CommittedOutput, GeneratorSource, TwoPhaseMemorySink};
//! use operators_core::checkpoint::CheckpointConfig;
//! use operators_core::{JobConfig, Pipeline};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> operators_core::Result<()> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let output = CommittedOutput::default();
//!
//! let pipeline = Pipeline::new();
//! pipeline
//!     .source("numbers", GeneratorSource::bounded(100_000))
//!     .parallelism(2)
//!     .sink("memory", TwoPhaseMemorySink::new(output.clone()));
//!
//! let config = JobConfig::new("quickstart").with_checkpointing(
//!     CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(50)),
//! );
//! pipeline.run(config).await?;
//! assert_eq!(output.num_rows(), 100_000);
//! # Ok(()) }
//! ```
//!
//! ## The pieces
//!
//! | module | what it holds |
//! |---|---|
//! | [`operator`] | the [`Source`], [`Transform`] and [`Sink`] traits: one required method each |
//! | [`path`] | the rule for directory settings: a local path or a `file://` URL, other schemes refused |
//! | [`graph`] | the job graph: operators, connections, ports, exchanges |
//! | [`pipeline`] | [`Pipeline`]: operators, parallelism, exchanges (forward, rebalance, key_by) |
//! | [`job`] | [`Job`]: status, metrics, checkpoint statistics, savepoints, cancel |
//! | [`checkpoint`] | checkpoint settings, barrier alignment, storage, statistics |
//! | [`state`] | keyed value/map state with TTL in a hash table, and the backends (memory; disk, which spills past a memory budget) |
//! | [`restart`] | restart strategies |
//! | `rest` | (feature `rest`) a Flink-shaped REST API to mount in an axum app |
//! | [`secret`] | credentials: the one rule for which settings hold one, [`secret::Secret`], URL password masking |
//! | [`schema`] | the toolkit's schema strings (`struct<id:BigInt>`, ordered JSON) and value rules |
//! | [`codec`] | JSON objects ⇄ Arrow batches, with bad records as dead letters |
//! | [`window`] | event time: watermarks, keyed tumbling/sliding/session/count windows, lateness, keyed timers |
//! | [`builtins`] | generator, map/filter, dedup, nest, in-memory exactly-once sink, fault injection |
//!
//! ## Delivery guarantees
//!
//! With [`CheckpointingMode::ExactlyOnce`](checkpoint::CheckpointingMode) and a
//! two-phase sink, every record affects the committed output exactly once, across any
//! number of failures: sources rewind to the checkpointed position, keyed state is
//! restored, and sinks commit a checkpoint's writes only after it is complete. In
//! at-least-once mode barriers are not aligned and records may be replayed.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `disk` | yes | the disk state backend: keyed state past its memory budget spills to an embedded LSM store, fjall (the toolkit's `rocksdb` option) |
//! | `rest` | no | a Flink-shaped REST API over a [`Job`], mountable in an axum app |

#![warn(missing_docs)]

pub mod builtins;
pub mod changelog;
mod channel;
pub mod checkpoint;
pub mod clock;
pub mod codec;
mod control;
pub mod error;
pub mod fs;
pub mod graph;
pub mod job;
pub mod key;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod path;
pub mod pipeline;
#[cfg(feature = "rest")]
pub mod rest;
pub mod restart;
pub mod schema;
pub mod secret;
pub mod state;
mod task;
pub mod window;

pub use error::{Error, ErrorKind, Result};
pub use job::{Job, JobConfig, JobException, JobOutcome, JobStatus, is_job_id, new_job_id};
pub use message::{Barrier, CheckpointId, Message};
pub use operator::{OperatorContext, Sink, Source, SourceContext, SourcePoll, TaskInfo, Transform};
pub use pipeline::{Pipeline, Stream};
pub use task::spawn;
