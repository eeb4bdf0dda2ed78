//! The runner's Elasticsearch pipelines from the toolkit's README, against the real
//! OpenSearch in `ES_URL` (`testing/services/opensearch.sh`): Parquet → ES with and without SQL, and
//! the combinations that must be refused before anything runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use operators_testkit::es::TestEs;
use serde_json::json;
use support::{run_off_runtime, stderr, write_parquet};

fn write_events(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("x", DataType::Utf8, true),
        Field::new("y", DataType::Utf8, true),
        Field::new("tags", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["beijing", "shanghai", "shenzhen"])),
            Arc::new(StringArray::from(vec!["116", "121", "114"])),
            Arc::new(StringArray::from(vec!["39", "31", "22"])),
            Arc::new(StringArray::from(vec![Some("t1|t2"), Some("t3"), None])),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("part-0.parquet"), &[batch]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_to_es_full_sync_with_a_version() {
    let es = TestEs::start().await.unwrap();
    let (user, password) = es.credentials().cloned().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_events(&input);
    let index = es.index("lyh");
    let o = run_off_runtime(
        tmp.path(),
        &[
            "--job.name",
            "es6 sink job example",
            "--source.type",
            "parquet",
            "--source.path",
            input.to_str().unwrap(),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "es",
            "--sink.es.server",
            es.servers(),
            "--sink.es.username",
            &user,
            "--sink.es.password",
            &password,
            "--sink.es.index",
            &index,
            "--sink.es.type",
            "parquet",
            "--sink.es.sync.type",
            "full",
            "--sink.es.unique.column",
            "id",
            "--sink.es.version.column",
            "version",
            "--sink.es.version",
            "1586959594",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = es.documents(&index).await.unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(
        docs["1"],
        json!({"id": 1, "city": "beijing", "x": "116", "y": "39", "tags": "t1|t2", "version": 1586959594})
    );
    // The summary counts what went in and out.
    let err = stderr(&o);
    assert!(err.contains("rows in 3"), "{err}");
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_to_es_with_the_readme_sql_incremental() {
    let es = TestEs::start().await.unwrap();
    let (user, password) = es.credentials().cloned().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_events(&input);
    let index = es.index("sql");
    es.put(&index, "2", json!({"id": 2, "kept": true})).await.unwrap();
    let o = run_off_runtime(
        tmp.path(),
        &[
            "--source.type",
            "parquet",
            "--source.path",
            input.to_str().unwrap(),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","city":"String","x":"String","y":"String","tags":"String"}"#,
            "--stream.sql",
            "select id, city, concat(x,'-', y) as location, arraySplit(tags, '|') as tags from t1",
            "--sink.type",
            "es",
            "--sink.es.server",
            es.servers(),
            "--sink.es.username",
            &user,
            "--sink.es.password",
            &password,
            "--sink.es.index",
            &index,
            "--sink.es.sync.type",
            "incremental",
            "--sink.es.unique.column",
            "id",
            "--sink.es.version",
            "7",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = es.documents(&index).await.unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(
        docs["2"],
        json!({"id": 2, "kept": true, "city": "shanghai", "location": "121-31", "tags": ["t3"], "version": 7})
    );
    assert_eq!(docs["3"]["tags"], json!(null));
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_column_in_the_sql_output_is_refused_before_the_job_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_events(&input);
    let o = run_off_runtime(
        tmp.path(),
        &[
            "--source.type",
            "parquet",
            "--source.path",
            input.to_str().unwrap(),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","city":"String"}"#,
            "--stream.sql",
            "select id, city as version from t1",
            "--sink.type",
            "es",
            // Nothing listens here: the job must stop before connecting.
            "--sink.es.server",
            "127.0.0.1:1",
            "--sink.es.index",
            "i",
            "--sink.es.sync.type",
            "full",
            "--sink.es.unique.column",
            "id",
            "--sink.es.version",
            "1",
        ],
    )
    .await;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("sink.es.version.column") && err.contains("`version`"), "{err}");
}
