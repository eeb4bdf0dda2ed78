//! Watermarks from a timestamp column with bounded out-of-orderness, and idleness.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::time::event_times;
use crate::error::{Error, Result};
use crate::message::CheckpointId;
use crate::operator::{OperatorContext, RestoredState, TaskInfo, Transform, TransformFactory};

/// Generates watermarks after any source: rows pass through unchanged, and after each
/// batch the subtask emits `max event time seen − max_out_of_orderness − 1`, the claim
/// that every row still to come is at least that recent (Flink's
/// `forBoundedOutOfOrderness`). Rows with a null time pass without moving it.
///
/// With an idle timeout, a subtask that has seen no row for that long by the job clock
/// declares itself idle: downstream operators leave it out of their watermark minimum
/// until it sends a row or a watermark again. Without one, a subtask that never receives
/// rows (more subtasks than source partitions, a quiet partition) holds event time back
/// for the whole job until end of input.
///
/// The highest time seen is in the checkpoint, so a restored job resumes from the same
/// watermark instead of starting over from nothing.
///
/// ```
/// use std::time::Duration;
/// use operators_core::builtins::{DiscardSink, GeneratorSource};
/// use operators_core::window::WatermarkGenerator;
/// use operators_core::Pipeline;
///
/// let pipeline = Pipeline::new();
/// pipeline
///     .source("rows", GeneratorSource::bounded(100))
///     .assign_watermarks(
///         "watermarks",
///         WatermarkGenerator::bounded_out_of_orderness("id", Duration::from_millis(200))
///             .with_idle_timeout(Duration::from_secs(5)),
///     )
///     .sink("out", DiscardSink::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkGenerator {
    column: String,
    delay_ms: i64,
    idle_timeout_ms: Option<i64>,
}

fn to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WatermarkGenerator {
    /// Watermarks from the event time in `column` (a Timestamp of any unit, or Int64
    /// milliseconds), trailing the highest time seen by `max_out_of_orderness`.
    pub fn bounded_out_of_orderness(column: impl Into<String>, max_out_of_orderness: Duration) -> Self {
        Self { column: column.into(), delay_ms: to_ms(max_out_of_orderness), idle_timeout_ms: None }
    }

    /// Declares a subtask idle after `timeout` without rows (default: never).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = Some(to_ms(timeout).max(1));
        self
    }

    /// The event-time column.
    pub fn column(&self) -> &str {
        &self.column
    }
}

impl TransformFactory for WatermarkGenerator {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(GeneratorTask {
            spec: self.clone(),
            operator: info.operator_id.to_string(),
            max_ts: None,
            last_row_ms: 0,
            idle: false,
        }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct GeneratorSnapshot {
    max_ts: Option<i64>,
}

struct GeneratorTask {
    spec: WatermarkGenerator,
    operator: String,
    max_ts: Option<i64>,
    last_row_ms: i64,
    idle: bool,
}

impl GeneratorTask {
    fn watermark(&self) -> Option<i64> {
        self.max_ts.map(|t| t.saturating_sub(self.spec.delay_ms).saturating_sub(1))
    }
}

#[async_trait]
impl Transform for GeneratorTask {
    async fn restore(&mut self, state: RestoredState) -> Result<()> {
        let decode = |bytes: &[u8]| -> Result<GeneratorSnapshot> {
            postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: self.operator.clone(),
                message: format!("cannot read the watermark generator's checkpointed state: {e}"),
            })
        };
        self.max_ts = match state.own() {
            Some(own) => decode(own)?.max_ts,
            // Rescaled: this subtask may now read any old subtask's partitions, so only
            // the smallest time seen is safe to start from.
            None => {
                let all = state.snapshots.iter().map(|(_, s)| decode(s)).collect::<Result<Vec<_>>>()?;
                all.iter().map(|s| s.max_ts).min().flatten()
            }
        };
        Ok(())
    }

    async fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.last_row_ms = ctx.clock().now_ms();
        if let Some(w) = self.watermark() {
            ctx.emit_watermark(w);
        }
        if let Some(timeout) = self.spec.idle_timeout_ms {
            ctx.request_timer(self.last_row_ms.saturating_add(timeout));
        }
        Ok(())
    }

    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = event_times(&batch, &self.spec.column, &self.operator)?;
        let batch_max = times.iter().flatten().max();
        self.last_row_ms = ctx.clock().now_ms();
        ctx.emit(batch);
        if let Some(m) = batch_max {
            self.max_ts = Some(self.max_ts.map_or(m, |cur| cur.max(m)));
        }
        if let Some(w) = self.watermark() {
            ctx.emit_watermark(w);
        }
        if self.idle {
            // Rows again: the next watermark (or these rows) make the channel active
            // downstream; the timer watches for the next quiet spell.
            self.idle = false;
        }
        if let Some(timeout) = self.spec.idle_timeout_ms {
            ctx.request_timer(self.last_row_ms.saturating_add(timeout));
        }
        Ok(())
    }

    async fn on_timer(&mut self, now_ms: i64, ctx: &mut OperatorContext) -> Result<()> {
        let Some(timeout) = self.spec.idle_timeout_ms else { return Ok(()) };
        let due = self.last_row_ms.saturating_add(timeout);
        if now_ms >= due {
            if !self.idle {
                self.idle = true;
                ctx.mark_idle();
            }
            // Check again a timeout later (cheap), in case rows resume.
            ctx.request_timer(now_ms.saturating_add(timeout));
        } else {
            ctx.request_timer(due);
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId, _ctx: &mut OperatorContext) -> Result<Option<Vec<u8>>> {
        postcard::to_allocvec(&GeneratorSnapshot { max_ts: self.max_ts }).map(Some).map_err(|e| Error::State {
            operator: self.operator.clone(),
            message: format!("cannot write the watermark generator's state: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn info() -> TaskInfo {
        TaskInfo {
            job_name: "j".into(),
            job_id: "0".repeat(32).into(),
            run_id: "1".repeat(32).into(),
            operator_id: "wm".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
        }
    }

    fn batch(ts: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ts))]).unwrap()
    }

    #[tokio::test]
    async fn trails_the_highest_time_and_goes_idle() {
        let clock = ManualClock::new(1_000);
        let mut ctx = OperatorContext::new(Arc::new(info()), Arc::new(clock.clone()), None, None);
        let factory = WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(100))
            .with_idle_timeout(Duration::from_millis(500));
        let mut t = factory.create(&info()).unwrap();
        t.open(&mut ctx).await.unwrap();
        assert_eq!(ctx.watermark, None, "nothing seen, no watermark");
        t.process_batch(batch(vec![Some(5_000), None, Some(4_000)]), &mut ctx).await.unwrap();
        assert_eq!(ctx.watermark.take(), Some(4_899));
        t.process_batch(batch(vec![Some(4_500)]), &mut ctx).await.unwrap();
        assert_eq!(ctx.watermark.take(), Some(4_899), "an older row does not move it back");
        assert_eq!(ctx.timer.take(), Some(1_500));
        clock.advance_ms(499);
        t.on_timer(clock.now_ms(), &mut ctx).await.unwrap();
        assert!(!ctx.idle);
        clock.advance_ms(1);
        t.on_timer(clock.now_ms(), &mut ctx).await.unwrap();
        assert!(ctx.idle, "500 ms without rows");

        // The highest time survives a restore.
        let snap = t.snapshot(1, &mut ctx).unwrap().unwrap();
        let mut restored = factory.create(&info()).unwrap();
        restored.restore(RestoredState::new(1, 1, vec![(0, snap)], 0, 1)).await.unwrap();
        let mut ctx2 = OperatorContext::new(Arc::new(info()), Arc::new(clock), None, None);
        restored.open(&mut ctx2).await.unwrap();
        assert_eq!(ctx2.watermark, Some(4_899));
    }

    #[tokio::test]
    async fn wrong_column_type_names_the_column() {
        let mut ctx = OperatorContext::standalone(info());
        let mut t = WatermarkGenerator::bounded_out_of_orderness("missing", Duration::ZERO).create(&info()).unwrap();
        let err = t.process_batch(batch(vec![Some(1)]), &mut ctx).await.unwrap_err().to_string();
        assert!(err.contains("`missing`"), "{err}");
    }
}
