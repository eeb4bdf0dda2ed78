//! The toolkit README's pipelines, driven through the `operator` binary. Kafka and
//! Elasticsearch sinks are replaced by the file sink here; their own tests drive them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::json;
use support::{hidden_files, json_rows, run, stderr};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The README's Parquet/ORC sample: city, name, x, y, tags, id.
fn sample_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Utf8, true),
        Field::new("y", DataType::Utf8, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("id", DataType::Int32, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["beijing", "shanghai", "shenzhen"])),
        Arc::new(StringArray::from(vec!["n1", "n2", "n3"])),
        Arc::new(StringArray::from(vec!["116", "121", "114"])),
        Arc::new(StringArray::from(vec!["39", "31", "22"])),
        Arc::new(StringArray::from(vec![Some("t1|t2"), Some("t3"), None])),
        Arc::new(Int32Array::from(vec![1, 2, 3])),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn write_parquet(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    support::write_parquet(&dir.join("part-0.parquet"), &[sample_batch()]);
}

fn write_orc(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let b = sample_batch();
    let mut w = orc_rust::ArrowWriterBuilder::new(std::fs::File::create(dir.join("part-0.orc")).unwrap(), b.schema())
        .try_build()
        .unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
}

fn sorted_by_id(mut rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    rows.sort_by_key(|r| r["id"].to_string());
    rows
}

#[test]
fn the_main_job_on_the_bundled_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run(
        &workspace(),
        &[
            "--config",
            "examples/main-job.properties",
            "--sink.path",
            s(&out),
            "--stream.checkpoint.dir",
            s(&tmp.path().join("ck")),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 600, "{}", stderr(&o));
    for r in &rows {
        assert!(r["score"].as_f64().unwrap() > 50.0);
        assert!(r["location"].as_str().unwrap().contains('-'));
        assert!(r["tags"].is_array());
    }
    assert!(
        stderr(&o).contains("summary: rows in 1200, rows out 600, dead-lettered 0, filtered 600"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn csv_with_merge_nests_the_toolkit_example() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("csv");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "id,name,k1\n1,n1,v1\n").unwrap();
    let out = tmp.path().join("out");
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            s(&input),
            "--source.firstLine.schema",
            "true",
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.merge.enable",
            "true",
            "--sink.type",
            "file",
            "--sink.path",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_rows(&out), vec![json!({"id": "1", "feas": {"name": "n1", "k1": "v1"}})]);
}

#[test]
fn parquet_and_orc_to_files() {
    for (kind, write) in [("parquet", write_parquet as fn(&Path)), ("orc", write_orc)] {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join(kind);
        write(&input);
        let out = tmp.path().join("out");
        let o = run(
            tmp.path(),
            &[
                "--source.type",
                kind,
                "--source.path",
                s(&input),
                "--source.watch.type",
                "PROCESS_ONCE",
                "--sink.type",
                "file",
                "--sink.path",
                s(&out),
            ],
        );
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let rows = sorted_by_id(json_rows(&out));
        assert_eq!(rows.len(), 3, "{kind}");
        assert_eq!(
            rows[0],
            json!({"city": "beijing", "name": "n1", "x": "116", "y": "39", "tags": "t1|t2", "id": 1}),
            "{kind}"
        );
        assert!(hidden_files(&out).is_empty());
    }
}

#[test]
fn parquet_with_the_readme_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("parquet");
    write_parquet(&input);
    let out = tmp.path().join("out");
    let o = run(
        tmp.path(),
        &[
            "--job.name",
            "sql-es",
            "--source.type",
            "parquet",
            "--source.path",
            s(&input),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema.json",
            r#"{"city": "String", "name": "String", "x": "String", "y": "String", "tags": "String", "id": "Int"}"#,
            "--stream.sql",
            "select id, city, name, concat(x,'-', y) as location, arraySplit(tags, '|') as tags from t1",
            "--sink.type",
            "file",
            "--sink.path",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        sorted_by_id(json_rows(&out)),
        vec![
            json!({"id": 1, "city": "beijing", "name": "n1", "location": "116-39", "tags": ["t1", "t2"]}),
            json!({"id": 2, "city": "shanghai", "name": "n2", "location": "121-31", "tags": ["t3"]}),
            json!({"id": 3, "city": "shenzhen", "name": "n3", "location": "114-22", "tags": null}),
        ]
    );
}

#[test]
fn txt_with_ascii_code_delimiters_and_gbk() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("txt");
    std::fs::create_dir(&input).unwrap();
    let (bytes, _, _) = encoding_rs::GBK.encode("1\u{1}北京\u{2}2\u{1}上海\u{2}");
    std::fs::write(input.join("a.txt"), &bytes).unwrap();
    let out = tmp.path().join("out");
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "txt",
            "--source.path",
            s(&input),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--source.field.delimiter",
            "1",
            "--source.line.delimiter",
            "0x02",
            "--source.charset",
            "GBK",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","city":"String"}"#,
            "--sink.type",
            "file",
            "--sink.path",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sorted_by_id(json_rows(&out)), vec![json!({"id": 1, "city": "北京"}), json!({"id": 2, "city": "上海"})]);
}

#[test]
fn dead_letters_are_written_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("csv");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,ok\nx,bad id\n3,ok\n4,too,many\n").unwrap();
    let out = tmp.path().join("out");
    let dead = tmp.path().join("dead");
    let args = [
        "--source.type",
        "csv",
        "--source.path",
        s(&input),
        "--source.watch.type",
        "PROCESS_ONCE",
        "--stream.sql.schema.json",
        r#"{"id":"BigInt","s":"String"}"#,
        "--sink.type",
        "file",
        "--sink.path",
        s(&out),
    ];
    // The default policy fails the job and names the record.
    let o = run(tmp.path(), &args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a.csv:2 (byte 5)") && stderr(&o).contains("`x` is not a valid BigInt"),
        "{}",
        stderr(&o)
    );
    let mut with_dlq = args.to_vec();
    with_dlq.extend(["--source.bad.records", "dead-letter", "--dead.letter.path", s(&dead)]);
    let o = run(tmp.path(), &with_dlq);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_rows(&out).len(), 2);
    let letters = json_rows(&dead);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["line"], 2);
    assert_eq!(letters[1]["line"], 4);
    assert!(letters[1]["reason"].as_str().unwrap().contains("expected 2 fields, found 3"));
    assert!(stderr(&o).contains("rows in 4, rows out 2, dead-lettered 2, filtered 0"), "{}", stderr(&o));
}

#[test]
fn stdout_sink_prints_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("csv");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,a\n2,b\n").unwrap();
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            s(&input),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "stdout",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "{\"_col0\":\"1\",\"_col1\":\"a\"}\n{\"_col0\":\"2\",\"_col1\":\"b\"}\n"
    );
}
