//! Limits the rows per second flowing through, to protect a downstream system.

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::Result;
use crate::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};

/// Passes batches on at no more than `rows_per_second` over all subtasks; the wait
/// backpressures the source.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitTransform {
    rows_per_second: u64,
}

impl RateLimitTransform {
    /// At most `rows_per_second` rows per second (at least 1).
    pub fn new(rows_per_second: u64) -> Self {
        Self { rows_per_second: rows_per_second.max(1) }
    }
}

struct RateLimitTask {
    rate: f64,
    started: Option<Instant>,
    rows: u64,
}

#[async_trait]
impl Transform for RateLimitTask {
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.rows += batch.num_rows() as u64;
        let due = Duration::from_secs_f64(self.rows as f64 / self.rate);
        let elapsed = started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        ctx.emit(batch);
        Ok(())
    }
}

impl TransformFactory for RateLimitTransform {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(RateLimitTask {
            rate: (self.rows_per_second as f64 / info.parallelism.max(1) as f64).max(1e-3),
            started: None,
            rows: 0,
        }))
    }
}
