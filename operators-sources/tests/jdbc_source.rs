//! The database source on PostgreSQL, MariaDB and SQLite, for real: every column type
//! and NULLs, empty tables, WHERE clauses, resuming, bad input, and a 1M-row table
//! streamed with flat memory. Each test works in its own schema or database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, DiscardSink, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::{OperatorContext, Sink, SinkFactory, TaskInfo};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, JobStatus, Pipeline};
use operators_sources::jdbc::test_util::TestDb;
use operators_sources::jdbc::{DbConfig, DbKind, JdbcSource};
use support::table;

fn row(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn read(source: JdbcSource) -> operators_core::Result<Vec<RecordBatch>> {
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("db", source).sink("out", TwoPhaseMemorySink::new(out.clone()));
    p.run(JobConfig::new("db-read").with_restart(RestartStrategy::None)).await?;
    Ok(out.batches())
}

fn types_table(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Postgres => {
            "create table types (id int8 primary key, b bool, s int2, i int4, f4 float4, f8 float8, d numeric(10,3), \
             t text, v varchar(20), day date, ts timestamp, tz timestamptz, bin bytea, j jsonb, u uuid, tm time);
             insert into types values (1, true, 7, 42, 1.5, 2.25, 123.456, 'hello', '北京', '2020-04-15', \
             '2020-04-15 14:06:34.123', '2020-04-15 14:06:34+02', '\\x0102ff', '{\"a\": [1, 2]}', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '13:45:00');
             insert into types (id) values (2)"
        }
        DbKind::MySql => {
            "create table types (id bigint primary key, b boolean, s smallint, i int, f4 float, f8 double, \
             d decimal(10,3), t text, v varchar(20), day date, ts datetime(3), tz timestamp(3) null, bin varbinary(10), \
             j json, u char(36), tm time, tiny tinyint, big_u bigint unsigned, yr year);
             insert into types values (1, true, 7, 42, 1.5, 2.25, 123.456, 'hello', '北京', '2020-04-15', \
             '2020-04-15 14:06:34.123', '2020-04-15 12:06:34', x'0102ff', '{\"a\": [1, 2]}', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '13:45:00', -5, 18446744073709551615, 2024);
             insert into types (id) values (2)"
        }
        DbKind::Sqlite => {
            "create table types (id integer primary key, b boolean, i integer, f8 real, d numeric, t text, day date, \
             ts datetime, bin blob);
             insert into types values (1, 1, 42, 2.25, 123.456, 'hello', '2020-04-15', '2020-04-15 14:06:34.123', x'0102ff');
             insert into types (id) values (2)"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_and_nulls() {
    for db in TestDb::all().await {
        db.exec(types_table(db.kind)).await;
        let batches = read(JdbcSource::new(db.config()).with_table("types")).await.unwrap();
        let schema = batches[0].schema();
        let types: Vec<(&str, &DataType)> =
            schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
        let mut rows = table(&batches);
        rows.sort();
        assert_eq!(rows.len(), 2, "{:?}", db.kind);
        // The second row is NULL everywhere but the id.
        assert!(rows[1][1..].iter().all(|v| v == "NULL"), "{:?}: {:?}", db.kind, rows[1]);
        let get = |name: &str| -> (DataType, String) {
            let i = schema.index_of(name).unwrap();
            (types[i].1.clone(), rows[0][i].clone())
        };
        assert_eq!(get("b"), (DataType::Boolean, "true".into()), "{:?}", db.kind);
        assert_eq!(get("i").1, "42");
        assert_eq!(get("f8"), (DataType::Float64, "2.25".into()));
        if db.kind == DbKind::Sqlite {
            // SQLite reports no type for NUMERIC-affinity columns: the stored value is read as text.
            assert_eq!(get("d"), (DataType::Utf8, "123.456".into()));
        } else {
            assert_eq!(
                get("d"),
                (DataType::Float64, "123.456".into()),
                "{:?}: decimals become Double, as in the toolkit",
                db.kind
            );
        }
        assert_eq!(get("t"), (DataType::Utf8, "hello".into()));
        assert_eq!(get("day"), (DataType::Date32, "2020-04-15".into()));
        assert_eq!(get("ts"), (DataType::Timestamp(TimeUnit::Microsecond, None), "2020-04-15T14:06:34.123".into()));
        assert_eq!(get("bin"), (DataType::Binary, "0102ff".into()));
        if db.kind != DbKind::Sqlite {
            assert_eq!(get("s").1, "7");
            assert_eq!(get("f4"), (DataType::Float32, "1.5".into()));
            assert_eq!(get("v"), (DataType::Utf8, "北京".into()));
            let (tz_type, tz) = get("tz");
            assert_eq!(tz_type, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
            assert!(tz.starts_with("2020-04-15T12:06:34"), "{:?}: {tz}", db.kind);
            assert_eq!(get("j").1.replace(' ', ""), "{\"a\":[1,2]}");
            assert_eq!(get("u").1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
            assert_eq!(get("tm"), (DataType::Utf8, "13:45:00".into()));
        }
        if db.kind == DbKind::MySql {
            assert_eq!(get("tiny"), (DataType::Int8, "-5".into()));
            assert_eq!(get("big_u"), (DataType::UInt64, "18446744073709551615".into()));
            assert_eq!(get("yr"), (DataType::Int16, "2024".into()));
        }
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_tables_and_where_clauses() {
    for db in TestDb::all().await {
        db.exec("create table people (id int primary key, name varchar(20), age int)").await;
        let empty = read(JdbcSource::new(db.config()).with_table("people")).await.unwrap();
        assert_eq!(empty.iter().map(RecordBatch::num_rows).sum::<usize>(), 0, "{:?}", db.kind);
        db.exec("insert into people values (1, 'ann', 30), (2, 'bob', 17), (3, 'cy', 45), (4, null, null)").await;
        let adults =
            read(JdbcSource::new(db.config()).with_sql("select id, name from people where age >= 18 order by id;"))
                .await
                .unwrap();
        assert_eq!(table(&adults), vec![row(&["1", "ann"]), row(&["3", "cy"])], "{:?}", db.kind);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_before_any_row_moves() {
    let pg = TestDb::postgres().await;
    pg.exec("create table t (id int, doc tsvector); insert into t values (1, 'a b')").await;
    let cases: Vec<(JdbcSource, &str, &str)> = vec![
        (JdbcSource::new(pg.config()).with_table("no_such_table"), "source.db.table", "no_such_table"),
        (JdbcSource::new(pg.config()).with_sql("selec id from t"), "source.db.sql", "selec id from t"),
        (JdbcSource::new(pg.config()).with_sql("select id, doc from t"), "source.db.sql", "column `doc`"),
        (
            JdbcSource::new(pg.config()).with_sql("select id from t").with_key_column("nope"),
            "source.db.key.column",
            "`nope`",
        ),
        (
            JdbcSource::new(DbConfig::parse("source.db.url", &pg.url, Some("no_such_user"), None).unwrap())
                .with_table("t"),
            "source.db.url",
            "no_such_user",
        ),
    ];
    for (source, key, needle) in cases {
        let err = read(source).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, operators_core::Error::Operator { source, .. } if matches!(source.as_ref(), operators_core::Error::Config { key: k, .. } if k == key)),
            "{key}: {msg}"
        );
        assert!(msg.contains(needle), "{key}: `{msg}` lacks `{needle}`");
    }
    pg.cleanup().await;

    let my = TestDb::mysql().await;
    let wrong = DbConfig::parse("source.db.url", &my.url, None, Some("not-the-password")).unwrap();
    let err = read(JdbcSource::new(wrong).with_table("x")).await.unwrap_err().to_string();
    assert!(err.contains("Access denied") && !err.contains("not-the-password"), "{err}");
    my.exec("create table g (id int, shape geometry)").await;
    let err = read(JdbcSource::new(my.config()).with_table("g")).await.unwrap_err().to_string();
    assert!(err.contains("column `shape`") && err.contains("GEOMETRY"), "{err}");
    my.cleanup().await;

    // SQLite maps every declared type to one of its five storage classes: no type is
    // unknown there, but a missing table is.
    let lite = TestDb::sqlite().await;
    let err = read(JdbcSource::new(lite.config()).with_table("nope")).await.unwrap_err().to_string();
    assert!(err.contains("no such table: nope"), "{err}");
    lite.cleanup().await;
}

/// A sink that is slow enough to stop a job in the middle of a table.
#[derive(Clone)]
struct Slow(TwoPhaseMemorySink);

struct SlowTask(Box<dyn Sink>);

#[async_trait]
impl Sink for SlowTask {
    async fn write_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> operators_core::Result<()> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.0.write_batch(batch, ctx).await
    }
    async fn pre_commit(&mut self, id: u64, ctx: &mut OperatorContext) -> operators_core::Result<Option<Vec<u8>>> {
        self.0.pre_commit(id, ctx).await
    }
    async fn commit(&mut self, id: u64, c: Vec<u8>) -> operators_core::Result<()> {
        self.0.commit(id, c).await
    }
}

impl SinkFactory for Slow {
    fn create(&self, info: &TaskInfo) -> operators_core::Result<Box<dyn Sink>> {
        Ok(Box::new(SlowTask(self.0.create(info)?)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_read_resumes_exactly_with_and_without_a_key() {
    for db in [TestDb::postgres().await, TestDb::mysql().await] {
        db.exec("create table events (id int primary key, v varchar(10))").await;
        let values: Vec<String> = (1..=3000).map(|i| format!("({i}, 'v{i}')")).collect();
        db.exec(&format!("insert into events values {}", values.join(", "))).await;
        for keyed in [true, false] {
            let ckpt = tempfile::tempdir().unwrap();
            let out = CommittedOutput::default();
            let source = || {
                let s = JdbcSource::new(db.config()).with_fetch_size(100).unwrap();
                if keyed {
                    s.with_table("events").with_key_column("id")
                } else {
                    s.with_sql("select * from events order by id")
                }
            };
            let config = |restore: Option<&std::path::Path>| {
                let mut c = JobConfig::new("db-resume")
                    .with_restart(RestartStrategy::None)
                    .with_checkpointing(CheckpointConfig::new(ckpt.path()).with_interval(Duration::from_millis(50)))
                    .with_savepoint_dir(ckpt.path().join("sp"));
                if let Some(r) = restore {
                    c = c.with_restore(r, false);
                }
                c
            };
            let p = Pipeline::new();
            p.source("db", source()).sink("out", Slow(TwoPhaseMemorySink::new(out.clone())));
            let job = p.start(config(None)).unwrap();
            while out.num_rows() < 500 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let sp = job.stop_with_savepoint(None, false).await.unwrap();
            assert_eq!(job.wait().await.unwrap().status, JobStatus::Finished);
            let midway = out.num_rows();
            assert!(midway < 3000, "{:?} keyed={keyed}: stopped midway ({midway})", db.kind);
            let p = Pipeline::new();
            p.source("db", source()).sink("out", TwoPhaseMemorySink::new(out.clone()));
            p.run(config(Some(&sp))).await.unwrap();
            let mut ids: Vec<i64> = table(&out.batches()).iter().map(|r| r[0].parse().unwrap()).collect();
            ids.sort_unstable();
            assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "{:?} keyed={keyed}", db.kind);
        }
        db.cleanup().await;
    }
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stream_with_flat_memory() {
    for db in [TestDb::postgres().await, TestDb::mysql().await] {
        let fill = match db.kind {
            DbKind::Postgres => {
                "create table big (id int8 primary key, payload text);
                 insert into big select g, repeat('x', 200) from generate_series(1, 1000000) g"
            }
            _ => {
                "create table big (id bigint primary key, payload varchar(250));
                 insert into big select seq, repeat('x', 200) from seq_1_to_1000000"
            }
        };
        db.exec(fill).await;
        let sink = DiscardSink::default();
        let p = Pipeline::new();
        p.source("db", JdbcSource::new(db.config()).with_table("big").with_fetch_size(1000).unwrap())
            .sink("discard", sink.clone());
        let before = rss();
        let job = p.start(JobConfig::new("big-read").with_restart(RestartStrategy::None)).unwrap();
        let mut peak = before;
        while !job.status().is_terminal() {
            peak = peak.max(rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        job.wait().await.unwrap();
        assert_eq!(sink.rows(), 1_000_000, "{:?}", db.kind);
        // 1M rows of 200 bytes are 200 MB; streaming keeps a few batches.
        let growth = peak.saturating_sub(before);
        assert!(growth < 80 * 1024 * 1024, "{:?}: memory grew by {} MiB", db.kind, growth >> 20);
        db.cleanup().await;
    }
}

#[test]
fn only_supported_databases() {
    let err = DbConfig::parse("source.db.url", "jdbc:hive2://h:10000/db", None, None).unwrap_err().to_string();
    assert!(err.contains("postgresql, mysql, mariadb, sqlite"), "{err}");
}
