//! Helpers of the change-data-capture tests: the changelog applied, the table as the
//! database source reads it, the checks that no change is lost or repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sources::cdc::{ChangeKind, KIND_COLUMN, POSITION_COLUMN};
use operators_sources::jdbc::JdbcSource;
use operators_sources::jdbc::test_util::TestDb;

use super::cell;

pub type Rows = BTreeMap<String, Vec<String>>;

/// The changelog applied: `+I`/`+U` write the row under its key, `-U`/`-D` remove it.
pub fn apply(batches: &[RecordBatch], columns: usize) -> Rows {
    let mut rows = Rows::new();
    for b in batches {
        let kinds = b.column_by_name(KIND_COLUMN).unwrap().as_string::<i32>();
        for r in 0..b.num_rows() {
            let key = cell(b.column(0).as_ref(), r);
            match ChangeKind::parse(kinds.value(r)).unwrap() {
                k if k.is_upsert() => {
                    rows.insert(key, (0..columns).map(|c| cell(b.column(c).as_ref(), r)).collect());
                }
                _ => {
                    rows.remove(&key);
                }
            }
        }
    }
    rows
}

/// The table as the database source reads it now.
pub async fn table(db: &TestDb) -> (Rows, usize) {
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("db", JdbcSource::new(db.config()).with_table("items").with_fetch_size(1000).unwrap())
        .sink("out", TwoPhaseMemorySink::new(out.clone()));
    p.run(JobConfig::new("db-read").with_restart(RestartStrategy::None)).await.unwrap();
    let batches = out.batches();
    let columns = batches.first().map_or(0, |b| b.num_columns());
    (apply_plain(&batches), columns)
}

pub fn apply_plain(batches: &[RecordBatch]) -> Rows {
    let mut rows = Rows::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.insert(
                cell(b.column(0).as_ref(), r),
                (0..b.num_columns()).map(|c| cell(b.column(c).as_ref(), r)).collect(),
            );
        }
    }
    rows
}

/// Every change once, in order: each update adds 1 to the row's counter `n`, so per key
/// the emitted values of `n` must go 0 (or the snapshot's value), +1, +1… with each `-U`
/// and `-D` showing the value last emitted. A change emitted twice (in the snapshot and
/// again from the log) or lost breaks the sequence. Also no (kind, position, key) twice.
pub fn assert_no_change_twice(batches: &[RecordBatch]) {
    let mut current: BTreeMap<String, i64> = BTreeMap::new();
    let mut before: BTreeMap<String, i64> = BTreeMap::new();
    for b in batches {
        let kinds = b.column_by_name(KIND_COLUMN).unwrap().as_string::<i32>();
        let n = b.column_by_name("n").unwrap();
        let positions = b.column_by_name(POSITION_COLUMN).unwrap().as_string::<i32>();
        for r in 0..b.num_rows() {
            let key = cell(b.column(0).as_ref(), r);
            let value: i64 = cell(n.as_ref(), r).parse().unwrap();
            let at = positions.value(r);
            match kinds.value(r) {
                "+I" => assert!(current.insert(key.clone(), value).is_none(), "{key} inserted twice (at {at})"),
                "-U" | "-D" => {
                    assert_eq!(current.get(&key), Some(&value), "{key}: {} at {at} does not follow", kinds.value(r));
                    before.insert(key.clone(), value);
                    if kinds.value(r) == "-D" {
                        current.remove(&key);
                    }
                }
                "+U" => {
                    let was = before.remove(&key).unwrap_or_else(|| panic!("{key}: +U at {at} without -U"));
                    assert_eq!(value, was + 1, "{key}: +U at {at} is not the next change");
                    current.insert(key.clone(), value);
                }
                other => panic!("kind {other}"),
            }
        }
    }
    let mut seen = BTreeSet::new();
    for b in batches {
        let kinds = b.column_by_name(KIND_COLUMN).unwrap().as_string::<i32>();
        let positions = b.column_by_name(POSITION_COLUMN).unwrap().as_string::<i32>();
        for r in 0..b.num_rows() {
            let change = (kinds.value(r).to_string(), positions.value(r).to_string(), cell(b.column(0).as_ref(), r));
            assert!(seen.insert(change.clone()), "{change:?} emitted twice");
        }
    }
}

/// Waits until the applied changelog equals the table.
pub async fn converge(db: &TestDb, out: &CommittedOutput) {
    let (expected, columns) = table(db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = apply(&out.batches(), columns);
        if got == expected {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = expected.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(3).collect();
            let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).take(3).collect();
            panic!(
                "the changes applied ({} rows) do not give the table ({} rows); differing: {missing:?}; extra keys: {extra:?}; got for them: {:?}",
                got.len(),
                expected.len(),
                missing.iter().map(|(k, _)| got.get(*k)).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most a minute) until `n` rows were committed.
pub async fn wait_rows(out: &CommittedOutput, n: usize) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.num_rows() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} rows arrived", out.num_rows()));
}

pub fn checkpointed(name: &str, dir: &std::path::Path) -> JobConfig {
    JobConfig::new(name)
        .with_restart(RestartStrategy::None)
        .with_checkpointing(CheckpointConfig::new(dir).with_interval(Duration::from_millis(50)))
        .with_savepoint_dir(dir.join("sp"))
}
