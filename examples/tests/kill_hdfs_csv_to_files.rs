//! Kill test on HDFS (`testing/services/hdfs.sh`): the runner reads a CSV directory on
//! HDFS into JSON part files on HDFS, with its checkpoints on HDFS, in EXACTLY_ONCE mode,
//! and is SIGKILLed at random moments, 25 times, each time restarted from its newest
//! checkpoint. The committed output must equal the input row for row: no duplicates, no
//! gaps — HDFS's atomic renames carry the file sink's commit and the checkpoint metadata
//! as the local file system's do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{hdfs_dir, hidden_files, json_rows, kill_after, operator, spawn_logged, write_csv_input};

const KILLS: usize = 25;

#[test]
fn sigkill_at_random_moments_on_hdfs_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = hdfs_dir("kill-csv");
    let (input, out, ck) = (root.join("in"), root.join("out"), root.join("ck"));
    let expected = write_csv_input(&input, 150, 4000, false);
    let total = expected.len();
    let seed: u64 = rand::random();
    eprintln!("kill test seed {seed}, under {}", root.display());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let args = [
        "--job.name",
        "kill-hdfs-csv",
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
        // Slower than the local kill test, whose runs are shorter: a run here commits its
        // first rows about 2.5 s after it starts (below), so 25 runs of 2.5 to 6 s read
        // about 60 % of the input at this rate.
        "--stream.rate.limit",
        "8000",
        "--source.batch.size",
        "1000",
        "--sink.type",
        "file",
        "--sink.path",
        out.to_str().unwrap(),
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        "200",
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
        let log = tmp.path().join(format!("run-{kills}.log"));
        let child = spawn_logged(tmp.path(), &args, &log);
        // Longer than on local disk: a checkpoint on this HDFS takes 1.5 to 2 s, most of
        // it in closes the NameNode first refuses (the DataNode has not reported the last
        // block yet) and hdfs-native retries 500 ms later; nothing is committed before
        // the first checkpoint completes.
        let delay = Duration::from_millis(rng.random_range(2500..6000));
        if let Some(status) = kill_after(child, delay) {
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
    let fs = operators_core::fs::for_path(&ck).unwrap();
    let left = fs.list(&ck.join("kill-hdfs-csv")).map(|e| e.len()).unwrap_or(0);
    assert_eq!(left, 0, "a finished job removes its checkpoints");
    fs.remove_dir_all(&root).unwrap();
}
