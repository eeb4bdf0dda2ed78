//! Dedup with a controllable clock: a key is dropped within its TTL and passes again
//! once the TTL since its first occurrence has run out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::clock::ManualClock;
use operators_core::operator::{OperatorContext, Sink, SinkFactory, Source, SourceContext, SourcePoll, TaskInfo};
use operators_core::{JobConfig, Pipeline, Result};

const TTL_MS: i64 = 60 * 60 * 1000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// Collects the ids it receives, shared by clones.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<i64>>>);

impl Collect {
    fn ids(&self) -> Vec<i64> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sink for Collect {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        self.0.lock().unwrap().extend(ids.values().iter().copied());
        Ok(())
    }
}

impl SinkFactory for Collect {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

/// Emits scripted batches; before each, moves the clock and waits until the sink has
/// seen what the previous batches should have let through, so that every row is
/// processed at a known time.
#[derive(Clone)]
struct Script {
    clock: ManualClock,
    out: Collect,
    steps: Vec<(i64, Vec<i64>, usize)>, // (advance ms, ids, rows expected at the sink before)
}

struct ScriptTask {
    script: Script,
    next: usize,
}

#[async_trait]
impl Source for ScriptTask {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        let Some((advance, ids, before)) = self.script.steps.get(self.next).cloned() else {
            return Ok(SourcePoll::Finished);
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.script.out.ids().len() < before {
            assert!(std::time::Instant::now() < deadline, "the sink did not receive {before} rows");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.script.clock.advance_ms(advance);
        self.next += 1;
        Ok(SourcePoll::Batch(RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids))])?))
    }
}

impl operators_core::operator::SourceFactory for Script {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Source>> {
        Ok(Box::new(ScriptTask { script: self.clone(), next: 0 }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_passes_again_after_its_ttl() {
    let clock = ManualClock::new(1_000_000);
    let out = Collect::default();
    let script = Script {
        clock: clock.clone(),
        out: out.clone(),
        steps: vec![
            // t0: 1 and 2 first seen, the second 1 dropped.
            (0, vec![1, 2, 1], 0),
            // t0 + TTL - 1: 1 still remembered; 3 is new.
            (TTL_MS - 1, vec![1, 3], 2),
            // t0 + TTL: 1 and 2 expired (TTL counts from the first occurrence, not from the
            // dropped repeats), 3 still remembered.
            (1, vec![1, 2, 3], 3),
        ],
    };
    let pipeline = Pipeline::new();
    pipeline
        .source("script", script)
        .dedup("dedup", ["id"], Duration::from_millis(TTL_MS as u64))
        .sink("out", out.clone());
    let config = JobConfig::new("dedup ttl").with_clock(Arc::new(clock.clone()));
    pipeline.run(config).await.unwrap();
    assert_eq!(out.ids(), vec![1, 2, 3, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_without_keys_is_a_configuration_error() {
    let pipeline = Pipeline::new();
    pipeline
        .source("rows", operators_core::builtins::GeneratorSource::bounded(10))
        .transform("dedup", operators_core::builtins::DedupTransform::default())
        .sink("out", operators_core::builtins::DiscardSink::default());
    let err = pipeline.run(JobConfig::new("dedup unkeyed")).await.unwrap_err();
    assert!(err.to_string().contains("unique.keys"), "{err}");
}
