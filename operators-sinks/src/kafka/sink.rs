//! The sink: its builder, and the task that encodes rows and sends them, at least once or in transactions.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_clients::kafka::KafkaConfig;
use operators_core::builtins::FaultInjector;
use operators_core::changelog;
use operators_core::codec::debezium::{ChangeEvent, DebeziumEncoder};
use operators_core::codec::json::JsonEncoder;
use operators_core::operator::{OperatorContext, RestoredState, Sink, SinkFactory, TaskInfo, blocking};
use operators_core::{CheckpointId, Error, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};

use super::recovery::RecoveryClient;
use super::service::{
    KafkaProducer, create_producer, drop_in_background, flush, kafka_error, recovery_error, take_failure,
};
use super::transactions::{Transactions, TxnCommittable, TxnState};

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

/// The runner's names of the settings the sink's row errors point at.
const KEY_COLUMNS: &str = "sink.key.columns";
const FORMAT: &str = "sink.format";

/// How rows become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Each row as a JSON object (Flink's `json`), keyed by the key columns if set.
    #[default]
    Json,
    /// Changelog rows (from a CDC source) as Debezium change events (Flink's
    /// `debezium-json`), keyed by the table's primary key as a JSON object: see
    /// [`operators_core::codec::debezium`]. The key columns are the ones set with
    /// [`KafkaSink::with_key_columns`], or else the primary key the CDC source named.
    DebeziumJson {
        /// Whether each delete is followed by a tombstone (the key, no value), so that
        /// log compaction drops the row; Debezium's `tombstones.on.delete`.
        tombstones: bool,
    },
}

/// Writes rows to a Kafka topic as JSON objects, or changelog rows as Debezium change events.
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
    format: Format,
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
            format: Format::Json,
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

    /// Rows as JSON objects (default), or changelog rows as Debezium change events.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
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
            format: self.format,
            debezium: None,
            buf: Vec::new(),
            messages: Vec::new(),
            value_rows: Vec::new(),
            key_rows: Vec::new(),
            mode,
            faults: self.faults.clone(),
        }))
    }
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
    format: Format,
    /// The Debezium encoder, made at the first batch (its key columns may come from the
    /// rows' schema).
    debezium: Option<DebeziumEncoder>,
    /// The encoded keys and values of the batch being sent.
    buf: Vec<u8>,
    messages: Vec<ChangeEvent>,
    /// Row ranges of the plain JSON path, kept between batches.
    value_rows: Vec<Range<usize>>,
    key_rows: Vec<Option<Range<usize>>>,
    mode: Mode,
    faults: FaultInjector,
}

impl KafkaSinkTask {
    /// Encodes `batch` into `buf` and `messages`.
    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        self.buf.clear();
        self.messages.clear();
        if let Format::DebeziumJson { tombstones } = self.format {
            if self.debezium.is_none() {
                let keys = if self.key_columns.is_empty() {
                    changelog::key_columns(&batch.schema()).ok_or_else(|| {
                        Error::config(
                            KEY_COLUMNS,
                            "the Debezium envelope keys each change by the table's primary key, and these rows \
                             do not name one (a CDC source's rows do, unless SQL rebuilt them): set the key columns",
                        )
                    })?
                } else {
                    self.key_columns.clone()
                };
                self.debezium = Some(
                    DebeziumEncoder::new(keys)
                        .with_tombstones(tombstones)
                        .with_setting(FORMAT)
                        .with_key_setting(KEY_COLUMNS),
                );
            }
            if let Some(encoder) = &self.debezium {
                encoder.encode(batch, &mut self.buf, &mut self.messages)?;
            }
            return Ok(());
        }
        let mut values = std::mem::take(&mut self.value_rows);
        values.clear();
        self.encoder.encode_rows(batch, &mut self.buf, &mut values)?;
        let mut keys = std::mem::take(&mut self.key_rows);
        keys.clear();
        if !self.key_columns.is_empty() {
            self.encode_keys(batch, &mut keys)?;
        }
        self.messages.extend(
            values
                .iter()
                .enumerate()
                .map(|(i, value)| ChangeEvent { key: keys.get(i).cloned().flatten(), value: Some(value.clone()) }),
        );
        // Kept for the next batch: no allocation per batch.
        self.value_rows = values;
        self.key_rows = keys;
        Ok(())
    }

    /// Appends the key of every row to `buf`: one column's text, or a JSON object of
    /// several; `None` where the key columns are all null.
    fn encode_keys(&mut self, batch: &RecordBatch, keys: &mut Vec<Option<Range<usize>>>) -> Result<()> {
        let schema = batch.schema();
        let mut indices = Vec::with_capacity(self.key_columns.len());
        for name in &self.key_columns {
            let idx = schema.index_of(name).map_err(|_| {
                Error::config(
                    KEY_COLUMNS,
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
                    keys.push(None);
                } else {
                    let start = self.buf.len();
                    self.buf.extend_from_slice(text.value(i).as_bytes());
                    keys.push(Some(start..self.buf.len()));
                }
            }
        } else {
            let projected = batch.project(&indices).map_err(|e| Error::arrow("Kafka sink key", e))?;
            let mut rows = Vec::with_capacity(batch.num_rows());
            self.encoder.encode_rows(&projected, &mut self.buf, &mut rows)?;
            for (i, r) in rows.into_iter().enumerate() {
                let all_null = indices.iter().all(|&c| batch.column(c).is_null(i));
                keys.push((!all_null).then_some(r));
            }
        }
        Ok(())
    }

    /// Sends the encoded rows, waiting while librdkafka's queue is full.
    async fn send_encoded(&self, producer: &KafkaProducer) -> Result<()> {
        for message in &self.messages {
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic);
            if let Some(value) = &message.value {
                record = record.payload(&self.buf[value.clone()]);
            }
            if let Some(key) = &message.key {
                record = record.key(&self.buf[key.clone()]);
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
