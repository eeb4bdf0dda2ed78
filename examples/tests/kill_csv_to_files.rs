//! Kill test: the runner reads a CSV directory into the file sink in EXACTLY_ONCE mode
//! and is SIGKILLed at random moments, 25 times, each time restarted from its
//! checkpoints. The committed output must equal the input row for row: no duplicates,
//! no gaps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{hidden_files, json_rows, kill_after, operator, spawn_logged, write_csv_input};

const KILLS: usize = 25;

#[test]
fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    let ck = tmp.path().join("ck");
    let expected = write_csv_input(&input, 150, 4000, false);
    let total = expected.len();
    let seed: u64 = rand::random();
    eprintln!("kill test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let args = [
        "--job.name",
        "kill-csv",
        "--source.type",
        "csv",
        "--source.path",
        input.to_str().unwrap(),
        "--source.watch.type",
        "PROCESS_ONCE",
        "--source.watch.settle",
        "20",
        "--stream.sql.schema.json",
        r#"{"id":"BigInt","name":"String","score":"Double"}"#,
        "--stream.parallelism",
        "2",
        "--stream.sink.parallelism",
        "2",
        // About 11 000 rows a run at this rate: 25 kills reached 268 000 of the 600 000
        // input rows here, so the input outlasts them about 2 times over (at 40 000/s
        // they reached 510 000, too close to running out before the 20 kills required).
        "--stream.rate.limit",
        "25000",
        "--source.batch.size",
        "1000",
        "--sink.type",
        "file",
        "--sink.path",
        out.to_str().unwrap(),
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        "100",
        "--stream.checkpoint.min.pause",
        "0",
        "--stream.checkpoint.dir",
        ck.to_str().unwrap(),
        "--job.retry.strategy",
        "none",
        "--progress",
        "off",
    ];
    let mut interrupted_midway = 0;
    let mut kills = 0;
    while kills < KILLS {
        let child = spawn_logged(tmp.path(), &args, &tmp.path().join(format!("run-{kills}.log")));
        let delay = Duration::from_millis(rng.random_range(200..1000));
        if let Some(status) = kill_after(child, delay) {
            // The job finished before this kill; a finished job's checkpoints are gone,
            // so launching it again would import everything again.
            assert!(
                status.success(),
                "run {kills} failed on its own:\n{}",
                std::fs::read_to_string(tmp.path().join(format!("run-{kills}.log"))).unwrap_or_default()
            );
            break;
        }
        kills += 1;
        let committed = json_rows(&out).len();
        if committed > 0 && committed < total {
            interrupted_midway += 1;
        }
        assert!(committed <= total, "kill {kills}: {committed} rows committed for {total} input rows");
        eprintln!("kill {kills}: after {delay:?}, {committed} rows committed");
    }
    assert!(kills >= 20, "only {kills} kills before the job finished; slow it down");
    assert!(interrupted_midway >= kills / 2, "most kills hit a running job with partial output ({interrupted_midway})");

    // The last run finishes (if the job has not already).
    if json_rows(&out).len() < total || kills == KILLS {
        let done = operator(tmp.path()).args(args).output().unwrap();
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    }

    let mut got: BTreeMap<i64, (String, f64)> = BTreeMap::new();
    let rows = json_rows(&out);
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        let prev = got.insert(id, (r["name"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap()));
        assert!(prev.is_none(), "id {id} committed twice");
    }
    assert_eq!(rows.len(), expected.len());
    assert_eq!(got, expected, "the output equals the input row for row");
    assert!(hidden_files(&out).is_empty(), "no in-progress parts left: {:?}", hidden_files(&out));
    assert!(
        !ck.join("kill-csv").join("chk-1").exists()
            || std::fs::read_dir(ck.join("kill-csv")).is_err()
            || std::fs::read_dir(ck.join("kill-csv")).unwrap().next().is_none(),
        "a finished job removes its checkpoints"
    );
}
