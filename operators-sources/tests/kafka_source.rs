//! The Kafka source against the real Kafka in `KAFKA_BROKERS`
//! (`testing/services/kafka.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use operators_core::builtins::{CommittedOutput, FaultInjector, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::BadRecordPolicy;
use operators_core::restart::RestartStrategy;
use operators_core::{Error, JobConfig, Pipeline};
use operators_sources::kafka::{KafkaConfig, KafkaSource, StartOffsets};
use operators_testkit::kafka::{TestKafka, TestRecord};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use support::table;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

fn rows(from: i64, to: i64) -> Vec<String> {
    (from..to).map(|i| format!(r#"{{"id":{i},"name":"n{i}","ts":"2024-01-01 00:00:{:02}"}}"#, i % 60)).collect()
}

fn source(kafka: &TestKafka, topic: &str) -> KafkaSource {
    let cfg = KafkaConfig::new("source.kafka", kafka.bootstrap_servers()).unwrap();
    KafkaSource::new(cfg, [topic], schema()).with_batch_size(64).unwrap()
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column_by_name("id").unwrap().as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(-1)))
        .collect();
    out.sort_unstable();
    out
}

async fn run_bounded(
    source: KafkaSource,
    parallelism: usize,
    ckpt: &std::path::Path,
) -> Result<CommittedOutput, Error> {
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("kafka", source.bounded(true)).parallelism(parallelism).sink("out", TwoPhaseMemorySink::new(out.clone()));
    p.run(
        JobConfig::new("kafka-source")
            .with_restart(RestartStrategy::None)
            .with_checkpointing(CheckpointConfig::new(ckpt).with_interval(Duration::from_millis(50))),
    )
    .await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_record_of_every_partition_once() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-all", 5).unwrap();
    kafka.produce_values(&topic, 5, &rows(0, 2000)).unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    // Three subtasks share five partitions.
    let out = run_bounded(source(&kafka, &topic), 3, ckpt.path()).await.unwrap();
    assert_eq!(ids(&out.batches()), (0..2000).collect::<Vec<_>>());
    let t = table(&out.batches());
    let first = t.iter().find(|r| r[0] == "7").unwrap();
    assert_eq!(first, &["7", "n7", "2024-01-01T00:00:07"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_job_resumes_at_the_checkpointed_offsets() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-resume", 3).unwrap();
    kafka.produce_values(&topic, 3, &rows(0, 3000)).unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let out = CommittedOutput::default();
    // The sink fails three times; each restart restores offsets from the last checkpoint.
    let faults = FaultInjector::new().fail_at("sink.write", [5, 17, 30]);
    let p = Pipeline::new();
    p.source("kafka", source(&kafka, &topic).with_group_id("resume-group").bounded(true))
        .parallelism(2)
        .sink("out", TwoPhaseMemorySink::new(out.clone()).with_faults(faults.clone()));
    p.run(
        JobConfig::new("kafka-resume")
            .with_restart(RestartStrategy::fixed_delay(5, Duration::from_millis(10)))
            .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(30))),
    )
    .await
    .unwrap();
    assert_eq!(faults.fired().len(), 3, "every injected failure happened");
    assert_eq!(ids(&out.batches()), (0..3000).collect::<Vec<_>>(), "every record exactly once");
    // Offsets reached the group when checkpoints completed.
    let committed = kafka.committed_offsets("resume-group", &topic).unwrap();
    assert_eq!(committed.values().sum::<i64>(), 3000, "{committed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_job_starts_at_the_group_offsets_else_by_auto_offset_reset() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-group", 2).unwrap();
    kafka.produce_values(&topic, 2, &rows(0, 100)).unwrap();
    let c1 = tempfile::tempdir().unwrap();
    let out = run_bounded(source(&kafka, &topic).with_group_id("g1"), 1, c1.path()).await.unwrap();
    assert_eq!(out.num_rows(), 100);

    kafka.produce_values(&topic, 2, &rows(100, 150)).unwrap();
    // A new job (no checkpoint) of the same group continues where the group stopped.
    let c2 = tempfile::tempdir().unwrap();
    let out = run_bounded(source(&kafka, &topic).with_group_id("g1"), 1, c2.path()).await.unwrap();
    assert_eq!(ids(&out.batches()), (100..150).collect::<Vec<_>>());

    // Another group without offsets: earliest reads everything, latest nothing.
    let c3 = tempfile::tempdir().unwrap();
    let out = run_bounded(source(&kafka, &topic).with_group_id("g2"), 1, c3.path()).await.unwrap();
    assert_eq!(out.num_rows(), 150);
    let c4 = tempfile::tempdir().unwrap();
    let latest = source(&kafka, &topic).with_group_id("g3").with_start(StartOffsets::Latest);
    assert_eq!(run_bounded(latest, 1, c4.path()).await.unwrap().num_rows(), 0);
    // none refuses to guess.
    let c5 = tempfile::tempdir().unwrap();
    let none = source(&kafka, &topic).with_group_id("g4").with_start(StartOffsets::None);
    let err = run_bounded(none, 1, c5.path()).await.unwrap_err().to_string();
    assert!(err.contains("auto.offset.reset") && err.contains("no committed offset"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_goes_to_dead_letters_with_its_partition_and_offset() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-bad", 1).unwrap();
    let values = [
        r#"{"id":1,"name":"ok"}"#,                      // ts missing: null
        r#"{"id":2,"name":"extra","unknown":[1,2,3]}"#, // extra field: ignored
        r#"{"id":"three","name":"wrong type"}"#,        // bad: id is not a number
        "{\"id\":4,\"name\":\"bro",                     // bad: truncated
        "\u{1}\u{2}not json",                           // bad: garbage bytes
        r#"{"id":6,"name":null,"ts":1700000000000}"#,   // epoch millis
    ];
    kafka.produce_values(&topic, 1, &values).unwrap();
    let out = CommittedOutput::default();
    let dead = CommittedOutput::default();
    let p = Pipeline::new();
    let s = p.source("kafka", source(&kafka, &topic).with_bad_records(BadRecordPolicy::DeadLetter).bounded(true));
    s.dead_letters().sink("dead", TwoPhaseMemorySink::new(dead.clone()));
    s.sink("out", TwoPhaseMemorySink::new(out.clone()));
    let ckpt = tempfile::tempdir().unwrap();
    p.run(
        JobConfig::new("kafka-bad")
            .with_restart(RestartStrategy::None)
            .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(50))),
    )
    .await
    .unwrap();
    assert_eq!(
        table(&out.batches()),
        vec![vec!["1", "ok", "NULL"], vec!["2", "extra", "NULL"], vec!["6", "NULL", "2023-11-14T22:13:20"],]
    );
    let letters = table(&dead.batches());
    let origin = format!("{topic}/0");
    let got: Vec<(String, String)> = letters.iter().map(|r| (r[2].clone(), r[4].clone())).collect();
    assert_eq!(got, vec![(origin.clone(), "2".into()), (origin.clone(), "3".into()), (origin, "4".into())]);
    assert!(letters.iter().all(|r| r[5].starts_with("bad JSON record")), "{letters:?}");
    assert_eq!(letters[2][6], "\u{1}\u{2}not json", "the record is kept as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_fails_the_job_by_default_naming_the_record() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-fail", 1).unwrap();
    kafka.produce_values(&topic, 1, &[r#"{"id":1}"#, r#"{"id":"x"}"#]).unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let err = run_bounded(source(&kafka, &topic), 1, ckpt.path()).await.unwrap_err().to_string();
    assert!(err.contains(&format!("{topic}/0@1")) && err.contains("failed to parse \"x\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_before_reading() {
    let kafka = TestKafka::start();
    let ckpt = tempfile::tempdir().unwrap();
    let missing = format!("no-such-topic-{:08x}", rand_suffix());
    let err = run_bounded(source(&kafka, &missing), 1, ckpt.path()).await.unwrap_err().to_string();
    assert!(err.contains("source.kafka.topic") && err.contains(&missing), "{err}");

    let cfg = KafkaConfig::new("source.kafka", kafka.bootstrap_servers())
        .unwrap()
        .with_property("auto.offset.reset", "yesterday")
        .unwrap();
    let err = run_bounded(KafkaSource::new(cfg, ["t"], schema()), 1, ckpt.path()).await.unwrap_err().to_string();
    assert!(err.contains("auto.offset.reset") && err.contains("yesterday"), "{err}");

    let cfg = KafkaConfig::new("source.kafka", kafka.bootstrap_servers())
        .unwrap()
        .with_property("fetch.wait.max.ms.typo", "5")
        .unwrap();
    let err = run_bounded(KafkaSource::new(cfg, ["t"], schema()), 1, ckpt.path()).await.unwrap_err().to_string();
    assert!(err.contains("source.kafka.fetch.wait.max.ms.typo"), "{err}");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_source_picks_up_new_records_and_new_partitions() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-live", 1).unwrap();
    kafka.produce_values(&topic, 1, &rows(0, 50)).unwrap();
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("kafka", source(&kafka, &topic).with_partition_discovery(Some(Duration::from_millis(200))))
        .sink("out", TwoPhaseMemorySink::new(out.clone()));
    let ckpt = tempfile::tempdir().unwrap();
    let job = p
        .start(
            JobConfig::new("kafka-live")
                .with_restart(RestartStrategy::None)
                .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(50))),
        )
        .unwrap();
    let wait_for = |n: usize| {
        let out = out.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                while out.num_rows() < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{} of {n} rows arrived", out.num_rows()));
        }
    };
    wait_for(50).await;
    // The helpers block: keep them off the job's async threads.
    tokio::task::block_in_place(|| kafka.produce_values(&topic, 1, &rows(50, 80))).unwrap();
    wait_for(80).await;
    tokio::task::block_in_place(|| {
        kafka.add_partitions(&topic, 3)?;
        kafka.produce(
            &topic,
            rows(80, 100)
                .into_iter()
                .enumerate()
                .map(|(i, v)| TestRecord::to_partition(1 + (i as i32 % 2), v.into_bytes())),
        )
    })
    .unwrap();
    wait_for(100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    job.cancel();
    let _ = job.wait().await;
    let got: BTreeSet<i64> = ids(&out.batches()).into_iter().collect();
    assert_eq!(got.len(), 100);
    assert_eq!(out.num_rows(), 100, "no duplicates");
}

/// Writes `transactions` (ids, commit?) to `topic` with a transactional producer,
/// alternating over two partitions.
async fn produce_in_transactions(kafka: &TestKafka, topic: &str, id: &str, transactions: Vec<(Range<i64>, bool)>) {
    let bootstrap = kafka.bootstrap_servers().to_string();
    let (topic, id) = (topic.to_string(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("transactional.id", &id).create().unwrap();
        let timeout = Duration::from_secs(30);
        producer.init_transactions(timeout).unwrap();
        for (range, commit) in transactions {
            producer.begin_transaction().unwrap();
            for (i, value) in rows(range.start, range.end).iter().enumerate() {
                producer.send(BaseRecord::<(), _>::to(&topic).payload(value).partition(i as i32 % 2)).unwrap();
            }
            if commit {
                producer.commit_transaction(timeout).unwrap();
            } else {
                producer.abort_transaction(timeout).unwrap();
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reading_of_a_transactional_topic_ends_after_the_last_commit_marker() {
    // The last offset of each partition is a commit marker, which a consumer never sees:
    // reading must still end, and skip the aborted records.
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-txn", 2).unwrap();
    produce_in_transactions(
        &kafka,
        &topic,
        "src-txn-writer",
        vec![(0..300, true), (300..400, false), (400..700, true)],
    )
    .await;
    let ckpt = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), run_bounded(source(&kafka, &topic), 1, ckpt.path()))
        .await
        .expect("bounded reading ended")
        .unwrap();
    let expected: Vec<i64> = (0..300).chain(400..700).collect();
    assert_eq!(ids(&out.batches()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reading_of_several_topics_reads_each_to_its_own_end() {
    // librdkafka reports "end of partition" by partition number only. A short
    // transactional topic ends with commit markers, so only that report ends it; it must
    // not end the same partition number of a longer topic still being read.
    let kafka = TestKafka::start();
    let short = kafka.topic("src-short", 2).unwrap();
    let long = kafka.topic("src-long", 2).unwrap();
    produce_in_transactions(&kafka, &short, "src-short-writer", vec![(10_000..10_004, true)]).await;
    kafka.produce_values(&long, 2, &rows(0, 4000)).unwrap();
    // Small fetches, so that the long topic is still being read when the short one ends.
    let cfg = KafkaConfig::new("source.kafka", kafka.bootstrap_servers())
        .unwrap()
        .with_property("max.partition.fetch.bytes", "2048")
        .unwrap();
    let source = KafkaSource::new(cfg, [short.as_str(), long.as_str()], schema()).with_batch_size(16).unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let out = run_bounded(source, 1, ckpt.path()).await.unwrap();
    let mut expected: Vec<i64> = (0..4000).collect();
    expected.extend(10_000..10_004);
    assert_eq!(ids(&out.batches()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_rebalances_do_not_disturb_the_source() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    // The source assigns its partitions itself and is no member of its group. Another
    // consumer of the same group joining and leaving (two rebalances on the broker) must
    // neither take partitions from the job nor make it read a record twice; the group's
    // offsets reach the end once the member has left.
    let kafka = TestKafka::start();
    let topic = kafka.topic("src-rebalance", 3).unwrap();
    let group = format!("rebalance-{:08x}", rand_suffix());
    kafka.produce_values(&topic, 3, &rows(0, 600)).unwrap();
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("kafka", source(&kafka, &topic).with_group_id(&group))
        .parallelism(2)
        .sink("out", TwoPhaseMemorySink::new(out.clone()));
    let ckpt = tempfile::tempdir().unwrap();
    let job = p
        .start(
            JobConfig::new("kafka-rebalance")
                .with_restart(RestartStrategy::None)
                .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(100))),
        )
        .unwrap();

    let (bootstrap, t, g) = (kafka.bootstrap_servers().to_string(), topic.clone(), group.clone());
    let member = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &g)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        c.subscribe(&[&t]).unwrap();
        // Poll until the group gave this member every partition, then a while longer.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.assignment().map(|a| a.count()).unwrap_or(0) < 3 {
            assert!(std::time::Instant::now() < deadline, "the member got no assignment");
            let _ = c.poll(Duration::from_millis(100));
        }
        for _ in 0..20 {
            let _ = c.poll(Duration::from_millis(100));
        }
        c.unsubscribe();
        drop(c); // leaves the group: a second rebalance
    });
    member.await.unwrap();
    tokio::task::block_in_place(|| kafka.produce_values(&topic, 3, &rows(600, 900))).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed = tokio::task::block_in_place(|| kafka.committed_offsets(&group, &topic)).unwrap();
        if out.num_rows() >= 900 && committed.values().sum::<i64>() == 900 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rows {} of 900, group offsets {committed:?}", out.num_rows());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    job.cancel();
    let _ = job.wait().await;
    assert_eq!(ids(&out.batches()), (0..900).collect::<Vec<_>>(), "every record once, none twice");
}
