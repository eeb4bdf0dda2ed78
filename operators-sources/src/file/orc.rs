//! ORC files, read with orc-rust's async reader over `object_store`.
//!
//! The schema comes from the file. The position is the number of rows already emitted; a
//! resumed file skips them with a row selection.

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
use orc_rust::ArrowReaderBuilder;
use orc_rust::reader::AsyncChunkReader;
use orc_rust::row_selection::{RowSelection, RowSelector};

use super::columnar::{ColumnarReader, rows_to_skip};
use super::{FileFormat, FileMeta, FilePosition, FileReader, Location, SchemaGuard, decode_err};

/// ORC files.
#[derive(Debug, Clone)]
pub struct OrcFormat {
    batch_size: usize,
}

impl Default for OrcFormat {
    fn default() -> Self {
        Self { batch_size: 8192 }
    }
}

impl OrcFormat {
    /// ORC with 8192-row batches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows per batch; 0 is refused, naming `source.batch.size`.
    pub fn with_batch_size(mut self, rows: usize) -> crate::Result<Self> {
        self.batch_size = crate::error::at_least_one("source.batch.size", rows)?;
        Ok(self)
    }
}

/// Reads byte ranges of one object for orc-rust.
struct ObjectChunkReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncChunkReader for ObjectChunkReader {
    fn len(&mut self) -> BoxFuture<'_, std::io::Result<u64>> {
        let size = self.size;
        async move { Ok(size) }.boxed()
    }

    fn get_bytes(&mut self, offset_from_start: u64, length: u64) -> BoxFuture<'_, std::io::Result<Bytes>> {
        let range: Range<u64> = offset_from_start..offset_from_start + length;
        async move { self.store.get_range(&self.path, range).await.map_err(std::io::Error::other) }.boxed()
    }
}

#[async_trait]
impl FileFormat for OrcFormat {
    fn name(&self) -> &'static str {
        "orc"
    }

    async fn open(
        &self,
        location: &Location,
        file: &FileMeta,
        position: Option<FilePosition>,
        schema: &mut SchemaGuard,
    ) -> Result<Box<dyn FileReader>> {
        let skip = rows_to_skip("ORC", position)?;
        let reader = ObjectChunkReader { store: location.store.clone(), path: file.path.clone(), size: file.size };
        let builder = ArrowReaderBuilder::try_new_async(reader).await.map_err(|e| decode_err(&file.display, e))?;
        schema.check(&file.display, &builder.schema())?;
        let total = builder.file_metadata().number_of_rows();
        let mut builder = builder.with_batch_size(self.batch_size);
        if skip > 0 {
            let skip_n = usize::try_from(skip.min(total)).map_err(|e| decode_err(&file.display, e))?;
            let rest = usize::try_from(total.saturating_sub(skip)).map_err(|e| decode_err(&file.display, e))?;
            builder = builder
                .with_row_selection(RowSelection::from(vec![RowSelector::skip(skip_n), RowSelector::select(rest)]));
        }
        let stream = builder.build_async();
        Ok(Box::new(ColumnarReader::new(file, total, skip, stream.boxed())))
    }
}
