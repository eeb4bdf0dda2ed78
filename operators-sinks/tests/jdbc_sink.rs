//! The database sink on PostgreSQL, MariaDB and SQLite, for real: insert and upsert,
//! exactly once under injected failures, recovery of a transaction lost with its
//! process, and bad input named before rows move.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;

use operators_clients::jdbc::test_util::TestDb;
use operators_clients::jdbc::{DbConfig, DbKind};
use operators_core::builtins::{FaultInjector, GeneratorSource, MapTransform};
use operators_core::checkpoint::{CheckpointConfig, CheckpointingMode};
use operators_core::operator::{Committable, OperatorContext, SinkFactory, TaskInfo};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::jdbc::{JdbcSink, PROGRESS_TABLE, WriteMode};
use operators_testkit::changelog::changes;

fn create_table(kind: DbKind) -> &'static str {
    match kind {
        DbKind::MySql => "create table gen (id bigint, `key` bigint, value double, name varchar(40))",
        _ => "create table gen (id bigint, key bigint, value double precision, name varchar(40))",
    }
}

fn config(dir: &std::path::Path, name: &str) -> JobConfig {
    JobConfig::new(name).with_restart(RestartStrategy::fixed_delay(10, Duration::from_millis(20))).with_checkpointing(
        CheckpointConfig::new(dir).with_interval(Duration::from_millis(100)).with_mode(CheckpointingMode::ExactlyOnce),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_every_row_on_every_database() {
    for db in TestDb::all().await {
        db.exec(create_table(db.kind)).await;
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::bounded(20_000).with_batch_size(700))
            .sink("db", JdbcSink::new(db.config(), "gen").with_batch_size(500));
        p.run(JobConfig::new("insert").with_restart(RestartStrategy::None)).await.unwrap();
        assert_eq!(db.scalar("select count(*) from gen").await, 20_000, "{:?}", db.kind);
        assert_eq!(db.scalar("select count(distinct id) from gen").await, 20_000);
        assert_eq!(db.rows("select name from gen where id = 1234").await, vec![vec!["name-234".to_string()]]);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_updates_by_key() {
    for db in TestDb::all().await {
        let ddl = match db.kind {
            DbKind::MySql => "create table latest (`key` bigint primary key, id bigint, name varchar(40))",
            _ => "create table latest (key bigint primary key, id bigint, name varchar(40))",
        };
        db.exec(ddl).await;
        // 5000 rows over 100 keys: each key is written 50 times, the last write wins.
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::bounded(5_000).with_keys(100).with_splits(1))
            .transform(
                "project",
                MapTransform::new(|b| {
                    Ok(Some(b.project(&[1, 0, 3]).map_err(|e| operators_core::Error::arrow("project", e))?))
                }),
            )
            .sink("db", JdbcSink::new(db.config(), "latest").with_mode(WriteMode::Upsert { keys: vec!["key".into()] }));
        p.run(JobConfig::new("upsert").with_restart(RestartStrategy::None)).await.unwrap();
        assert_eq!(db.scalar("select count(*) from latest").await, 100, "{:?}", db.kind);
        // The generator's ids rise per key: the newest id of key 7 is 4907.
        let key_col = if db.kind == DbKind::MySql { "`key`" } else { "key" };
        assert_eq!(db.scalar(&format!("select id from latest where {key_col} = 7")).await, 4907, "{:?}", db.kind);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_failures() {
    for db in [TestDb::postgres().await, TestDb::mysql().await, TestDb::sqlite().await] {
        db.exec(create_table(db.kind)).await;
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new().fail_at("map", [20, 70, 130]);
        let f = faults.clone();
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::bounded(60_000).with_batch_size(250).with_rate_limit(60_000))
            .transform(
                "map",
                MapTransform::new(move |b| {
                    f.check("map")?;
                    Ok(Some(b))
                }),
            )
            .sink("db", JdbcSink::new(db.config(), "gen").exactly_once(true).with_batch_size(400));
        let outcome = p.run(config(dir.path(), "eo-db")).await.unwrap();
        assert_eq!(outcome.restarts, 3, "{:?}: {:?}", db.kind, faults.fired());
        assert_eq!(db.scalar("select count(*) from gen").await, 60_000, "{:?}: nothing lost or twice", db.kind);
        assert_eq!(db.scalar("select count(distinct id) from gen").await, 60_000, "{:?}", db.kind);
        assert!(db.scalar(&format!("select count(*) from {PROGRESS_TABLE}")).await >= 1);
        db.cleanup().await;
    }
}

fn batch(from: i64, to: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..to).collect();
    RecordBatch::try_new(
        GeneratorSource::schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(ids.iter().map(|i| i % 10).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(ids.iter().map(|i| *i as f64).collect::<Vec<_>>())),
            Arc::new(StringArray::from(ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

fn info(run: &str) -> TaskInfo {
    TaskInfo {
        job_name: "recovery".into(),
        job_id: run.into(),
        run_id: run.into(),
        operator_id: "db".into(),
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        attempt: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_lost_before_its_commit_is_written_once_on_recovery() {
    for db in TestDb::all().await {
        db.exec(create_table(db.kind)).await;
        let factory = JdbcSink::new(db.config(), "gen").exactly_once(true);

        // Run a: checkpoint 1 completes, then the process dies before commit(1).
        let mut ctx = OperatorContext::standalone(info("run-a"));
        let mut sink = factory.create(&info("run-a")).unwrap();
        sink.open(&mut ctx).await.unwrap();
        sink.write_batch(batch(0, 700), &mut ctx).await.unwrap();
        sink.write_batch(batch(700, 1000), &mut ctx).await.unwrap();
        let c1 = sink.pre_commit(1, &mut ctx).await.unwrap().expect("rows to commit");
        drop(sink);
        assert_eq!(db.scalar("select count(*) from gen").await, 0, "{:?}: nothing visible before the commit", db.kind);

        // Run b restores checkpoint 1 and finishes its commit.
        let committable = Committable { checkpoint_id: 1, data: c1 };
        let mut ctx = OperatorContext::standalone(info("run-b"));
        let mut sink = factory.create(&info("run-b")).unwrap();
        sink.recover(vec![committable.clone()], &mut ctx).await.unwrap();
        assert_eq!(db.scalar("select count(*) from gen").await, 1000, "{:?}", db.kind);
        // ...and dies right after: run c restores checkpoint 1 again; nothing is written twice.
        drop(sink);
        let mut ctx = OperatorContext::standalone(info("run-c"));
        let mut sink = factory.create(&info("run-c")).unwrap();
        sink.recover(vec![committable], &mut ctx).await.unwrap();
        assert_eq!(db.scalar("select count(*) from gen").await, 1000, "{:?}: recovered once only", db.kind);

        // The normal path goes on from there.
        sink.write_batch(batch(1000, 1500), &mut ctx).await.unwrap();
        let c2 = sink.pre_commit(2, &mut ctx).await.unwrap().unwrap();
        sink.commit(2, c2.clone()).await.unwrap();
        sink.commit(2, c2).await.unwrap();
        assert_eq!(db.scalar("select count(distinct id) from gen").await, 1500, "{:?}", db.kind);
        assert_eq!(db.scalar("select count(*) from gen").await, 1500, "{:?}: commit is idempotent", db.kind);
        sink.close().await.unwrap();
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named() {
    let db = TestDb::postgres().await;
    db.exec("create table narrow (id bigint)").await;
    let cases = [
        (JdbcSink::new(db.config(), "no_such_table"), "sink.db.table", "no_such_table"),
        (JdbcSink::new(db.config(), "narrow"), "sink.db.table", "column `key`"),
        (
            JdbcSink::new(DbConfig::parse("sink.db.url", &db.url, Some("nobody"), Some("pw")).unwrap(), "narrow"),
            "sink.db.url",
            "nobody",
        ),
    ];
    for (sink, key, needle) in cases {
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::bounded(10)).sink("db", sink);
        let err = p.run(JobConfig::new("bad").with_restart(RestartStrategy::None)).await.unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(needle), "{key}: {err}");
        assert!(!err.contains("pw"), "{err}");
    }
    assert_eq!(db.scalar("select count(*) from narrow").await, 0);
    let debug = format!(
        "{:?}",
        JdbcSink::new(DbConfig::parse("sink.db.url", "postgres://u:hunter2@h/db", None, None).unwrap(), "t")
    );
    assert!(!debug.contains("hunter2"), "{debug}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_is_applied_by_key_on_every_database() {
    for db in TestDb::all().await {
        for exactly_once in [false, true] {
            db.exec("create table items (id bigint primary key, name varchar(40))").await;
            let factory = JdbcSink::new(db.config(), "items")
                .with_mode(WriteMode::Upsert { keys: vec!["id".into()] })
                .exactly_once(exactly_once);
            let mut ctx = OperatorContext::standalone(info("changes"));
            let mut sink = factory.create(&info("changes")).unwrap();
            sink.open(&mut ctx).await.unwrap();
            // In one batch: inserts, an update, a delete, a key changed by an update
            // (3 -> 30), a row inserted and deleted, a NULL, and a key deleted then inserted again.
            sink.write_batch(
                changes(&[
                    ("+I", 1, Some("a")),
                    ("+I", 2, Some("b")),
                    ("+I", 3, Some("c")),
                    ("+I", 4, Some("d")),
                    ("-U", 1, Some("a")),
                    ("+U", 1, Some("a2")),
                    ("-D", 2, Some("b")),
                    ("-U", 3, Some("c")),
                    ("+U", 30, Some("c")),
                    ("+I", 5, None),
                    ("+I", 6, Some("gone")),
                    ("-D", 6, Some("gone")),
                    ("-D", 4, Some("d")),
                    ("+I", 4, Some("d again")),
                ]),
                &mut ctx,
            )
            .await
            .unwrap();
            // A later batch: a delete of a row written by the first.
            sink.write_batch(changes(&[("-D", 5, None), ("-U", 1, Some("a2")), ("+U", 1, Some("a3"))]), &mut ctx)
                .await
                .unwrap();
            if let Some(c) = sink.pre_commit(1, &mut ctx).await.unwrap() {
                sink.commit(1, c).await.unwrap();
            }
            sink.close().await.unwrap();
            let rows = db.rows("select id, name from items order by id").await;
            let want: Vec<Vec<String>> = [("1", "a3"), ("4", "d again"), ("30", "c")]
                .iter()
                .map(|(i, n)| vec![i.to_string(), n.to_string()])
                .collect();
            assert_eq!(rows, want, "{:?} exactly_once={exactly_once}", db.kind);
            db.exec("drop table items").await;
        }
        // Insert mode cannot apply changes: refused naming the key setting.
        db.exec("create table items (id bigint primary key, name varchar(40))").await;
        let mut ctx = OperatorContext::standalone(info("insert"));
        let mut sink = JdbcSink::new(db.config(), "items").create(&info("insert")).unwrap();
        sink.open(&mut ctx).await.unwrap();
        let err = sink.write_batch(changes(&[("+I", 1, Some("a"))]), &mut ctx).await.unwrap_err().to_string();
        assert!(err.contains("sink.db.key.columns") && err.contains("changelog"), "{err}");
        db.cleanup().await;
    }
}

/// PostgreSQL: text values reach columns of a case-sensitive user-defined type, of an
/// extension's type outside the search path (PostgreSQL names it `public.citext`), and
/// of non-text types whose names differ only in case (`"A"` jsonb beside `a` text): each
/// parameter is cast to its own column's type, by the column's exact name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_reaches_postgres_columns_of_case_sensitive_names_and_types() {
    use arrow::datatypes::{DataType, Field, Schema};
    let db = TestDb::postgres().await;
    db.exec(
        r#"create type "Mood" as enum ('Happy', 'sad');
           create type mood as enum ('calm');
           create extension if not exists citext schema public;
           create table casing (id bigint, "Feeling" "Mood", "A" jsonb, a text, m mood, ci public.citext)"#,
    )
    .await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("Feeling", DataType::Utf8, true),
        Field::new("A", DataType::Utf8, true),
        Field::new("a", DataType::Utf8, true),
        Field::new("m", DataType::Utf8, true),
        Field::new("ci", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![Some("Happy"), None])),
            Arc::new(StringArray::from(vec![Some(r#"{"k": 1}"#), None])),
            Arc::new(StringArray::from(vec![Some("not json"), None])),
            Arc::new(StringArray::from(vec![Some("calm"), None])),
            Arc::new(StringArray::from(vec![Some("MiXed"), None])),
        ],
    )
    .unwrap();
    let mut ctx = OperatorContext::standalone(info("casing"));
    let mut sink = JdbcSink::new(db.config(), "casing").create(&info("casing")).unwrap();
    sink.open(&mut ctx).await.unwrap();
    sink.write_batch(batch, &mut ctx).await.unwrap();
    if let Some(c) = sink.pre_commit(1, &mut ctx).await.unwrap() {
        sink.commit(1, c).await.unwrap();
    }
    sink.close().await.unwrap();
    let rows = db.rows(r#"select id, "Feeling"::text, "A"::text, a, m::text, ci::text from casing order by id"#).await;
    let want =
        [["1", "Happy", r#"{"k": 1}"#, "not json", "calm", "MiXed"], ["2", "NULL", "NULL", "NULL", "NULL", "NULL"]];
    assert_eq!(rows, want.iter().map(|r| r.iter().map(|s| s.to_string()).collect::<Vec<_>>()).collect::<Vec<_>>());
    db.cleanup().await;
}

/// `WriteMode::SourceKey`: a changelog is applied by the primary key its source names in
/// the schema; a stream that names none is refused, naming the key setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_is_applied_by_the_key_its_source_names() {
    for db in TestDb::all().await {
        db.exec("create table items (id bigint primary key, name varchar(40))").await;
        let keyed = |batch: RecordBatch| {
            let schema = batch
                .schema()
                .as_ref()
                .clone()
                .with_metadata([(operators_core::changelog::KEY_METADATA.to_string(), "id".to_string())].into());
            RecordBatch::try_new(Arc::new(schema), batch.columns().to_vec()).unwrap()
        };
        let mut ctx = OperatorContext::standalone(info("source-key"));
        let mut sink =
            JdbcSink::new(db.config(), "items").with_mode(WriteMode::SourceKey).create(&info("source-key")).unwrap();
        sink.open(&mut ctx).await.unwrap();
        let first = changes(&[("+I", 1, Some("a")), ("+I", 2, Some("b")), ("-U", 1, Some("a")), ("+U", 1, Some("a2"))]);
        sink.write_batch(keyed(first), &mut ctx).await.unwrap();
        sink.write_batch(keyed(changes(&[("-D", 2, Some("b")), ("+I", 3, None)])), &mut ctx).await.unwrap();
        if let Some(c) = sink.pre_commit(1, &mut ctx).await.unwrap() {
            sink.commit(1, c).await.unwrap();
        }
        // A changelog without the key: refused naming the setting.
        let err = sink.write_batch(changes(&[("+I", 4, Some("d"))]), &mut ctx).await.unwrap_err().to_string();
        assert!(err.contains("sink.db.key.columns"), "{err}");
        sink.close().await.unwrap();
        let rows = db.rows("select id, name from items order by id").await;
        let want: Vec<Vec<String>> =
            [("1", "a2"), ("3", "NULL")].iter().map(|(i, n)| vec![i.to_string(), n.to_string()]).collect();
        assert_eq!(rows, want, "{:?}", db.kind);
        db.cleanup().await;
    }
}
