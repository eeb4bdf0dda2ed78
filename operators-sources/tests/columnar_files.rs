//! Parquet and ORC directory sources: types, nulls, schema checks, and resuming in the
//! middle of a file (for text too) after stop-with-savepoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::{OperatorContext, Sink, TaskInfo};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, JobStatus, Pipeline};
use operators_sources::file::orc::OrcFormat;
use operators_sources::file::parquet::ParquetFormat;
use operators_sources::file::text::TextFormat;
use operators_sources::file::{DirectorySource, FileFormat, Location, WatchMode};
use support::{read_dir, table};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("n", DataType::Int32, true),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("d", DataType::Date32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// Rows `from..to`; every 7th row is all nulls except the id.
fn batch(from: i64, to: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..to).collect();
    let null = |i: &i64| i % 7 == 3;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int32Array::from(ids.iter().map(|i| (!null(i)).then_some(*i as i32 * 2)).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(ids.iter().map(|i| (!null(i)).then_some(*i as f64 / 4.0)).collect::<Vec<_>>())),
        Arc::new(StringArray::from(ids.iter().map(|i| (!null(i)).then(|| format!("s{i}"))).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(ids.iter().map(|i| (!null(i)).then_some(i % 2 == 0)).collect::<Vec<_>>())),
        Arc::new(Date32Array::from(ids.iter().map(|i| (!null(i)).then_some(18_000 + *i as i32)).collect::<Vec<_>>())),
        Arc::new(TimestampMillisecondArray::from(
            ids.iter().map(|i| (!null(i)).then_some(1_586_959_594_000 + i * 1000)).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(500)).build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn write_orc(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = orc_rust::ArrowWriterBuilder::new(file, batches[0].schema())
        .with_stripe_byte_size(16 * 1024)
        .try_build()
        .unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort_by_key(|r| r[0].parse::<i64>().unwrap());
    rows
}

fn expected(n: i64) -> Vec<Vec<String>> {
    table(&[batch(0, n)])
}

#[tokio::test]
async fn parquet_types_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("a.parquet"), &[batch(0, 1200)]);
    write_parquet(&dir.path().join("b.parquet"), &[batch(1200, 1500), batch(1500, 2000)]);
    let read = read_dir(dir.path(), ParquetFormat::new().with_batch_size(256).unwrap(), 2).await.unwrap();
    assert_eq!(read.rows[0].schema(), schema());
    assert_eq!(sorted(read.strings()), expected(2000));
}

#[tokio::test]
async fn orc_types_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    write_orc(&dir.path().join("a.orc"), &[batch(0, 1200)]);
    write_orc(&dir.path().join("b.orc"), &[batch(1200, 2000)]);
    let read = read_dir(dir.path(), OrcFormat::new().with_batch_size(256).unwrap(), 1).await.unwrap();
    let names: Vec<String> = read.rows[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, vec!["id", "n", "x", "s", "b", "d", "ts"]);
    assert_eq!(sorted(read.strings()), expected(2000));
}

#[tokio::test]
async fn a_file_with_another_schema_names_both_files_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("a.parquet"), &[batch(0, 10)]);
    let other = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)]));
    let b = RecordBatch::try_new(other, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
    write_parquet(&dir.path().join("b.parquet"), &[b]);
    let err = read_dir(dir.path(), ParquetFormat::new(), 1).await.unwrap_err().to_string();
    assert!(err.contains("b.parquet") && err.contains("a.parquet") && err.contains("column 1"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_orc(&dir.path().join("a.orc"), &[batch(0, 10)]);
    let narrow = batch(0, 10).project(&[0, 1, 2]).unwrap();
    write_orc(&dir.path().join("b.orc"), &[narrow]);
    let err = read_dir(dir.path(), OrcFormat::new(), 1).await.unwrap_err().to_string();
    assert!(
        err.contains("b.orc") && err.contains("a.orc") && err.contains("column 4") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.parquet"), b"PAR1 not really parquet").unwrap();
    let err = read_dir(dir.path(), ParquetFormat::new(), 1).await.unwrap_err().to_string();
    assert!(err.contains("broken.parquet"), "{err}");
}

/// A sink that commits slowly enough to stop a job in the middle of a file.
#[derive(Clone)]
struct Slow(TwoPhaseMemorySink);

struct SlowTask(Box<dyn Sink>);

#[async_trait]
impl Sink for SlowTask {
    async fn write_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> operators_core::Result<()> {
        tokio::time::sleep(Duration::from_millis(15)).await;
        self.0.write_batch(batch, ctx).await
    }
    async fn pre_commit(&mut self, id: u64, ctx: &mut OperatorContext) -> operators_core::Result<Option<Vec<u8>>> {
        self.0.pre_commit(id, ctx).await
    }
    async fn commit(&mut self, id: u64, c: Vec<u8>) -> operators_core::Result<()> {
        self.0.commit(id, c).await
    }
}

impl operators_core::operator::SinkFactory for Slow {
    fn create(&self, info: &TaskInfo) -> operators_core::Result<Box<dyn Sink>> {
        Ok(Box::new(SlowTask(self.0.create(info)?)))
    }
}

async fn stop_and_resume(dir: &Path, format: impl FileFormat + Clone, total: usize) -> Vec<Vec<String>> {
    let ckpt = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let run = |restore: Option<&Path>| {
        let source =
            DirectorySource::new(Location::parse("source.path", dir.to_str().unwrap()).unwrap(), format.clone())
                .with_watch(WatchMode::ProcessOnce)
                .with_settle(Duration::from_millis(10));
        let p = Pipeline::new();
        p.source("files", source).sink("out", Slow(TwoPhaseMemorySink::new(output.clone())));
        let mut cfg = JobConfig::new("resume")
            .with_restart(RestartStrategy::None)
            .with_checkpointing(CheckpointConfig::new(ckpt.path().join("c")).with_interval(Duration::from_millis(30)))
            .with_savepoint_dir(ckpt.path().join("sp"));
        if let Some(r) = restore {
            cfg = cfg.with_restore(r, false);
        }
        p.start(cfg).unwrap()
    };
    let job = run(None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while output.num_rows() < total / 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let sp = job.stop_with_savepoint(None, false).await.unwrap();
    assert_eq!(job.wait().await.unwrap().status, JobStatus::Finished);
    let midway = output.num_rows();
    assert!(midway > 0 && midway < total, "stopped midway: {midway} of {total}");
    let job = run(Some(&sp));
    job.wait().await.unwrap();
    table(&output.batches())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_resumes_inside_a_file_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("one.parquet"), &[batch(0, 8000)]);
    let rows = stop_and_resume(dir.path(), ParquetFormat::new().with_batch_size(100).unwrap(), 8000).await;
    assert_eq!(sorted(rows), expected(8000));

    let dir = tempfile::tempdir().unwrap();
    write_orc(&dir.path().join("one.orc"), &[batch(0, 8000)]);
    let rows = stop_and_resume(dir.path(), OrcFormat::new().with_batch_size(100).unwrap(), 8000).await;
    assert_eq!(sorted(rows), expected(8000));

    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,name\n");
    for i in 0..8000 {
        csv.push_str(&format!("{i},\"n,{i}\"\n"));
    }
    std::fs::write(dir.path().join("one.csv"), csv).unwrap();
    let format = TextFormat::csv().with_header(true).with_batch_size(100).unwrap().with_chunk_bytes(1000);
    let rows = stop_and_resume(dir.path(), format, 8000).await;
    let mut ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..8000).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r[1] == format!("n,{}", r[0])));
}
