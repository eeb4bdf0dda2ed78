//! Kill test: the runner reads a CSV directory into a PostgreSQL table in EXACTLY_ONCE
//! mode and is SIGKILLed at random moments, 25 times, each time restarted from its
//! checkpoints. The table must end with exactly the input rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use operators_sources::jdbc::test_util::TestDb;
use support::kill::{Ends, KillLoop, Kills, concat_args, once_source_args, restartable_args, seeded_rng};
use support::{run_off_runtime, write_csv_input};

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
    let mut rng = seeded_rng(None);
    let args = concat_args(&[
        &["--job.name", "kill-pg"],
        &once_source_args("csv", input.to_str().unwrap(), "20"),
        &[
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
        ],
        &restartable_args(Some("EXACTLY_ONCE"), "100", ck.to_str().unwrap()),
    ]);
    let kill_loop =
        KillLoop { cwd: tmp.path(), args: &args, delays_ms: 200..1000, kills: KILLS, ends: Ends::MayFinish };
    let Kills { kills, midway } = kill_loop
        .run_off_runtime(&mut rng, async |kill: usize, delay: Duration| {
            let rows = db.scalar("select count(*) from imported").await;
            assert!(rows <= total, "kill {kill}: {rows} rows for {total} input rows");
            eprintln!("kill {kill}: after {delay:?}, {rows} rows in the table");
            rows > 0 && rows < total
        })
        .await;
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
