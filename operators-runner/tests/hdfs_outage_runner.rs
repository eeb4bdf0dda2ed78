//! HDFS going away under a whole job on HDFS: the runner watches a CSV directory on HDFS
//! and writes JSON part files to HDFS, with its checkpoints on HDFS, EXACTLY_ONCE. The
//! NameNode (the whole test cluster of `testing/services/hdfs.sh`) is stopped for 10 s
//! mid-job and started again: checkpoints and commits fail meanwhile, the job restarts by
//! its restart strategy from its newest checkpoint, and every row is committed once. A
//! file of its own: it stops the shared HDFS, which no other test may use meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{hdfs_dir, json_rows, spawn_logged, write_csv_input};

fn hdfs(verb: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testing/services/hdfs.sh");
    let out = Command::new(script).arg(verb).output().unwrap();
    assert!(out.status.success(), "hdfs.sh {verb}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until `n` rows are committed in `out`; panics with the job's log otherwise.
fn wait_rows(out: &Path, n: usize, what: &str, log: &Path) {
    let started = Instant::now();
    loop {
        let committed = json_rows(out).len();
        if committed >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what}: {committed} of {n} rows committed; the job's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_namenode_stopped_for_ten_seconds_under_a_job_on_hdfs_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = hdfs_dir("outage-runner");
    let (input, out, ck) = (root.join("in"), root.join("out"), root.join("ck"));
    let mut expected = write_csv_input(&input, 4, 500, false);
    let log = tmp.path().join("run.log");
    let args = [
        "--job.name",
        "hdfs-outage",
        "--source.type",
        "csv",
        "--source.path",
        input.to_str().unwrap(),
        "--source.watch.type",
        "PROCESS_CONTINUOUSLY",
        "--source.watch.interval",
        "300",
        "--source.watch.settle",
        "300",
        "--stream.sql.schema.json",
        r#"{"id":"BigInt","name":"String","score":"Double"}"#,
        "--sink.type",
        "file",
        "--sink.path",
        out.to_str().unwrap(),
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        "300",
        "--stream.checkpoint.dir",
        ck.to_str().unwrap(),
        // Every failed checkpoint fails the job: the outage must go through a restart.
        "--stream.checkpoint.tolerable.failure.num",
        "0",
        "--job.retry.strategy",
        "fixed-delay",
        "--job.retry.maxNumberRestartAttempts",
        "100",
        "--job.retry.backoffTimeMS",
        "1000",
        "--progress",
        "off",
    ];
    let mut child = spawn_logged(tmp.path(), &args, &log);
    wait_rows(&out, expected.len(), "before the outage", &log);

    hdfs("stop");
    std::thread::sleep(Duration::from_secs(10));
    hdfs("start");
    // Files that arrive after the outage are read too.
    let more = tmp.path().join("more");
    let extra = write_csv_input(&more, 6, 500, false);
    for (f, name) in (4..6).zip(["input-004.csv", "input-005.csv"]) {
        let bytes = std::fs::read(more.join(name)).unwrap();
        let fs = operators_core::fs::for_path(&input).unwrap();
        fs.write(&input.join(format!("late-{f}.csv")), &bytes).unwrap();
    }
    expected.extend(extra.into_iter().filter(|(id, _)| *id >= 2000));
    wait_rows(&out, expected.len(), "after the outage", &log);
    // Give duplicates, if any, the chance to show up.
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();

    let mut got: BTreeMap<i64, (String, f64)> = BTreeMap::new();
    for r in json_rows(&out) {
        let id = r["id"].as_i64().unwrap();
        let prev = got.insert(id, (r["name"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap()));
        assert!(prev.is_none(), "id {id} committed twice");
    }
    assert_eq!(got, expected, "every row once across the outage");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log_text.contains("restart"), "the outage went through a restart:\n{log_text}");
    let _ = operators_core::fs::for_path(&root).unwrap().remove_dir_all(&root);
}
