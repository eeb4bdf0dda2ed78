//! Limits the rows per second flowing through, to protect a downstream system.

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};

/// Passes batches on at no more than `rows_per_second` over all subtasks; the wait
/// backpressures the source.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitTransform {
    rows_per_second: u64,
}

impl RateLimitTransform {
    /// At most `rows_per_second` rows per second. A rate of 0 is refused, naming
    /// `stream.rate.limit`: it would stop the stream for good, and raising it to 1
    /// would run a job the user did not ask for.
    pub fn new(rows_per_second: u64) -> Result<Self> {
        if rows_per_second == 0 {
            return Err(Error::config("stream.rate.limit", "must be at least 1 row per second"));
        }
        Ok(Self { rows_per_second })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_of_zero_is_refused_naming_the_parameter() {
        let err = RateLimitTransform::new(0).unwrap_err().to_string();
        assert!(err.contains("stream.rate.limit"), "{err}");
        assert!(RateLimitTransform::new(1).is_ok());
    }
}
