//! The runner following a table into another database: `source.type postgres-cdc` into
//! PostgreSQL and `mysql-cdc` from MariaDB, with writes running during the snapshot, until
//! the copy equals the source. (The MariaDB path's kill test is `kill_mysql_cdc.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use operators_sources::jdbc::test_util::TestDb;
use rand::{Rng, SeedableRng};
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
