//! The toolkit's `kafka_deduplication`: keep the first row of each key, drop the rows
//! with the same key that follow until the key's TTL has passed.
//!
//! The operator runs keyed (after a hash exchange on the key columns, see
//! [`Stream::dedup`](crate::pipeline::Stream::dedup)), so all rows of a key meet on one
//! subtask. Seen keys live in keyed value state with a TTL counted from the first
//! occurrence: a hash probe per row (`ValueState::put_if_absent_batch`, with the hashes
//! the exchange computed), past the memory budget on disk (the default disk backend), in
//! every checkpoint, restored after a failure, redistributed by key group when the
//! parallelism changes. Expired keys are swept by the runtime, so state holds only the
//! keys seen within the last TTL.

use std::time::Duration;

use arrow::array::BooleanArray;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};
use crate::state::{StateTtl, ValueState};

/// Drops rows whose key was seen within the TTL.
///
/// ```
/// use std::time::Duration;
/// use operators_core::builtins::{DedupTransform, GeneratorSource, DiscardSink};
/// use operators_core::Pipeline;
///
/// let pipeline = Pipeline::new();
/// pipeline
///     .source("rows", GeneratorSource::bounded(100))
///     .dedup("dedup", ["id"], Duration::from_secs(3600))
///     .sink("out", DiscardSink::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupTransform {
    ttl: Duration,
}

impl DedupTransform {
    /// Keys are remembered for `ttl` after their first occurrence (the toolkit's
    /// `unique.data.ttl.in.minute`, 60 minutes by default).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl }
    }
}

impl Default for DedupTransform {
    fn default() -> Self {
        Self::new(Duration::from_secs(60 * 60))
    }
}

struct DedupTask {
    ttl: Duration,
    seen: Option<ValueState<u8>>,
    /// Per row of the batch at hand: the first of its key.
    keep: Vec<bool>,
}

impl TransformFactory for DedupTransform {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(DedupTask { ttl: self.ttl, seen: None, keep: Vec::new() }))
    }
}

#[async_trait]
impl Transform for DedupTask {
    async fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if ctx.key_selector().is_none() {
            return Err(Error::config(
                "unique.keys",
                "deduplication needs its input keyed by the key columns (use Stream::dedup or key_by)",
            ));
        }
        self.seen = Some(ctx.keyed_state()?.value_state("dedup.seen", Some(StateTtl::after_write(self.ttl)))?);
        Ok(())
    }

    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        let Some(seen) = self.seen.clone() else {
            return Err(Error::Internal("dedup: process before open".into()));
        };
        let keys = ctx.keys(&batch)?;
        let store = ctx.keyed_state()?;
        // Written only on the first occurrence, so the TTL runs from it.
        let kept = seen.put_if_absent_batch(store, &keys, &1, &mut self.keep)?;
        if kept == batch.num_rows() {
            ctx.emit(batch);
        } else if kept > 0 {
            let mask = BooleanArray::from(std::mem::take(&mut self.keep));
            let filtered =
                arrow::compute::filter_record_batch(&batch, &mask).map_err(|e| Error::arrow("dedup filter", e))?;
            ctx.emit(filtered);
        }
        Ok(())
    }
}
