//! Exactly-once end to end: generator → keyed running count (parallelism 3, hash
//! exchange) → two-phase sink, with failures injected at random points — a panicking
//! operator, failing sink commits, a failing snapshot — several per run. The committed
//! output must equal the failure-free run's: nothing lost, nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RunningCount, assert_exact_running_count, key_counts, rows};
use operators_core::builtins::{CommittedOutput, FaultInjector, GeneratorSource, TwoPhaseMemorySink};
use operators_core::checkpoint::{CheckpointConfig, CheckpointingMode};
use operators_core::restart::RestartStrategy;
use operators_core::state::StateBackendKind;
use operators_core::{JobConfig, JobStatus, Pipeline};
use rand::{Rng, SeedableRng};

const ROWS: u64 = 120_000;
const KEYS: u64 = 500;

fn pipeline(faults: FaultInjector, output: CommittedOutput) -> Pipeline {
    let p = Pipeline::new();
    p.source(
        "generator",
        GeneratorSource::bounded(ROWS).with_keys(KEYS).with_splits(6).with_batch_size(500).with_rate_limit(80_000),
    )
    .parallelism(2)
    .key_by(["key"])
    .transform("count", RunningCount { faults: faults.clone() })
    .parallelism(3)
    .sink("sink", TwoPhaseMemorySink::new(output).with_faults(faults));
    p
}

fn config(dir: &std::path::Path, backend: StateBackendKind, mode: CheckpointingMode) -> JobConfig {
    JobConfig::new("exactly-once-test")
        .with_state_backend(backend)
        .with_local_state_dir(dir.join("local"))
        .with_restart(RestartStrategy::fixed_delay(50, Duration::from_millis(10)))
        .with_checkpointing(
            CheckpointConfig::new(dir.join("checkpoints"))
                .with_interval(Duration::from_millis(60))
                .with_mode(mode)
                .with_retained(2),
        )
}

async fn run(faults: FaultInjector, backend: StateBackendKind, mode: CheckpointingMode) -> (Vec<(i64, i64, i64)>, u32) {
    run_with(faults, backend, mode, None).await
}

async fn run_with(
    faults: FaultInjector,
    backend: StateBackendKind,
    mode: CheckpointingMode,
    budget: Option<u64>,
) -> (Vec<(i64, i64, i64)>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let mut config = config(dir.path(), backend, mode);
    if let Some(bytes) = budget {
        // A failed snapshot is tolerated, not restarted from: the keyed-state files it
        // wrote go into the next one.
        let checkpoints = config.checkpointing.clone().map(|c| c.with_tolerable_failures(3));
        config = config.with_state_memory_budget(bytes);
        if let Some(c) = checkpoints {
            config = config.with_checkpointing(c);
        }
    }
    let job = pipeline(faults, output.clone()).start(config).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), job.wait())
        .await
        .expect("job finished in time")
        .expect("job succeeded");
    assert_eq!(outcome.status, JobStatus::Finished);
    let stats = job.checkpoint_stats();
    assert!(stats.counts.completed >= 2, "checkpoints were taken: {:?}", stats.counts);
    // A finished job removes its checkpoints.
    assert!(!dir.path().join("checkpoints").join("exactly-once-test").join("chk-1").exists());
    (rows(&output.batches()), outcome.restarts)
}

/// Plans `per_point` failures at random hits of each fault point, seeded for replay.
fn random_faults(seed: u64) -> FaultInjector {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pick = |max: u64, n: usize| -> Vec<u64> { (0..n).map(|_| rng.random_range(2..max)).collect() };
    // ~720 batches reach the count operator, ~250 checkpoints' worth of commits and
    // snapshots happen over a run with restarts.
    FaultInjector::new()
        .fail_at("count.panic", pick(700, 2))
        .fail_at("sink.commit", pick(40, 2))
        .fail_at("count.snapshot", pick(40, 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_do_not_change_the_committed_output() {
    let (clean, restarts) = run(FaultInjector::new(), StateBackendKind::Memory, CheckpointingMode::ExactlyOnce).await;
    assert_eq!(restarts, 0);
    assert_exact_running_count(&clean, ROWS as i64, KEYS as i64);
    let expected = key_counts(&clean);

    // Seed 4 keeps a few KiB of state in memory: most of it is evicted to disk, and each
    // checkpoint streams it from there (and a failed snapshot's files go into the next).
    for (seed, backend, budget) in [
        (1, StateBackendKind::Disk, None),
        (2, StateBackendKind::Memory, None),
        (3, StateBackendKind::Disk, None),
        (4, StateBackendKind::Disk, Some(16 << 10)),
    ] {
        let faults = random_faults(seed);
        let (faulty, restarts) =
            run_with(faults.clone(), backend.clone(), CheckpointingMode::ExactlyOnce, budget).await;
        let fired = faults.fired();
        assert!(fired.len() >= 4, "seed {seed}: expected several failures, fired {fired:?}");
        assert!(restarts >= 3, "seed {seed}: restarts {restarts}, fired {fired:?}");
        assert_exact_running_count(&faulty, ROWS as i64, KEYS as i64);
        assert_eq!(key_counts(&faulty), expected, "seed {seed} ({backend:?}): committed output differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_without_failures_is_exact() {
    let (out, _) = run(FaultInjector::new(), StateBackendKind::Memory, CheckpointingMode::AtLeastOnce).await;
    assert_exact_running_count(&out, ROWS as i64, KEYS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_restarts_a_failure_fails_the_job_naming_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new().fail_at("count.panic", [3]);
    let job = pipeline(faults, CommittedOutput::default())
        .start(
            config(dir.path(), StateBackendKind::Memory, CheckpointingMode::ExactlyOnce)
                .with_restart(RestartStrategy::None),
        )
        .unwrap();
    let err = job.wait().await.unwrap_err().to_string();
    assert!(err.contains("`count`") && err.contains("injected panic"), "{err}");
    assert_eq!(job.status(), JobStatus::Failed);
}
