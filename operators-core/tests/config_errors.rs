//! Bad configuration is refused before the job starts, with an error naming the setting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use operators_core::builtins::{DiscardSink, GeneratorSource, MapTransform};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::state::StateBackendKind;
use operators_core::{Error, JobConfig, Pipeline};

fn pipeline() -> Pipeline {
    let p = Pipeline::new();
    p.source("src", GeneratorSource::bounded(10))
        .transform("map", MapTransform::new(|b| Ok(Some(b))))
        .sink("sink", DiscardSink::default());
    p
}

fn setting(err: Error) -> String {
    match err {
        Error::Config { key, .. } => key,
        Error::Graph { operator, .. } => format!("operator:{operator}"),
        other => panic!("unexpected error kind: {other}"),
    }
}

fn checkpointed(f: impl FnOnce(CheckpointConfig) -> CheckpointConfig) -> JobConfig {
    let dir = std::env::temp_dir().join("operators-config-errors");
    JobConfig::new("cfg").with_checkpointing(f(CheckpointConfig::new(dir)))
}

#[tokio::test]
async fn each_bad_setting_is_named() {
    let cases: Vec<(JobConfig, &str)> = vec![
        (checkpointed(|c| c.with_interval(Duration::ZERO)), "checkpoint.interval"),
        (checkpointed(|c| c.with_retained(0)), "checkpoint.retained"),
        (
            checkpointed(|c| c.with_timeout(Duration::from_millis(100)).with_min_pause(Duration::from_secs(1))),
            "checkpoint.timeout",
        ),
        (JobConfig::new("cfg").with_parallelism(0), "parallelism"),
        (JobConfig::new("cfg").with_channel_capacity(0), "channel-capacity"),
        (JobConfig::new(""), "job.name"),
    ];
    for (config, key) in cases {
        let err = pipeline().start(config).unwrap_err();
        let message = err.to_string();
        assert_eq!(setting(err), key, "{message}");
        assert!(message.contains(key), "{message}");
    }
}

#[tokio::test]
async fn unknown_state_backend_is_named() {
    let err = "rocksdb2".parse::<StateBackendKind>().unwrap_err();
    let message = err.to_string();
    assert_eq!(setting(err), "state.backend");
    assert!(message.contains("rocksdb2") && message.contains("disk"), "{message}");
}

#[tokio::test]
async fn two_operators_with_one_id_are_refused() {
    let p = Pipeline::new();
    p.source("same", GeneratorSource::bounded(10))
        .transform("same", MapTransform::new(|b| Ok(Some(b))))
        .sink("sink", DiscardSink::default());
    let err = p.start(JobConfig::new("dup")).unwrap_err();
    assert!(err.to_string().contains("two operators use this id"), "{err}");
    assert_eq!(setting(err), "operator:same");
}

#[tokio::test]
async fn an_unwritable_checkpoint_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let config = JobConfig::new("cfg").with_checkpointing(CheckpointConfig::new(file.join("checkpoints")));
    let err = pipeline().start(config).unwrap_err();
    let message = err.to_string();
    assert_eq!(setting(err), "checkpoint.dir");
    assert!(message.contains("plain-file"), "{message}");
}

#[tokio::test]
async fn forward_between_different_parallelism_is_refused() {
    let p = Pipeline::new();
    p.source("src", GeneratorSource::bounded(10))
        .parallelism(2)
        .forward()
        .sink("sink", DiscardSink::default())
        .parallelism(3);
    let err = p.start(JobConfig::new("fwd")).unwrap_err();
    assert!(err.to_string().contains("forward exchange"), "{err}");
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let err = pipeline().start(JobConfig::new("no-runtime")).unwrap_err();
    assert_eq!(setting(err), "runtime");
}
