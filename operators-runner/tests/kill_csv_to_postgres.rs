//! Kill test: the runner reads a CSV directory into a PostgreSQL table in EXACTLY_ONCE
//! mode and is SIGKILLed at random moments, 25 times, each time restarted from its
//! checkpoints. The table must end with exactly the input rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use operators_sources::jdbc::test_util::TestDb;
use rand::{Rng, SeedableRng};
use support::{kill_after, run_off_runtime, spawn_logged, write_csv_input};

const KILLS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaves_exactly_the_input_in_the_table() {
    let db = TestDb::postgres().await;
    db.exec("create table imported (id bigint, name text, score double precision)").await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let ck = tmp.path().join("ck");
    let expected = write_csv_input(&input, 60, 4000, false);
    let total = expected.len() as i64;
    let seed: u64 = rand::random();
    eprintln!("kill test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let args = [
        "--job.name",
        "kill-pg",
        "--source.type",
        "csv",
        "--source.path",
        input.to_str().unwrap(),
        "--source.watch.type",
        "PROCESS_ONCE",
        "--source.watch.settle",
        "20",
        "--source.batch.size",
        "500",
        "--stream.sql.schema.json",
        r#"{"id":"BigInt","name":"String","score":"Double"}"#,
        // About 4 600 rows a run at this rate (runs last 200..1000 ms, start-up
        // included): 25 kills reached 115 500 of the 240 000 input rows here, about 2
        // times over. At 20 000 rows/s a run took 12 500 and the input ran out after 19.
        "--stream.rate.limit",
        "10000",
        "--sink.type",
        "jdbc",
        "--sink.db.url",
        &db.url,
        "--sink.db.table",
        "imported",
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        "100",
        "--stream.checkpoint.min.pause",
        "0",
        "--stream.checkpoint.dir",
        ck.to_str().unwrap(),
        "--job.retry.strategy",
        "none",
        "--progress",
        "off",
    ];
    let mut kills = 0;
    let mut midway = 0;
    while kills < KILLS {
        let child = spawn_logged(tmp.path(), &args, &tmp.path().join(format!("run-{kills}.log")));
        let delay = Duration::from_millis(rng.random_range(200..1000));
        if let Some(status) = tokio::task::spawn_blocking(move || kill_after(child, delay)).await.unwrap() {
            assert!(
                status.success(),
                "run {kills} failed on its own:\n{}",
                std::fs::read_to_string(tmp.path().join(format!("run-{kills}.log"))).unwrap_or_default()
            );
            break;
        }
        kills += 1;
        let rows = db.scalar("select count(*) from imported").await;
        assert!(rows <= total, "kill {kills}: {rows} rows for {total} input rows");
        if rows > 0 && rows < total {
            midway += 1;
        }
        eprintln!("kill {kills}: after {delay:?}, {rows} rows in the table");
    }
    assert!(kills >= 20, "only {kills} kills before the job finished");
    assert!(midway >= kills / 2, "most kills hit a job with partial output ({midway})");
    if db.scalar("select count(*) from imported").await < total || kills == KILLS {
        let done = run_off_runtime(tmp.path(), &args).await;
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    }

    assert_eq!(db.scalar("select count(*) from imported").await, total, "no row twice, no row missing");
    let rows = db.rows("select id, name, score from imported order by id").await;
    let got: BTreeMap<i64, (String, f64)> =
        rows.into_iter().map(|r| (r[0].parse().unwrap(), (r[1].clone(), r[2].parse().unwrap()))).collect();
    assert_eq!(got, expected, "the table equals the input row for row");
    db.cleanup().await;
}
