//! Kill test: the runner reads a CSV directory into a Kafka topic in EXACTLY_ONCE mode,
//! against the real Kafka in `KAFKA_BROKERS`, and is SIGKILLed at random moments, at
//! least 20 times, each time restarted from its checkpoints. A `read_committed` reader
//! must never see a row twice, and in the end sees every input row exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use operators_testkit::kafka::TestKafka;
use rand::{Rng, SeedableRng};
use support::{kill_after, operator, spawn_logged, write_csv_input};

const KILLS: usize = 22;

/// id → (name, score) of every committed row; panics on an id committed twice.
fn committed(kafka: &TestKafka, topic: &str) -> BTreeMap<i64, (String, f64)> {
    let mut out = BTreeMap::new();
    for v in kafka.read_committed_values(topic).unwrap() {
        let r: serde_json::Value = serde_json::from_str(&v).unwrap();
        let id = r["id"].as_i64().unwrap();
        let row = (r["name"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap());
        if out.insert(id, row).is_some() {
            panic!("id {id} committed twice");
        }
    }
    out
}

#[test]
fn sigkill_at_random_moments_commits_every_row_exactly_once() {
    let kafka = TestKafka::start();
    let output = kafka.topic("kill-csv-out", 3).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let ck = tmp.path().join("ck");
    let expected = write_csv_input(&input, 80, 1000, false);
    let total = expected.len();
    let seed: u64 = rand::random();
    eprintln!("kill test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let args = [
        "--job.name",
        "kill-csv-kafka",
        "--source.type",
        "csv",
        "--source.path",
        input.to_str().unwrap(),
        "--source.watch.type",
        "PROCESS_ONCE",
        "--source.watch.settle",
        "0",
        "--stream.sql.schema.json",
        r#"{"id":"BigInt","name":"String","score":"Double"}"#,
        "--source.batch.size",
        "250",
        // About 1 900 rows a run at this rate (the transactional producer's start-up
        // included): 22 kills reached 42 000 of the 80 000 input rows here, about 2 times
        // over (at 2 500/s they reached 53 750).
        "--stream.rate.limit",
        "2000",
        "--sink.kafka.brokers",
        kafka.bootstrap_servers(),
        "--sink.kafka.topic",
        &output,
        "--sink.kafka.linger.ms",
        "5",
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        "150",
        "--stream.checkpoint.min.pause",
        "0",
        "--stream.checkpoint.dir",
        ck.to_str().unwrap(),
        "--job.retry.strategy",
        "none",
        "--progress",
        "off",
    ];
    let mut midway = 0;
    let mut kills = 0;
    while kills < KILLS {
        let log = tmp.path().join(format!("run-{kills}.log"));
        let child = spawn_logged(tmp.path(), &args, &log);
        let delay = Duration::from_millis(rng.random_range(700..2000));
        if let Some(status) = kill_after(child, delay) {
            // Finished before this kill: its checkpoints are gone, so it must not run again.
            assert!(
                status.success(),
                "run {kills} failed on its own:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            break;
        }
        kills += 1;
        let seen = committed(&kafka, &output);
        for (id, row) in &seen {
            assert_eq!(Some(row), expected.get(id), "kill {kills}: id {id} is not the input row");
        }
        if !seen.is_empty() && seen.len() < total {
            midway += 1;
        }
        eprintln!("kill {kills}: after {delay:?}, {} of {total} rows committed", seen.len());
    }
    assert!(kills >= 20, "only {kills} kills before the job finished; slow it down");
    assert!(midway >= kills / 2, "most kills hit a running job with partial output ({midway})");

    if committed(&kafka, &output).len() < total || kills == KILLS {
        let done = operator(tmp.path()).args(args).output().unwrap();
        assert!(done.status.success(), "the last run failed:\n{}", String::from_utf8_lossy(&done.stderr));
    }
    let got = committed(&kafka, &output);
    assert_eq!(got.len(), total, "no row lost");
    assert_eq!(got, expected, "the committed output equals the input row for row");
}
