//! The runner reading directories on a real HDFS (`testing/services/hdfs.sh`; `HDFS_URL`
//! names its NameNode, `HADOOP_CONF_DIR` its client configuration): the toolkit's
//! `source.path hdfs://...` and `hdfs:///...` (by `fs.defaultFS`) for CSV, Parquet and
//! ORC, to JSON files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::json;
use support::{json_rows, run, stderr};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: start HDFS with `testing/services/hdfs.sh start` (or `eval \"$(testing/services/start-all.sh)\"`)"
        ),
    }
}

/// A fresh directory on the test HDFS: its URL and its absolute path there.
fn hdfs_dir(name: &str) -> (String, String) {
    let path = format!("/operators-tests/runner-{name}-{:016x}", rand::random::<u64>());
    (format!("{}{path}", env("HDFS_URL").trim_end_matches('/')), path)
}

/// Writes files to HDFS.
fn put(files: &[(String, Vec<u8>)]) {
    let url = env("HDFS_URL");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = hdfs_native::ClientBuilder::new().with_url(&url).build().unwrap();
        for (path, bytes) in files {
            let options = hdfs_native::WriteOptions { create_parent: true, ..Default::default() };
            let mut w = client.create(path, options).await.unwrap_or_else(|e| {
                panic!("creating {path} on {url} (is `testing/services/hdfs.sh start` running?): {e}")
            });
            w.write(bytes::Bytes::from(bytes.clone())).await.unwrap();
            w.close().await.unwrap();
        }
    });
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sample_batch() -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("city", DataType::Utf8, true), Field::new("id", DataType::Int32, true)]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["beijing", "shanghai", "shenzhen"])),
        Arc::new(Int32Array::from(vec![1, 2, 3])),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn sorted_by_id(mut rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    rows.sort_by_key(|r| r["id"].to_string());
    rows
}

fn read_to_files(cwd: &Path, kind: &str, source_path: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = cwd.join(format!("out-{kind}"));
    let mut args = vec![
        "--source.type",
        kind,
        "--source.path",
        source_path,
        "--source.watch.type",
        "PROCESS_ONCE",
        "--sink.type",
        "file",
        "--sink.path",
        s(&out),
    ];
    args.extend_from_slice(extra);
    let o = run(cwd, &args);
    assert!(o.status.success(), "{kind} from {source_path}: {}", stderr(&o));
    sorted_by_id(json_rows(&out))
}

#[test]
fn csv_parquet_and_orc_on_hdfs_to_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (csv_url, csv_path) = hdfs_dir("csv");
    let (parquet_url, parquet_path) = hdfs_dir("parquet");
    let (orc_url, orc_path) = hdfs_dir("orc");

    let mut parquet = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut parquet, sample_batch().schema(), None).unwrap();
    w.write(&sample_batch()).unwrap();
    w.close().unwrap();
    let mut orc = Vec::new();
    let mut w = orc_rust::ArrowWriterBuilder::new(&mut orc, sample_batch().schema()).try_build().unwrap();
    w.write(&sample_batch()).unwrap();
    w.close().unwrap();
    put(&[
        (format!("{csv_path}/a.csv"), b"id,name,k1\n1,n1,v1\n".to_vec()),
        (format!("{csv_path}/b.csv"), b"id,name,k1\n2,n2,v2\n".to_vec()),
        (format!("{parquet_path}/part-0.parquet"), parquet),
        (format!("{orc_path}/part-0.orc"), orc),
    ]);

    // The toolkit's CSV example: the header names the columns, merge nests them.
    let rows = read_to_files(
        tmp.path(),
        "csv",
        &csv_url,
        &["--source.firstLine.schema", "true", "--sink.merge.enable", "true"],
    );
    assert_eq!(
        rows,
        vec![
            json!({"id": "1", "feas": {"name": "n1", "k1": "v1"}}),
            json!({"id": "2", "feas": {"name": "n2", "k1": "v2"}})
        ]
    );
    let expected = vec![
        json!({"city": "beijing", "id": 1}),
        json!({"city": "shanghai", "id": 2}),
        json!({"city": "shenzhen", "id": 3}),
    ];
    assert_eq!(read_to_files(tmp.path(), "parquet", &parquet_url, &[]), expected);
    assert_eq!(read_to_files(tmp.path(), "orc", &orc_url, &[]), expected);
}

#[test]
fn hdfs_urls_without_a_namenode_use_the_default_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, path) = hdfs_dir("default-fs");
    put(&[(format!("{path}/a.csv"), b"id,name,k1\n7,n7,v7\n".to_vec())]);
    // The child inherits HADOOP_CONF_DIR, whose core-site.xml names the NameNode.
    let conf = env("HADOOP_CONF_DIR");
    assert!(Path::new(&conf).join("core-site.xml").is_file(), "no core-site.xml under HADOOP_CONF_DIR={conf}");
    let rows = read_to_files(tmp.path(), "csv", &format!("hdfs://{path}"), &["--source.firstLine.schema", "true"]);
    assert_eq!(rows, vec![json!({"id": "7", "name": "n7", "k1": "v7"})]);
}

#[test]
fn a_missing_hdfs_directory_is_an_error_naming_the_parameter_and_url() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = hdfs_dir("missing");
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            &url,
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "file",
            "--sink.path",
            s(&tmp.path().join("out")),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("source.path") && err.contains(&url) && err.contains("does not exist"), "{err}");
}

#[test]
fn csv_on_hdfs_to_json_files_on_hdfs_with_checkpoints_on_hdfs() {
    let tmp = tempfile::tempdir().unwrap();
    let (in_url, in_path) = hdfs_dir("e2e-in");
    let (out_url, _) = hdfs_dir("e2e-out");
    let (ck_url, _) = hdfs_dir("e2e-ck");
    let mut files = Vec::new();
    for f in 0..3 {
        let mut csv = String::from("id,name\n");
        for i in 0..500 {
            csv.push_str(&format!("{},n{}\n", f * 500 + i, f * 500 + i));
        }
        files.push((format!("{in_path}/f{f}.csv"), csv.into_bytes()));
    }
    put(&files);
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            &in_url,
            "--source.firstLine.schema",
            "true",
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "file",
            "--sink.path",
            &out_url,
            "--stream.checkpoint.enable",
            "true",
            "--stream.checkpoint.mode",
            "EXACTLY_ONCE",
            "--stream.checkpoint.interval",
            "200",
            "--stream.checkpoint.dir",
            &ck_url,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The file sink commits only what a completed checkpoint covers: rows committed are
    // rows whose checkpoint metadata was written to HDFS.
    let out = Path::new(&out_url);
    let mut ids: Vec<i64> = json_rows(out).iter().map(|r| r["id"].as_str().unwrap().parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1500).collect::<Vec<_>>(), "every row once");
    assert!(support::hidden_files(out).is_empty(), "nothing left in progress: {:?}", support::hidden_files(out));
    // The job finished, so its checkpoints went from HDFS with it.
    let ck = Path::new(&ck_url);
    let left = operators_core::fs::for_path(ck).unwrap().list(ck).unwrap();
    assert!(left.iter().all(|e| !e.is_dir), "{left:?}");
}

/// The toolkit README's file → Kafka pipelines with every path on HDFS (input and
/// checkpoints): Parquet → Kafka, ORC → Kafka, CSV with a header → Kafka with nesting.
#[test]
fn the_toolkit_pipelines_from_hdfs_to_kafka_with_checkpoints_on_hdfs() {
    use operators_testkit::kafka::TestKafka;
    let kafka = TestKafka::start();
    let tmp = tempfile::tempdir().unwrap();
    let (csv_url, csv_path) = hdfs_dir("kafka-csv");
    let (parquet_url, parquet_path) = hdfs_dir("kafka-parquet");
    let (orc_url, orc_path) = hdfs_dir("kafka-orc");
    let (ck_url, _) = hdfs_dir("kafka-ck");
    let mut parquet = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut parquet, sample_batch().schema(), None).unwrap();
    w.write(&sample_batch()).unwrap();
    w.close().unwrap();
    let mut orc = Vec::new();
    let mut w = orc_rust::ArrowWriterBuilder::new(&mut orc, sample_batch().schema()).try_build().unwrap();
    w.write(&sample_batch()).unwrap();
    w.close().unwrap();
    put(&[
        (format!("{csv_path}/a.csv"), b"id,name,k1\n1,n1,v1\n2,n2,v2\n".to_vec()),
        (format!("{parquet_path}/part-0.parquet"), parquet),
        (format!("{orc_path}/part-0.orc"), orc),
    ]);
    let to_kafka = |kind: &str, source: &str, extra: &[&str]| -> Vec<serde_json::Value> {
        let topic = kafka.topic(&format!("hdfs-{kind}"), 1).unwrap();
        let mut args = vec![
            "--source.type",
            kind,
            "--source.path",
            source,
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "kafka",
            "--sink.kafka.brokers",
            kafka.bootstrap_servers(),
            "--sink.kafka.topic",
            &topic,
            "--stream.checkpoint.enable",
            "true",
            "--stream.checkpoint.mode",
            "EXACTLY_ONCE",
            "--stream.checkpoint.dir",
            &ck_url,
        ];
        args.extend_from_slice(extra);
        let o = run(tmp.path(), &args);
        assert!(o.status.success(), "{kind} from {source} to Kafka: {}", stderr(&o));
        let values = kafka.read_committed_values(&topic).unwrap();
        sorted_by_id(values.iter().map(|v| serde_json::from_str(v).unwrap()).collect())
    };
    let expected = vec![
        json!({"city": "beijing", "id": 1}),
        json!({"city": "shanghai", "id": 2}),
        json!({"city": "shenzhen", "id": 3}),
    ];
    assert_eq!(to_kafka("parquet", &parquet_url, &[]), expected);
    assert_eq!(to_kafka("orc", &orc_url, &[]), expected);
    assert_eq!(
        to_kafka("csv", &csv_url, &["--source.firstLine.schema", "true", "--sink.merge.enable", "true"]),
        vec![
            json!({"id": "1", "feas": {"name": "n1", "k1": "v1"}}),
            json!({"id": "2", "feas": {"name": "n2", "k1": "v2"}})
        ]
    );
}

/// `hadoop.user.name` is the HDFS user: the part files the job writes are that user's.
#[test]
fn hadoop_user_name_is_the_hdfs_user() {
    let tmp = tempfile::tempdir().unwrap();
    let (in_url, in_path) = hdfs_dir("user-in");
    let (out_url, out_path) = hdfs_dir("user-out");
    put(&[(format!("{in_path}/a.csv"), b"id,name\n1,n1\n".to_vec())]);
    let o = support::operator(tmp.path())
        .env_remove("HADOOP_USER_NAME")
        .args([
            "--source.type",
            "csv",
            "--source.path",
            &in_url,
            "--source.firstLine.schema",
            "true",
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "file",
            "--sink.path",
            &out_url,
            "--hadoop.user.name",
            "csp-etl",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hadoop.user.name"), "applied, so no warning: {}", stderr(&o));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let owners: Vec<(String, String)> = rt.block_on(async {
        let client = hdfs_native::ClientBuilder::new().with_url(env("HDFS_URL")).build().unwrap();
        client.list_status(&out_path, false).await.unwrap().into_iter().map(|s| (s.path, s.owner)).collect()
    });
    let parts: Vec<&(String, String)> = owners.iter().filter(|(p, _)| p.ends_with(".json")).collect();
    assert!(!parts.is_empty(), "{owners:?}");
    assert!(parts.iter().all(|(_, owner)| owner == "csp-etl"), "{owners:?}");
}
