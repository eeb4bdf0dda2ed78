//! A sink that counts rows and drops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::Result;
use crate::operator::{OperatorContext, Sink, SinkFactory, TaskInfo};

/// Drops every record; clones share one row counter.
#[derive(Debug, Clone, Default)]
pub struct DiscardSink {
    rows: Arc<AtomicU64>,
}

impl DiscardSink {
    /// Rows received so far, over all subtasks.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for DiscardSink {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        self.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl SinkFactory for DiscardSink {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}
