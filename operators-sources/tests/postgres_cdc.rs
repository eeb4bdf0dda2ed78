//! PostgreSQL change data capture against the local PostgreSQL (wal_level=logical): a
//! snapshot taken while writes run, then logical replication; every column type the
//! database source reads and NULLs; a stop and restore that neither loses nor repeats a
//! change; an existing slot refused. Each test works in its own schema and drops the slot
//! and publication it made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use arrow::array::AsArray;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, JobStatus, Pipeline};
use operators_sources::cdc::KIND_COLUMN;
use operators_sources::cdc::postgres::{PgStartupMode, PostgresCdcSource};
use operators_sources::jdbc::test_util::TestDb;
use operators_testkit::tables::postgres::{TYPES, values, write};
use rand::{Rng, SeedableRng};
use support::cdc::{assert_no_change_twice, checkpointed, converge};
use support::cell;

fn schema_of(db: &TestDb) -> String {
    db.url.split("currentSchema=").nth(1).unwrap().to_string()
}

/// Drops the slot (once the job's connection let go of it) and the publication.
async fn drop_slot(db: &TestDb) {
    let slot = format!("operators_{}_items", schema_of(db));
    for _ in 0..100 {
        let active = db
            .scalar(&format!("select count(*) from pg_replication_slots where slot_name = '{slot}' and active"))
            .await;
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.exec(&format!("select pg_drop_replication_slot('{slot}')")).await;
    db.exec(&format!("drop publication if exists {slot}")).await;
}

async fn fill(db: &TestDb, rows: i64, rng: &mut impl Rng) {
    db.exec(TYPES).await;
    db.exec("alter table items replica identity full").await;
    for start in (1..=rows).step_by(500) {
        let chunk: Vec<String> = (start..(start + 500).min(rows + 1)).map(|id| values(id, rng)).collect();
        db.exec(&format!("insert into items values {}", chunk.join(", "))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_during_writes_then_replication_give_the_table_for_every_type() {
    let db = TestDb::postgres().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    fill(&db, 3000, &mut rng).await;
    let ckpt = tempfile::tempdir().unwrap();
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    let source = PostgresCdcSource::new(db.config(), "items").unwrap().with_chunk_size(40).unwrap();
    p.source("cdc", source).sink("out", TwoPhaseMemorySink::new(out.clone()));
    let job = p.start(checkpointed("pg-cdc-types", ckpt.path())).unwrap();
    let mut next_id = 3001;
    for _ in 0..400 {
        db.exec(&write(&mut rng, &mut next_id)).await;
    }
    converge(&db, &out).await;
    for _ in 0..200 {
        db.exec(&write(&mut rng, &mut next_id)).await;
    }
    converge(&db, &out).await;
    job.cancel();
    let _ = job.wait().await;
    assert_no_change_twice(&out.batches());
    drop_slot(&db).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_resumes_from_its_savepoint_and_an_existing_slot_is_refused() {
    let db = TestDb::postgres().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(33);
    fill(&db, 2000, &mut rng).await;
    let ckpt = tempfile::tempdir().unwrap();
    let out = CommittedOutput::default();
    let source = || PostgresCdcSource::new(db.config(), "items").unwrap().with_chunk_size(25).unwrap();
    let mut next_id = 2001;
    let mut restore = None;
    for round in 0..3 {
        let mut config = checkpointed("pg-cdc-resume", ckpt.path());
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
        tokio::time::timeout(Duration::from_secs(60), async {
            while out.num_rows() < before + 100 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("rows arrived");
        let sp = job.stop_with_savepoint(None, false).await.unwrap();
        assert_eq!(job.wait().await.unwrap().status, JobStatus::Finished);
        restore = Some(sp);
    }
    assert_no_change_twice(&out.batches());
    // A new job (no checkpoint) on the same slot is refused, naming it.
    let p = Pipeline::new();
    p.source("cdc", source()).sink("out", TwoPhaseMemorySink::new(CommittedOutput::default()));
    let err = p.run(JobConfig::new("second").with_restart(RestartStrategy::None)).await.unwrap_err().to_string();
    assert!(err.contains("source.cdc.slot.name") && err.contains("already exists"), "{err}");
    drop_slot(&db).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_offset_with_the_default_replica_identity_applies_by_key() {
    let db = TestDb::postgres().await;
    db.exec(
        "create table items (id int8 primary key, v text, n int); insert into items values (1, 'a', 0), (2, 'b', 0)",
    )
    .await;
    let ckpt = tempfile::tempdir().unwrap();
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    let source = PostgresCdcSource::new(db.config(), "items").unwrap().with_startup(PgStartupMode::LatestOffset);
    p.source("cdc", source).sink("out", TwoPhaseMemorySink::new(out.clone()));
    let job = p.start(checkpointed("pg-latest", ckpt.path())).unwrap();
    job.trigger_savepoint(None).await.unwrap();
    db.exec(
        "update items set v = 'b2' where id = 2; delete from items where id = 1; insert into items values (3, 'c', 0)",
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while out.num_rows() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("changes arrived");
    job.cancel();
    let _ = job.wait().await;
    let got: Vec<Vec<String>> = out
        .batches()
        .iter()
        .flat_map(|b| {
            let kinds = b.column_by_name(KIND_COLUMN).unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|r| vec![kinds.value(r).to_string(), cell(b.column(0).as_ref(), r), cell(b.column(1).as_ref(), r)])
                .collect::<Vec<_>>()
        })
        .collect();
    // The default identity sends no old values: -U and -D carry the key only.
    let want = [["-U", "2", "NULL"], ["+U", "2", "b2"], ["-D", "1", "NULL"], ["+I", "3", "c"]]
        .map(|r| r.map(String::from).to_vec())
        .to_vec();
    assert_eq!(got, want);
    drop_slot(&db).await;
    db.cleanup().await;
}
