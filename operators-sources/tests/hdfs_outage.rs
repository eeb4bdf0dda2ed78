//! HDFS going away under a continuous directory source: the NameNode (the whole test
//! cluster of `testing/services/hdfs.sh`) is stopped for 10 s while the job runs, then
//! started again. The job fails, restarts by its restart strategy from the last
//! checkpoint, and every row arrives once. A file of its own: it stops the shared HDFS,
//! which no other test may be using meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sources::file::text::TextFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};

fn hdfs_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testing/services/hdfs.sh")
}

fn hdfs(verb: &str) {
    let out = Command::new(hdfs_script()).arg(verb).output().unwrap();
    assert!(out.status.success(), "hdfs.sh {verb}: {}", String::from_utf8_lossy(&out.stderr));
}

fn rows(from: i64, to: i64) -> Vec<u8> {
    (from..to).map(|i| format!("{i},row {i}\n")).collect::<String>().into_bytes()
}

async fn wait_rows(output: &CommittedOutput, n: usize, what: &str) {
    tokio::time::timeout(Duration::from_secs(90), async {
        while output.num_rows() < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: {} of {n} rows committed", output.num_rows()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namenode_stopped_for_ten_seconds_loses_and_repeats_nothing() {
    let url = match std::env::var("HDFS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!("HDFS_URL is not set: start HDFS with `testing/services/hdfs.sh start`"),
    };
    let url = format!("{}/operators-tests/outage-{:016x}", url.trim_end_matches('/'), rand::random::<u64>());
    let location = Location::parse("source.path", &url).unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        let location = location.clone();
        let name = name.to_string();
        async move { location.store.put(&location.file_path(&name), PutPayload::from(Bytes::from(bytes))).await.unwrap() }
    };
    put("00.csv", rows(0, 1000)).await;

    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("s", DataType::Utf8, true)]));
    let source =
        DirectorySource::new(location.clone(), TextFormat::csv().with_schema(schema).with_batch_size(100).unwrap())
            .with_watch(WatchMode::ProcessContinuously { interval: Duration::from_millis(200) })
            .with_settle(Duration::from_millis(300));
    let ckpt = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("dir", source).sink("out", TwoPhaseMemorySink::new(output.clone()));
    let job = p
        .start(
            JobConfig::new("hdfs-outage")
                .with_restart(RestartStrategy::fixed_delay(100, Duration::from_millis(500)))
                .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(200))),
        )
        .unwrap();
    wait_rows(&output, 1000, "before the outage").await;

    hdfs("stop");
    tokio::time::sleep(Duration::from_secs(10)).await;
    hdfs("start");
    put("10.csv", rows(1000, 2000)).await;
    wait_rows(&output, 2000, "after the outage").await;
    // Give duplicates, if any, the chance to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    job.cancel();
    let outcome = job.wait().await.unwrap();
    let mut ids: Vec<i64> = support::table(&output.batches()).iter().map(|r| r[0].parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..2000).collect::<Vec<_>>(), "every row once across the outage");
    assert!(outcome.restarts >= 1, "the outage failed the job at least once: {} restarts", outcome.restarts);
}
