//! CSV / TSV / TXT directory sources: types, nulls, headers, every delimiter form,
//! charsets, empty files, a last line without newline, quoting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use operators_core::operator::BadRecordPolicy;
use operators_core::schema::parse_schema;
use operators_sources::file::text::{TextFormat, parse_charset, parse_delimiter};
use support::read_dir;

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn row(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn declared_types_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.csv",
        b"1,true,1.5,2020-04-15 14:06:34,2020-04-15,hello\n,,,,,\n3,FALSE,-2,1586959594000,1970-01-01,\"a,b\"\n4,0,1e3,2020-04-15 14:06:34.123,2000-02-29,x\n",
    );
    let schema = parse_schema("struct<id:BigInt,ok:Boolean,score:Double,ts:Timestamp,day:Date,s:String>").unwrap();
    let read = read_dir(dir.path(), TextFormat::csv().with_schema(schema.clone()), 1).await.unwrap();
    assert_eq!(read.rows[0].schema(), schema);
    assert_eq!(
        read.strings(),
        vec![
            row(&["1", "true", "1.5", "2020-04-15T14:06:34", "2020-04-15", "hello"]),
            row(&["NULL", "NULL", "NULL", "NULL", "NULL", "NULL"]),
            row(&["3", "false", "-2.0", "2020-04-15T14:06:34", "1970-01-01", "a,b"]),
            row(&["4", "false", "1000.0", "2020-04-15T14:06:34.123", "2000-02-29", "x"]),
        ]
    );
    assert!(read.dead.is_empty());
}

#[tokio::test]
async fn header_names_columns_and_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", b"id,name,k1\n1,n1,v1\n2,n2,v2\n");
    write(dir.path(), "b.csv", b"id,name,k1\n3,n3,v3\n");
    let read = read_dir(dir.path(), TextFormat::csv().with_header(true), 1).await.unwrap();
    let names: Vec<String> = read.rows[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, vec!["id", "name", "k1"]);
    assert_eq!(read.strings(), vec![row(&["1", "n1", "v1"]), row(&["2", "n2", "v2"]), row(&["3", "n3", "v3"])]);
}

#[tokio::test]
async fn without_header_or_schema_columns_are_col_n() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"1,n1,v1\n2,n2,v2\n");
    let read = read_dir(dir.path(), TextFormat::txt(), 1).await.unwrap();
    let names: Vec<String> = read.rows[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, vec!["_col0", "_col1", "_col2"]);
    assert!(read.rows[0].schema().fields().iter().all(|f| f.data_type() == &DataType::Utf8));
}

#[tokio::test]
async fn headers_that_differ_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", b"id,name\n1,x\n");
    write(dir.path(), "b.csv", b"id,title\n2,y\n");
    let err = read_dir(dir.path(), TextFormat::csv().with_header(true), 1).await.unwrap_err().to_string();
    assert!(err.contains("b.csv") && err.contains("a.csv") && err.contains("column 2"), "{err}");
}

#[tokio::test]
async fn every_delimiter_form() {
    let cases: Vec<(&str, &str, &[u8])> = vec![
        (",", "\\n", b"1,a\n2,b\n"),
        ("44", "10", b"1,a\n2,b\n"),
        ("\\t", "\\n", b"1\ta\n2\tb\n"),
        ("9", "\\n", b"1\ta\n2\tb\n"),
        ("0x01", "\\n", b"1\x01a\n2\x01b\n"),
        ("\\u0001", "\\u0002", b"1\x01a\x022\x01b\x02"),
        ("|", ";", b"1|a;2|b"),
        ("124", "0x3B", b"1|a;2|b;"),
        (",", "\\n", b"1,a\r\n2,b\r\n"),
    ];
    for (fd, ld, data) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "f.txt", data);
        let format = TextFormat::txt()
            .with_field_delimiter(parse_delimiter("source.field.delimiter", fd).unwrap())
            .with_line_delimiter(Some(parse_delimiter("source.line.delimiter", ld).unwrap()));
        let read = read_dir(dir.path(), format, 1).await.unwrap();
        assert_eq!(read.strings(), vec![row(&["1", "a"]), row(&["2", "b"])], "delimiters {fd:?} / {ld:?}");
    }
}

#[tokio::test]
async fn tsv_default_and_no_quoting() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "f.tsv", b"1\t\"quoted\"\tx,y\n");
    let read = read_dir(dir.path(), TextFormat::tsv(), 1).await.unwrap();
    assert_eq!(read.strings(), vec![row(&["1", "\"quoted\"", "x,y"])]);
}

#[tokio::test]
async fn gbk_and_utf16_input() {
    let dir = tempfile::tempdir().unwrap();
    let text = "1,北京,中文\n2,上海,测试\n";
    let (gbk, _, bad) = encoding_rs::GBK.encode(text);
    assert!(!bad);
    write(dir.path(), "a.csv", &gbk);
    let read = read_dir(dir.path(), TextFormat::csv().with_charset(parse_charset("source.charset", "GBK").unwrap()), 1)
        .await
        .unwrap();
    assert_eq!(read.strings(), vec![row(&["1", "北京", "中文"]), row(&["2", "上海", "测试"])]);

    for (label, bom) in [("UTF-16", true), ("UTF-16LE", false), ("UTF-16BE", false), ("UTF-16BE", true)] {
        let dir = tempfile::tempdir().unwrap();
        let be = label.ends_with("BE");
        let mut bytes = Vec::new();
        if bom {
            bytes.extend_from_slice(if be { &[0xFE, 0xFF] } else { &[0xFF, 0xFE] });
        }
        for unit in text.encode_utf16() {
            bytes.extend_from_slice(&if be { unit.to_be_bytes() } else { unit.to_le_bytes() });
        }
        write(dir.path(), "u.csv", &bytes);
        let format =
            TextFormat::csv().with_charset(parse_charset("source.charset", label).unwrap()).with_chunk_bytes(7);
        let read = read_dir(dir.path(), format, 1).await.unwrap();
        assert_eq!(read.strings(), vec![row(&["1", "北京", "中文"]), row(&["2", "上海", "测试"])], "{label} bom={bom}");
    }
}

#[tokio::test]
async fn empty_files_and_a_last_line_without_newline() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a-empty.csv", b"");
    write(dir.path(), "b-one-row.csv", b"7,seven");
    write(dir.path(), "c-header-only.csv", b"");
    let read = read_dir(dir.path(), TextFormat::csv(), 1).await.unwrap();
    assert_eq!(read.strings(), vec![row(&["7", "seven"])]);

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "h.csv", b"id,name\n");
    write(dir.path(), "i.csv", b"id,name\n8,eight");
    let read = read_dir(dir.path(), TextFormat::csv().with_header(true), 1).await.unwrap();
    assert_eq!(read.strings(), vec![row(&["8", "eight"])]);
}

#[tokio::test]
async fn quoted_fields_span_lines_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "q.csv", b"1,\"multi\nline\"\n2,\"has \"\"quotes\"\" and, commas\"\n");
    let read = read_dir(dir.path(), TextFormat::csv().with_chunk_bytes(5), 1).await.unwrap();
    assert_eq!(read.strings(), vec![row(&["1", "multi\nline"]), row(&["2", "has \"quotes\" and, commas"])]);
}

#[tokio::test]
async fn many_files_many_batches_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for f in 0..7 {
        let mut s = String::new();
        for i in 0..3000 {
            let id = f * 10_000 + i;
            s.push_str(&format!("{id},name-{id}\n"));
            expected.push(id);
        }
        write(dir.path(), &format!("f{f}.csv"), s.as_bytes());
    }
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("n", DataType::Utf8, true)]));
    let format = TextFormat::csv().with_schema(schema).with_batch_size(1000).unwrap().with_chunk_bytes(4096);
    let read = read_dir(dir.path(), format, 3).await.unwrap();
    let mut ids: Vec<i64> = read.strings().iter().map(|r| r[0].parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn nested_directories_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", b"1\n");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::create_dir(dir.path().join("_temporary")).unwrap();
    let err = read_dir(dir.path(), TextFormat::csv(), 1).await.unwrap_err().to_string();
    assert!(err.contains("`sub`") && err.contains("nested"), "{err}");
}

#[tokio::test]
async fn hidden_and_in_progress_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", b"1\n");
    write(dir.path(), ".hidden.csv", b"2\n");
    write(dir.path(), "_SUCCESS", b"");
    write(dir.path(), "b.csv.inprogress", b"3\n");
    let read = read_dir(dir.path(), TextFormat::csv(), 1).await.unwrap();
    assert_eq!(read.strings(), vec![row(&["1"])]);
}

#[tokio::test]
async fn timestamps_declared_as_such_accept_the_three_forms() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.csv", b"1586959594000\n2020-04-15 14:06:34\n2020-04-15 14:06:34.5\n");
    let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true)]));
    let read = read_dir(dir.path(), TextFormat::csv().with_schema(schema).with_bad_records(BadRecordPolicy::Fail), 1)
        .await
        .unwrap();
    assert_eq!(
        read.strings(),
        vec![row(&["2020-04-15T14:06:34"]), row(&["2020-04-15T14:06:34"]), row(&["2020-04-15T14:06:34.500"])]
    );
}
