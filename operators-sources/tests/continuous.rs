//! PROCESS_CONTINUOUSLY: files appear while the job runs — at once, slowly in several
//! appends, or under a hidden name and then renamed — and every row arrives exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sources::file::text::TextFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};
use support::table;

fn rows(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("{i},row-{i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_appearing_while_running_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let input = dir.path().to_path_buf();
    std::fs::write(input.join("00-initial.csv"), rows(0, 1000)).unwrap();

    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("s", DataType::Utf8, true)]));
    let source = DirectorySource::new(
        Location::parse("source.path", input.to_str().unwrap()).unwrap(),
        TextFormat::csv().with_schema(schema).with_batch_size(200).unwrap(),
    )
    .with_watch(WatchMode::ProcessContinuously { interval: Duration::from_millis(50) })
    .with_settle(Duration::from_millis(400));
    let output = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("dir", source).sink("out", TwoPhaseMemorySink::new(output.clone()));
    let job = p
        .start(
            JobConfig::new("continuous")
                .with_restart(RestartStrategy::None)
                .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(100))),
        )
        .unwrap();

    // A file written slowly: ten appends 60 ms apart, each shorter than the settle time.
    let slow = input.join("10-slow.csv");
    let mut f = std::fs::File::create(&slow).unwrap();
    for part in 0..10 {
        f.write_all(rows(1000 + part * 100, 1100 + part * 100).as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    drop(f);
    // A file written under a hidden name, then renamed into place.
    std::fs::write(input.join(".20-renamed.csv"), rows(2000, 2500)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(input.join(".20-renamed.csv"), input.join("20-renamed.csv")).unwrap();
    // An in-progress file never read, and a late file.
    std::fs::write(input.join("30-never.csv.inprogress"), rows(9000, 9010)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(input.join("05-late-but-small-name.csv"), rows(2500, 3000)).unwrap();

    let expected = 3000;
    tokio::time::timeout(Duration::from_secs(30), async {
        while output.num_rows() < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all rows committed");
    // Give duplicates, if any, the chance to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    job.cancel();
    job.wait().await.unwrap();

    let mut ids: Vec<i64> = table(&output.batches()).iter().map(|r| r[0].parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), expected, "no duplicates");
    assert_eq!(ids, (0..expected as i64).collect::<Vec<_>>());
}

async fn run_once(input: &std::path::Path, settle: Duration) -> (usize, Duration) {
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("s", DataType::Utf8, true)]));
    let source = DirectorySource::new(
        Location::parse("source.path", input.to_str().unwrap()).unwrap(),
        TextFormat::csv().with_schema(schema),
    )
    .with_watch(WatchMode::ProcessOnce)
    .with_settle(settle);
    let output = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("dir", source).sink("out", TwoPhaseMemorySink::new(output.clone()));
    let started = std::time::Instant::now();
    p.run(JobConfig::new("once").with_restart(RestartStrategy::None)).await.unwrap();
    (output.num_rows(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_unchanged_for_the_settle_time_is_read_without_a_second_look() {
    // Its modification time is older than the settle time: it is complete now. (Before,
    // every file waited one settle time for a second listing: a fixed idle second for
    // every bounded job.) A minute of settle time would show as a minute here.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.csv");
    std::fs::write(&file, rows(0, 10)).unwrap();
    let two_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::options().append(true).open(&file).unwrap().set_modified(two_minutes_ago).unwrap();
    let (n, took) = tokio::time::timeout(Duration::from_secs(30), run_once(dir.path(), Duration::from_secs(60)))
        .await
        .expect("read without waiting for the settle time");
    assert_eq!(n, 10);
    assert!(took < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_just_written_is_read_once_it_has_not_changed_for_the_settle_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("new.csv"), rows(0, 10)).unwrap();
    let written = std::time::Instant::now();
    let (n, _) = run_once(dir.path(), Duration::from_millis(800)).await;
    assert_eq!(n, 10);
    assert!(written.elapsed() >= Duration::from_millis(800), "read {:?} after it was written", written.elapsed());
}
