//! The runner's parameters as a new user meets them: deduplication on any source,
//! parameters that have no effect named in a warning (at start and in `--dry-run`),
//! contradictions refused naming both keys, and the struct schema naming the columns of
//! a headerless text file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::{Value, json};
use support::{json_rows, run, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a bounded file job into `out` with `extra` parameters.
fn file_job(cwd: &Path, source: &[&str], out: &Path, extra: &[&str]) -> std::process::Output {
    let ck = cwd.join("ck");
    let mut args: Vec<&str> = source.to_vec();
    args.extend_from_slice(&[
        "--source.watch.type",
        "PROCESS_ONCE",
        "--sink.type",
        "file",
        "--sink.path",
        s(out),
        "--stream.checkpoint.dir",
        s(&ck),
        "--progress",
        "off",
    ]);
    args.extend_from_slice(extra);
    run(cwd, &args)
}

/// Rows by id in file order.
fn ids_and_seqs(rows: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        rows.iter().map(|r| (r["id"].to_string().trim_matches('"').to_string(), r["seq"].to_string())).collect();
    out.sort();
    out
}

#[test]
fn unique_keys_deduplicate_a_csv_source_first_row_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // Files are read in name order: the first occurrence of a key is in the earlier file.
    std::fs::write(input.join("a.csv"), "id,name,seq\n1,a,1\n2,b,2\n1,c,3\n").unwrap();
    std::fs::write(input.join("b.csv"), "id,name,seq\n3,d,4\n2,e,5\n4,f,6\n").unwrap();
    let out = tmp.path().join("out");
    let o = file_job(
        tmp.path(),
        &["--source.type", "csv", "--source.path", s(&input), "--source.firstLine.schema", "true"],
        &out,
        &["--unique.keys", "id"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_rows(&out);
    assert_eq!(
        ids_and_seqs(&rows),
        vec![
            ("1".into(), "\"1\"".into()),
            ("2".into(), "\"2\"".into()),
            ("3".into(), "\"4\"".into()),
            ("4".into(), "\"6\"".into())
        ],
        "{rows:?}"
    );
    // The graph shows the operator.
    let dry = run(
        tmp.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            s(&input),
            "--sink.type",
            "stdout",
            "--unique.keys",
            "id",
            "--dry-run",
        ],
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dedup"), "{}", String::from_utf8_lossy(&dry.stdout));
}

#[test]
fn unique_keys_deduplicate_a_parquet_source_on_several_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 2, 1, 2, 3])),
            Arc::new(StringArray::from(vec!["x", "y", "x", "x", "x", "z"])),
            Arc::new(Int64Array::from(vec![10, 11, 12, 13, 14, 15])),
        ],
    )
    .unwrap();
    support::write_parquet(&input.join("part-0.parquet"), &[batch]);
    let out = tmp.path().join("out");
    let o = file_job(
        tmp.path(),
        &["--source.type", "parquet", "--source.path", s(&input)],
        &out,
        &["--unique.keys", "id,name", "--unique.data.ttl.in.minute", "30"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got: Vec<Value> = json_rows(&out);
    got.sort_by_key(|r| r["seq"].as_i64());
    assert_eq!(
        got,
        vec![
            json!({"id": 1, "name": "x", "seq": 10}),
            json!({"id": 1, "name": "y", "seq": 11}),
            json!({"id": 2, "name": "x", "seq": 12}),
            json!({"id": 3, "name": "z", "seq": 15}),
        ]
    );
}

#[test]
fn parameters_without_effect_are_named_at_start_and_in_the_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,x\n").unwrap();
    let out = tmp.path().join("out");
    let extra = [
        "--sink.es.server",
        "127.0.0.1:9200",
        "--source.db.url",
        "postgres://127.0.0.1/test",
        "--source.watch.interval",
        "5000",
        "--unique.data.ttl.in.minute",
        "5",
    ];
    let o = file_job(tmp.path(), &["--source.type", "csv", "--source.path", s(&input)], &out, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for (key, why) in [
        ("sink.es.server", "sink.type is file"),
        ("source.db.url", "source.type is csv"),
        ("source.watch.interval", "PROCESS_ONCE"),
        ("unique.data.ttl.in.minute", "no unique.keys"),
    ] {
        let line = err.lines().find(|l| l.contains("warning") && l.contains(&format!("`{key}`")));
        let line = line.unwrap_or_else(|| panic!("no warning naming {key}:\n{err}"));
        assert!(line.contains(why), "{line}");
    }
    // Parameters that do take part are not named.
    assert!(!err.contains("`source.path` has no effect"), "{err}");

    let mut args = vec![
        "--source.type",
        "csv",
        "--source.path",
        s(&input),
        "--sink.type",
        "kafka",
        "--sink.kafka.brokers",
        "127.0.0.1:9",
        "--sink.kafka.topic",
        "t",
    ];
    args.extend_from_slice(&["--sink.path", "/tmp/x", "--sink.es.index", "i", "--dry-run"]);
    let dry = run(tmp.path(), &args);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("`sink.path` has no effect") && text.contains("sink.type is kafka"), "{text}");
    assert!(text.contains("`sink.es.index` has no effect"), "{text}");
    assert!(!text.contains("`sink.kafka.topic` has no effect"), "{text}");
}

#[test]
fn contradictions_are_refused_naming_both_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,x\n").unwrap();
    let out = tmp.path().join("out");
    let o = file_job(
        tmp.path(),
        &["--source.type", "csv", "--source.path", s(&input)],
        &out,
        &["--stream.checkpoint.enable", "false", "--stream.checkpoint.mode", "EXACTLY_ONCE"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("stream.checkpoint.mode") && err.contains("stream.checkpoint.enable"), "{err}");
    assert!(!out.exists() || json_rows(&out).is_empty(), "nothing ran");
}

#[test]
fn debezium_events_are_refused_at_plan_time_for_a_source_without_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,x\n").unwrap();
    let mut args = vec!["--source.type", "csv", "--source.path", s(&input), "--source.watch.type", "PROCESS_ONCE"];
    args.extend_from_slice(&[
        "--sink.type",
        "kafka",
        "--sink.kafka.brokers",
        "127.0.0.1:9",
        "--sink.kafka.topic",
        "t",
        "--sink.format",
        "debezium-json",
        "--dry-run",
    ]);
    let o = run(tmp.path(), &args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("sink.format") && err.contains("source.type is csv") && err.contains("mysql-cdc"), "{err}");
}

#[test]
fn a_keyed_state_budget_is_refused_where_it_cannot_hold_naming_the_parameter() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,x\n").unwrap();
    let out = tmp.path().join("out");
    for (extra, says) in [
        (&["--stream.state.memory.budget", "12x"][..], "unknown unit `x`"),
        (&["--stream.state.memory.budget", "512k"][..], "at least 1m"),
        (
            &["--stream.state.memory.budget", "64m", "--stream.checkpoint.type", "memory"][..],
            "keeps all keyed state in memory",
        ),
    ] {
        let o = file_job(tmp.path(), &["--source.type", "csv", "--source.path", s(&input)], &out, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("stream.state.memory.budget") && err.contains(says), "{extra:?}: {err}");
        assert!(!out.exists() || json_rows(&out).is_empty(), "nothing ran");
    }
    // A budget the disk backend can hold runs the job.
    let o = file_job(
        tmp.path(),
        &["--source.type", "csv", "--source.path", s(&input)],
        &out,
        &["--stream.state.memory.budget", "64m", "--unique.keys", "_col0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_rows(&out).len(), 1);
}

#[test]
fn a_struct_schema_names_the_columns_of_a_headerless_text_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.txt"), "1,alice,3.5\n2,bob,4.0\n").unwrap();
    let out = tmp.path().join("out");
    let o = file_job(
        tmp.path(),
        &["--source.type", "csv", "--source.path", s(&input)],
        &out,
        &["--stream.sql.schema", "struct<id:BigInt,name:String,score:Double>"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rows = json_rows(&out);
    rows.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        rows,
        vec![json!({"id": 1, "name": "alice", "score": 3.5}), json!({"id": 2, "name": "bob", "score": 4.0})]
    );
    // And through SQL, by those names.
    let out2 = tmp.path().join("out2");
    let o = file_job(
        tmp.path(),
        &["--source.type", "csv", "--source.path", s(&input)],
        &out2,
        &[
            "--stream.sql.schema",
            "struct<id:BigInt,name:String,score:Double>",
            "--stream.sql.enable",
            "true",
            "--stream.sql",
            "select name, score * 2 as double_score from t1 where id = 2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_rows(&out2), vec![json!({"name": "bob", "double_score": 8.0})]);
}
