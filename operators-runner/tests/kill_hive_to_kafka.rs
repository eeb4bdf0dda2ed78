//! Kill test: the runner imports a 1 000 000-row Hive table (the local HiveServer2,
//! `testing/services/hive.sh`) into Kafka in EXACTLY_ONCE mode and is SIGKILLed at random
//! moments, at least 20 times, each time restarted from its checkpoints (which hold the
//! rows emitted; a restart runs the statement again and skips them). A `read_committed`
//! reader must never see a row twice, and in the end sees every row exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::Write;

use operators_testkit::kafka::TestKafka;
use support::kill::{Ends, KillLoop, Kills, concat_args, kafka_sink_args, restartable_args, seeded_rng};
use support::run;

const ROWS: i64 = 1_000_000;
const KILLS: usize = 22;

/// The ids committed so far; panics on an id committed twice or a row that is not the
/// table's.
fn committed(kafka: &TestKafka, topic: &str) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    for v in kafka.read_committed_values(topic).unwrap() {
        let r: serde_json::Value = serde_json::from_str(&v).unwrap();
        let id = r["id"].as_i64().unwrap();
        assert_eq!(r["name"], format!("name-{id}"), "row {v}");
        assert!(ids.insert(id), "id {id} committed twice");
    }
    ids
}

#[test]
fn sigkill_at_random_moments_imports_every_row_of_a_hive_table_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    // The table, loaded from one text file (LOAD DATA moves it into the warehouse: one
    // file, read in the same order by every run of `select *`).
    let data = tmp.path().join("rows.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
    for id in 0..ROWS {
        writeln!(file, "{id},name-{id}").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let table = format!("kill_{:08x}", rand::random::<u32>());
    support::hive::sql(&[
        &format!("create table {table} (id bigint, name string) row format delimited fields terminated by ','"),
        &format!("load data local inpath '{}' into table {table}", data.display()),
    ]);
    let (url, user, password) = support::hive::settings();

    let kafka = TestKafka::start();
    let output = kafka.topic("kill-hive-out", 3).unwrap();
    let ck = tmp.path().join("ck");
    let mut rng = seeded_rng(None);
    let args = concat_args(&[
        &["--job.name", "kill-hive-kafka", "--source.type", "jdbc", "--source.db.url", &url],
        &["--source.db.username", &user, "--source.db.password", &password, "--source.db.table", &table],
        // Slowed down so that 22 kills land before the end: each run also fetches again
        // the rows its restored checkpoint says were emitted.
        &["--stream.rate.limit", "30000"],
        &kafka_sink_args(kafka.bootstrap_servers(), &output),
        &restartable_args(Some("EXACTLY_ONCE"), "200", ck.to_str().unwrap()),
    ]);
    let kill_loop =
        KillLoop { cwd: tmp.path(), args: &args, delays_ms: 800..2500, kills: KILLS, ends: Ends::MayFinish };
    let Kills { kills, midway } = kill_loop.run(&mut rng, |kill, delay| {
        let seen = committed(&kafka, &output);
        eprintln!("kill {kill}: after {delay:?}, {} of {ROWS} rows committed", seen.len());
        !seen.is_empty() && (seen.len() as i64) < ROWS
    });
    assert!(kills >= 20, "only {kills} kills before the job finished; slow it down");
    assert!(midway >= kills / 2, "most kills hit a running job with partial output ({midway})");

    if (committed(&kafka, &output).len() as i64) < ROWS || kills == KILLS {
        let done = run(tmp.path(), &args);
        assert!(done.status.success(), "the last run failed:\n{}", String::from_utf8_lossy(&done.stderr));
    }
    let got = committed(&kafka, &output);
    assert_eq!(got.len() as i64, ROWS, "no row lost");
    assert_eq!(got.first(), Some(&0));
    assert_eq!(got.last(), Some(&(ROWS - 1)));
    support::hive::sql(&[&format!("drop table {table}")]);
}
