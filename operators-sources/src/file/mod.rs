//! Directory sources: one directory of same-schema files, read once or watched for new
//! files, exactly once across restarts.
//!
//! Every `watch interval` the directory is listed. A file is taken only once it is
//! complete: hidden (`.x`), `_`-prefixed and `*.inprogress` files are ignored, and a file
//! must not have changed for the *settle* time before it is read (its modification time
//! tells, so a file written earlier is read at once). A nested directory is an error that
//! names it.
//!
//! Files are taken in name order. A subtask reads up to
//! [`DirectorySource::with_concurrent_files`] files at once (default: the number of
//! cores, at most 4), each on its own task, so that decoding uses every core even when
//! the rest of the job runs with parallelism 1; the rows of one file keep their order,
//! the files' rows interleave. With one file at a time, rows come in name order then file
//! order. With parallelism > 1 each subtask reads the files whose name hashes to it.
//!
//! The checkpointed state holds the names of the files already read and the position
//! inside each file being read (byte offset and line for text, rows for Parquet and ORC)
//! after the last batch the source emitted, so a restored job neither re-reads a row nor
//! skips one. Reads are streamed in chunks and at most two batches per file wait to be
//! emitted, so memory does not grow with file size.

#[cfg(any(feature = "parquet", feature = "orc"))]
mod columnar;
pub mod location;
#[cfg(feature = "orc")]
pub mod orc;
#[cfg(feature = "parquet")]
pub mod parquet;
mod source;
#[cfg(test)]
mod tests;
#[cfg(feature = "csv")]
pub mod text;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use operators_core::operator::{DeadLetter, RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo};
use operators_core::{CheckpointId, Error, Result};
use serde::{Deserialize, Serialize};

pub use location::Location;
pub use source::DirectorySource;

use crate::error::SourceError;

/// Where reading stopped inside a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilePosition {
    /// Text: the next record starts at byte `offset`, on line `line` (1-based).
    Text {
        /// Byte offset in the file.
        offset: u64,
        /// Line number of that byte.
        line: u64,
        /// Charset in effect (after byte-order-mark detection).
        encoding: String,
        /// Whether the header line has been consumed.
        header_done: bool,
    },
    /// Columnar files: this many rows have been emitted.
    Rows {
        /// Rows emitted.
        rows: u64,
    },
}

/// A file of the directory.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// Name inside the directory.
    pub name: String,
    /// Full path for messages.
    pub display: String,
    /// Store path.
    pub path: Path,
    /// Size in bytes.
    pub size: u64,
}

/// One file being read.
#[async_trait]
pub trait FileReader: Send {
    /// The next batch, or `None` at the end of the file. Bad records go to `dead`.
    async fn next_batch(&mut self, dead: &mut Vec<DeadLetter>) -> Result<Option<RecordBatch>>;
    /// Where the next batch starts.
    fn position(&self) -> FilePosition;
    /// Bytes of the file consumed so far (for progress).
    fn bytes_done(&self) -> u64;
}

/// Keeps every file of a directory on the first file's schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaGuard {
    first: Option<(String, Vec<(String, String)>)>,
}

impl SchemaGuard {
    /// Column names of the first file, if one was read.
    pub fn first_names(&self) -> Option<Vec<String>> {
        self.first.as_ref().map(|(_, sig)| sig.iter().map(|(n, _)| n.clone()).collect())
    }

    /// Checks `schema` of `file` against the first file seen (which it becomes if none).
    pub fn check(&mut self, file: &str, schema: &Schema) -> std::result::Result<(), SourceError> {
        let sig: Vec<(String, String)> =
            schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
        match &self.first {
            None => {
                self.first = Some((file.to_string(), sig));
                Ok(())
            }
            Some((first, expected)) => {
                for i in 0..expected.len().max(sig.len()) {
                    let difference = match (expected.get(i), sig.get(i)) {
                        (Some(a), Some(b)) if a == b => continue,
                        (Some(a), Some(b)) => format!("`{}` {} vs `{}` {}", a.0, a.1, b.0, b.1),
                        (Some(a), None) => format!("`{}` is missing", a.0),
                        (None, Some(b)) => format!("extra column `{}`", b.0),
                        (None, None) => continue,
                    };
                    return Err(SourceError::SchemaMismatch {
                        file: file.to_string(),
                        first: first.clone(),
                        column: i + 1,
                        difference,
                    });
                }
                Ok(())
            }
        }
    }
}

/// A file format a directory source can read.
#[async_trait]
pub trait FileFormat: Send + Sync + Debug + 'static {
    /// Short name (`csv`, `parquet`, `orc`).
    fn name(&self) -> &'static str;

    /// Opens `file`, at `position` when resuming, checking its schema with `schema`.
    async fn open(
        &self,
        location: &Location,
        file: &FileMeta,
        position: Option<FilePosition>,
        schema: &mut SchemaGuard,
    ) -> Result<Box<dyn FileReader>>;
}

/// Read the files present at start and finish, or watch for new files forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// `PROCESS_ONCE`: read every file present at start, then finish.
    ProcessOnce,
    /// `PROCESS_CONTINUOUSLY`: list the directory every `interval`, never finish.
    ProcessContinuously {
        /// Time between listings.
        interval: Duration,
    },
}

impl WatchMode {
    /// Parses the toolkit's `source.watch.type` and `source.watch.interval` (ms).
    pub fn parse(kind: &str, interval_ms: u64) -> std::result::Result<Self, SourceError> {
        match kind.trim().to_ascii_uppercase().as_str() {
            "PROCESS_ONCE" => Ok(WatchMode::ProcessOnce),
            "PROCESS_CONTINUOUSLY" => {
                if interval_ms == 0 {
                    return Err(SourceError::config("source.watch.interval", "must be greater than 0 ms"));
                }
                Ok(WatchMode::ProcessContinuously { interval: Duration::from_millis(interval_ms) })
            }
            other => Err(SourceError::config(
                "source.watch.type",
                format!("unknown mode `{other}`; expected PROCESS_ONCE or PROCESS_CONTINUOUSLY"),
            )),
        }
    }
}

/// A file that cannot be decoded (CSV, Parquet or ORC), named in the error.
#[cfg(any(feature = "csv", feature = "parquet", feature = "orc"))]
pub(crate) fn decode_err(file: &str, e: impl std::error::Error + Send + Sync + 'static) -> operators_core::Error {
    crate::error::SourceError::Decode { file: file.to_string(), source: Box::new(e) }.into()
}
