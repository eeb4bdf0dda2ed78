//! Savepoints: stop with a savepoint at parallelism 2, resume at parallelism 3, and get
//! the same result as an uninterrupted run; restore validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RunningCount, assert_exact_running_count, key_counts, rows};
use operators_core::builtins::{CommittedOutput, DiscardSink, GeneratorSource, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::job::SavepointStatus;
use operators_core::restart::RestartStrategy;
use operators_core::state::StateBackendKind;
use operators_core::{Error, JobConfig, JobStatus, Pipeline};

const ROWS: u64 = 60_000;
const KEYS: u64 = 300;

fn pipeline(count_parallelism: usize, output: &CommittedOutput) -> Pipeline {
    let p = Pipeline::new();
    p.source(
        "generator",
        GeneratorSource::bounded(ROWS).with_keys(KEYS).with_splits(6).with_batch_size(200).with_rate_limit(40_000),
    )
    .parallelism(2)
    .key_by(["key"])
    .transform("count", RunningCount::default())
    .parallelism(count_parallelism)
    .sink("sink", TwoPhaseMemorySink::new(output.clone()))
    .parallelism(count_parallelism);
    p
}

fn config(dir: &std::path::Path, name: &str) -> JobConfig {
    JobConfig::new(name)
        .with_state_backend(StateBackendKind::Disk)
        .with_local_state_dir(dir.join("local"))
        .with_restart(RestartStrategy::None)
        .with_checkpointing(CheckpointConfig::new(dir.join("checkpoints")).with_interval(Duration::from_millis(100)))
        .with_savepoint_dir(dir.join("savepoints"))
}

async fn wait_rows(output: &CommittedOutput, at_least: usize) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while output.num_rows() < at_least {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("rows committed in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_with_savepoint_at_2_resume_at_3_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();

    let reference = CommittedOutput::default();
    pipeline(2, &reference).run(config(dir.path(), "reference")).await.unwrap();
    let expected = key_counts(&rows(&reference.batches()));
    assert_exact_running_count(&rows(&reference.batches()), ROWS as i64, KEYS as i64);

    let output = CommittedOutput::default();
    let job = pipeline(2, &output).start(config(dir.path(), "rescaled")).unwrap();
    wait_rows(&output, 15_000).await;

    // A savepoint while running leaves the job running.
    let plain = job.trigger_savepoint(None).await.unwrap();
    assert!(plain.join("_metadata").is_file());
    assert_eq!(job.status(), JobStatus::Running);

    let savepoint = job.stop_with_savepoint(None, false).await.unwrap();
    let outcome = job.wait().await.unwrap();
    assert_eq!(outcome.status, JobStatus::Finished);
    assert_eq!(outcome.savepoint.as_deref(), Some(savepoint.as_path()));
    let before = output.num_rows();
    assert!(before > 0 && before < ROWS as usize, "stopped midway: {before}");

    // Resume with the running count at parallelism 3.
    let resumed = pipeline(3, &output).start(config(dir.path(), "rescaled").with_restore(&savepoint, false)).unwrap();
    let stats_job = resumed.wait().await.unwrap();
    assert_eq!(stats_job.status, JobStatus::Finished);
    assert_eq!(resumed.checkpoint_stats().counts.restored, 1);

    let all = rows(&output.batches());
    assert_exact_running_count(&all, ROWS as i64, KEYS as i64);
    assert_eq!(key_counts(&all), expected);
    // Savepoints are never removed by the runtime.
    assert!(savepoint.join("_metadata").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_state_of_a_missing_operator_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let job = pipeline(2, &output).start(config(dir.path(), "first")).unwrap();
    wait_rows(&output, 2_000).await;
    let savepoint = job.stop_with_savepoint(None, false).await.unwrap();
    job.wait().await.unwrap();

    // The new job lost the `count` operator.
    let without_count = || {
        let p = Pipeline::new();
        p.source("generator", GeneratorSource::bounded(ROWS).with_splits(6))
            .parallelism(2)
            .sink("discard", DiscardSink::default());
        p
    };
    let err = without_count().start(config(dir.path(), "second").with_restore(&savepoint, false)).unwrap_err();
    assert!(matches!(err, Error::Restore { .. }), "{err}");
    assert!(err.to_string().contains("`count`"), "{err}");

    let job = without_count().start(config(dir.path(), "second").with_restore(&savepoint, true)).unwrap();
    job.wait().await.unwrap();

    let err = without_count()
        .start(config(dir.path(), "third").with_restore(dir.path().join("no-such-savepoint"), true))
        .unwrap_err();
    assert!(err.to_string().contains("no-such-savepoint"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoint_requests_report_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let job = pipeline(1, &output).start(config(dir.path(), "status")).unwrap();
    wait_rows(&output, 1_000).await;
    // Draining ends every stream: only a stop-with-savepoint may drain.
    let refused = job.request_savepoint(None, false, true).unwrap_err().to_string();
    assert!(refused.contains("drain"), "{refused}");
    let id = job.request_savepoint(None, false, false).unwrap();
    let location = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match job.savepoint_status(&id) {
                Some(SavepointStatus::Completed { location }) => return location,
                Some(SavepointStatus::Failed { reason }) => panic!("savepoint failed: {reason}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .unwrap();
    let name = location.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with(&format!("savepoint-{}-", &job.id()[..6])), "{name}");
    let stats = job.checkpoint_stats();
    assert_eq!(stats.latest.savepoint.as_ref().map(|s| s.is_savepoint), Some(true));
    job.cancel();
    assert_eq!(job.wait().await.unwrap().status, JobStatus::Canceled);
    // Checkpoints are retained on cancel by default.
    assert!(dir.path().join("checkpoints").join("status").exists());
}
