//! Directories on a real HDFS (`testing/services/hdfs.sh`, a MiniDFSCluster; `HDFS_URL`
//! names its NameNode): CSV, Parquet and ORC files written there are read as the same
//! files on local disk are, and the errors of a missing directory or NameNode name the
//! parameter and the URL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use operators_sources::file::Location;
use operators_sources::file::orc::OrcFormat;
use operators_sources::file::parquet::ParquetFormat;
use operators_sources::file::text::TextFormat;
use support::read_location;

/// The NameNode the tests use; fails, naming the script that starts it, when unset.
fn hdfs_url() -> String {
    match std::env::var("HDFS_URL") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
        _ => panic!(
            "HDFS_URL is not set: start HDFS with `testing/services/hdfs.sh start` (or `eval \"$(testing/services/start-all.sh)\"`)"
        ),
    }
}

/// A fresh directory URL for one test.
fn test_dir(name: &str) -> String {
    format!("{}/operators-tests/{name}-{:016x}", hdfs_url(), rand::random::<u64>())
}

async fn put(location: &Location, name: &str, bytes: Vec<u8>) {
    location.store.put(&location.file_path(name), PutPayload::from(Bytes::from(bytes))).await.unwrap_or_else(|e| {
        panic!("writing {name} to {} (is `testing/services/hdfs.sh start` running?): {e}", location.display)
    });
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("s", DataType::Utf8, true)]))
}

fn batch(from: i64, to: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..to).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from(ids.iter().map(|i| format!("row {i}")).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn expected(from: i64, to: i64) -> Vec<Vec<String>> {
    (from..to).map(|i| vec![i.to_string(), format!("row {i}")]).collect()
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort_by_key(|r| r[0].parse::<i64>().unwrap_or(i64::MAX));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_files_with_a_header_on_hdfs() {
    let url = test_dir("csv");
    let location = Location::parse("source.path", &url).unwrap();
    let csv = |from: i64, to: i64| -> Vec<u8> {
        let mut out = String::from("id,s\n");
        for i in from..to {
            out.push_str(&format!("{i},row {i}\n"));
        }
        out.into_bytes()
    };
    put(&location, "a.csv", csv(0, 3000)).await;
    put(&location, "b.csv", csv(3000, 5000)).await;
    // Hidden and in-progress files are skipped there as on local disk.
    put(&location, ".c.csv", csv(9000, 9001)).await;
    let read = read_location(location, TextFormat::csv().with_header(true).with_schema(schema()), 2).await.unwrap();
    assert!(read.dead_letters().is_empty(), "{:?}", read.dead_letters());
    assert_eq!(sorted(read.strings()), expected(0, 5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_orc_files_on_hdfs() {
    let batches = [batch(0, 1500), batch(1500, 4000)];

    let url = test_dir("parquet");
    let location = Location::parse("source.path", &url).unwrap();
    let mut bytes = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(700)).build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema(), Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    put(&location, "part-0.parquet", bytes).await;
    let read = read_location(location, ParquetFormat::default(), 2).await.unwrap();
    assert_eq!(sorted(read.strings()), expected(0, 4000));

    let url = test_dir("orc");
    let location = Location::parse("source.path", &url).unwrap();
    let mut bytes = Vec::new();
    let mut w =
        orc_rust::ArrowWriterBuilder::new(&mut bytes, schema()).with_stripe_byte_size(16 * 1024).try_build().unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    put(&location, "part-0.orc", bytes).await;
    let read = read_location(location, OrcFormat::default(), 1).await.unwrap();
    assert_eq!(sorted(read.strings()), expected(0, 4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_or_namenode_is_an_error_naming_the_url() {
    let url = test_dir("missing");
    let location = Location::parse("source.path", &url).unwrap();
    let err = read_location(location, TextFormat::csv(), 1).await.unwrap_err().to_string();
    assert!(err.contains(&url), "{err}");

    // Nothing listens on port 1 of the loopback interface.
    let url = "hdfs://127.0.0.1:1/data";
    let location = Location::parse("source.path", url).unwrap();
    let err = read_location(location, TextFormat::csv(), 1).await.unwrap_err().to_string();
    assert!(err.contains(url), "{err}");
}

#[test]
fn urls_that_are_not_hdfs_directories_are_refused_naming_the_parameter() {
    let err = Location::parse("source.path", "hdfs:/data").unwrap_err().to_string();
    assert!(err.contains("source.path") && err.contains("hdfs:/data") && err.contains("hdfs://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_appearing_on_hdfs_while_running_arrive_exactly_once() {
    use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
    use operators_core::checkpoint::CheckpointConfig;
    use operators_core::restart::RestartStrategy;
    use operators_core::{JobConfig, Pipeline};
    use operators_sources::file::{DirectorySource, WatchMode};
    use std::time::Duration;

    let rows = |from: i64, to: i64| -> Vec<u8> {
        (from..to).map(|i| format!("{i},row {i}\n")).collect::<String>().into_bytes()
    };
    let url = test_dir("continuous");
    let location = Location::parse("source.path", &url).unwrap();
    put(&location, "00-initial.csv", rows(0, 1000)).await;
    let ckpt = tempfile::tempdir().unwrap();
    let source =
        DirectorySource::new(location.clone(), TextFormat::csv().with_schema(schema()).with_batch_size(200).unwrap())
            .with_watch(WatchMode::ProcessContinuously { interval: Duration::from_millis(50) })
            .with_settle(Duration::from_millis(300));
    let output = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("dir", source).sink("out", TwoPhaseMemorySink::new(output.clone()));
    let job = p
        .start(
            JobConfig::new("hdfs-continuous")
                .with_restart(RestartStrategy::None)
                .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(100))),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(&location, "10-later.csv", rows(1000, 2000)).await;
    // As `hdfs dfs -put` writes: under `._COPYING_`, then renamed into place.
    put(&location, "20-copied.csv._COPYING_", rows(2000, 2500)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    location
        .store
        .rename(&location.file_path("20-copied.csv._COPYING_"), &location.file_path("20-copied.csv"))
        .await
        .unwrap();
    // One never renamed is never read.
    put(&location, "30-never.csv._COPYING_", rows(9000, 9010)).await;

    let expected = 2500;
    tokio::time::timeout(Duration::from_secs(30), async {
        while output.num_rows() < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("all rows committed: {} of {expected}", output.num_rows()));
    // Give duplicates, if any, the chance to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    job.cancel();
    job.wait().await.unwrap();
    let mut ids: Vec<i64> = support::table(&output.batches()).iter().map(|r| r[0].parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..expected as i64).collect::<Vec<_>>(), "every row once, none of the file still copying");
}
