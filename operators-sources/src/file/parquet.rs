//! Parquet files, read with the parquet crate's async Arrow reader over `object_store`.
//!
//! The schema comes from the file. The position is the number of rows already emitted;
//! a resumed file skips them with the reader's offset, which skips whole row groups
//! without decoding them.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use operators_core::Result;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::columnar::{ColumnarReader, rows_to_skip};
use super::{FileFormat, FileMeta, FilePosition, FileReader, Location, SchemaGuard, decode_err};

/// Parquet files.
#[derive(Debug, Clone)]
pub struct ParquetFormat {
    batch_size: usize,
}

impl Default for ParquetFormat {
    fn default() -> Self {
        Self { batch_size: 8192 }
    }
}

impl ParquetFormat {
    /// Parquet with 8192-row batches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows per batch; 0 is refused, naming `source.batch.size`.
    pub fn with_batch_size(mut self, rows: usize) -> crate::Result<Self> {
        self.batch_size = crate::error::at_least_one("source.batch.size", rows)?;
        Ok(self)
    }
}

/// Reads byte ranges of one object for the parquet reader.
struct ObjectFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for ObjectFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(|e| ParquetError::External(Box::new(e))) }
            .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(|e| ParquetError::External(Box::new(e))) }
            .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                // The footer is usually small: one read of the last 64 KiB gets it.
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[async_trait]
impl FileFormat for ParquetFormat {
    fn name(&self) -> &'static str {
        "parquet"
    }

    async fn open(
        &self,
        location: &Location,
        file: &FileMeta,
        position: Option<FilePosition>,
        schema: &mut SchemaGuard,
    ) -> Result<Box<dyn FileReader>> {
        let skip = rows_to_skip("parquet", position)?;
        let reader = ObjectFileReader { store: location.store.clone(), path: file.path.clone(), size: file.size };
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(|e| decode_err(&file.display, e))?;
        schema.check(&file.display, builder.schema())?;
        let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
        // Past the file's rows there is nothing to skip to: offset at its end.
        let offset = usize::try_from(skip.min(total)).map_err(|e| decode_err(&file.display, e))?;
        let stream = builder
            .with_batch_size(self.batch_size)
            .with_offset(offset)
            .build()
            .map_err(|e| decode_err(&file.display, e))?;
        Ok(Box::new(ColumnarReader::new(file, total, skip, stream.boxed())))
    }
}
