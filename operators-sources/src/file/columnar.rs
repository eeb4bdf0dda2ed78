//! What the columnar formats (Parquet, ORC) share: a position counted in rows, and a
//! reader of a decoder's batch stream that counts them.

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use operators_core::operator::DeadLetter;
use operators_core::{Error, Result};

use super::{FileMeta, FilePosition, FileReader, decode_err};

/// The rows a resumed file skips: those emitted before the checkpoint. A columnar file
/// resumes only at a row count (`format` names it in the error otherwise).
pub(crate) fn rows_to_skip(format: &str, position: Option<FilePosition>) -> Result<u64> {
    match position {
        Some(FilePosition::Rows { rows }) => Ok(rows),
        None => Ok(0),
        Some(other) => Err(Error::Internal(format!("a {format} file cannot resume at {other:?}"))),
    }
}

/// Reads a decoder's batches of one file, from row `skip` on (the decoder skips them);
/// its position is the rows emitted, its progress the share of the file's `total` rows.
pub(crate) struct ColumnarReader<E> {
    display: String,
    size: u64,
    total: u64,
    rows: u64,
    stream: BoxStream<'static, std::result::Result<RecordBatch, E>>,
}

impl<E> ColumnarReader<E> {
    pub(crate) fn new(
        file: &FileMeta,
        total: u64,
        skip: u64,
        stream: BoxStream<'static, std::result::Result<RecordBatch, E>>,
    ) -> Self {
        Self { display: file.display.clone(), size: file.size, total, rows: skip, stream }
    }
}

#[async_trait]
impl<E: std::error::Error + Send + Sync + 'static> FileReader for ColumnarReader<E> {
    async fn next_batch(&mut self, _dead: &mut Vec<DeadLetter>) -> Result<Option<RecordBatch>> {
        match self.stream.next().await {
            Some(Ok(batch)) => {
                self.rows += batch.num_rows() as u64;
                Ok(Some(batch))
            }
            Some(Err(e)) => Err(decode_err(&self.display, e)),
            None => Ok(None),
        }
    }

    fn position(&self) -> FilePosition {
        FilePosition::Rows { rows: self.rows }
    }

    fn bytes_done(&self) -> u64 {
        // In 128 bits: a file's bytes times its rows can pass 64.
        let done = u128::from(self.size) * u128::from(self.rows.min(self.total));
        done.checked_div(u128::from(self.total)).map_or(0, |b| u64::try_from(b).unwrap_or(self.size))
    }
}
