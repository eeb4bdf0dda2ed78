//! Writes rows as Elasticsearch documents with `_bulk` requests: the toolkit's three
//! sync modes, retries with backoff, dead letters for rejected documents.
//!
//! ```no_run
//! use operators_core::builtins::GeneratorSource;
//! use operators_core::checkpoint::CheckpointConfig;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sinks::elasticsearch::{EsConfig, EsSink, SyncMode};
//!
//! # async fn run() -> operators_core::Result<()> {
//! let es = EsConfig::parse("sink.es.server", "127.0.0.1:9200,127.0.0.1:9201")?
//!     .with_basic_auth("elastic", "secret");
//! let sink = EsSink::new(es, "people", "id", SyncMode::Full).with_version("1586959594");
//! let pipeline = Pipeline::new();
//! pipeline.source("numbers", GeneratorSource::bounded(1_000)).sink("es", sink);
//! let config = JobConfig::new("to es").with_checkpointing(CheckpointConfig::new("/tmp/checkpoints"));
//! pipeline.run(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Delivery
//!
//! Every row becomes one bulk action whose `_id` is the row's `unique.column`. Buffered
//! actions are sent when `max_actions` or `max_bytes` is reached, every `interval`, and
//! at every checkpoint barrier; a checkpoint completes only when every action of the
//! rows before its barrier is acknowledged. A restore replays the rows after the last
//! checkpoint, and they rewrite the same documents under the same ids: at-least-once
//! delivery with effectively-once results.
//!
//! A changelog (a CDC source's rows, with `_kind`: see [`operators_core::changelog`]) is
//! applied by id: `-U` and `-D` rows delete their document (a 404 counts as done: it is
//! gone), `+I` and `+U` rows index it as the sync mode says, without the change columns.
//! An update that changes the id thus moves the document.
//!
//! # Per item
//!
//! | answer | what happens | counted as |
//! |---|---|---|
//! | 2xx | done | `written` |
//! | 429, 5xx | resent after the backoff delay, up to `retries` times; then the task fails (and restarts) | `retried` |
//! | 409 on an update | resent up to `retry_on_conflict` times (the action also asks the server to retry), then dead-lettered | `retried` |
//! | 409 in full mode with `external_gte` | a newer version is in the index: left alone | `skipped_stale` |
//! | 404 in finite mode | no such document: skipped, as finite mode asks | `skipped_missing` |
//! | other 4xx | dead letter with the document id and the server's reason | `dead_lettered` |
//!
//! A row without id is also dead-lettered. `written + skipped_missing + skipped_stale +
//! dead_lettered + abandoned` equals the rows the sink received, where `abandoned` are
//! rows buffered by a subtask that failed (the restore replays them).
//!
//! A request that does not get an answer (connection refused or dropped, timeout) goes to
//! the next server of the list at once, and after a round over all of them waits the
//! backoff delay. HTTP 401/403 fails the job without retrying, naming the server but never
//! the credentials.
//!
//! # Going beyond the toolkit
//!
//! - The version column colliding with a data column is refused at start (the toolkit
//!   silently dropped every record).
//! - [`EsSink::with_external_versioning`] (full mode): documents are indexed with
//!   `version_type=external_gte` and the run's version, so an older export re-run can never
//!   overwrite a newer one.
//! - [`EsSink::with_cleanup`] (full mode): after the job's input ended and every subtask's
//!   writes are acknowledged (the final checkpoint completed, or the only subtask flushed),
//!   documents whose version column is below this run's version are deleted — a full sync
//!   that also removes what the source no longer has.

mod config;
mod request_builder;
mod retry;
mod service;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{Backoff, BackoffKind, EsConfig, SyncMode};
pub use sink::{EsSink, EsStats};
