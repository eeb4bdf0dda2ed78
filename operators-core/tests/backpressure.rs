//! Backpressure: with a sink that sleeps, the source can only run ahead of the sink by
//! what the channels hold, and memory stays flat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::{GeneratorSource, MapTransform};
use operators_core::operator::{OperatorContext, Sink, TaskInfo};
use operators_core::{JobConfig, Pipeline, Result};

struct SlowSink;

#[async_trait]
impl Sink for SlowSink {
    async fn write_batch(&mut self, _batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_slows_the_source_and_memory_stays_flat() {
    const BATCH: u64 = 10_000;
    const CAPACITY: u64 = 4;
    let pipeline = Pipeline::new();
    pipeline
        .source("generator", GeneratorSource::unbounded().with_batch_size(BATCH as usize))
        .transform("identity", MapTransform::new(|b| Ok(Some(b))))
        .sink("slow", |_: &TaskInfo| Ok(SlowSink));
    let job = pipeline.start(JobConfig::new("backpressure").with_channel_capacity(CAPACITY as usize)).unwrap();

    // Two channels (source→map, map→sink) of CAPACITY batches, plus one batch in each
    // task's hands (being sent, mapped, written).
    let bound = (2 * CAPACITY + 3) * BATCH;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = rss_bytes();
    let mut max_gap = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = job.metrics();
        let emitted = m[0].total.records_out;
        let consumed = m[2].total.records_in;
        let gap = emitted - consumed;
        max_gap = max_gap.max(gap);
        assert!(gap <= bound, "source ran {gap} rows ahead of the sink (bound {bound})");
    }
    let m = job.metrics();
    assert!(m[2].total.records_in > 0, "the sink received data");
    assert!(m[0].total.backpressure_ms > 1000, "the source waited on the full channel: {:?}", m[0].total);
    // Without backpressure the generator would make millions of rows (hundreds of MB)
    // in three seconds; with it, memory does not grow.
    let growth = rss_bytes().saturating_sub(rss_start);
    assert!(growth < 64 * 1024 * 1024, "RSS grew by {growth} bytes");
    assert!(max_gap > 0);
    job.cancel();
    job.wait().await.unwrap();
}
