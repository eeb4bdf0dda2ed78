//! Kill test: the runner deduplicates a Kafka topic into another in EXACTLY_ONCE mode
//! and is SIGKILLed at random moments, at least 20 times, each time restarted from its
//! checkpoints, against the real Kafka in `KAFKA_BROKERS`, which outlives every run. A
//! `read_committed` reader must never see a key twice, and in the end sees exactly the
//! first occurrence of every key of the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use operators_testkit::kafka::{TestKafka, TestRecord};
use support::kill::{Ends, KillLoop, Kills, LastRun, concat_args, kafka_sink_args, restartable_args, seeded_rng};
use support::operator;

const KILLS: usize = 22;
const KEYS: i64 = 3000;
const COPIES: i64 = 5;

type Key = (i64, String);

/// `(id, name) -> seq` of every committed output row; panics on a key seen twice.
fn committed(kafka: &TestKafka, topic: &str) -> BTreeMap<Key, i64> {
    let mut out = BTreeMap::new();
    for v in kafka.read_committed_values(topic).unwrap() {
        let r: serde_json::Value = serde_json::from_str(&v).unwrap();
        let key = (r["id"].as_i64().unwrap(), r["name"].as_str().unwrap().to_string());
        let seq = r["seq"].as_i64().unwrap();
        if let Some(prev) = out.insert(key.clone(), seq) {
            panic!("{key:?} committed twice (seq {prev} and {seq})");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_keeps_the_first_occurrence_of_each_key_exactly_once() {
    let kafka = TestKafka::start();
    let input = kafka.topic("kill-in", 3).unwrap();
    let output = kafka.topic("kill-out", 2).unwrap();
    let mut expected: BTreeMap<Key, i64> = BTreeMap::new();
    let mut records = Vec::new();
    for round in 0..COPIES {
        for k in 0..KEYS {
            let seq = round * KEYS + k;
            let name = format!("n{}", k % 5);
            // Every key in one partition, so its first occurrence is well defined.
            records
                .push(TestRecord::to_partition((k % 3) as i32, format!(r#"{{"id":{k},"name":"{name}","seq":{seq}}}"#)));
            expected.entry((k, name)).or_insert(seq);
        }
    }
    kafka.produce(&input, records).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let mut rng = seeded_rng(None);
    let args = concat_args(&[
        &[
            "--job.name",
            "kill-kafka",
            "--source.type",
            "kafka_deduplication",
            "--source.kafka.brokers",
            kafka.bootstrap_servers(),
            "--source.kafka.topic",
            &input,
            "--group.id",
            "kill-kafka",
            "--unique.keys",
            "id,name",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","name":"String","seq":"BigInt"}"#,
            "--source.batch.size",
            "200",
            "--stream.rate.limit",
            "400",
        ],
        &kafka_sink_args(kafka.bootstrap_servers(), &output),
        &restartable_args(Some("EXACTLY_ONCE"), "100", ck.to_str().unwrap()),
    ]);
    let kill_loop =
        KillLoop { cwd: tmp.path(), args: &args, delays_ms: 1000..3000, kills: KILLS, ends: Ends::MustNotFinish };
    let Kills { midway, .. } = kill_loop
        .run_off_runtime(&mut rng, async |kill: usize, delay: Duration| {
            let seen = committed(&kafka, &output);
            for (key, seq) in &seen {
                assert_eq!(Some(seq), expected.get(key), "kill {kill}: {key:?} is not the first occurrence");
            }
            eprintln!("kill {kill}: after {delay:?}, {} of {} keys committed", seen.len(), expected.len());
            !seen.is_empty() && seen.len() < expected.len()
        })
        .await;
    assert!(
        midway >= KILLS / 2,
        "most kills hit a job with partial output ({midway}); the last run logged:\n{}",
        std::fs::read_to_string(tmp.path().join(format!("run-{KILLS}.log"))).unwrap_or_default()
    );

    // A last run, unkilled, until everything is out (the Kafka source never ends by itself).
    let child = operator(tmp.path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = LastRun::new(child, None, Duration::from_secs(180));
    let got = last
        .wait_for_async(|| committed(&kafka, &output), |seen: &BTreeMap<Key, i64>| seen.len() >= expected.len())
        .await;
    // Let a few more checkpoints commit: nothing may appear twice afterwards either.
    last.stop_after_async(Duration::from_secs(1)).await;
    assert_eq!(got, expected, "the output equals the first occurrence of each input key, row for row");
    assert_eq!(committed(&kafka, &output), expected);
}
