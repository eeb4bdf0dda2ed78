//! Arrow IPC streams of record batches: how sinks keep the rows of a checkpoint in their
//! committable until the checkpoint completes.

use std::io::Cursor;

use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

/// Appends `batches` to `out` as one Arrow IPC stream (the schema of the first); nothing
/// when there are none.
///
/// ```
/// # use std::sync::Arc;
/// # use arrow::array::Int64Array;
/// # use arrow::record_batch::RecordBatch;
/// use operators_core::codec::ipc;
/// let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 2])) as _)])?;
/// let mut bytes = Vec::new();
/// ipc::write_batches(&mut bytes, &[batch.clone()])?;
/// assert_eq!(ipc::read_batches(&bytes)?, vec![batch]);
/// # Ok::<(), arrow::error::ArrowError>(())
/// ```
pub fn write_batches(out: &mut Vec<u8>, batches: &[RecordBatch]) -> Result<(), ArrowError> {
    if let Some(first) = batches.first() {
        let mut w = StreamWriter::try_new(out, &first.schema())?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(())
}

/// The batches of an Arrow IPC stream written by [`write_batches`]; none from no bytes.
pub fn read_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    StreamReader::try_new(Cursor::new(bytes), None)?.collect()
}
