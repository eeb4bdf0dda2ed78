//! Keyed state in a custom transform: a running count per key, exactly once.
//!
//! Delivery: exactly once into the in-memory two-phase sink — the count of each key goes
//! 1, 2, 3, ... with no gap and no repeat even though the transform panics twice on
//! purpose: each failure restarts the job from the last checkpoint, restoring the counts
//! and rewinding the generator.
//!
//! ```sh
//! cargo run -p operators-examples --example keyed_running_count
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, FaultInjector, GeneratorSource, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::{OperatorContext, TaskInfo, Transform};
use operators_core::restart::RestartStrategy;
use operators_core::state::ValueState;
use operators_core::{JobConfig, Pipeline, Result};

struct RunningCount {
    counts: Option<ValueState<i64>>,
    faults: FaultInjector,
}

#[async_trait]
impl Transform for RunningCount {
    async fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.counts = Some(ctx.keyed_state()?.value_state("count", None)?);
        Ok(())
    }

    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        self.faults.check("count")?;
        let keys = ctx.keys(&batch)?;
        let Some(counts) = self.counts.clone() else { return Ok(()) };
        let store = ctx.keyed_state()?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let n = counts.get(store, keys.key(row))?.unwrap_or(0) + 1;
            counts.put(store, keys.key(row), &n)?;
            out.push(n);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let key_col = batch.column_by_name("key").cloned().unwrap_or_else(|| Arc::new(Int64Array::from(vec![0; 0])));
        let columns: Vec<ArrayRef> = vec![key_col, Arc::new(Int64Array::from(out))];
        ctx.emit(RecordBatch::try_new(schema, columns)?);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let output = CommittedOutput::default();
    let faults = FaultInjector::new().fail_at("count", [50, 200]);
    let pipeline = Pipeline::new();
    let f = faults.clone();
    pipeline
        .source(
            "numbers",
            GeneratorSource::bounded(200_000).with_keys(100).with_batch_size(500).with_rate_limit(200_000),
        )
        .parallelism(2)
        .key_by(["key"])
        .transform("count", move |_: &TaskInfo| Ok(RunningCount { counts: None, faults: f.clone() }))
        .parallelism(3)
        .sink("memory", TwoPhaseMemorySink::new(output.clone()))
        .parallelism(3);
    let dir = std::env::temp_dir().join("operators-example-keyed");
    let config = JobConfig::new("keyed-running-count")
        .with_restart(RestartStrategy::fixed_delay(5, Duration::from_millis(100)))
        .with_checkpointing(CheckpointConfig::new(dir).with_interval(Duration::from_millis(100)));
    let outcome = pipeline.run(config).await?;

    let mut max_per_key = std::collections::BTreeMap::new();
    for b in output.batches() {
        let (k, c) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
        for r in 0..b.num_rows() {
            let e = max_per_key.entry(k.value(r)).or_insert(0);
            *e = (*e).max(c.value(r));
        }
    }
    println!(
        "{} restarts; {} rows committed; every key counted to {:?}",
        outcome.restarts,
        output.num_rows(),
        max_per_key.values().collect::<std::collections::BTreeSet<_>>()
    );
    Ok(())
}
