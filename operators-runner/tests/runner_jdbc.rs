//! Database pipelines through the `operator` binary, with the toolkit's parameters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use operators_sources::jdbc::test_util::TestDb;
use serde_json::json;
use support::{json_rows, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_to_files_with_the_toolkit_url_form_and_sql() {
    let db = TestDb::postgres().await;
    db.exec("create table lyh (id int primary key, name text, score numeric(5,1)); insert into lyh values (1, 'n1', 9.5), (2, 'n2', null), (3, 'n3', 7)").await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The README's Hive -> Kafka invocation, on PostgreSQL and into files.
    let schema = db.url.split("currentSchema=").nth(1).unwrap().to_string();
    let jdbc_url = format!("jdbc:postgresql://127.0.0.1:5432/test?currentSchema={schema}");
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "jdbc",
            "--source.db.type",
            "postgresql",
            "--source.db.url",
            &jdbc_url,
            "--source.db.username",
            "postgres",
            "--source.db.password",
            "123456",
            "--source.db.table",
            "lyh",
            "--source.db.sql",
            "'select * from lyh where id < 3 order by id'",
            "--sink.type",
            "file",
            "--sink.path",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_rows(&out),
        vec![json!({"id": 1, "name": "n1", "score": 9.5}), json!({"id": 2, "name": "n2", "score": null})]
    );
    assert!(stderr(&o).contains("rows in 2, rows out 2"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("123456"), "the password never shows");

    // A wrong table stops the job before anything runs, naming the table.
    let o = run(
        tmp.path(),
        &["--source.type", "jdbc", "--source.db.url", &db.url, "--source.db.table", "nope", "--sink.type", "stdout"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("source.db.table") && stderr(&o).contains("nope"), "{}", stderr(&o));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_into_mariadb_with_upsert() {
    let db = TestDb::mysql().await;
    db.exec("create table people (id bigint primary key, name varchar(20))").await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,ann\n2,bob\n1,anna\n").unwrap();
    let o = run(
        tmp.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            input.to_str().unwrap(),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","name":"String"}"#,
            "--sink.type",
            "jdbc",
            "--sink.db.url",
            &db.url,
            "--sink.db.table",
            "people",
            "--sink.db.mode",
            "upsert",
            "--sink.db.key.columns",
            "id",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        db.rows("select id, name from people order by id").await,
        vec![vec!["1".to_string(), "anna".into()], vec!["2".into(), "bob".into()]]
    );
    db.cleanup().await;
}
