//! Broker failures on the real three-node Kafka cluster (`KAFKA_CLUSTER_BROKERS`,
//! replication factor 3, min ISR 2): a node is SIGKILLed while an exactly-once job runs
//! and started again later. The job goes on, or fails and restarts from its checkpoint;
//! either way a `read_committed` consumer sees every row exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use operators_core::builtins::RateLimitTransform;
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::BadRecordPolicy;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::kafka::{Delivery, KafkaSink};
use operators_sources::kafka::{KafkaConfig, KafkaSource};
use operators_testkit::kafka::{TestKafka, TestRecord};
use support::kill::{concat_args, csv_input_args, kafka_sink_args};
use support::{spawn_logged, write_csv_input};

/// The tests of this file take turns: two nodes down at once would leave the cluster
/// without a controller quorum and below the min ISR.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cluster_turn() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills the node leading `topic`/0 after `after`, starts it again `down` later; returns
/// the node killed. Blocking.
fn kill_leader_for_a_while(kafka: &TestKafka, topic: &str, after: Duration, down: Duration) -> i32 {
    std::thread::sleep(after);
    let node = kafka.leader(topic, 0).unwrap();
    eprintln!("SIGKILL Kafka node {node} (leader of {topic}/0)");
    kafka.kill_node(node).unwrap();
    std::thread::sleep(down);
    eprintln!("starting Kafka node {node} again");
    kafka.start_node(node).unwrap();
    node
}

/// Values of `topic` as JSON objects keyed by `id`; panics on an id committed twice.
fn committed_by_id(kafka: &TestKafka, topic: &str) -> BTreeMap<i64, serde_json::Value> {
    let mut out = BTreeMap::new();
    for v in kafka.read_committed_values(topic).unwrap() {
        let r: serde_json::Value = serde_json::from_str(&v).unwrap();
        let id = r["id"].as_i64().unwrap();
        if let Some(prev) = out.insert(id, r.clone()) {
            panic!("id {id} committed twice: {prev} and {r}");
        }
    }
    out
}

#[test]
fn csv_to_kafka_exactly_once_survives_a_broker_killed_and_restarted() {
    let _turn = cluster_turn();
    let kafka = TestKafka::cluster();
    let output = kafka.topic("broker-kill-csv", 3).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let expected = write_csv_input(&input, 40, 1000, false);
    let ck = tmp.path().join("ck");
    let args = concat_args(&[
        &["--job.name", "broker-kill-csv"],
        &csv_input_args(input.to_str().unwrap(), "0"),
        &["--source.batch.size", "250", "--stream.rate.limit", "2500"],
        &kafka_sink_args(kafka.bootstrap_servers(), &output),
        &[
            "--stream.checkpoint.mode",
            "EXACTLY_ONCE",
            "--stream.checkpoint.interval",
            "200",
            "--stream.checkpoint.dir",
            ck.to_str().unwrap(),
            "--job.retry.strategy",
            "fixed-delay",
            "--job.retry.maxNumberRestartAttempts",
            "20",
            "--job.retry.backoffTimeMS",
            "500",
            "--progress",
            "off",
        ],
    ]);
    let child = spawn_logged(tmp.path(), &args, &tmp.path().join("run.log"));
    kill_leader_for_a_while(&kafka, &output, Duration::from_secs(4), Duration::from_secs(6));
    let done = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(tmp.path().join("run.log")).unwrap_or_default();
    assert!(done.status.success(), "the job failed:\n{log}");
    let restarts = log.lines().filter(|l| l.contains("job failed; restarting")).count();
    let failed_checkpoints = log.lines().filter(|l| l.contains("checkpoint failed")).count();
    eprintln!("the job restarted {restarts} times; {failed_checkpoints} checkpoints failed");
    let got = committed_by_id(&kafka, &output);
    assert_eq!(got.len(), expected.len(), "every row committed");
    for (id, (name, score)) in &expected {
        let r = &got[id];
        assert_eq!((r["name"].as_str().unwrap(), r["score"].as_f64().unwrap()), (name.as_str(), *score), "id {id}");
    }
}

#[test]
fn kafka_dedup_kafka_exactly_once_survives_a_broker_killed_and_restarted() {
    let _turn = cluster_turn();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(dedup_with_a_broker_killed());
}

async fn dedup_with_a_broker_killed() {
    let kafka = TestKafka::cluster();
    let input = kafka.topic("broker-kill-in", 3).unwrap();
    let output = kafka.topic("broker-kill-out", 3).unwrap();
    let (keys, copies) = (4000i64, 3i64);
    let mut first = BTreeMap::new();
    let mut records = Vec::new();
    for round in 0..copies {
        for k in 0..keys {
            let seq = round * keys + k;
            records.push(TestRecord::to_partition((k % 3) as i32, format!(r#"{{"id":{k},"seq":{seq}}}"#)));
            first.entry(k).or_insert(seq);
        }
    }
    kafka.produce(&input, records).unwrap();

    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("seq", DataType::Int64, true)]));
    let source_cfg = KafkaConfig::new("source.kafka", kafka.bootstrap_servers()).unwrap();
    let source = KafkaSource::new(source_cfg, [input.as_str()], schema)
        .with_batch_size(200)
        .unwrap()
        .with_bad_records(BadRecordPolicy::Fail)
        .bounded(true);
    let sink_cfg =
        KafkaConfig::new("sink.kafka", kafka.bootstrap_servers()).unwrap().with_property("linger.ms", "5").unwrap();
    let sink = KafkaSink::new(sink_cfg, &output).unwrap().with_key_columns(["id"]).with_delivery(Delivery::ExactlyOnce);
    let tmp = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    p.source("kafka", source)
        .transform("slow", RateLimitTransform::new(1000).unwrap())
        .dedup("dedup", ["id"], Duration::from_secs(3600))
        .sink("out", sink);
    let config = JobConfig::new("broker-kill-dedup")
        .with_restart(RestartStrategy::fixed_delay(20, Duration::from_millis(500)))
        .with_checkpointing(CheckpointConfig::new(tmp.path()).with_interval(Duration::from_millis(200)));

    let killer = {
        let output = output.clone();
        // (TestKafka is not Send: the killer thread has a handle of its own.)
        tokio::task::spawn_blocking(move || {
            kill_leader_for_a_while(&TestKafka::cluster(), &output, Duration::from_secs(3), Duration::from_secs(6))
        })
    };
    let result = p.run(config).await;
    killer.await.unwrap();
    result.unwrap();

    let got = tokio::task::block_in_place(|| committed_by_id(&kafka, &output));
    assert_eq!(got.len() as i64, keys, "every key once");
    for (k, seq) in &first {
        assert_eq!(got[k]["seq"].as_i64(), Some(*seq), "key {k}: its first occurrence");
    }
}
