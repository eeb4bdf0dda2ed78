//! Shared pieces of the runtime's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::FaultInjector;
use operators_core::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};
use operators_core::state::ValueState;
use operators_core::{CheckpointId, Result};

/// Keyed running count: for every row emits `(key, count of the key so far, id)`.
#[derive(Clone, Default)]
pub struct RunningCount {
    pub faults: FaultInjector,
}

pub fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
        Field::new("id", DataType::Int64, false),
    ]))
}

struct RunningCountTask {
    faults: FaultInjector,
    counts: Option<ValueState<i64>>,
}

#[async_trait]
impl Transform for RunningCountTask {
    async fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.counts = Some(ctx.keyed_state()?.value_state("count", None)?);
        Ok(())
    }

    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        if self.faults.hit("count.panic") {
            panic!("injected panic in the running count");
        }
        let keys = ctx.keys(&batch)?;
        let key_col = batch.column_by_name("key").unwrap().as_primitive::<Int64Type>().clone();
        let ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>().clone();
        let counts_state = self.counts.clone().unwrap();
        let store = ctx.keyed_state()?;
        let mut counts = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let key = keys.key(row);
            let n = counts_state.get(store, key)?.unwrap_or(0) + 1;
            counts_state.put(store, key, &n)?;
            counts.push(n);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(key_col), Arc::new(Int64Array::from(counts)), Arc::new(ids)];
        ctx.emit(RecordBatch::try_new(count_schema(), columns)?);
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId, _ctx: &mut OperatorContext) -> Result<Option<Vec<u8>>> {
        self.faults.check("count.snapshot")?;
        Ok(None)
    }
}

impl TransformFactory for RunningCount {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(RunningCountTask { faults: self.faults.clone(), counts: None }))
    }
}

/// Rows of committed `(key, count, id)` batches.
pub fn rows(batches: &[RecordBatch]) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let k = b.column(0).as_primitive::<Int64Type>();
        let c = b.column(1).as_primitive::<Int64Type>();
        let i = b.column(2).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            out.push((k.value(r), c.value(r), i.value(r)));
        }
    }
    out
}

/// Checks the committed output of a running count over ids `0..n` with `keys` keys:
/// every id exactly once, and for every key the counts 1..=n_k exactly once.
pub fn assert_exact_running_count(rows: &[(i64, i64, i64)], n: i64, keys: i64) {
    let mut ids: Vec<i64> = rows.iter().map(|r| r.2).collect();
    ids.sort_unstable();
    let dupes = ids.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(dupes, 0, "ids committed twice");
    assert_eq!(ids.len() as i64, n, "ids missing: committed {} of {n}", ids.len());
    assert_eq!(ids.first().copied(), Some(0));
    assert_eq!(ids.last().copied(), Some(n - 1));
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (k, c, _) in rows {
        per_key.entry(*k).or_default().push(*c);
    }
    assert_eq!(per_key.len() as i64, keys.min(n));
    for (k, mut counts) in per_key {
        counts.sort_unstable();
        let expected: Vec<i64> = (1..=counts.len() as i64).collect();
        assert_eq!(counts, expected, "counts of key {k} are not 1..=n");
        let n_k = (0..n).filter(|id| id % keys == k).count();
        assert_eq!(counts.len(), n_k, "key {k}");
    }
}

/// The `(key, count)` multiset of committed rows, sorted.
pub fn key_counts(rows: &[(i64, i64, i64)]) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    v.sort_unstable();
    v
}
