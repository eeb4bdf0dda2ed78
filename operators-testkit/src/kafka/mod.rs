//! Kafka for tests: the clusters to run against, and blocking helpers to set up topics,
//! write input and read output the way a user's consumer would.
//!
//! - [`TestKafka::start`]: the single-node Apache Kafka in `KAFKA_BROKERS` (default
//!   `127.0.0.1:9092`, started by `testing/services/kafka.sh start single`).
//! - [`TestKafka::cluster`]: the three-node cluster in `KAFKA_CLUSTER_BROKERS` (default
//!   `127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094`, replication factor 3, min ISR 2,
//!   started by `testing/services/kafka.sh start cluster`), whose nodes a test can SIGKILL
//!   and start again ([`TestKafka::kill_node`], [`TestKafka::start_node`]).
//! - [`TestKafka::mock`]: librdkafka's mock cluster, only for faults a real broker cannot
//!   be made to show (errors on chosen requests).
//!
//! A cluster that does not answer fails the test with the command that starts it: a test
//! never passes because Kafka is missing.
//!
//! The helpers block; call them before a job starts or after it ended, or from
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Bootstrap servers of the single-node cluster when `KAFKA_BROKERS` is not set.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Bootstrap servers of the three-node cluster when `KAFKA_CLUSTER_BROKERS` is not set.
pub const DEFAULT_CLUSTER_BROKERS: &str = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094";

/// A Kafka cluster for one test.
pub struct TestKafka {
    backend: Backend,
    bootstrap: String,
}

enum Backend {
    /// A real cluster; topics get this replication factor.
    Real {
        replication: i32,
        nodes: bool,
    },
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl std::fmt::Debug for TestKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Real { nodes: false, .. } => "Kafka (KAFKA_BROKERS)",
            Backend::Real { nodes: true, .. } => "Kafka, three nodes (KAFKA_CLUSTER_BROKERS)",
            Backend::Mock(_) => "librdkafka mock cluster",
        };
        f.debug_struct("TestKafka").field("kind", &kind).field("bootstrap", &self.bootstrap).finish()
    }
}

/// A record to write.
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Vec<u8>,
    /// Partition; the partitioner decides when `None`.
    pub partition: Option<i32>,
}

impl TestRecord {
    /// A value without key.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self { value: value.into(), ..Self::default() }
    }

    /// A value for one partition.
    pub fn to_partition(partition: i32, value: impl Into<Vec<u8>>) -> Self {
        Self { value: value.into(), partition: Some(partition), key: None }
    }
}

/// Remembers the first failed delivery of a producer.
#[derive(Default)]
struct FailedDeliveries(std::sync::Mutex<Option<String>>);

impl rdkafka::ClientContext for FailedDeliveries {}

impl rdkafka::producer::ProducerContext for FailedDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut first = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert_with(|| format!("{e} (partition {})", m.partition()));
        }
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
}

impl Consumed {
    /// The value as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }
}

/// Which records a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    ReadCommitted,
    /// Everything in the log.
    ReadUncommitted,
}

type Res<T> = Result<T, String>;

/// The project's service script, which starts and stops the test clusters.
fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testing/services/kafka.sh")
}

/// Checks that the cluster at `bootstrap` answers, or panics saying how to start it.
fn require(bootstrap: &str, variable: &str, start: &str) {
    let probe: Result<BaseConsumer, _> = ClientConfig::new().set("bootstrap.servers", bootstrap).create();
    let answer = probe.map_err(|e| e.to_string()).and_then(|c| {
        c.fetch_metadata(None, Duration::from_secs(15)).map(|m| m.brokers().len()).map_err(|e| e.to_string())
    });
    if let Err(e) = answer {
        // A missing service is a failed test, never a skipped one.
        panic!(
            "Kafka at {bootstrap} ({variable}) does not answer: {e}. Start it with `{} {start}` \
             (or point {variable} at a running cluster)",
            kafka_script().display()
        );
    }
}

impl TestKafka {
    /// The single-node cluster in `KAFKA_BROKERS` (default [`DEFAULT_BROKERS`]); panics
    /// with the command that starts it when it does not answer.
    pub fn start() -> Self {
        let bootstrap = env_or("KAFKA_BROKERS", DEFAULT_BROKERS);
        require(&bootstrap, "KAFKA_BROKERS", "start single");
        Self { backend: Backend::Real { replication: 1, nodes: false }, bootstrap }
    }

    /// The three-node cluster in `KAFKA_CLUSTER_BROKERS` (default
    /// [`DEFAULT_CLUSTER_BROKERS`]): topics are replicated three times with two in-sync
    /// replicas required, and nodes can be killed and started again.
    pub fn cluster() -> Self {
        let bootstrap = env_or("KAFKA_CLUSTER_BROKERS", DEFAULT_CLUSTER_BROKERS);
        require(&bootstrap, "KAFKA_CLUSTER_BROKERS", "start cluster");
        Self { backend: Backend::Real { replication: 3, nodes: true }, bootstrap }
    }

    /// librdkafka's mock cluster with one broker, for faults a real broker cannot be made
    /// to show (errors on chosen requests). It does not implement transaction outcomes.
    ///
    /// It keeps at most 5 MiB or 100 000 batches per partition and deletes the oldest
    /// records beyond that without a word; [`TestKafka::read`] fails when it finds a
    /// partition so trimmed. Spread large inputs over more partitions.
    pub fn mock() -> Self {
        match MockCluster::new(1) {
            Ok(m) => Self { bootstrap: m.bootstrap_servers(), backend: Backend::Mock(m) },
            Err(e) => panic!("cannot start librdkafka's mock cluster: {e}"),
        }
    }

    /// SIGKILLs node `id` (1–3) of the three-node cluster, as a crash would.
    pub fn kill_node(&self, id: i32) -> Res<()> {
        self.node_command("kill-node", id)
    }

    /// Starts node `id` (1–3) of the three-node cluster again and waits until it runs.
    pub fn start_node(&self, id: i32) -> Res<()> {
        self.node_command("start-node", id)
    }

    fn node_command(&self, command: &str, id: i32) -> Res<()> {
        if !matches!(self.backend, Backend::Real { nodes: true, .. }) {
            return Err(format!("{command}: only the three-node cluster (TestKafka::cluster) has nodes to control"));
        }
        let out = std::process::Command::new(kafka_script())
            .args([command, &id.to_string()])
            .output()
            .map_err(|e| format!("running {} {command} {id}: {e}", kafka_script().display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {command} {id} failed: {}",
                kafka_script().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// The node leading `partition` of `topic`, as the metadata says now.
    pub fn leader(&self, topic: &str, partition: i32) -> Res<i32> {
        let consumer: BaseConsumer =
            self.client_config().create().map_err(|e| format!("creating a client for {}: {e}", self.bootstrap))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .filter(|l| *l >= 0)
            .ok_or_else(|| format!("{topic}/{partition} has no leader"))
    }

    /// `bootstrap.servers` of the cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The mock cluster, when this is one.
    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        match &self.backend {
            Backend::Mock(m) => Some(m),
            _ => None,
        }
    }

    /// Creates a topic with a unique name starting with `prefix` and returns the name.
    pub fn topic(&self, prefix: &str, partitions: i32) -> Res<String> {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        self.create_topic(&name, partitions)?;
        Ok(name)
    }

    /// Creates a topic and waits until every partition has a leader.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Res<()> {
        let replication = match &self.backend {
            Backend::Mock(m) => return m.create_topic(name, partitions, 1).map_err(|e| e.to_string()),
            Backend::Real { replication, .. } => *replication,
        };
        let admin = self.admin()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let result = block_on(async { admin.create_topics([&topic], &options).await })?
            .map_err(|e| format!("creating topic {name}: {e}"))?;
        for r in result {
            r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
        }
        self.wait_for_leaders(name, partitions)
    }

    /// Grows a topic to `total` partitions.
    pub fn add_partitions(&self, topic: &str, total: i32) -> Res<()> {
        if let Backend::Mock(_) = self.backend {
            return Err("librdkafka's mock cluster cannot add partitions".into());
        }
        let admin = self.admin()?;
        let growth = rdkafka::admin::NewPartitions::new(topic, total as usize);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let result = block_on(async { admin.create_partitions([&growth], &options).await })?
            .map_err(|e| format!("adding partitions to {topic}: {e}"))?;
        for r in result {
            r.map_err(|(t, e)| format!("adding partitions to {t}: {e}"))?;
        }
        self.wait_for_leaders(topic, total)
    }

    fn admin(&self) -> Res<AdminClient<DefaultClientContext>> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(|e| format!("Kafka at {} cannot be reached: {e}", self.bootstrap))
    }

    /// A new topic is known to the controller first; the brokers learn of it a moment
    /// later. Tests that produce at once would otherwise race that.
    fn wait_for_leaders(&self, topic: &str, partitions: i32) -> Res<()> {
        let consumer: BaseConsumer =
            self.client_config().create().map_err(|e| format!("creating a client for {}: {e}", self.bootstrap))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let led = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map(|m| {
                    m.topics()
                        .iter()
                        .filter(|t| t.name() == topic && t.error().is_none())
                        .flat_map(|t| t.partitions())
                        .filter(|p| p.leader() >= 0 && p.error().is_none())
                        .count()
                })
                .unwrap_or(0);
            if led >= partitions as usize {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{topic}: {led} of {partitions} partitions have a leader after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap).set("message.timeout.ms", "30000");
        c
    }

    /// Writes records (acks=all, idempotent) and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = TestRecord>) -> Res<usize> {
        let producer: BaseProducer<FailedDeliveries> = self
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(FailedDeliveries::default())
            .map_err(|e| format!("creating a producer for {}: {e}", self.bootstrap))?;
        let mut n = 0;
        for r in records {
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(&r.value);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            let mut pending = record;
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(10));
                        pending = back;
                    }
                    Err((e, _)) => return Err(format!("producing to {topic}: {e}")),
                }
            }
            n += 1;
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).map_err(|e| format!("flushing to {topic}: {e}"))?;
        // A record for a partition that does not exist fails only in its delivery report.
        let failed = producer.context().0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(e) = failed {
            return Err(format!("producing to {topic}: {e}"));
        }
        Ok(n)
    }

    /// Writes JSON values to the given partitions round-robin.
    pub fn produce_values<S: AsRef<str>>(&self, topic: &str, partitions: i32, values: &[S]) -> Res<usize> {
        self.produce(
            topic,
            values
                .iter()
                .enumerate()
                .map(|(i, v)| TestRecord::to_partition((i as i32) % partitions.max(1), v.as_ref().as_bytes().to_vec())),
        )
    }

    /// Reads every record of `topic` as a consumer with `isolation` would, from the
    /// beginning to the current end of each partition, in partition then offset order.
    /// Fails when the broker deleted records of a partition (retention), rather than
    /// returning a read that looks complete.
    pub fn read(&self, topic: &str, isolation: Isolation) -> Res<Vec<Consumed>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", "operators-testkit-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set(
                "isolation.level",
                match isolation {
                    Isolation::ReadCommitted => "read_committed",
                    Isolation::ReadUncommitted => "read_uncommitted",
                },
            )
            .create()
            .map_err(|e| format!("creating a consumer for {}: {e}", self.bootstrap))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(format!("topic {topic} has no partitions (does it exist?)"));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning).map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| format!("assigning {topic}: {e}"))?;
        let mut at_end: BTreeMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while at_end.values().any(|e| !e) {
            if Instant::now() > deadline {
                return Err(format!("reading {topic}: partitions {at_end:?} did not reach their end in 120 s"));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => out.push(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                }),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p, true);
                }
                Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            }
        }
        // A broker that deleted records (retention) would make a short read look like a
        // short output. librdkafka's mock cluster keeps at most 5 MiB or 100 000 batches
        // per partition and silently drops the oldest beyond that; a real broker only
        // after its retention time.
        for p in &partitions {
            let (low, _) = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(30))
                .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
            if low > 0 {
                return Err(format!(
                    "reading {topic}: the broker deleted the records of partition {p} below offset {low} \
                     (retention; the librdkafka mock cluster keeps at most 5 MiB or 100000 batches per \
                     partition: spread the data over more partitions)"
                ));
            }
        }
        out.sort_by_key(|c| (c.partition, c.offset));
        Ok(out)
    }

    /// Values of every committed record of `topic`, as text.
    pub fn read_committed_values(&self, topic: &str) -> Res<Vec<String>> {
        Ok(self.read(topic, Isolation::ReadCommitted)?.iter().map(Consumed::text).collect())
    }

    /// The offsets `group` committed for `topic`, by partition.
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Res<BTreeMap<i32, i64>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("creating a consumer for {}: {e}", self.bootstrap))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .map_err(|e| format!("committed offsets of {group}: {e}"))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

/// Runs an rdkafka future to completion on a private runtime (the helpers are blocking
/// and may be called from inside another runtime).
fn env_or(variable: &str, default: &str) -> String {
    std::env::var(variable).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_string())
}

fn block_on<F: std::future::Future + Send>(f: F) -> Res<F::Output>
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("creating a runtime: {e}"))?;
            Ok(rt.block_on(f))
        })
        .join()
        .map_err(|_| "the admin request panicked".to_string())?
    })
}
