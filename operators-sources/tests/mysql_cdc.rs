//! MySQL/MariaDB change data capture against the local MariaDB (row binlog): a snapshot
//! taken while writes run, then the log; every column type and NULLs; a stop and restore
//! that neither loses nor repeats a change; a DDL on the followed table. Each test works
//! in its own database; the changes of other tests' databases in the shared log are
//! passed over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::array::AsArray;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, JobStatus, Pipeline};
use operators_sources::cdc::KIND_COLUMN;
use operators_sources::cdc::mysql::{MySqlCdcSource, StartupMode};
use operators_sources::jdbc::test_util::TestDb;
use operators_testkit::tables::mysql::{TYPES, values, write};
use rand::{Rng, SeedableRng};
use support::cdc::{assert_no_change_twice, checkpointed, converge, wait_rows};
use support::cell;

async fn fill(db: &TestDb, rows: i64, rng: &mut impl Rng) {
    db.exec(TYPES).await;
    for start in (1..=rows).step_by(500) {
        let chunk: Vec<String> = (start..(start + 500).min(rows + 1)).map(|id| values(id, rng)).collect();
        db.exec(&format!("insert into items values {}", chunk.join(", "))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_during_writes_then_the_log_give_the_table_for_every_type() {
    let db = TestDb::mysql().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    fill(&db, 3000, &mut rng).await;
    let ckpt = tempfile::tempdir().unwrap();
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    // Small chunks: the snapshot takes many transactions, with writes between them.
    let source = MySqlCdcSource::new(db.config(), "items").unwrap().with_chunk_size(40).unwrap();
    p.source("cdc", source).sink("out", TwoPhaseMemorySink::new(out.clone()));
    let job = p.start(checkpointed("cdc-types", ckpt.path())).unwrap();
    let mut next_id = 3001;
    for _ in 0..400 {
        db.exec(&write(&mut rng, &mut next_id)).await;
    }
    converge(&db, &out).await;
    // The log phase on its own: more writes after the snapshot.
    for _ in 0..200 {
        db.exec(&write(&mut rng, &mut next_id)).await;
    }
    converge(&db, &out).await;
    job.cancel();
    let _ = job.wait().await;
    let batches = out.batches();
    assert_no_change_twice(&batches);
    let kinds: BTreeSet<String> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(KIND_COLUMN)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|k| k.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(kinds, ["+I", "+U", "-D", "-U"].into_iter().map(String::from).collect(), "every kind seen");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_resumes_from_its_savepoint_without_losing_or_repeating_a_change() {
    let db = TestDb::mysql().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(33);
    fill(&db, 2000, &mut rng).await;
    let ckpt = tempfile::tempdir().unwrap();
    let out = CommittedOutput::default();
    let source = || MySqlCdcSource::new(db.config(), "items").unwrap().with_chunk_size(25).unwrap();
    let mut next_id = 2001;
    // Stop once during the snapshot and once in the log phase.
    let mut restore = None;
    for round in 0..3 {
        let mut config = checkpointed("cdc-resume", ckpt.path());
        if let Some(sp) = &restore {
            config = config.with_restore(sp, false);
        }
        let p = Pipeline::new();
        p.source("cdc", source()).sink("out", TwoPhaseMemorySink::new(out.clone()));
        let job = p.start(config).unwrap();
        // Counted before the writes: their rows may arrive while they are written, and
        // waiting for 100 more after the last one could then wait for rows that came.
        let before = out.num_rows();
        for _ in 0..150 {
            db.exec(&write(&mut rng, &mut next_id)).await;
        }
        if round == 2 {
            converge(&db, &out).await;
            job.cancel();
            let _ = job.wait().await;
            break;
        }
        wait_rows(&out, before + 100).await;
        let sp = job.stop_with_savepoint(None, false).await.unwrap();
        assert_eq!(job.wait().await.unwrap().status, JobStatus::Finished);
        restore = Some(sp);
    }
    assert_no_change_twice(&out.batches());
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_of_the_followed_table_stops_the_job_naming_it() {
    let db = TestDb::mysql().await;
    db.exec("create table items (id int primary key, v int); insert into items values (1, 1)").await;
    db.exec("create table other (id int primary key)").await;
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("cdc", MySqlCdcSource::new(db.config(), "items").unwrap())
        .sink("out", TwoPhaseMemorySink::new(out.clone()));
    let ckpt = tempfile::tempdir().unwrap();
    let job = p.start(checkpointed("cdc-ddl", ckpt.path())).unwrap();
    wait_rows(&out, 1).await;
    // Another table's DDL is passed over; the followed table's stops the job.
    db.exec("alter table other add column w int").await;
    db.exec("insert into items values (2, 2)").await;
    db.exec("alter table items add column w int").await;
    let err = tokio::time::timeout(Duration::from_secs(30), job.wait())
        .await
        .expect("the job stopped")
        .unwrap_err()
        .to_string();
    assert!(err.contains("items") && err.contains("alter table items add column w int"), "{err}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_startup_modes_and_a_purged_position() {
    let db = TestDb::mysql().await;
    db.exec("create table items (id int primary key, v int); insert into items values (1, 1), (2, 2)").await;
    // latest-offset: rows already there are not read; later changes are.
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    let latest = MySqlCdcSource::new(db.config(), "items").unwrap().with_startup(StartupMode::LatestOffset);
    p.source("cdc", latest).sink("out", TwoPhaseMemorySink::new(out.clone()));
    let ckpt = tempfile::tempdir().unwrap();
    let job = p.start(checkpointed("cdc-latest", ckpt.path())).unwrap();
    // Once a savepoint is taken the source is open: its start is fixed.
    job.trigger_savepoint(None).await.unwrap();
    db.exec("update items set v = 20 where id = 2; delete from items where id = 1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.num_rows() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job.cancel();
    let _ = job.wait().await;
    let got: Vec<(String, String, String)> = out
        .batches()
        .iter()
        .flat_map(|b| {
            let kinds = b.column_by_name(KIND_COLUMN).unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|r| (kinds.value(r).to_string(), cell(b.column(0).as_ref(), r), cell(b.column(1).as_ref(), r)))
                .collect::<Vec<_>>()
        })
        .collect();
    let want = [("-U", "2", "2"), ("+U", "2", "20"), ("-D", "1", "1")]
        .map(|(k, i, v)| (k.to_string(), i.to_string(), v.to_string()));
    assert_eq!(got, want);
    // A position the server does not have.
    let gone = MySqlCdcSource::new(db.config(), "items").unwrap().with_startup(StartupMode::SpecificOffset(
        operators_sources::cdc::mysql::BinlogPosition::new("mariadb-bin.999999", 4),
    ));
    let p = Pipeline::new();
    p.source("cdc", gone).sink("out", TwoPhaseMemorySink::new(CommittedOutput::default()));
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        p.run(JobConfig::new("cdc-gone").with_restart(RestartStrategy::None)),
    )
    .await
    .expect("the job stopped")
    .unwrap_err()
    .to_string();
    assert!(err.contains("mariadb-bin.999999:4") && err.contains("no longer has the position"), "{err}");
    db.cleanup().await;
}
