//! `parquet-es`: a Parquet directory → the Elasticsearch sink (full sync), against a bare
//! loop that reads the same files with the parquet crate, encodes the same bulk bodies
//! and posts them with the same client and batch size. Both run against the real
//! OpenSearch in `ES_URL` (`testing/services/opensearch.sh`), with the same credentials,
//! so the server's cost is the same on both sides and the ratio shows what the pipeline
//! adds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use elasticsearch::Elasticsearch;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use operators_core::codec::json::JsonEncoder;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::elasticsearch::{EsConfig, EsSink, SyncMode};
use operators_sources::file::parquet::ParquetFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};
use operators_testkit::es::TestEs;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Run, measure};

type BoxError = Box<dyn std::error::Error>;

/// Writes `rows` rows (id, name, city, score) into `files` Parquet files under `dir`.
pub fn write_input(dir: &Path, rows: u64, files: u64) -> Result<Vec<PathBuf>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ]));
    let per_file = rows.div_ceil(files.max(1));
    let mut paths = Vec::new();
    let mut next = 0u64;
    for f in 0..files.max(1) {
        let path = dir.join(format!("part-{f:03}.parquet"));
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path)?, Arc::clone(&schema), None)?;
        let end = (next + per_file).min(rows);
        while next < end {
            let stop = (next + 8192).min(end);
            let ids: Vec<i64> = (next as i64..stop as i64).collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("name-{i}")))),
                    Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("city-{}", i % 100)))),
                    Arc::new(Float64Array::from_iter_values(ids.iter().map(|i| *i as f64 * 0.5))),
                ],
            )?;
            w.write(&batch)?;
            next = stop;
        }
        w.close()?;
        paths.push(path);
    }
    Ok(paths)
}

/// The pipeline: directory source → ES sink, full sync with a version, `batch` actions
/// per bulk request.
pub async fn pipeline(es: &TestEs, dir: &Path, index: &str, batch: usize, rows: u64) -> Result<Run, BoxError> {
    let location = Location::parse("source.path", dir.to_str().ok_or("path is not UTF-8")?)?;
    let mut config = EsConfig::parse("sink.es.server", es.servers())?;
    if let Some((user, password)) = es.credentials() {
        config = config.with_basic_auth(user, password);
    }
    let sink = EsSink::new(config, index, "id", SyncMode::Full).with_version("1586959594").with_bulk(
        batch,
        100 << 20,
        Duration::from_secs(60),
    );
    let p = Pipeline::new();
    p.source(
        "source",
        DirectorySource::new(location, ParquetFormat::new().with_batch_size(batch)?).with_watch(WatchMode::ProcessOnce),
    )
    .sink("es", sink);
    let run = measure(|| async {
        match p.run(JobConfig::new("parquet-es").with_restart(RestartStrategy::None)).await {
            Ok(_) => rows,
            Err(e) => {
                eprintln!("parquet-es failed: {e}");
                0
            }
        }
    })
    .await;
    Ok(run)
}

/// The baseline: read the files with the parquet crate, encode each row as the same
/// action and document lines, post `_bulk` every `batch` rows with the same client.
pub async fn baseline(es: &TestEs, files: &[PathBuf], index: &str, batch: usize) -> Result<Run, BoxError> {
    let first = es.servers().split(',').next().unwrap_or_default().to_string();
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(Url::parse(&first)?)).disable_proxy();
    if let Some((user, password)) = es.credentials() {
        builder = builder.auth(elasticsearch::auth::Credentials::Basic(user.clone(), password.clone()));
    }
    let transport = builder.build()?;
    let client = Elasticsearch::new(transport);
    let files = files.to_vec();
    let index = index.to_string();
    let run = measure(|| async move {
        let mut rows = 0u64;
        let encoder = JsonEncoder::new();
        let mut body = Vec::new();
        let mut pending = 0usize;
        let mut docs = Vec::new();
        let mut ranges = Vec::new();
        let post = |body: Vec<u8>| {
            let client = client.clone();
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
                let r = client.send(Method::Post, "_bulk", headers, None::<&()>, Some(body), None).await.ok()?;
                let bytes = r.bytes().await.ok()?;
                // Read the answer as the sink does, so both sides pay for it.
                let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                (v["errors"] == false).then_some(())
            }
        };
        for path in &files {
            let Ok(file) = std::fs::File::open(path) else { return 0 };
            let Ok(reader) =
                ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.with_batch_size(batch).build())
            else {
                return 0;
            };
            for b in reader {
                let Ok(b) = b else { return 0 };
                docs.clear();
                ranges.clear();
                if encoder.encode_rows(&b, &mut docs, &mut ranges).is_err() {
                    return 0;
                }
                let ids = b.column(0).as_any().downcast_ref::<Int64Array>().cloned();
                let Some(ids) = ids else { return 0 };
                for (i, r) in ranges.iter().enumerate() {
                    body.extend_from_slice(
                        format!(r#"{{"index":{{"_index":"{index}","_id":"{}"}}}}"#, ids.value(i)).as_bytes(),
                    );
                    body.push(b'\n');
                    let doc = &docs[r.clone()];
                    body.extend_from_slice(&doc[..doc.len() - 1]);
                    body.extend_from_slice(br#","version":1586959594}"#);
                    body.push(b'\n');
                    pending += 1;
                    rows += 1;
                    if pending == batch {
                        if post(std::mem::take(&mut body)).await.is_none() {
                            return 0;
                        }
                        pending = 0;
                    }
                }
            }
        }
        if pending > 0 && post(body).await.is_none() {
            return 0;
        }
        rows
    })
    .await;
    Ok(run)
}
