//! Kafka scenarios: topic → topic through the pipeline against a bare rdkafka loop,
//! exactly once against at least once, and dedup against a passthrough.
//!
//! The broker is the real Apache Kafka in `KAFKA_BROKERS` (default `127.0.0.1:9092`,
//! started by `testing/services/kafka.sh start single`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::kafka::{Delivery, KafkaSink};
use operators_sources::kafka::{KafkaConfig, KafkaSource};
use operators_testkit::kafka::TestKafka;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::Run;

type BoxError = Box<dyn std::error::Error>;

/// Records per partition at most. A real broker keeps them all; the layout (1 M records
/// in 20 partitions) is kept from the figures measured on librdkafka's mock cluster,
/// which kept only 5 MiB per partition, so that old and new figures compare.
const ROWS_PER_PARTITION: u64 = 50_000;

/// Partitions of the bench topics for `rows` records: at least 4.
pub fn partitions_for(rows: u64) -> i32 {
    i32::try_from(rows.div_ceil(ROWS_PER_PARTITION).max(4)).unwrap_or(i32::MAX)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]))
}

/// A broker with an input topic of `rows` JSON records (ids `0..keys` repeating).
pub struct Fixture {
    /// The broker.
    pub kafka: TestKafka,
    /// The input topic.
    pub input: String,
    /// Rows in it.
    pub rows: u64,
    /// Partitions of the input and output topics.
    pub partitions: i32,
}

/// Settings both the pipeline and the baseline use, as the toolkit's defaults.
fn producer_settings(cfg: &mut ClientConfig) {
    cfg.set("compression.type", "lz4").set("request.timeout.ms", "180000").set("linger.ms", "5");
}

impl Fixture {
    /// Starts the broker and fills the input topic.
    pub fn new(rows: u64, keys: u64) -> Result<Self, BoxError> {
        let kafka = TestKafka::start();
        let partitions = partitions_for(rows);
        let input = kafka.topic("bench-in", partitions)?;
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", kafka.bootstrap_servers()).set("queue.buffering.max.messages", "1000000");
        producer_settings(&mut cfg);
        let producer: ThreadedProducer<DefaultProducerContext> = cfg.create()?;
        let cities = ["Beijing", "Shanghai", "Shenzhen", "Hangzhou"];
        for i in 0..rows {
            let k = i % keys;
            let value = format!(
                r#"{{"id":{k},"name":"name-{k}","city":"{}","score":{}.5}}"#,
                cities[(i % 4) as usize],
                i % 1000
            );
            let mut record = BaseRecord::<(), _>::to(&input).payload(&value).partition((i % partitions as u64) as i32);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120))?;
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", kafka.bootstrap_servers()).create()?;
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(&input, p, Duration::from_secs(30))?;
            if low > 0 {
                return Err(format!("the broker deleted records of the input {input}/{p} below {low} of {high}").into());
            }
        }
        Ok(Self { kafka, input, rows, partitions })
    }

    /// A fresh output topic.
    pub fn output(&self) -> Result<String, BoxError> {
        Ok(self.kafka.topic("bench-out", self.partitions)?)
    }
}

/// Input topic → JSON decode → (dedup) → JSON encode → output topic.
pub async fn pipeline(
    f: &Fixture,
    delivery: Delivery,
    interval: Option<Duration>,
    dedup: bool,
    expected_out: u64,
) -> Result<Run, BoxError> {
    let output = f.output()?;
    let ck = tempfile::tempdir()?;
    let src_cfg = KafkaConfig::new("source.kafka", f.kafka.bootstrap_servers())?;
    let source = KafkaSource::new(src_cfg, [f.input.as_str()], schema()).bounded(true);
    let sink_cfg = KafkaConfig::new("sink.kafka", f.kafka.bootstrap_servers())?.with_property("linger.ms", "5")?;
    let sink = KafkaSink::new(sink_cfg, &output)?.with_delivery(delivery);
    let p = Pipeline::new();
    let mut stream = p.source("kafka", source);
    if dedup {
        stream = stream.dedup("dedup", ["id"], Duration::from_secs(3600));
    }
    stream.sink("out", sink);
    let mut config = JobConfig::new("kafka-bench").with_restart(RestartStrategy::None);
    if let Some(i) = interval {
        config = config.with_checkpointing(CheckpointConfig::new(ck.path()).with_interval(i));
    }
    let rows = f.rows;
    let run = crate::measure(|| async move { p.run(config).await.map(|_| rows).unwrap_or(0) }).await;
    if run.rows != rows {
        return Err("the pipeline failed".into());
    }
    let got = count(f, &output)?;
    if got != expected_out {
        return Err(format!("the output topic holds {got} records, {expected_out} expected").into());
    }
    Ok(run)
}

/// Bare rdkafka: consume every record and produce its bytes to the output topic.
pub async fn baseline(f: &Fixture) -> Result<Run, BoxError> {
    let output = f.output()?;
    let bootstrap = f.kafka.bootstrap_servers().to_string();
    let input = f.input.clone();
    let (rows, partitions) = (f.rows, f.partitions);
    let run = crate::measure(|| async move {
        tokio::task::spawn_blocking(move || copy_loop(&bootstrap, &input, partitions, &output, rows).unwrap_or(0))
            .await
            .unwrap_or(0)
    })
    .await;
    if run.rows != rows {
        return Err("the baseline did not copy every record".into());
    }
    Ok(run)
}

fn copy_loop(bootstrap: &str, input: &str, partitions: i32, output: &str, rows: u64) -> Result<u64, BoxError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-baseline")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(input, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").set("partitioner", "murmur2_random");
    producer_settings(&mut cfg);
    let producer: ThreadedProducer<DefaultProducerContext> = cfg.create()?;
    let mut n = 0u64;
    let start = Instant::now();
    while n < rows {
        if start.elapsed() > Duration::from_secs(600) {
            return Err("baseline timed out".into());
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m?;
        let payload = m.payload().unwrap_or_default();
        let mut record = BaseRecord::<(), _>::to(output).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(n)
}

fn count(f: &Fixture, topic: &str) -> Result<u64, BoxError> {
    Ok(f.kafka.read(topic, operators_testkit::kafka::Isolation::ReadCommitted)?.len() as u64)
}
