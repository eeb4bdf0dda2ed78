//! Kill test: the runner follows a MariaDB table (`source.type mysql-cdc`: snapshot, then
//! the binlog) into a PostgreSQL table, EXACTLY_ONCE, while a writer keeps inserting,
//! updating and deleting rows; it is SIGKILLed at random moments 22 times, each time
//! restarted from its checkpoints. At the end the two tables must be equal row for row,
//! and no change may have been applied twice: every update adds 1 to the row's counter
//! `n`, and a trigger on the target records any write that does not move `n` forward (a
//! change applied again, or an old one after a newer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use operators_sources::jdbc::DbPool;
use operators_sources::jdbc::test_util::TestDb;
use rand::{Rng, SeedableRng};
use support::kill::{Ends, KillLoop, Kills, LastRun, concat_args, restartable_args, seeded_rng};
use support::spawn_logged;

const KILLS: usize = 22;
const ROWS: i64 = 60_000;

/// The source's rows: `id v n` as text, in key order.
async fn rows(db: &TestDb) -> Vec<Vec<String>> {
    db.rows("select id, v, cast(n as char) from items order by id").await
}

async fn target_rows(db: &TestDb) -> Vec<Vec<String>> {
    db.rows("select id, v, cast(n as text) from items order by id").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_keeps_the_copy_equal_and_applies_no_change_twice() {
    let source = TestDb::mysql().await;
    let target = TestDb::postgres().await;
    source.exec("create table items (id bigint primary key, v varchar(40), n int not null default 0)").await;
    for start in (1..=ROWS).step_by(1000) {
        let values: Vec<String> = (start..start + 1000).map(|i| format!("({i}, 'v{i}', 0)")).collect();
        source.exec(&format!("insert into items values {}", values.join(", "))).await;
    }
    target.exec("create table items (id bigint primary key, v varchar(40), n int not null)").await;
    target.exec("create table violations (id bigint, old_n int, new_n int)").await;
    let DbPool::Postgres(pg) = &target.pool else { unreachable!() };
    sqlx::raw_sql(
        "create function check_n() returns trigger as $$ begin \
             if new.n <= old.n then insert into violations values (old.id, old.n, new.n); end if; \
             return new; end $$ language plpgsql; \
         create trigger items_n before update on items for each row execute function check_n()",
    )
    .execute(pg)
    .await
    .unwrap();

    // The writer: a steady mix of changes until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), source.url.clone());
        operators_core::spawn(async move {
            let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
            let (mut next, mut changes) = (ROWS + 1, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let id = rng.random_range(1..next);
                let sql = match rng.random_range(0..10) {
                    0..=2 => {
                        next += 1;
                        format!("insert into items values ({}, 'new', 0)", next - 1)
                    }
                    3..=8 => format!("update items set n = n + 1, v = 'u{}' where id = {id}", rng.random::<u16>()),
                    _ => format!("delete from items where id = {id}"),
                };
                sqlx::query(&sql).execute(&pool).await.unwrap();
                changes += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            changes
        })
    };

    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let mut rng = seeded_rng(None);
    let args = concat_args(&[
        &["--job.name", "kill-cdc"],
        &[
            "--source.type",
            "mysql-cdc",
            "--source.db.url",
            &source.url,
            "--source.db.table",
            "items",
            // 6000 chunks, several seconds: the first kills land in the snapshot.
            "--source.cdc.snapshot.chunk.size",
            "10",
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
    let kill_loop =
        KillLoop { cwd: tmp.path(), args: &args, delays_ms: 300..1500, kills: KILLS, ends: Ends::MustNotFinish };
    let mut in_snapshot = 0;
    let Kills { kills, midway } = kill_loop
        .run_off_runtime(&mut rng, async |kill: usize, delay: Duration| {
            let copied = target.scalar("select count(*) from items").await;
            if copied < ROWS - 1000 {
                in_snapshot += 1;
            }
            let violations = target.scalar("select count(*) from violations").await;
            eprintln!("kill {kill}: after {delay:?}, {copied} rows in the copy");
            assert_eq!(violations, 0, "kill {kill}: a change was applied twice or out of order");
            copied > 0
        })
        .await;
    assert_eq!(kills, KILLS);
    assert!(midway >= kills / 2, "most kills hit a job with rows copied ({midway})");
    assert!(in_snapshot >= 2, "kills during the snapshot: {in_snapshot}");

    stop.store(true, Ordering::Relaxed);
    let changes = writer.await.unwrap();
    let expected = rows(&source).await;
    eprintln!("{changes} changes written during the kills; {} rows in the source", expected.len());
    let log = tmp.path().join("run-last.log");
    let last = LastRun::new(spawn_logged(tmp.path(), &args, &log), Some(&log), Duration::from_secs(120));
    let mut seen = Vec::new();
    for _ in 0..240 {
        seen = target_rows(&target).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last.stop_after_async(Duration::from_secs(1)).await;
    let violations = target.rows("select id, old_n, new_n from violations").await;
    assert!(violations.is_empty(), "changes applied twice or out of order: {violations:?}");
    assert_eq!(seen.len(), expected.len(), "rows in the copy and in the source");
    if seen != expected {
        let first = seen.iter().zip(&expected).find(|(a, b)| a != b);
        panic!(
            "the copy differs from the source; first difference (copy, source): {first:?}\nlast run's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    source.cleanup().await;
    target.cleanup().await;
}
