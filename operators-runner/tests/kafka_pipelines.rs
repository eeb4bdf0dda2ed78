//! Kafka → SQL → Kafka and Kafka → dedup → Kafka, at least once and exactly once,
//! against the real Kafka in `KAFKA_BROKERS` (`testing/services/kafka.sh`); errors on
//! chosen produce requests against librdkafka's mock cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use operators_core::builtins::{FaultInjector, MapTransform};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::BadRecordPolicy;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::file::{FileFormat, FileSink};
use operators_sinks::kafka::{Delivery, KafkaSink};
use operators_sources::kafka::{KafkaConfig, KafkaSource};
use operators_sql::SqlTransformBuilder;
use operators_testkit::kafka::{Isolation, TestKafka, TestRecord};
use serde_json::{Value, json};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("seq", DataType::Int64, true),
    ]))
}

fn source(kafka: &TestKafka, topic: &str, policy: BadRecordPolicy) -> KafkaSource {
    let cfg = KafkaConfig::new("source.kafka", kafka.bootstrap_servers()).unwrap();
    KafkaSource::new(cfg, [topic], schema()).with_batch_size(100).unwrap().with_bad_records(policy).bounded(true)
}

fn sink(kafka: &TestKafka, topic: &str, delivery: Delivery) -> KafkaSink {
    let cfg =
        KafkaConfig::new("sink.kafka", kafka.bootstrap_servers()).unwrap().with_property("linger.ms", "5").unwrap();
    KafkaSink::new(cfg, topic).unwrap().with_key_columns(["id"]).with_delivery(delivery)
}

fn job(name: &str, ckpt: &std::path::Path, restarts: u32) -> JobConfig {
    JobConfig::new(name)
        .with_restart(RestartStrategy::fixed_delay(restarts, Duration::from_millis(20)))
        .with_checkpointing(CheckpointConfig::new(ckpt).with_interval(Duration::from_millis(40)))
}

fn committed_json(kafka: &TestKafka, topic: &str) -> Vec<Value> {
    kafka.read_committed_values(topic).unwrap().iter().map(|v| serde_json::from_str(v).unwrap()).collect()
}

/// Records with the awkward cases of real topics mixed in; returns the good rows' ids.
fn produce_mixed(kafka: &TestKafka, topic: &str, n: i64) -> BTreeSet<i64> {
    let mut records = Vec::new();
    let mut good = BTreeSet::new();
    for i in 0..n {
        let value = match i % 50 {
            // Missing field: null.
            7 => format!(r#"{{"id":{i},"seq":{i}}}"#),
            // Extra field: ignored.
            8 => format!(r#"{{"id":{i},"name":"n{i}","seq":{i},"extra":[1,2]}}"#),
            // Wrong type: bad record.
            9 => format!(r#"{{"id":"not a number {i}","name":"n{i}","seq":{i}}}"#),
            // Broken bytes: bad record.
            10 => format!("{{\"id\":{i},\"name\":\"\u{FFFD}"),
            _ => format!(r#"{{"id":{i},"name":"n{i}","seq":{i}}}"#),
        };
        if !matches!(i % 50, 9 | 10) {
            good.insert(i);
        }
        let mut bytes = value.into_bytes();
        if i % 50 == 10 {
            bytes.extend_from_slice(&[0xff, 0xfe, 0x00]);
        }
        records.push(TestRecord::to_partition((i % 3) as i32, bytes));
    }
    kafka.produce(topic, records).unwrap();
    good
}

async fn sql_pipeline(delivery: Delivery) {
    let kafka = TestKafka::start();
    let input = kafka.topic("sql-in", 3).unwrap();
    let output = kafka.topic("sql-out", 2).unwrap();
    let good = produce_mixed(&kafka, &input, 1500);
    let tmp = tempfile::tempdir().unwrap();
    let dead = tmp.path().join("dead");
    // Fail twice along the way: the restored job must not lose or (exactly once) repeat rows.
    let faults = FaultInjector::new().fail_at("kafka.write", [4, 11]);
    let sql = SqlTransformBuilder::new("select id, upper(name) as name, seq * 10 as seq10 from t1 where id % 2 = 0")
        .with_schema(schema())
        .build()
        .unwrap();
    let p = Pipeline::new();
    let src = p.source("kafka", source(&kafka, &input, BadRecordPolicy::DeadLetter)).parallelism(2);
    src.dead_letters().sink("dead", FileSink::new(&dead, FileFormat::JsonLines));
    src.transform("sql", sql).sink("out", sink(&kafka, &output, delivery).with_faults(faults.clone())).parallelism(2);
    p.run(job("kafka-sql", &tmp.path().join("ck"), 5)).await.unwrap();
    assert_eq!(faults.fired().len(), 2);

    let rows = committed_json(&kafka, &output);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        *counts.entry(id).or_default() += 1;
        let name = if id % 50 == 7 { Value::Null } else { json!(format!("N{id}")) };
        assert_eq!(r, &json!({"id": id, "name": name, "seq10": id * 10}));
    }
    let expected: BTreeSet<i64> = good.iter().copied().filter(|i| i % 2 == 0).collect();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), expected, "every good row arrives");
    if delivery == Delivery::ExactlyOnce {
        assert!(counts.values().all(|c| *c == 1), "exactly once: no row twice");
    }
    // Keys are the id column's text.
    let consumed = kafka.read(&output, Isolation::ReadCommitted).unwrap();
    assert!(consumed.iter().all(|c| {
        let v: Value = serde_json::from_slice(c.value.as_deref().unwrap()).unwrap();
        c.key.as_deref() == Some(v["id"].to_string().as_bytes())
    }));
    // The bad records are in the dead-letter files with where they came from.
    let letters: Vec<Value> = std::fs::read_dir(&dead)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>()
        })
        .collect();
    let bad: BTreeSet<String> =
        letters.iter().map(|l| format!("{}@{}", l["origin"].as_str().unwrap(), l["offset"])).collect();
    assert_eq!(bad.len(), 60, "30 wrong types and 30 broken records: {letters:?}");
    assert!(bad.iter().all(|b| b.starts_with(&format!("{input}/"))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sql_kafka_at_least_once() {
    sql_pipeline(Delivery::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sql_kafka_exactly_once() {
    sql_pipeline(Delivery::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_fail_the_job_naming_the_record_when_so_configured() {
    let kafka = TestKafka::start();
    let input = kafka.topic("fail-in", 1).unwrap();
    let output = kafka.topic("fail-out", 1).unwrap();
    kafka
        .produce(
            &input,
            [TestRecord::to_partition(0, &br#"{"id":1}"#[..]), TestRecord::to_partition(0, &b"{broken"[..])],
        )
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    p.source("kafka", source(&kafka, &input, BadRecordPolicy::Fail))
        .sink("out", sink(&kafka, &output, Delivery::ExactlyOnce));
    let err = p.run(job("kafka-fail", tmp.path(), 0)).await.unwrap_err().to_string();
    assert!(err.contains(&format!("{input}/0@1")), "{err}");
    assert!(committed_json(&kafka, &output).is_empty(), "nothing of the failed transaction is visible");
}

/// Keys repeat across the input; the first occurrence (by partition order) of each key
/// is expected. Every key stays in one partition, so "first" is well defined.
fn produce_with_duplicates(kafka: &TestKafka, topic: &str, keys: i64, copies: i64) -> BTreeMap<(i64, String), i64> {
    let mut records = Vec::new();
    let mut first = BTreeMap::new();
    for round in 0..copies {
        for k in 0..keys {
            let seq = round * keys + k;
            let name = format!("k{}", k % 7);
            records
                .push(TestRecord::to_partition((k % 3) as i32, format!(r#"{{"id":{k},"name":"{name}","seq":{seq}}}"#)));
            first.entry((k, name)).or_insert(seq);
        }
    }
    kafka.produce(topic, records).unwrap();
    first
}

async fn dedup_pipeline(delivery: Delivery) {
    let kafka = TestKafka::start();
    let input = kafka.topic("dedup-in", 3).unwrap();
    let output = kafka.topic("dedup-out", 3).unwrap();
    let expected = produce_with_duplicates(&kafka, &input, 2000, 3);
    let tmp = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new().fail_at("map", [6, 15]).fail_at("kafka.commit", [3]);
    let f2 = faults.clone();
    let p = Pipeline::new();
    p.source("kafka", source(&kafka, &input, BadRecordPolicy::Fail))
        .parallelism(2)
        .dedup("dedup", ["id", "name"], Duration::from_secs(3600))
        .parallelism(2)
        .transform("fail", MapTransform::new(move |b| f2.check("map").map(|()| Some(b))))
        .sink("out", sink(&kafka, &output, delivery).with_faults(faults.clone()));
    p.run(job("kafka-dedup", tmp.path(), 6)).await.unwrap();
    let fired = faults.fired();
    assert!(fired.iter().filter(|(p, _)| p == "map").count() == 2, "{fired:?}");

    let rows = committed_json(&kafka, &output);
    let mut got: BTreeMap<(i64, String), Vec<i64>> = BTreeMap::new();
    for r in rows {
        got.entry((r["id"].as_i64().unwrap(), r["name"].as_str().unwrap().to_string()))
            .or_default()
            .push(r["seq"].as_i64().unwrap());
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "every key arrives");
    for (key, seqs) in &got {
        assert!(seqs.iter().all(|s| *s == expected[key]), "{key:?}: only the first occurrence, got {seqs:?}");
        if delivery == Delivery::ExactlyOnce {
            assert_eq!(seqs.len(), 1, "{key:?} exactly once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dedup_kafka_at_least_once() {
    dedup_pipeline(Delivery::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dedup_kafka_exactly_once_survives_failures_also_between_complete_and_commit() {
    dedup_pipeline(Delivery::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_survives_broker_errors_on_produce() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    // Errors on chosen requests are what a real broker cannot be made to answer: this one
    // test runs on librdkafka's mock cluster.
    let kafka = TestKafka::mock();
    let input = kafka.topic("alo-in", 3).unwrap();
    let output = kafka.topic("alo-out", 2).unwrap();
    let first = produce_with_duplicates(&kafka, &input, 500, 1);
    // Retriable errors: librdkafka retries, the idempotent producer keeps the log free of
    // duplicates.
    kafka.mock_cluster().unwrap().request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    p.source("kafka", source(&kafka, &input, BadRecordPolicy::Fail))
        .sink("out", sink(&kafka, &output, Delivery::AtLeastOnce));
    p.run(job("kafka-alo", tmp.path(), 0)).await.unwrap();
    let rows = committed_json(&kafka, &output);
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), first.len());
    assert_eq!(rows.len(), first.len(), "no duplicates from the retries");
}

/// Passes batches until `close_after` have passed, then holds every further batch (and
/// the barriers behind it) until `open` is set: a job that stalls, as a zombie does in a
/// long GC pause or a network partition.
#[derive(Clone)]
struct Gate {
    open: Arc<std::sync::atomic::AtomicBool>,
    passed: Arc<std::sync::atomic::AtomicUsize>,
    close_after: usize,
}

#[async_trait::async_trait]
impl operators_core::operator::Transform for Gate {
    async fn process_batch(
        &mut self,
        batch: arrow::record_batch::RecordBatch,
        ctx: &mut operators_core::operator::OperatorContext,
    ) -> operators_core::Result<()> {
        use std::sync::atomic::Ordering;
        if self.passed.fetch_add(1, Ordering::SeqCst) >= self.close_after {
            while !self.open.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        ctx.emit(batch);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_job_is_fenced_by_a_newer_one_with_the_same_transactional_ids() {
    use std::sync::atomic::Ordering;

    use operators_core::builtins::GeneratorSource;
    // The older job stalls; a newer job with the same transactional-id prefix starts and
    // fences the transactions the older one holds open (InitProducerId: a newer epoch).
    // When the older job resumes, its producer is fenced and the job fails; nothing of
    // its fenced transactions becomes visible.
    let kafka = TestKafka::start();
    let output = kafka.topic("fenced-out", 1).unwrap();
    let prefix = format!("fence-{:08x}", rand::random::<u32>());
    let sink_for = |kafka: &TestKafka| sink(kafka, &output, Delivery::ExactlyOnce).with_transactional_prefix(&prefix);
    let tmp = tempfile::tempdir().unwrap();

    let gate = Gate { open: Arc::default(), passed: Arc::default(), close_after: 40 };
    let old = Pipeline::new();
    old.source("gen", GeneratorSource::bounded(100_000).with_batch_size(20).with_splits(1).with_rate_limit(1000))
        .transform("gate", operators_core::operator::cloned(gate.clone()))
        .sink("out", sink_for(&kafka));
    let old_job = old
        .start(JobConfig::new("fenced-old").with_restart(RestartStrategy::None).with_checkpointing(
            CheckpointConfig::new(tmp.path().join("old")).with_interval(Duration::from_millis(100)),
        ))
        .unwrap();
    while gate.passed.load(Ordering::SeqCst) <= gate.close_after {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stalled: its last checkpoints complete and commit, its open transaction stays open.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The newer job, same prefix, without a checkpoint: it fences what it finds open.
    let new = Pipeline::new();
    new.source("gen", GeneratorSource::bounded(500).with_batch_size(50))
        .transform(
            "offset",
            MapTransform::new(|b| {
                let ids = arrow::compute::kernels::numeric::add(
                    b.column(0),
                    &arrow::array::Int64Array::new_scalar(10_000_000),
                )
                .unwrap();
                let mut cols = b.columns().to_vec();
                cols[0] = ids;
                Ok(Some(arrow::record_batch::RecordBatch::try_new(b.schema(), cols).unwrap()))
            }),
        )
        .sink("out", sink_for(&kafka));
    new.run(job("fenced-new", &tmp.path().join("new"), 0)).await.unwrap();

    gate.open.store(true, Ordering::SeqCst);
    let err = tokio::time::timeout(Duration::from_secs(60), old_job.wait())
        .await
        .expect("the fenced job stops")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fenced"), "{err}");

    let rows = committed_json(&kafka, &output);
    let mut seen = BTreeSet::new();
    for r in &rows {
        assert!(seen.insert(r["id"].as_i64().unwrap()), "{r} committed twice");
    }
    let newer: Vec<i64> = seen.iter().copied().filter(|id| *id >= 10_000_000).collect();
    assert_eq!(newer, (10_000_000..10_000_500).collect::<Vec<_>>(), "the newer job's rows, exactly once");
    let older: Vec<i64> = seen.iter().copied().filter(|id| *id < 10_000_000).collect();
    assert!(!older.is_empty(), "the older job committed before it stalled");
    // What the older job committed is a prefix of its input, all of it from before the
    // stall: a fenced transaction shows nothing.
    assert_eq!(older, (0..older.len() as i64).collect::<Vec<_>>());
    assert!(older.len() <= 20 * (gate.close_after + 1), "{} rows", older.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_restarts_while_the_next_producer_is_initialising() {
    use operators_core::builtins::GeneratorSource;
    // Every restart leaves the failed attempt's next producer initialising (librdkafka's
    // InitProducerId takes 50-500 ms). Its request must not land on a transaction the
    // restarted attempt writes into: many quick restarts, checked row for row.
    let kafka = TestKafka::start();
    let output = kafka.topic("eo-restarts", 2).unwrap();
    let faults = FaultInjector::new().fail_at("kafka.write", (1..=12).map(|i| i * 4));
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(6_000).with_batch_size(50).with_rate_limit(4_000))
        .sink("out", sink(&kafka, &output, Delivery::ExactlyOnce).with_faults(faults.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let config = JobConfig::new(format!("eo-restarts-{:08x}", rand::random::<u32>()))
        .with_restart(RestartStrategy::fixed_delay(20, Duration::from_millis(10)))
        .with_checkpointing(CheckpointConfig::new(tmp.path()).with_interval(Duration::from_millis(30)));
    p.run(config).await.unwrap();
    assert_eq!(faults.fired().len(), 12);
    let mut ids: Vec<i64> = committed_json(&kafka, &output).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..6_000).collect::<Vec<_>>(), "every row exactly once");
}
