//! Writes rows to a Kafka topic as JSON objects, at least once or exactly once.
//!
//! One message per row: the value is the row as a JSON object (the encoder the file
//! sinks use), the key is the configured key column (its text), a JSON object of the
//! key columns when there are several, or no key. With [`Format::DebeziumJson`], the
//! rows of a CDC source go out as Debezium change events instead (`before`, `after`,
//! `source`, `op`), keyed by the table's primary key, an update as one event, a delete
//! followed by a tombstone ([`operators_core::codec::debezium`]). The toolkit's client defaults apply
//! (`request.timeout.ms=180000`, `compression.type=lz4`, and Java's partitioner
//! `murmur2_random`, so keyed rows land where the Java client would put them); every
//! property passes through to librdkafka and overrides them.
//!
//! # At least once
//!
//! One idempotent producer per subtask. Every barrier flushes it, and the checkpoint
//! completes only after every message sent before the barrier is acknowledged; a
//! delivery failure fails the checkpoint and the task, and the restored job sends again
//! what was not acknowledged.
//!
//! # Exactly once: a transaction per checkpoint, and recovery by producer id and epoch
//!
//! Rows go into a Kafka transaction. On a barrier the sink flushes the transaction but
//! leaves it open (pre-commit) and hands the runtime a committable naming its
//! transactional id; when the checkpoint is complete the transaction is committed.
//!
//! The hard case is a crash after the checkpoint completed but before the commit
//! reached Kafka: the restored job must commit a transaction whose producer died with
//! the process, and librdkafka can only finish transactions of the instance that opened
//! them (a new instance with the same transactional id *aborts* the open transaction).
//! Flink solves this by resuming the transaction under its producer id and epoch; here
//! the sink does the same with two requests librdkafka does not expose, spoken by
//! [`recovery`]: `DescribeTransactions` reads the open transaction's producer id and
//! epoch from its coordinator, and `EndTxn` commits it under them.
//!
//! That only works if nothing else touches the transactional id in between, so **every
//! transaction gets its own transactional id**, `<prefix>-<subtask>-<n>`, never reused:
//! a checkpoint's committable stays committable however late the recovery comes. A
//! producer with an empty transaction carries over to the next checkpoint, so only
//! checkpoints that wrote something consume an id. After the transaction of a
//! checkpoint begins, the producer for the next one is created in the background, so
//! that its `InitProducerId` round trip (50–500 ms) overlaps with processing instead of
//! stalling the stream at the barrier.
//!
//! Recovery after a restore, per subtask:
//! 1. the committables of the restored checkpoint are committed: an `Ongoing`
//!    transaction with `EndTxn`; `PrepareCommit`/`CompleteCommit` ones are done already;
//!    one that was aborted (Kafka aborts transactions older than
//!    `transaction.timeout.ms`, 15 min by default) fails the job with a clear error, as
//!    its rows are lost;
//! 2. transactions opened *after* the restored checkpoint hold rows the restored job
//!    will write again, so they are aborted: the checkpoint records `n0`, the first id
//!    that could hold such rows; ids from `n0` are known to exist up to some `n1`
//!    (ids are created in order), found with a galloping search of `DescribeTransactions`,
//!    and those still open are fenced with `InitProducerId` (which aborts them). A job
//!    started without a checkpoint does the same from `n0 = 0`, which aborts what an
//!    earlier run without checkpoints left open;
//! 3. `n1` itself is claimed with an `InitProducerId` and left empty, and the new run
//!    continues at `n1 + 1`. A failed attempt of the same process may still have the
//!    `InitProducerId` of its next producer on its way (librdkafka takes up to 500 ms);
//!    its id is at most `n1`, and landing on a transaction the new run writes into, it
//!    would abort it, a completed checkpoint's transaction among them. Claiming `n1`
//!    also keeps the ids gapless for the next search.
//!
//! Subtasks of a previous run with a higher parallelism are recovered by subtask
//! `old % parallelism`, like their committables. The recovery client speaks plaintext
//! and SASL/PLAIN; exactly-once delivery with other security settings is refused when
//! the job starts. Kafka 3.0 or newer is needed (`DescribeTransactions`).
//!
//! ```no_run
//! use operators_core::builtins::GeneratorSource;
//! use operators_core::checkpoint::CheckpointConfig;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sinks::kafka::{Delivery, KafkaSink};
//! use operators_clients::kafka::KafkaConfig;
//!
//! # async fn run() -> operators_core::Result<()> {
//! let kafka = KafkaConfig::new("sink.kafka", "127.0.0.1:9092")?;
//! let sink = KafkaSink::new(kafka, "numbers")?.with_delivery(Delivery::ExactlyOnce);
//! let pipeline = Pipeline::new();
//! pipeline.source("numbers", GeneratorSource::bounded(1_000)).sink("kafka", sink);
//! let config = JobConfig::new("to kafka").with_checkpointing(CheckpointConfig::new("/tmp/checkpoints"));
//! pipeline.run(config).await?;
//! # Ok(()) }
//! ```

pub mod recovery;
mod service;
mod sink;
#[cfg(test)]
mod tests;
mod transactions;

pub use sink::{Delivery, Format, KafkaSink};
