//! The runner following a table into another database: `source.type postgres-cdc` into
//! PostgreSQL and `mysql-cdc` from MariaDB, with writes running during the snapshot, until
//! the copy equals the source; and a MariaDB table into Kafka as Debezium change events.
//! (The MariaDB path's kill test is `kill_mysql_cdc.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sources::jdbc::JdbcSource;
use operators_sources::jdbc::test_util::TestDb;
use operators_testkit::kafka::{Consumed, Isolation, TestKafka};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::kill::{LastRun, concat_args, restartable_args};
use support::spawn_logged;

/// Writes to the source while the job runs: inserts, updates, deletes.
async fn writes(db: &TestDb, n: usize, next: &mut i64, rng: &mut impl Rng) {
    for _ in 0..n {
        let id = rng.random_range(1..*next);
        let sql = match rng.random_range(0..10) {
            0..=2 => {
                *next += 1;
                format!("insert into items values ({}, 'new', null, 0)", *next - 1)
            }
            3..=8 => {
                format!("update items set n = n + 1, v = 'u{}', d = current_date where id = {id}", rng.random::<u16>())
            }
            _ => format!("delete from items where id = {id}"),
        };
        db.exec(&sql).await;
    }
}

async fn follow(source: &TestDb, source_type: &str, source_rows: &str) {
    let target = TestDb::postgres().await;
    target.exec("create table items (id bigint primary key, v varchar(40), d date, n int not null)").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let args = concat_args(&[
        &["--job.name", "runner-cdc"],
        &[
            "--source.type",
            source_type,
            "--source.db.url",
            &source.url,
            "--source.db.table",
            "items",
            "--source.cdc.snapshot.chunk.size",
            "50",
            "--sink.type",
            "jdbc",
            "--sink.db.url",
            &target.url,
            "--sink.db.table",
            "items",
            "--sink.db.key.columns",
            "id",
        ],
        &restartable_args(Some("EXACTLY_ONCE"), "100", ck.to_str().unwrap()),
    ]);
    let log = tmp.path().join("run.log");
    let run = LastRun::new(spawn_logged(tmp.path(), &args, &log), Some(&log), Duration::from_secs(120));
    let mut next = 5001;
    writes(source, 300, &mut next, &mut rng).await;
    let expected = source.rows(source_rows).await;
    let mut seen = Vec::new();
    for _ in 0..240 {
        seen = target.rows("select id, v, cast(d as text), cast(n as text) from items order by id").await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    run.stop_after_async(Duration::from_millis(200)).await;
    if seen != expected {
        let first = seen.iter().zip(&expected).find(|(a, b)| a != b);
        panic!(
            "{source_type}: {} rows copied, {} in the source; first difference (copy, source): {first:?}\n{}",
            seen.len(),
            expected.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cdc_keeps_a_postgres_copy_equal() {
    let source = TestDb::postgres().await;
    source.exec("create table items (id bigint primary key, v varchar(40), d date, n int not null)").await;
    source.exec("insert into items select g, 'v' || g, null, 0 from generate_series(1, 5000) g").await;
    follow(&source, "postgres-cdc", "select id, v, cast(d as text), cast(n as text) from items order by id").await;
    drop_slot(&source).await;
    source.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_cdc_keeps_a_postgres_copy_equal() {
    let source = TestDb::mysql().await;
    source.exec("create table items (id bigint primary key, v varchar(40), d date, n int not null)").await;
    source.exec("insert into items select seq, concat('v', seq), null, 0 from seq_1_to_5000").await;
    follow(&source, "mysql-cdc", "select id, v, cast(d as char), cast(n as char) from items order by id").await;
    source.cleanup().await;
}

/// The Kafka sink's `debezium-json`: the table's snapshot and every change as Debezium
/// events keyed by `{"id": …}`, an update as one `u` event, each delete followed by a
/// tombstone; folding the topic's events by key gives the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_cdc_into_kafka_as_debezium_events() {
    let source = TestDb::mysql().await;
    source.exec("create table items (id bigint primary key, v varchar(40), d date, n int not null)").await;
    source.exec("insert into items select seq, concat('v', seq), null, 0 from seq_1_to_500").await;
    let kafka = TestKafka::start();
    let topic = kafka.topic("cdc-debezium", 3).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let args = concat_args(&[
        &["--job.name", "runner-cdc-debezium"],
        &["--source.type", "mysql-cdc", "--source.db.url", &source.url, "--source.db.table", "items"],
        &["--source.cdc.snapshot.chunk.size", "50"],
        &["--sink.type", "kafka", "--sink.kafka.brokers", kafka.bootstrap_servers(), "--sink.kafka.topic", &topic],
        &["--sink.format", "debezium-json"],
        &restartable_args(Some("EXACTLY_ONCE"), "100", ck.to_str().unwrap()),
    ]);
    let log = tmp.path().join("run.log");
    let run = LastRun::new(spawn_logged(tmp.path(), &args, &log), Some(&log), Duration::from_secs(120));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut next = 501;
    // Writes while the snapshot is read, then after it: snapshot rows (`r`) and changes
    // from the log (`c`, `u`, `d`).
    let mut events = Vec::new();
    for round in 0..2 {
        writes(&source, 200, &mut next, &mut rng).await;
        let expected = source.rows("select id, v, cast(d as char), cast(n as char) from items order by id").await;
        let mut folded = Vec::new();
        for _ in 0..240 {
            events = kafka.read(&topic, Isolation::ReadCommitted).unwrap();
            folded = fold(&events);
            if folded == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if folded != expected {
            run.stop_after_async(Duration::from_millis(200)).await;
            panic!(
                "round {round}: the events fold to {} rows, the table has {}; first difference (events, table): \
                 {:?}\n{}",
                folded.len(),
                expected.len(),
                folded.iter().zip(&expected).find(|(a, b)| a != b),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
    run.stop_after_async(Duration::from_millis(200)).await;

    let mut ops = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let key: Value = serde_json::from_slice(e.key.as_deref().expect("every event has a key")).unwrap();
        let Some(value) = &e.value else {
            // A tombstone follows its delete, in the same partition.
            let before: Value = serde_json::from_slice(events[i - 1].value.as_deref().unwrap()).unwrap();
            assert_eq!((before["op"].as_str(), &before["before"]["id"]), (Some("d"), &key["id"]), "event {i}");
            *ops.entry("tombstone").or_insert(0) += 1;
            continue;
        };
        let event: Value = serde_json::from_slice(value).unwrap();
        let op = event["op"].as_str().unwrap();
        let row = if op == "d" { &event["before"] } else { &event["after"] };
        assert_eq!(key, serde_json::json!({ "id": row["id"] }), "event {i}: {event}");
        assert_eq!(event["source"]["table"], "items");
        assert_eq!(event["source"]["snapshot"], op == "r", "event {i}: {event}");
        if op == "u" {
            let (before, after) = (&event["before"], &event["after"]);
            assert_eq!(before["n"].as_i64().unwrap() + 1, after["n"].as_i64().unwrap(), "{event}");
        }
        *ops.entry(["r", "c", "u", "d"].into_iter().find(|o| *o == op).unwrap()).or_insert(0) += 1;
    }
    for op in ["r", "c", "u", "d", "tombstone"] {
        assert!(ops.get(op).is_some_and(|n| *n > 0), "no {op} event: {ops:?}");
    }
    assert_eq!(ops["d"], ops["tombstone"]);
    source.cleanup().await;
}

/// The table that the Debezium events of a topic describe, in `id` order, as the rows
/// `TestDb::rows` reads.
fn fold(events: &[Consumed]) -> Vec<Vec<String>> {
    let text = |v: &Value| match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut table: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for e in events {
        let Some(value) = &e.value else { continue };
        let event: Value = serde_json::from_slice(value).unwrap();
        match event["op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                let after = &event["after"];
                table.insert(
                    after["id"].as_i64().unwrap(),
                    ["id", "v", "d", "n"].iter().map(|c| text(&after[c])).collect(),
                );
            }
            "d" => {
                table.remove(&event["before"]["id"].as_i64().unwrap());
            }
            op => panic!("unknown op {op}: {event}"),
        }
    }
    table.into_values().collect()
}

/// The rows of `items`, or of `sql`, as the database source reads them: each row's cells
/// as text, by key. Column
/// types may differ between the two databases (MySQL's `tinyint` is PostgreSQL's
/// `int2`), their values' text may not.
async fn table_text(db: &TestDb, sql: Option<&str>) -> BTreeMap<String, Vec<String>> {
    use arrow::array::Array;
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    // The table's own column types where no query is given: a query's result columns
    // are typed from the result (MariaDB reports `json` as a binary string there).
    let source = JdbcSource::new(db.config()).with_fetch_size(1000).unwrap();
    let source = match sql {
        Some(sql) => source.with_sql(sql),
        None => source.with_table("items"),
    };
    p.source("db", source).sink("out", TwoPhaseMemorySink::new(out.clone()));
    p.run(JobConfig::new("db-read").with_restart(RestartStrategy::None)).await.unwrap();
    let options = arrow::util::display::FormatOptions::default();
    let mut rows = BTreeMap::new();
    for b in out.batches() {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let row: Vec<String> = (0..b.num_columns())
                .map(|c| if b.column(c).is_null(r) { "NULL".into() } else { formatters[c].value(r).to_string() })
                .collect();
            rows.insert(row[0].clone(), row);
        }
    }
    rows
}

/// Every column type the database source reads, NULLs included, followed from `source`
/// into a PostgreSQL table (`target_ddl`) by the runner with writes during and after the
/// snapshot, until the copy (read with `copy_sql`) reads as the source does.
async fn follow_every_type(
    source: &TestDb,
    source_type: &str,
    (target_ddl, copy_sql): (&str, Option<&str>),
    write: fn(&mut StdRng, &mut i64) -> String,
) {
    let target = TestDb::postgres().await;
    target.exec(target_ddl).await;
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let args = concat_args(&[
        &["--job.name", "runner-cdc-types"],
        &["--source.type", source_type, "--source.db.url", &source.url, "--source.db.table", "items"],
        &["--source.cdc.snapshot.chunk.size", "40"],
        // No sink.db.key.columns: the changes are applied by the primary key the source names.
        &["--sink.type", "jdbc", "--sink.db.url", &target.url, "--sink.db.table", "items"],
        &restartable_args(Some("EXACTLY_ONCE"), "100", ck.to_str().unwrap()),
    ]);
    let log = tmp.path().join("run.log");
    let run = LastRun::new(spawn_logged(tmp.path(), &args, &log), Some(&log), Duration::from_secs(120));
    let mut rng = StdRng::seed_from_u64(23);
    let mut next_id = 1001;
    for round in 0..2 {
        for _ in 0..300 {
            source.exec(&write(&mut rng, &mut next_id)).await;
        }
        let expected = table_text(source, None).await;
        let mut copy = BTreeMap::new();
        for _ in 0..240 {
            copy = table_text(&target, copy_sql).await;
            if copy == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if copy != expected {
            run.stop_after_async(Duration::from_millis(200)).await;
            let first = expected.iter().find(|(k, v)| copy.get(*k) != Some(v));
            panic!(
                "{source_type}, round {round}: {} rows copied, {} in the source; first difference (source row, \
                 copy): {:?}\n{}",
                copy.len(),
                expected.len(),
                first.map(|(k, v)| (v, copy.get(k))),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
    run.stop_after_async(Duration::from_millis(200)).await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mysql_type_into_postgres() {
    use operators_testkit::tables::mysql;
    let source = TestDb::mysql().await;
    source.exec(mysql::TYPES).await;
    let mut rng = StdRng::seed_from_u64(5);
    let rows: Vec<String> = (1..=1000).map(|id| mysql::values(id, &mut rng)).collect();
    source.exec(&format!("insert into items values {}", rows.join(", "))).await;
    // The database source reads `numeric` as a float (as the toolkit did); the copy's
    // unsigned 64-bit numbers are compared as their text.
    let copy_sql = "select id, b, s, i, f4, f8, d, t, v, day, ts, tz, bin, j, tm, tiny, cast(big_u as text) as big_u, \
                    mu, e, st, yr, n from items";
    follow_every_type(&source, "mysql-cdc", (mysql::POSTGRES_COPY, Some(copy_sql)), |rng, next| {
        mysql::write(rng, next)
    })
    .await;
    source.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_type_into_postgres() {
    use operators_testkit::tables::postgres;
    let source = TestDb::postgres().await;
    source.exec(postgres::TYPES).await;
    source.exec("alter table items replica identity full").await;
    let mut rng = StdRng::seed_from_u64(5);
    let rows: Vec<String> = (1..=1000).map(|id| postgres::values(id, &mut rng)).collect();
    source.exec(&format!("insert into items values {}", rows.join(", "))).await;
    follow_every_type(&source, "postgres-cdc", (postgres::TYPES, None), postgres::write).await;
    drop_slot(&source).await;
    source.cleanup().await;
}

/// Drops the replication slot and publication of `items` once the job let go of them:
/// the server has a limited number of slots.
async fn drop_slot(source: &TestDb) {
    let schema = source.url.split("currentSchema=").nth(1).unwrap().to_string();
    let slot = format!("operators_{schema}_items");
    for _ in 0..100 {
        if source
            .scalar(&format!("select count(*) from pg_replication_slots where slot_name = '{slot}' and active"))
            .await
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    source.exec(&format!("select pg_drop_replication_slot('{slot}')")).await;
    source.exec(&format!("drop publication {slot}")).await;
}
