//! The exactly-once file sink end to end: formats, rolling, visibility only after the
//! checkpoint completes, and recovery after in-process failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use operators_core::builtins::{FaultInjector, GeneratorSource, MapTransform};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::file::{FileFormat, FileSink};

fn files(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut visible = Vec::new();
    let mut hidden = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with('.') { hidden.push(name) } else { visible.push(name) }
    }
    visible.sort();
    (visible, hidden)
}

/// Ids in committed JSON-lines parts; panics on a partial line.
fn json_ids(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for name in files(dir).0 {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{name} ends with a partial line");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            ids.push(v["id"].as_i64().unwrap());
        }
    }
    ids
}

fn config(ckpt: &Path, name: &str) -> JobConfig {
    JobConfig::new(name)
        .with_restart(RestartStrategy::fixed_delay(10, Duration::from_millis(10)))
        .with_checkpointing(CheckpointConfig::new(ckpt).with_interval(Duration::from_millis(50)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_parts_hold_every_row_once() {
    let out = tempfile::tempdir().unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(50_000).with_rate_limit(100_000))
        .parallelism(2)
        .sink("files", FileSink::new(out.path(), FileFormat::JsonLines))
        .parallelism(2);
    let job = p.start(config(ckpt.path(), "json")).unwrap();
    // While running, only complete parts of completed checkpoints are visible.
    let mut seen_partial_visibility = false;
    while !job.status().is_terminal() {
        let ids = json_ids(out.path());
        seen_partial_visibility |= !ids.is_empty() && ids.len() < 50_000;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job.wait().await.unwrap();
    assert!(seen_partial_visibility, "parts became visible checkpoint by checkpoint");
    let mut ids = json_ids(out.path());
    ids.sort_unstable();
    assert_eq!(ids, (0..50_000).collect::<Vec<_>>());
    let (visible, hidden) = files(out.path());
    assert!(hidden.is_empty(), "no in-progress files left: {hidden:?}");
    assert!(visible.len() > 2, "parts were rolled at checkpoints: {visible:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_parquet_parts_read_back() {
    for format in [FileFormat::Csv, FileFormat::Parquet] {
        let out = tempfile::tempdir().unwrap();
        let ckpt = tempfile::tempdir().unwrap();
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::bounded(20_000))
            .sink("files", FileSink::new(out.path(), format).with_roll_size(64 * 1024));
        p.run(config(ckpt.path(), "formats")).await.unwrap();
        let (visible, hidden) = files(out.path());
        assert!(hidden.is_empty());
        assert!(visible.len() > 3, "{format:?}: rolled by size: {visible:?}");
        let mut ids = BTreeSet::new();
        for name in &visible {
            let file = std::fs::File::open(out.path().join(name)).unwrap();
            let batches: Vec<arrow::record_batch::RecordBatch> = match format {
                FileFormat::Csv => arrow::csv::ReaderBuilder::new(GeneratorSource::schema())
                    .with_header(true)
                    .build(file)
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect(),
                _ => parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect(),
            };
            for b in batches {
                for id in b.column(0).as_primitive::<Int64Type>().values() {
                    assert!(ids.insert(*id), "{format:?}: id {id} twice");
                }
            }
        }
        assert_eq!(ids.len(), 20_000, "{format:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_by_time() {
    let out = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(3_000).with_batch_size(100).with_rate_limit(10_000)).sink(
        "files",
        FileSink::new(out.path(), FileFormat::JsonLines).with_roll_interval(Some(Duration::from_millis(50))),
    );
    // Without checkpoints the parts are committed at the end of the input.
    p.run(JobConfig::new("time").with_restart(RestartStrategy::None)).await.unwrap();
    let (visible, _) = files(out.path());
    assert!(visible.len() >= 4, "rolled by age: {visible:?}");
    assert_eq!(json_ids(out.path()).len(), 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_restarts_leave_exactly_the_input() {
    let out = tempfile::tempdir().unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new().fail_at("map", [30, 90, 150]);
    let f2 = faults.clone();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(60_000).with_batch_size(200).with_rate_limit(100_000))
        .transform(
            "map",
            MapTransform::new(move |b| {
                f2.check("map")?;
                Ok(Some(b))
            }),
        )
        .sink("files", FileSink::new(out.path(), FileFormat::JsonLines));
    let outcome = p.run(config(ckpt.path(), "recover")).await.unwrap();
    assert_eq!(outcome.restarts, 3, "{:?}", faults.fired());
    let mut ids = json_ids(out.path());
    ids.sort_unstable();
    assert_eq!(ids, (0..60_000).collect::<Vec<_>>());
    assert!(files(out.path()).1.is_empty(), "stale in-progress parts were removed");
}

#[test]
fn an_unwritable_directory_names_the_setting() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let sink = FileSink::new(f.path().join("x"), FileFormat::JsonLines);
    // Validating does no I/O, so it cannot tell; the check the job runs at start does.
    sink.validate().unwrap();
    let err = sink.check_dir().unwrap_err().to_string();
    assert!(err.contains("sink.path") && err.contains("cannot create"), "{err}");
    let err = sink.with_param("dead.letter.path").check_dir().unwrap_err().to_string();
    assert!(err.contains("dead.letter.path"), "{err}");
}

/// The same check when the job starts: the job is refused before anything runs, with the
/// setting named, rather than failing its first attempt.
#[tokio::test]
async fn a_job_with_an_unwritable_directory_is_refused_when_it_starts() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10))
        .sink("files", FileSink::new(f.path().join("x"), FileFormat::JsonLines));
    let err = p.start(JobConfig::new("unwritable")).unwrap_err();
    assert!(matches!(&err, operators_core::Error::Config { key, .. } if key == "sink.path"), "{err}");
    assert!(err.to_string().contains("cannot create"), "{err}");
}

#[test]
fn validating_creates_nothing_and_refuses_urls() {
    let dir = tempfile::tempdir().unwrap();
    FileSink::new(dir.path().join("a").join("b"), FileFormat::JsonLines).validate().unwrap();
    assert!(!dir.path().join("a").exists(), "validate created the directory");
    let err = FileSink::new("hdfs:///tmp/out", FileFormat::JsonLines)
        .with_param("stream.sql.late.path")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`stream.sql.late.path`") && err.contains("hdfs:///tmp/out"), "{err}");
}

/// A part larger than the write-behind step (8 MiB) is synced in the background while
/// it is written; what is committed is still every row, once, in whole lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_past_the_write_behind_step_holds_every_row() {
    let out = tempfile::tempdir().unwrap();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(400_000))
        .sink("files", FileSink::new(out.path(), FileFormat::JsonLines).with_roll_size(1 << 30));
    let job = p.start(JobConfig::new("write-behind").with_restart(RestartStrategy::None)).unwrap();
    job.wait().await.unwrap();
    let (visible, hidden) = files(out.path());
    assert!(hidden.is_empty(), "no in-progress files left: {hidden:?}");
    assert_eq!(visible.len(), 1, "one part: {visible:?}");
    let size = std::fs::metadata(out.path().join(&visible[0])).unwrap().len();
    assert!(size > 2 * (8 << 20), "the part ({size} bytes) spans several write-behind steps");
    let mut ids = json_ids(out.path());
    ids.sort_unstable();
    assert_eq!(ids, (0..400_000).collect::<Vec<_>>());
}
