//! Writes rows to a Kafka topic as JSON objects, at least once or exactly once.
//!
//! One message per row: the value is the row as a JSON object (the encoder the file
//! sinks use), the key is the configured key column (its text), a JSON object of the
//! key columns when there are several, or no key. The toolkit's client defaults apply
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

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_clients::kafka::{KafkaConfig, restart_may_help};
use operators_core::builtins::FaultInjector;
use operators_core::codec::json::JsonEncoder;
use operators_core::operator::{OperatorContext, RestoredState, Sink, SinkFactory, TaskInfo, blocking};
use operators_core::{CheckpointId, Error, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use serde::{Deserialize, Serialize};

use recovery::{RecoveryClient, RecoveryError};

/// Delivery guarantee of the Kafka sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Flush on every barrier; duplicates after a failure.
    #[default]
    AtLeastOnce,
    /// A Kafka transaction per checkpoint, committed when the checkpoint completes.
    /// Consumers must read with `isolation.level=read_committed`.
    ExactlyOnce,
}

/// Writes rows to a Kafka topic as JSON objects.
///
/// ```
/// use operators_sinks::kafka::{Delivery, KafkaSink};
/// use operators_clients::kafka::KafkaConfig;
/// let kafka = KafkaConfig::new("sink.kafka", "127.0.0.1:9092")?.with_property("linger.ms", "20")?;
/// let sink = KafkaSink::new(kafka, "orders")?
///     .with_key_columns(["order_id"])
///     .with_delivery(Delivery::ExactlyOnce);
/// assert_eq!(sink.config().property("compression.type"), Some("lz4"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct KafkaSink {
    config: KafkaConfig,
    topic: String,
    key_columns: Vec<String>,
    delivery: Delivery,
    transactional_prefix: Option<String>,
    transaction_timeout_ms: i32,
    faults: FaultInjector,
}

impl KafkaSink {
    /// A sink writing to `topic` with the client settings of `config`.
    ///
    /// `transactional.id`, if set, is the prefix of the exactly-once sink's transactional
    /// ids (default `operators-<job>-<operator>`); `transaction.timeout.ms` defaults to
    /// 900000 (15 minutes, the broker's default maximum), as Flink's does: recovery must
    /// happen within it.
    pub fn new(mut config: KafkaConfig, topic: &str) -> Result<Self> {
        let topic = topic.trim();
        if topic.is_empty() {
            return Err(Error::config(format!("{}.topic", config.prefix()), "is empty"));
        }
        config.set_default("request.timeout.ms", "180000");
        config.set_default("compression.type", "lz4");
        config.set_default("partitioner", "murmur2_random");
        let transactional_prefix = config.take_property("transactional.id").filter(|p| !p.trim().is_empty());
        let key = format!("{}.transaction.timeout.ms", config.prefix());
        let transaction_timeout_ms = match config.take_property("transaction.timeout.ms") {
            None => 900_000,
            Some(v) => v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| Error::config(&key, format!("`{v}` is not a positive number of milliseconds")))?,
        };
        Ok(Self {
            config,
            topic: topic.to_string(),
            key_columns: Vec::new(),
            delivery: Delivery::AtLeastOnce,
            transactional_prefix,
            transaction_timeout_ms,
            faults: FaultInjector::new(),
        })
    }

    /// Message keys from these columns (one: its text; several: a JSON object). A row
    /// whose key columns are all null gets no key.
    pub fn with_key_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key_columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// At least once (default) or exactly once.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// The prefix of the exactly-once sink's transactional ids. Two jobs writing at the
    /// same time must not share one.
    pub fn with_transactional_prefix(mut self, prefix: &str) -> Self {
        self.transactional_prefix = Some(prefix.to_string());
        self
    }

    /// Fails chosen calls, for recovery tests: points `kafka.write`, `kafka.pre_commit`
    /// (after the flush), `kafka.commit` (before the commit reaches Kafka: the crash
    /// between "checkpoint complete" and "transaction committed").
    #[doc(hidden)]
    pub fn with_faults(mut self, faults: FaultInjector) -> Self {
        self.faults = faults;
        self
    }

    /// The client settings, defaults included.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn prefix_for(&self, info: &TaskInfo) -> String {
        self.transactional_prefix.clone().unwrap_or_else(|| format!("operators-{}-{}", info.job_name, info.operator_id))
    }
}

impl SinkFactory for KafkaSink {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>> {
        let mode = match self.delivery {
            Delivery::AtLeastOnce => Mode::AtLeastOnce(None),
            Delivery::ExactlyOnce => {
                let client = RecoveryClient::new(&self.config, &format!("operators-recovery-{}", info.subtask))
                    .map_err(|e| Error::config(format!("{}.security.protocol", self.config.prefix()), e.to_string()))?;
                Mode::ExactlyOnce(Box::new(Transactions {
                    prefix: self.prefix_for(info),
                    subtask: info.subtask,
                    parallelism: info.parallelism,
                    timeout_ms: self.transaction_timeout_ms,
                    client,
                    next_seq: 0,
                    current: None,
                    spare: None,
                    live_seq: 0,
                    precommitted: BTreeMap::new(),
                    restored: None,
                }))
            }
        };
        Ok(Box::new(KafkaSinkTask {
            config: self.config.clone(),
            topic: self.topic.clone(),
            key_columns: self.key_columns.clone(),
            encoder: JsonEncoder::new(),
            values: Vec::new(),
            value_rows: Vec::new(),
            keys: Vec::new(),
            key_rows: Vec::new(),
            mode,
            faults: self.faults.clone(),
        }))
    }
}

/// Remembers the first delivery failure of a producer: where, and librdkafka's error.
#[derive(Default)]
struct DeliveryContext {
    failure: Mutex<Option<(String, KafkaError)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if failure.is_none() {
                *failure = Some((format!("delivery to {}/{}", msg.topic(), msg.partition()), e.clone()));
            }
        }
    }
}

type KafkaProducer = ThreadedProducer<DeliveryContext>;

fn take_failure(producer: &KafkaProducer) -> Option<(String, KafkaError)> {
    producer.context().failure.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// One transactional producer and the transaction it holds.
struct Txn {
    tid: String,
    seq: u64,
    producer: Arc<KafkaProducer>,
    /// A transaction has begun (something was written since the last barrier).
    open: bool,
}

/// The exactly-once sink's committable.
#[derive(Serialize, Deserialize)]
struct TxnCommittable {
    transactional_id: String,
}

/// The exactly-once sink's state: the first transactional id that may hold rows written
/// after the checkpoint.
#[derive(Serialize, Deserialize)]
struct TxnState {
    prefix: String,
    first_after: u64,
}

struct Transactions {
    prefix: String,
    subtask: usize,
    parallelism: usize,
    timeout_ms: i32,
    client: RecoveryClient,
    /// Next sequence number to give a producer.
    next_seq: u64,
    current: Option<Txn>,
    spare: Option<tokio::task::JoinHandle<Result<Txn>>>,
    /// Sequence number of `current` or `spare`: the first that may hold rows written
    /// after the latest barrier.
    live_seq: u64,
    precommitted: BTreeMap<String, Txn>,
    /// `(old subtask, first_after)` of the restored snapshots this subtask recovers.
    restored: Option<Vec<(usize, TxnState)>>,
}

enum Mode {
    AtLeastOnce(Option<Arc<KafkaProducer>>),
    ExactlyOnce(Box<Transactions>),
}

struct KafkaSinkTask {
    config: KafkaConfig,
    topic: String,
    key_columns: Vec<String>,
    encoder: JsonEncoder,
    values: Vec<u8>,
    value_rows: Vec<Range<usize>>,
    keys: Vec<u8>,
    key_rows: Vec<Option<Range<usize>>>,
    mode: Mode,
    faults: FaultInjector,
}

/// A librdkafka error of the sink, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
struct KafkaSinkError {
    context: String,
    #[source]
    source: KafkaError,
}

/// Whether a restart may help is decided from librdkafka's error code
/// ([`restart_may_help`]): a record larger than the broker takes or a topic that does
/// not exist fails the job at once instead of through every restart attempt.
fn kafka_error(context: impl Into<String>, e: KafkaError) -> Error {
    Error::external("Kafka sink", restart_may_help(&e), KafkaSinkError { context: context.into(), source: e })
}

fn recovery_error(e: RecoveryError) -> Error {
    let retryable = !matches!(e, RecoveryError::Unsupported(_));
    Error::external("Kafka sink recovery", retryable, e)
}

fn create_producer(config: &KafkaConfig, transactional: Option<(&str, i32)>) -> Result<KafkaProducer> {
    let mut client = config.client_config();
    match transactional {
        Some((tid, timeout_ms)) => {
            client.set("transactional.id", tid).set("transaction.timeout.ms", timeout_ms.to_string());
        }
        None => {
            if config.property("enable.idempotence").is_none() {
                client.set("enable.idempotence", "true");
            }
        }
    }
    let producer: KafkaProducer =
        client.create_with_context(DeliveryContext::default()).map_err(|e| Error::from(config.creation_error(e)))?;
    if let Some((tid, timeout_ms)) = transactional {
        let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(60_000).min(120_000));
        producer
            .init_transactions(timeout)
            .map_err(|e| kafka_error(format!("initialising transactional id `{tid}`"), e))?;
    }
    Ok(producer)
}

fn drop_in_background(producer: Arc<KafkaProducer>) {
    // Destroying a librdkafka instance waits for its threads; keep that off the workers.
    tokio::task::spawn_blocking(move || drop(producer));
}

impl KafkaSinkTask {
    /// Encodes `batch` into `values`/`keys`.
    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        self.values.clear();
        self.value_rows.clear();
        self.encoder.encode_rows(batch, &mut self.values, &mut self.value_rows)?;
        self.keys.clear();
        self.key_rows.clear();
        if self.key_columns.is_empty() {
            return Ok(());
        }
        let schema = batch.schema();
        let mut indices = Vec::with_capacity(self.key_columns.len());
        for name in &self.key_columns {
            let idx = schema.index_of(name).map_err(|_| {
                Error::config(
                    format!("{}.key.columns", self.config.prefix()),
                    format!("no column `{name}` in the rows written (columns: {})", column_names(batch)),
                )
            })?;
            indices.push(idx);
        }
        if let [idx] = indices[..] {
            let column = batch.column(idx);
            let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| Error::arrow("Kafka sink key", e))?;
            let text = text.as_string::<i32>();
            for i in 0..text.len() {
                if text.is_null(i) {
                    self.key_rows.push(None);
                } else {
                    let start = self.keys.len();
                    self.keys.extend_from_slice(text.value(i).as_bytes());
                    self.key_rows.push(Some(start..self.keys.len()));
                }
            }
        } else {
            let projected = batch.project(&indices).map_err(|e| Error::arrow("Kafka sink key", e))?;
            let mut rows = Vec::with_capacity(batch.num_rows());
            self.encoder.encode_rows(&projected, &mut self.keys, &mut rows)?;
            for (i, r) in rows.into_iter().enumerate() {
                let all_null = indices.iter().all(|&c| batch.column(c).is_null(i));
                self.key_rows.push((!all_null).then_some(r));
            }
        }
        Ok(())
    }

    /// Sends the encoded rows, waiting while librdkafka's queue is full.
    async fn send_encoded(&self, producer: &KafkaProducer) -> Result<()> {
        for (i, range) in self.value_rows.iter().enumerate() {
            let payload = &self.values[range.clone()];
            let key = self.key_rows.get(i).cloned().flatten().map(|r| &self.keys[r]);
            let mut record = BaseRecord::to(&self.topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            let mut wait = Duration::from_micros(200);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // Backpressure: the broker is slower than the job.
                        record = r;
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(20));
                    }
                    Err((e, _)) => return Err(kafka_error(format!("sending to `{}`", self.topic), e)),
                }
            }
        }
        if let Some((context, e)) = take_failure(producer) {
            return Err(kafka_error(context, e));
        }
        Ok(())
    }
}

fn column_names(batch: &RecordBatch) -> String {
    batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

async fn flush(producer: Arc<KafkaProducer>) -> Result<()> {
    blocking("Kafka sink", move || {
        producer.flush(rdkafka::util::Timeout::Never).map_err(|e| kafka_error("flushing", e))?;
        match take_failure(&producer) {
            Some((context, e)) => Err(kafka_error(context, e)),
            None => Ok(()),
        }
    })
    .await
}

impl Transactions {
    fn tid(&self, subtask: usize, seq: u64) -> String {
        format!("{}-{}-{}", self.prefix, subtask, seq)
    }

    /// Starts creating the producer for the next transaction.
    fn prepare_spare(&mut self, config: &KafkaConfig) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live_seq = seq;
        let tid = self.tid(self.subtask, seq);
        let config = config.clone();
        let timeout_ms = self.timeout_ms;
        self.spare = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let producer = create_producer(&config, Some((&tid, timeout_ms)))?;
            tracing::debug!(transactional_id = %tid, ms = started.elapsed().as_millis() as u64, "transactional producer ready");
            Ok(Txn { tid, seq, producer: Arc::new(producer), open: false })
        }));
    }

    /// The producer for new rows, with its transaction begun.
    async fn writer(&mut self, config: &KafkaConfig) -> Result<Arc<KafkaProducer>> {
        if self.current.is_none() {
            if self.spare.is_none() {
                self.prepare_spare(config);
            }
            if let Some(spare) = self.spare.take() {
                let waited = std::time::Instant::now();
                let txn = spare
                    .await
                    .map_err(|e| Error::Internal(format!("Kafka sink: creating a producer panicked: {e}")))??;
                tracing::debug!(transactional_id = %txn.tid, waited_ms = waited.elapsed().as_millis() as u64, "writing into a new transaction");
                self.current = Some(txn);
                // The next checkpoint's producer starts now, so that it is ready when the
                // barrier comes: librdkafka's InitProducerId takes 50 ms, and 500 ms when
                // its first broker connection loses a race with the request timer.
                self.prepare_spare(config);
            }
        }
        let Some(txn) = self.current.as_mut() else {
            return Err(Error::Internal("Kafka sink: no producer".into()));
        };
        if !txn.open {
            txn.producer
                .begin_transaction()
                .map_err(|e| kafka_error(format!("beginning a transaction of `{}`", txn.tid), e))?;
            txn.open = true;
        }
        Ok(txn.producer.clone())
    }

    /// Finishes the transaction of `tid` from a previous run (see the module docs).
    async fn recover_one(&self, tid: &str) -> Result<()> {
        match self.client.describe(tid).await.map_err(recovery_error)? {
            None => {
                tracing::warn!(
                    transactional_id = tid,
                    "the broker no longer knows this pre-committed transaction; it was committed and its \
                     transactional id expired"
                );
                Ok(())
            }
            Some(d) => match d.state.as_str() {
                "Ongoing" => {
                    tracing::info!(transactional_id = tid, "committing a transaction pre-committed by a previous run");
                    match self.client.commit(tid, d.producer_id, d.epoch).await {
                        Ok(()) => Ok(()),
                        // The failed attempt's own commit may have reached the coordinator
                        // first: then the transaction is committed, which is all we want.
                        Err(e) => match self.client.describe(tid).await.map_err(recovery_error)? {
                            Some(now) if matches!(now.state.as_str(), "PrepareCommit" | "CompleteCommit") => Ok(()),
                            _ => Err(recovery_error(e)),
                        },
                    }
                }
                "PrepareCommit" | "CompleteCommit" => Ok(()),
                "Empty" => {
                    tracing::warn!(
                        transactional_id = tid,
                        "pre-committed transaction found with no transaction; assuming it committed"
                    );
                    Ok(())
                }
                other => Err(Error::external(
                    "Kafka sink recovery",
                    false,
                    format!(
                        "the transaction `{tid}` of a completed checkpoint is in state {other}: Kafka aborted it \
                         and its rows are lost. Transactions are aborted when older than transaction.timeout.ms \
                         ({} ms here); raise it (up to the broker's transaction.max.timeout.ms) so that \
                         recovery happens in time",
                        self.timeout_ms
                    ),
                )),
            },
        }
    }

    async fn exists(&self, subtask: usize, seq: u64) -> Result<bool> {
        Ok(self.client.describe(&self.tid(subtask, seq)).await.map_err(recovery_error)?.is_some())
    }

    /// Aborts the transactions of `subtask` from `from` on (written after the restored
    /// checkpoint) and returns the first sequence number never used.
    async fn abort_after(&self, subtask: usize, from: u64) -> Result<u64> {
        // Ids are created in order: find the first unused one by galloping then bisecting.
        if !self.exists(subtask, from).await? {
            return Ok(from);
        }
        let mut known = from; // exists
        let mut step = 1u64;
        let missing = loop {
            let probe = known.saturating_add(step);
            if self.exists(subtask, probe).await? {
                known = probe;
                step = step.saturating_mul(2);
            } else {
                break probe;
            }
        };
        let (mut lo, mut hi) = (known, missing);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.exists(subtask, mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        // Newest first; everything before a committed one was finished by its run.
        for seq in (from..hi).rev() {
            let tid = self.tid(subtask, seq);
            let state = self.client.describe(&tid).await.map_err(recovery_error)?.map(|d| d.state);
            match state.as_deref() {
                Some("CompleteCommit" | "PrepareCommit") => break,
                Some("CompleteAbort" | "PrepareAbort") | None => {}
                Some(_) => {
                    tracing::info!(transactional_id = %tid, "aborting a transaction written after the restored checkpoint");
                    self.client.fence(&tid, self.timeout_ms).await.map_err(recovery_error)?;
                }
            }
        }
        Ok(hi)
    }
}

#[async_trait]
impl Sink for KafkaSinkTask {
    async fn restore(&mut self, state: RestoredState) -> Result<()> {
        if let Mode::ExactlyOnce(t) = &mut self.mode {
            let mut mine = Vec::new();
            for (old, bytes) in &state.snapshots {
                if old % t.parallelism != t.subtask {
                    continue;
                }
                let s: TxnState = postcard::from_bytes(bytes).map_err(|e| {
                    Error::Internal(format!("Kafka sink: unreadable state of subtask {old} in the checkpoint: {e}"))
                })?;
                mine.push((*old, s));
            }
            t.restored = Some(mine);
        }
        Ok(())
    }

    async fn recover(
        &mut self,
        committables: Vec<operators_core::operator::Committable>,
        _: &mut OperatorContext,
    ) -> Result<()> {
        if let Mode::ExactlyOnce(t) = &self.mode {
            for c in committables {
                let data: TxnCommittable = postcard::from_bytes(&c.data).map_err(|e| {
                    Error::Internal(format!(
                        "Kafka sink: unreadable committable of checkpoint {}: {e}",
                        c.checkpoint_id
                    ))
                })?;
                t.recover_one(&data.transactional_id).await?;
            }
        }
        Ok(())
    }

    async fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        match &mut self.mode {
            Mode::AtLeastOnce(producer) => {
                let config = self.config.clone();
                *producer = Some(Arc::new(blocking("Kafka sink", move || create_producer(&config, None)).await?));
            }
            Mode::ExactlyOnce(t) => {
                let restored = t.restored.take().unwrap_or_default();
                let mut own_start = None;
                for (old, s) in &restored {
                    if s.prefix != t.prefix {
                        tracing::warn!(
                            old = %s.prefix, new = %t.prefix,
                            "the transactional id prefix changed since the checkpoint; transactions of the old prefix \
                             written after it are aborted by Kafka after transaction.timeout.ms"
                        );
                        continue;
                    }
                    let end = t.abort_after(*old, s.first_after).await?;
                    if *old == t.subtask {
                        own_start = Some(end);
                    }
                }
                let first_unused = match own_start {
                    Some(s) => s,
                    None => t.abort_after(t.subtask, 0).await?,
                };
                // Step 3 of the module docs: the first unused id is claimed, not used.
                let claimed = t.tid(t.subtask, first_unused);
                t.client.fence(&claimed, t.timeout_ms).await.map_err(recovery_error)?;
                let start = first_unused + 1;
                t.next_seq = start;
                t.live_seq = start;
                t.prepare_spare(&self.config);
            }
        }
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.faults.check("kafka.write")?;
        self.encode(&batch)?;
        let producer = match &mut self.mode {
            Mode::AtLeastOnce(p) => match p {
                Some(p) => p.clone(),
                None => return Err(Error::Internal("Kafka sink: write before open".into())),
            },
            Mode::ExactlyOnce(t) => t.writer(&self.config).await?,
        };
        self.send_encoded(&producer).await
    }

    async fn pre_commit(
        &mut self,
        _checkpoint_id: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<Vec<u8>>> {
        match &mut self.mode {
            Mode::AtLeastOnce(p) => {
                if let Some(p) = p {
                    flush(p.clone()).await?;
                }
                Ok(None)
            }
            Mode::ExactlyOnce(t) => {
                let Some(txn) = t.current.take_if(|c| c.open) else { return Ok(None) };
                let started = std::time::Instant::now();
                flush(txn.producer.clone()).await?;
                tracing::debug!(transactional_id = %txn.tid, ms = started.elapsed().as_millis() as u64, "pre-committed (flushed)");
                self.faults.check("kafka.pre_commit")?;
                let committable = postcard::to_stdvec(&TxnCommittable { transactional_id: txn.tid.clone() })
                    .map_err(|e| Error::Internal(format!("Kafka sink: encoding a committable: {e}")))?;
                t.precommitted.insert(txn.tid.clone(), txn);
                if t.spare.is_none() {
                    t.prepare_spare(&self.config);
                }
                Ok(Some(committable))
            }
        }
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        match &self.mode {
            Mode::AtLeastOnce(_) => Ok(None),
            Mode::ExactlyOnce(t) => {
                let first_after = t.current.as_ref().map_or(t.live_seq, |c| c.seq);
                let state = TxnState { prefix: t.prefix.clone(), first_after };
                postcard::to_stdvec(&state)
                    .map(Some)
                    .map_err(|e| Error::Internal(format!("Kafka sink: encoding state: {e}")))
            }
        }
    }

    async fn commit(&mut self, checkpoint_id: CheckpointId, committable: Vec<u8>) -> Result<()> {
        let Mode::ExactlyOnce(t) = &mut self.mode else { return Ok(()) };
        self.faults.check("kafka.commit")?;
        let data: TxnCommittable = postcard::from_bytes(&committable).map_err(|e| {
            Error::Internal(format!("Kafka sink: unreadable committable of checkpoint {checkpoint_id}: {e}"))
        })?;
        let tid = data.transactional_id;
        match t.precommitted.remove(&tid) {
            Some(txn) => {
                let producer = txn.producer.clone();
                let timeout = Duration::from_millis(u64::try_from(t.timeout_ms).unwrap_or(60_000));
                let label = tid.clone();
                let started = std::time::Instant::now();
                blocking("Kafka sink", move || {
                    producer
                        .commit_transaction(timeout)
                        .map_err(|e| kafka_error(format!("committing transaction `{label}`"), e))
                })
                .await?;
                tracing::debug!(transactional_id = %tid, ms = started.elapsed().as_millis() as u64, "committed");
                drop_in_background(txn.producer);
                Ok(())
            }
            None => t.recover_one(&tid).await,
        }
    }

    async fn close(&mut self) -> Result<()> {
        match &mut self.mode {
            Mode::AtLeastOnce(p) => {
                if let Some(p) = p.take() {
                    drop_in_background(p);
                }
            }
            Mode::ExactlyOnce(t) => {
                // Only the open transaction is aborted: pre-committed ones may belong to a
                // checkpoint that completes, and the restored job commits them.
                if let Some(txn) = t.current.take() {
                    if txn.open {
                        let producer = txn.producer.clone();
                        let _ = blocking("Kafka sink", move || {
                            producer.abort_transaction(Duration::from_secs(10)).map_err(|e| kafka_error("aborting", e))
                        })
                        .await;
                    }
                    drop_in_background(txn.producer);
                }
                if let Some(spare) = t.spare.take() {
                    // The spare's InitProducerId may still be on its way. Left behind, it
                    // would land after the restarted task created the same transactional
                    // id and abort that task's transaction, a completed checkpoint's
                    // among them. So it is waited for (bounded: a broker that does not
                    // answer fails the restarted task's own requests too).
                    match tokio::time::timeout(Duration::from_secs(30), spare).await {
                        Ok(Ok(Ok(txn))) => drop_in_background(txn.producer),
                        Ok(_) => {}
                        Err(_) => tracing::warn!(
                            "Kafka sink: the next transaction's producer did not finish initialising in 30 s; \
                             closing without it"
                        ),
                    }
                }
                for (_, txn) in std::mem::take(&mut t.precommitted) {
                    drop_in_background(txn.producer);
                }
            }
        }
        Ok(())
    }
}
