//! Batch-at-a-time map and filter.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};

type MapFn = dyn Fn(RecordBatch) -> Result<Option<RecordBatch>> + Send + Sync;
type PredicateFn = dyn Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync;

/// Applies a function to every batch; `Ok(None)` drops the batch.
#[derive(Clone)]
pub struct MapTransform {
    f: Arc<MapFn>,
}

impl std::fmt::Debug for MapTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MapTransform")
    }
}

impl MapTransform {
    /// A map over batches.
    pub fn new(f: impl Fn(RecordBatch) -> Result<Option<RecordBatch>> + Send + Sync + 'static) -> Self {
        Self { f: Arc::new(f) }
    }
}

#[async_trait]
impl Transform for MapTransform {
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        if let Some(out) = (self.f)(batch)? {
            ctx.emit(out);
        }
        Ok(())
    }
}

impl TransformFactory for MapTransform {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(self.clone()))
    }
}

/// Keeps the rows for which a predicate is true (null counts as false).
#[derive(Clone)]
pub struct FilterTransform {
    predicate: Arc<PredicateFn>,
}

impl std::fmt::Debug for FilterTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FilterTransform")
    }
}

impl FilterTransform {
    /// A filter with a vectorized predicate.
    pub fn new(predicate: impl Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync + 'static) -> Self {
        Self { predicate: Arc::new(predicate) }
    }
}

#[async_trait]
impl Transform for FilterTransform {
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        let mask = (self.predicate)(&batch)?;
        let out =
            arrow::compute::filter_record_batch(&batch, &mask).map_err(|e| Error::arrow("filtering a batch", e))?;
        if out.num_rows() > 0 {
            ctx.emit(out);
        }
        Ok(())
    }
}

impl TransformFactory for FilterTransform {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(self.clone()))
    }
}
