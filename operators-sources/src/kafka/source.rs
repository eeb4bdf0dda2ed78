//! Reading JSON records from Kafka topics.
//!
//! Partitions are spread over the source subtasks by the source itself (no consumer
//! group rebalancing): partition `p` of topic `t` belongs to subtask
//! `(hash(t) + p) mod parallelism`, so every subtask knows its partitions from the
//! metadata alone and the assignment is the same after a restart. New partitions are
//! discovered every `partition.discovery.interval.ms` and read from their beginning.
//!
//! **Offsets live in checkpoints.** A subtask's snapshot holds the next offset of each of
//! its partitions; a restored job seeks there, so no record is read twice or skipped.
//! Offsets are committed to the consumer group (`group.id`) only when a checkpoint
//! completes — for monitoring and for a job started afresh, never to resume a running
//! job. librdkafka's own auto-commit is always off.
//!
//! **Where a fresh job starts**, per partition: the group's committed offset when there
//! is one, else `auto.offset.reset` (`earliest`, the default, `latest`, or `none` which
//! refuses to start). Starting offsets are resolved once, at start, and go into the first
//! checkpoint: a restart never re-resolves "latest".
//!
//! **Bounded reading** ([`KafkaSource::bounded`]) stops at the end offsets of the first
//! start (the last stable offsets under `read_committed`, librdkafka's default), kept in
//! state so that every restart stops at the same place.
//!
//! Values are JSON objects decoded by the declared schema: a missing field is null, an
//! unknown one ignored; a record that is not a JSON object, has a wrong type or no value
//! is a bad record, sent to the dead-letter output with its topic, partition and offset
//! or failing the job (the default), as configured.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::FutureExt;
use operators_core::codec::json::{JsonDecoder, JsonRecord};
use operators_core::operator::{
    BadRecordPolicy, RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo, blocking,
};
use operators_core::{CheckpointId, Error, Result};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::KafkaConfig;
use crate::error::SourceError;

/// Where a partition without checkpointed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartOffsets {
    /// The group's committed offset, else the beginning of the partition.
    #[default]
    Earliest,
    /// The group's committed offset, else the end of the partition.
    Latest,
    /// The group's committed offset; a partition without one stops the job.
    None,
}

impl std::str::FromStr for StartOffsets {
    type Err = SourceError;

    fn from_str(s: &str) -> std::result::Result<Self, SourceError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => Ok(StartOffsets::Earliest),
            "latest" | "largest" | "end" => Ok(StartOffsets::Latest),
            "none" | "error" => Ok(StartOffsets::None),
            other => {
                Err(SourceError::config("auto.offset.reset", format!("`{other}` is not one of earliest, latest, none")))
            }
        }
    }
}

/// A Kafka source of JSON records.
///
/// ```no_run
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use operators_sources::kafka::{KafkaConfig, KafkaSource};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, true),
///     Field::new("name", DataType::Utf8, true),
/// ]));
/// let kafka = KafkaConfig::new("source.kafka", "127.0.0.1:9092")?;
/// let source = KafkaSource::new(kafka, ["events"], schema).with_group_id("ingest");
/// # Ok::<(), operators_sources::SourceError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KafkaSource {
    kafka: KafkaConfig,
    topics: Vec<String>,
    group_id: Option<String>,
    start: StartOffsets,
    schema: SchemaRef,
    bad_records: BadRecordPolicy,
    batch_size: usize,
    bounded: bool,
    discovery: Option<Duration>,
    /// A setting given as a property that did not parse, reported by `validate`.
    invalid: Option<(String, String)>,
}

impl KafkaSource {
    /// Reads `topics` with `kafka`'s settings, decoding values by `schema`.
    pub fn new<S: Into<String>>(kafka: KafkaConfig, topics: impl IntoIterator<Item = S>, schema: SchemaRef) -> Self {
        let mut kafka = kafka;
        let mut invalid = None;
        let group_id = kafka.take_property("group.id");
        let start = match kafka.take_property("auto.offset.reset").map(|s| s.parse::<StartOffsets>()) {
            None => StartOffsets::default(),
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                let message = match e {
                    SourceError::Config { message, .. } => message,
                    other => other.to_string(),
                };
                invalid = Some(("auto.offset.reset".to_string(), message));
                StartOffsets::default()
            }
        };
        let discovery = match kafka.take_property("partition.discovery.interval.ms") {
            None => Some(Duration::from_secs(60)),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(ms) => Some(Duration::from_millis(ms)),
                Err(_) => {
                    let key = format!("{}.partition.discovery.interval.ms", kafka.prefix());
                    invalid = Some((key, format!("`{v}` is not a number of milliseconds")));
                    None
                }
            },
        };
        Self {
            invalid,
            kafka,
            topics: topics.into_iter().map(Into::into).map(|t: String| t.trim().to_string()).collect(),
            group_id,
            start,
            schema,
            bad_records: BadRecordPolicy::Fail,
            batch_size: 8192,
            bounded: false,
            discovery,
        }
    }

    /// The consumer group offsets are committed to (and a fresh job starts from).
    pub fn with_group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Where partitions without a checkpointed or committed offset start.
    pub fn with_start(mut self, start: StartOffsets) -> Self {
        self.start = start;
        self
    }

    /// What to do with records that are not JSON objects of the schema.
    pub fn with_bad_records(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }

    /// At most this many records per batch (default 8192); 0 is refused, naming
    /// `source.batch.size`.
    pub fn with_batch_size(mut self, rows: usize) -> crate::Result<Self> {
        self.batch_size = crate::error::at_least_one("source.batch.size", rows)?;
        Ok(self)
    }

    /// Stop at the end offsets of the first start instead of running forever.
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }

    /// How often to look for new partitions (`None`: never).
    pub fn with_partition_discovery(mut self, every: Option<Duration>) -> Self {
        self.discovery = every;
        self
    }

    /// Checks the settings that can be checked without a broker.
    pub fn validate(&self) -> std::result::Result<(), SourceError> {
        if let Some((key, message)) = &self.invalid {
            return Err(SourceError::config(key, message));
        }
        let key = format!("{}.topic", self.kafka.prefix());
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err(SourceError::config(key, "no topic given"));
        }
        if self.schema.fields().is_empty() {
            return Err(SourceError::config(
                "stream.sql.schema",
                "Kafka values are JSON decoded by a declared schema; none was given",
            ));
        }
        if self.group_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(SourceError::config("group.id", "empty group id"));
        }
        Ok(())
    }
}

impl SourceFactory for KafkaSource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        self.validate()?;
        let decoder = JsonDecoder::new(self.schema.clone())?;
        Ok(Box::new(KafkaReader {
            cfg: self.clone(),
            subtask: info.subtask,
            parallelism: info.parallelism.max(1),
            client_id: format!("operators-{}-{}-{}", info.job_name, info.operator_id, info.subtask),
            consumer: None,
            restored: BTreeMap::new(),
            restored_ends: None,
            positions: BTreeMap::new(),
            ends: None,
            done: BTreeSet::new(),
            pending: BTreeMap::new(),
            decoder,
            last_discovery: Instant::now(),
            payloads: Vec::new(),
            origins: BTreeMap::new(),
        }))
    }
}

type Tp = (String, i32);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    /// Next offset to read, per partition this subtask owned.
    offsets: Vec<(String, i32, i64)>,
    /// Bounded reading: where each partition stops.
    ends: Option<Vec<(String, i32, i64)>>,
}

struct KafkaReader {
    cfg: KafkaSource,
    subtask: usize,
    parallelism: usize,
    client_id: String,
    consumer: Option<Arc<StreamConsumer>>,
    restored: BTreeMap<Tp, i64>,
    restored_ends: Option<BTreeMap<Tp, i64>>,
    /// Next offset to read of every owned partition.
    positions: BTreeMap<Tp, i64>,
    ends: Option<BTreeMap<Tp, i64>>,
    /// Bounded reading: partitions read to their end.
    done: BTreeSet<Tp>,
    /// Offsets of each snapshot, committed to the group when its checkpoint completes.
    pending: BTreeMap<CheckpointId, Vec<(Tp, i64)>>,
    decoder: JsonDecoder,
    last_discovery: Instant,
    payloads: Vec<u8>,
    origins: BTreeMap<Tp, String>,
}

pub(super) fn owner(topic: &str, partition: i32, parallelism: usize) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
    ((h % parallelism as u64) as usize + partition.max(0) as usize) % parallelism
}

fn kafka_err(context: &str, e: KafkaError) -> Error {
    let retryable = super::restart_may_help(&e);
    Error::external(format!("kafka source: {context}"), retryable, e)
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl KafkaReader {
    fn consumer(&self) -> Result<Arc<StreamConsumer>> {
        self.consumer.clone().ok_or_else(|| Error::Internal("the Kafka source was not opened".into()))
    }

    /// Partitions of the configured topics that this subtask owns.
    fn owned_partitions(&self) -> impl Future<Output = Result<Vec<Tp>>> + Send + 'static {
        let consumer = self.consumer();
        let topics = self.cfg.topics.clone();
        let key = format!("{}.topic", self.cfg.kafka.prefix());
        let (parallelism, subtask) = (self.parallelism, self.subtask);
        async move {
            let consumer = consumer?;
            blocking("Kafka source", move || {
                let mut out = Vec::new();
                for topic in &topics {
                    let md =
                        consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| kafka_err("reading metadata", e))?;
                    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                        return Err(Error::config(&key, format!("topic `{topic}` is not in the brokers' metadata")));
                    };
                    if let Some(err) = t.error() {
                        let code = RDKafkaErrorCode::from(err);
                        return Err(Error::config(&key, format!("topic `{topic}`: {code}")));
                    }
                    out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
                }
                Ok(out)
            })
            .await
            .map(|all| all.into_iter().filter(|(t, p)| owner(t, *p, parallelism) == subtask).collect())
        }
    }

    /// Starting offsets of partitions without a checkpointed one.
    fn start_offsets(
        &self,
        fresh: Vec<Tp>,
        from_group: bool,
    ) -> impl Future<Output = Result<Vec<(Tp, i64)>>> + Send + 'static {
        let consumer = self.consumer();
        let start = self.cfg.start;
        let use_group = from_group && self.cfg.group_id.is_some();
        async move {
            if fresh.is_empty() {
                return Ok(Vec::new());
            }
            let consumer = consumer?;
            blocking("Kafka source", move || {
            let mut committed = BTreeMap::new();
            if use_group {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &fresh {
                    tpl.add_partition(t, *p);
                }
                let got = consumer.committed_offsets(tpl, TIMEOUT).map_err(|e| kafka_err("reading committed offsets", e))?;
                for e in got.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        committed.insert((e.topic().to_string(), e.partition()), o);
                    }
                }
            }
            let mut out = Vec::new();
            for tp in fresh {
                if let Some(o) = committed.get(&tp) {
                    out.push((tp, *o));
                    continue;
                }
                let (low, high) =
                    consumer.fetch_watermarks(&tp.0, tp.1, TIMEOUT).map_err(|e| kafka_err("reading watermarks", e))?;
                let offset = match start {
                    StartOffsets::Earliest => low,
                    StartOffsets::Latest => high,
                    StartOffsets::None => {
                        return Err(Error::config(
                            "auto.offset.reset",
                            format!(
                                "partition {}/{} has no committed offset for the group and auto.offset.reset is none",
                                tp.0, tp.1
                            ),
                        ));
                    }
                };
                out.push((tp, offset));
            }
            Ok(out)
        })
        .await
        }
    }

    fn end_offsets(&self, parts: Vec<Tp>) -> impl Future<Output = Result<Vec<(Tp, i64)>>> + Send + 'static {
        let consumer = self.consumer();
        async move {
            let consumer = consumer?;
            blocking("Kafka source", move || {
                parts
                    .into_iter()
                    .map(|tp| {
                        let (_, high) = consumer
                            .fetch_watermarks(&tp.0, tp.1, TIMEOUT)
                            .map_err(|e| kafka_err("reading end offsets", e))?;
                        Ok((tp, high))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await
        }
    }

    /// Adds partitions at the given offsets to the assignment.
    fn assign(&mut self, parts: Vec<(Tp, i64)>) -> Result<()> {
        for (tp, offset) in parts {
            let finished = self.ends.as_ref().and_then(|e| e.get(&tp)).is_some_and(|end| offset >= *end);
            if finished {
                self.done.insert(tp.clone());
            }
            self.origins.insert(tp.clone(), format!("{}/{}", tp.0, tp.1));
            self.positions.insert(tp, offset);
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in &self.positions {
            if !self.done.contains(tp) {
                tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*offset))
                    .map_err(|e| kafka_err("building the assignment", e))?;
            }
        }
        self.consumer()?.assign(&tpl).map_err(|e| kafka_err("assigning partitions", e))
    }

    async fn discover(&mut self) -> Result<()> {
        self.last_discovery = Instant::now();
        let owned = self.owned_partitions().await?;
        let new: Vec<Tp> = owned.into_iter().filter(|tp| !self.positions.contains_key(tp)).collect();
        if new.is_empty() {
            return Ok(());
        }
        tracing::info!("kafka source subtask {}: new partitions {new:?}, read from their beginning", self.subtask);
        let starts = self.start_offsets(new, false).await?;
        // A partition that appears after start is read from its beginning whatever
        // auto.offset.reset says: everything in it is new to this job.
        let consumer = self.consumer()?;
        let parts: Vec<Tp> = starts.iter().map(|(tp, _)| tp.clone()).collect();
        let lows = blocking("Kafka source", move || {
            parts
                .into_iter()
                .map(|tp| consumer.fetch_watermarks(&tp.0, tp.1, TIMEOUT).map(|(low, _)| (tp, low)))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| kafka_err("reading watermarks", e))
        })
        .await?;
        if let Some(ends) = &mut self.ends {
            // Bounded reading ignores partitions that did not exist at the first start.
            for (tp, low) in &lows {
                ends.insert(tp.clone(), *low);
            }
        }
        self.assign(lows)
    }

    fn finished(&self) -> bool {
        self.ends.is_some() && self.positions.keys().all(|tp| self.done.contains(tp))
    }

    /// Bounded reading: the partitions, among those numbered as librdkafka's end-of-partition
    /// reports, that did reach their end. The consumer's position counts the records it
    /// skipped (transaction markers, aborted records), so a partition whose last offsets
    /// are such records ends here although no record at its end offset was ever seen.
    fn reported_ends(&self, numbers: &BTreeSet<i32>) -> Result<Vec<Tp>> {
        let Some(ends) = &self.ends else { return Ok(Vec::new()) };
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for tp in self.positions.keys().filter(|tp| numbers.contains(&tp.1) && !self.done.contains(*tp)) {
            tpl.add_partition(&tp.0, tp.1);
        }
        if tpl.count() == 0 {
            return Ok(Vec::new());
        }
        let positions = self.consumer()?.position().map_err(|e| kafka_err("reading positions", e))?;
        Ok(positions
            .elements()
            .iter()
            .filter_map(|e| {
                let tp = (e.topic().to_string(), e.partition());
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => return None,
                };
                (tpl.find_partition(&tp.0, tp.1).is_some() && ends.get(&tp).is_some_and(|end| at >= *end)).then_some(tp)
            })
            .collect())
    }

    fn mark_done(&mut self, tp: &Tp) -> Result<()> {
        if self.done.insert(tp.clone()) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            // Stop fetching what will not be read.
            self.consumer()?.pause(&tpl).map_err(|e| kafka_err("pausing a finished partition", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for KafkaReader {
    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        // Every subtask sees every old snapshot and keeps its partitions' offsets at open.
        for (_, bytes) in &state.snapshots {
            let snap: Snapshot = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "kafka source".into(),
                message: format!("cannot read the checkpointed offsets: {e}"),
            })?;
            for (t, p, o) in snap.offsets {
                self.restored.insert((t, p), o);
            }
            if let Some(ends) = snap.ends {
                let all = self.restored_ends.get_or_insert_with(BTreeMap::new);
                for (t, p, o) in ends {
                    all.insert((t, p), o);
                }
            }
        }
        Ok(())
    }

    async fn open(&mut self, _ctx: &mut SourceContext) -> Result<()> {
        let mut config = self.cfg.kafka.client_config();
        config
            .set("client.id", &self.client_id)
            // Offsets are checkpointed and committed by the source, never by librdkafka.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", if self.cfg.bounded { "true" } else { "false" });
        if let Some(g) = &self.cfg.group_id {
            config.set("group.id", g);
        } else {
            // librdkafka wants a group id for committed-offset lookups; nothing is committed.
            config.set("group.id", format!("operators-{}", self.client_id));
        }
        // What librdkafka does when a checkpointed offset is gone (retention).
        config.set(
            "auto.offset.reset",
            match self.cfg.start {
                StartOffsets::Latest => "latest",
                StartOffsets::None => "error",
                StartOffsets::Earliest => "earliest",
            },
        );
        let consumer: StreamConsumer = config.create().map_err(|e| Error::from(self.cfg.kafka.creation_error(e)))?;
        self.consumer = Some(Arc::new(consumer));

        let owned = self.owned_partitions().await?;
        let (known, fresh): (Vec<Tp>, Vec<Tp>) = owned.into_iter().partition(|tp| self.restored.contains_key(tp));
        let mut starts: Vec<(Tp, i64)> = known.into_iter().map(|tp| (tp.clone(), self.restored[&tp])).collect();
        if self.cfg.bounded {
            let mut ends = self.restored_ends.take().unwrap_or_default();
            let missing: Vec<Tp> = fresh
                .iter()
                .chain(starts.iter().map(|(tp, _)| tp))
                .filter(|tp| !ends.contains_key(*tp))
                .cloned()
                .collect();
            for (tp, end) in self.end_offsets(missing).await? {
                ends.insert(tp, end);
            }
            self.ends = Some(ends);
        }
        starts.extend(self.start_offsets(fresh, true).await?);
        tracing::info!("kafka source subtask {}: reading {starts:?}", self.subtask);
        self.assign(starts)?;
        self.last_discovery = Instant::now();
        Ok(())
    }

    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.finished() {
            return Ok(SourcePoll::Finished);
        }
        if let Some(every) = self.cfg.discovery
            && self.last_discovery.elapsed() >= every
        {
            self.discover().await?;
        }
        let consumer = self.consumer()?;
        self.payloads.clear();
        let mut records: Vec<(Tp, i64, std::ops::Range<usize>)> = Vec::new();
        let mut eof = Vec::new();
        let mut eof_numbers = BTreeSet::new();
        let mut first = true;
        while records.len() < self.cfg.batch_size {
            let next = if first {
                first = false;
                tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await.ok()
            } else {
                consumer.recv().now_or_never()
            };
            let Some(next) = next else { break };
            match next {
                Ok(m) => {
                    let tp = (m.topic().to_string(), m.partition());
                    let offset = m.offset();
                    if let Some(end) = self.ends.as_ref().and_then(|e| e.get(&tp))
                        && offset >= *end
                    {
                        eof.push(tp);
                        continue;
                    }
                    let start = self.payloads.len();
                    self.payloads.extend_from_slice(m.payload().unwrap_or_default());
                    records.push((tp, offset, start..self.payloads.len()));
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    // The report names the partition number, not the topic: which of the
                    // partitions so numbered ended is decided from their positions below.
                    eof_numbers.insert(p);
                }
                Err(e) if super::is_retryable(&e) => {
                    // librdkafka retries on its own (a broker restarting, a timeout).
                    tracing::warn!("kafka source subtask {}: {e}; librdkafka retries", self.subtask);
                    break;
                }
                Err(e) => return Err(kafka_err("reading records", e)),
            }
        }
        if records.is_empty() && self.ends.is_some() {
            // Idle: look at every unfinished partition, so that an end report read before
            // the consumer's position moved past the last markers cannot be missed.
            eof_numbers.extend(self.positions.keys().filter(|tp| !self.done.contains(*tp)).map(|tp| tp.1));
        }
        eof.extend(self.reported_ends(&eof_numbers)?);
        if records.is_empty() {
            for tp in eof {
                self.mark_done(&tp)?;
            }
            return Ok(if self.finished() { SourcePoll::Finished } else { SourcePoll::Idle });
        }
        let json: Vec<JsonRecord<'_>> = records
            .iter()
            .map(|(tp, offset, range)| JsonRecord {
                payload: &self.payloads[range.clone()],
                origin: self.origins.get(tp).map_or("kafka", String::as_str),
                offset: u64::try_from(*offset).ok(),
            })
            .collect();
        let (batch, dead) = self.decoder.decode(&json)?;
        if let Some(first) = dead.first()
            && self.cfg.bad_records == BadRecordPolicy::Fail
        {
            return Err(first.clone().into_error());
        }
        for d in dead {
            ctx.dead_letter(d);
        }
        for (tp, offset, _) in &records {
            self.positions.insert(tp.clone(), offset + 1);
        }
        // A partition whose next offset reached its end is done, whether or not EOF came.
        if let Some(ends) = &self.ends {
            let reached: Vec<Tp> = self
                .positions
                .iter()
                .filter(|(tp, pos)| ends.get(*tp).is_some_and(|e| **pos >= *e))
                .map(|(tp, _)| tp.clone())
                .collect();
            eof.extend(reached);
        }
        for tp in eof {
            self.mark_done(&tp)?;
        }
        Ok(SourcePoll::Batch(batch))
    }

    fn snapshot(&mut self, checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        let offsets: Vec<(Tp, i64)> = self.positions.iter().map(|(tp, o)| (tp.clone(), *o)).collect();
        let snap = Snapshot {
            offsets: offsets.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect(),
            ends: self.ends.as_ref().map(|e| e.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect()),
        };
        self.pending.insert(checkpoint_id, offsets);
        postcard::to_allocvec(&snap).map(Some).map_err(|e| Error::Internal(format!("serializing Kafka offsets: {e}")))
    }

    async fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        let Some(offsets) = self.pending.remove(&checkpoint_id) else { return Ok(()) };
        self.pending.retain(|id, _| *id > checkpoint_id);
        if self.cfg.group_id.is_none() || offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(|e| kafka_err("building offsets", e))?;
        }
        // Committed offsets are for monitoring and fresh starts; a failed commit is not a
        // failed checkpoint (the next one commits newer offsets).
        if let Err(e) = self.consumer()?.commit(&tpl, CommitMode::Async) {
            tracing::warn!(
                "kafka source subtask {}: committing offsets of checkpoint {checkpoint_id}: {e}",
                self.subtask
            );
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.consumer = None;
        Ok(())
    }
}
