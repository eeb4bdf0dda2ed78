//! The kill test of a CSV directory read into JSON part files in EXACTLY_ONCE mode, on
//! the local disk or on HDFS: the runner in a child process SIGKILLed at random moments
//! and started again from its checkpoints; at the end the committed output must equal
//! the input row for row.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::{hidden_files, json_rows, kill_after, operator, spawn_logged, write_csv_input};

/// How a kill test runs.
pub struct Spec {
    /// The job's name (and its checkpoint directory's).
    pub name: &'static str,
    /// `stream.rate.limit`: slow enough that the input outlasts the kills.
    pub rate: u32,
    /// `stream.checkpoint.interval`, ms.
    pub interval_ms: u32,
    /// How long each run lives before its SIGKILL, ms.
    pub delays_ms: Range<u64>,
    /// Kills; at least 20 must land before the job finishes.
    pub kills: usize,
}

/// Runs the kill test with input, output and checkpoints under `root` (a local path or
/// an `hdfs://` URL); logs go to `cwd`.
pub fn csv_to_files(cwd: &Path, root: &Path, spec: &Spec) {
    let (input, out, ck) = (root.join("in"), root.join("out"), root.join("ck"));
    let expected = write_csv_input(&input, 150, 4000, false);
    let total = expected.len();
    let seed: u64 = rand::random();
    eprintln!("kill test seed {seed}, under {}", root.display());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (rate, interval) = (spec.rate.to_string(), spec.interval_ms.to_string());
    let args = [
        "--job.name",
        spec.name,
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
        "--stream.rate.limit",
        &rate,
        "--source.batch.size",
        "1000",
        "--sink.type",
        "file",
        "--sink.path",
        out.to_str().unwrap(),
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        &interval,
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
    while kills < spec.kills {
        let log = cwd.join(format!("run-{kills}.log"));
        let child = spawn_logged(cwd, &args, &log);
        let delay = Duration::from_millis(rng.random_range(spec.delays_ms.clone()));
        if let Some(status) = kill_after(child, delay) {
            // The job finished before this kill; a finished job's checkpoints are gone,
            // so launching it again would import everything again.
            assert!(
                status.success(),
                "run {kills} failed on its own:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
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
    if json_rows(&out).len() < total || kills == spec.kills {
        let done = operator(cwd).args(args).output().unwrap();
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
    let fs = operators_core::fs::for_path(&ck).unwrap();
    let left = fs.list(&ck.join(spec.name)).map(|e| e.len()).unwrap_or(0);
    assert_eq!(left, 0, "a finished job removes its checkpoints");
}
