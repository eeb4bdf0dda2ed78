//! The stdout sink: one JSON object per line, one write per batch.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::codec::JsonEncoder;
use operators_core::operator::{OperatorContext, Sink, SinkFactory, TaskInfo};
use operators_core::{Error, Result};

/// Writes every record to stdout as one JSON object per line.
#[derive(Debug, Clone, Default)]
pub struct StdoutSink;

/// Writes `batch` to `out` (standard output) as JSON lines in one `write_all`, then
/// flushes.
pub(super) fn write_lines(batch: &RecordBatch, out: &mut impl Write) -> Result<()> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size());
    JsonEncoder::new().encode_lines(batch, &mut buf)?;
    // One write per batch keeps lines of parallel subtasks from interleaving.
    out.write_all(&buf).and_then(|_| out.flush()).map_err(|e| Error::io("<stdout>", e))
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        write_lines(&batch, &mut std::io::stdout().lock())
    }
}

impl SinkFactory for StdoutSink {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Sink>> {
        Ok(Box::new(StdoutSink))
    }
}
