//! Directory sources: one directory of same-schema files, read once or watched for new
//! files, exactly once across restarts.
//!
//! Every `watch interval` the directory is listed. A file is taken only once it is
//! complete: hidden (`.x`), `_`-prefixed and `*.inprogress` files are ignored, and a file
//! must keep the same size and modification time for the *settle* time before it is read.
//! Files are read in name order; with parallelism > 1 each subtask reads the files whose
//! name hashes to it. A nested directory is an error that names it.
//!
//! The checkpointed state holds the names of the files already read and the position
//! inside the one being read (byte offset and line for text, rows for Parquet and ORC),
//! so a restored job neither re-reads a row nor skips one. Reads are streamed in chunks,
//! so memory does not grow with file size.

pub mod location;
#[cfg(feature = "orc")]
pub mod orc;
#[cfg(feature = "parquet")]
pub mod parquet;
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

/// A source reading the files of one directory.
///
/// ```no_run
/// use operators_sources::file::{DirectorySource, Location, WatchMode, text::TextFormat};
/// let source = DirectorySource::new(
///     Location::parse("source.path", "/data/csv")?,
///     TextFormat::csv(),
/// )
/// .with_watch(WatchMode::ProcessOnce);
/// # Ok::<(), operators_sources::SourceError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DirectorySource {
    location: Location,
    format: Arc<dyn FileFormat>,
    watch: WatchMode,
    settle: Duration,
}

impl DirectorySource {
    /// Reads `location` in `format`, watching continuously every 60 s (the toolkit's
    /// defaults) with a settle time of 1 s.
    pub fn new(location: Location, format: impl FileFormat) -> Self {
        Self {
            location,
            format: Arc::new(format),
            watch: WatchMode::ProcessContinuously { interval: Duration::from_secs(60) },
            settle: Duration::from_secs(1),
        }
    }

    /// Sets the watch mode.
    pub fn with_watch(mut self, watch: WatchMode) -> Self {
        self.watch = watch;
        self
    }

    /// How long a file's size and modification time must stay the same before it is read.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The directory.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

impl SourceFactory for DirectorySource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        Ok(Box::new(DirectoryReader {
            cfg: self.clone(),
            subtask: info.subtask,
            parallelism: info.parallelism,
            done: BTreeSet::new(),
            current: None,
            resume: HashMap::new(),
            candidates: BTreeMap::new(),
            ready: BTreeSet::new(),
            initial: None,
            sizes: HashMap::new(),
            next_scan: Instant::now(),
            schema: SchemaGuard::default(),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    size: u64,
    modified: i64,
    since: Instant,
}

/// Checkpointed state of one subtask.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DirectoryState {
    done: Vec<String>,
    current: Option<(String, FilePosition)>,
    initial: Option<Vec<String>>,
    schema: SchemaGuard,
}

struct DirectoryReader {
    cfg: DirectorySource,
    subtask: usize,
    parallelism: usize,
    done: BTreeSet<String>,
    current: Option<(FileMeta, Box<dyn FileReader>)>,
    resume: HashMap<String, FilePosition>,
    candidates: BTreeMap<String, Observation>,
    ready: BTreeSet<String>,
    /// PROCESS_ONCE: the files present at the first listing.
    initial: Option<BTreeSet<String>>,
    sizes: HashMap<String, u64>,
    next_scan: Instant,
    schema: SchemaGuard,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_') || name.ends_with(".inprogress")
}

impl DirectoryReader {
    fn owns(&self, name: &str) -> bool {
        self.parallelism <= 1
            || (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % self.parallelism as u64) as usize == self.subtask
    }

    fn storage_err(&self, path: &str, source: object_store::Error) -> Error {
        SourceError::Storage { path: path.to_string(), source }.into()
    }

    async fn scan(&mut self) -> Result<()> {
        let loc = &self.cfg.location;
        let listing =
            loc.store.list_with_delimiter(Some(&loc.dir)).await.map_err(|e| self.storage_err(&loc.display, e))?;
        for dir in &listing.common_prefixes {
            let name = dir.filename().unwrap_or_default();
            if !is_hidden(name) {
                return Err(SourceError::config(
                    "source.path",
                    format!(
                        "`{}` contains the directory `{name}`; a source reads one directory of files, without nested directories",
                        loc.display
                    ),
                )
                .into());
            }
        }
        let now = Instant::now();
        let mut listed = BTreeSet::new();
        for meta in listing.objects {
            let Some(name) = meta.location.filename().map(str::to_string) else { continue };
            if is_hidden(&name) || !self.owns(&name) || self.done.contains(&name) {
                continue;
            }
            listed.insert(name.clone());
            if self.current.as_ref().is_some_and(|(f, _)| f.name == name) || self.ready.contains(&name) {
                continue;
            }
            if self.initial.as_ref().is_some_and(|i| !i.contains(&name)) {
                // PROCESS_ONCE reads only what was there at start.
                continue;
            }
            let modified = meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX);
            let seen = Observation { size: meta.size, modified, since: now };
            match self.candidates.get(&name) {
                Some(prev)
                    if prev.size == meta.size
                        && prev.modified == modified
                        && now.duration_since(prev.since) >= self.cfg.settle =>
                {
                    self.candidates.remove(&name);
                    self.sizes.insert(name.clone(), meta.size);
                    self.ready.insert(name);
                }
                Some(prev) if prev.size == meta.size && prev.modified == modified => {}
                _ => {
                    self.candidates.insert(name, seen);
                }
            }
        }
        if self.initial.is_none() && self.cfg.watch == WatchMode::ProcessOnce {
            self.initial = Some(listed.clone());
        }
        // Files that vanished before they were read are forgotten (with a warning for
        // PROCESS_ONCE, which promised to read them).
        self.candidates.retain(|name, _| listed.contains(name));
        if let Some(initial) = &mut self.initial {
            let gone: Vec<String> = initial
                .iter()
                .filter(|n| !listed.contains(*n) && !self.done.contains(*n))
                .filter(|n| self.current.as_ref().is_none_or(|(f, _)| &f.name != *n))
                .cloned()
                .collect();
            for name in gone {
                tracing::warn!(file = %self.cfg.location.file_display(&name), "file disappeared before it was read");
                initial.remove(&name);
                self.ready.remove(&name);
            }
        }
        let interval = match self.cfg.watch {
            WatchMode::ProcessOnce => self.cfg.settle,
            WatchMode::ProcessContinuously { interval } => interval,
        };
        self.next_scan = if self.candidates.is_empty() { now + interval } else { now + self.cfg.settle.min(interval) };
        Ok(())
    }

    fn initial_done(&self) -> bool {
        self.initial.as_ref().is_some_and(|i| i.iter().all(|n| self.done.contains(n)))
            && self.current.is_none()
            && self.ready.is_empty()
    }

    fn report_progress(&self, ctx: &SourceContext) {
        if let Some(initial) = &self.initial {
            let total: u64 = initial.iter().filter_map(|n| self.sizes.get(n)).sum();
            let done: u64 = initial.iter().filter(|n| self.done.contains(*n)).filter_map(|n| self.sizes.get(n)).sum();
            let current = self.current.as_ref().map_or(0, |(_, r)| r.bytes_done());
            let known = initial.iter().all(|n| self.sizes.contains_key(n));
            ctx.set_progress(done + current, known.then_some(total));
        }
    }

    async fn open_next(&mut self, name: String) -> Result<()> {
        let loc = &self.cfg.location;
        let path = loc.file_path(&name);
        let meta = loc.store.head(&path).await.map_err(|e| self.storage_err(&loc.file_display(&name), e))?;
        let file = FileMeta { display: loc.file_display(&name), name: name.clone(), path, size: meta.size };
        self.sizes.insert(name.clone(), meta.size);
        let position = self.resume.remove(&name);
        let reader = self.cfg.format.open(loc, &file, position, &mut self.schema).await?;
        self.current = Some((file, reader));
        Ok(())
    }
}

#[async_trait]
impl Source for DirectoryReader {
    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        loop {
            if let Some((file, reader)) = &mut self.current {
                let mut dead = Vec::new();
                let batch = reader.next_batch(&mut dead).await;
                for d in dead {
                    ctx.dead_letter(d);
                }
                match batch? {
                    Some(b) => {
                        self.report_progress(ctx);
                        return Ok(SourcePoll::Batch(b));
                    }
                    None => {
                        tracing::debug!(file = %file.display, "file read");
                        self.done.insert(file.name.clone());
                        self.current = None;
                        self.report_progress(ctx);
                        continue;
                    }
                }
            }
            if let Some(name) = self.ready.pop_first() {
                self.open_next(name).await?;
                continue;
            }
            if Instant::now() >= self.next_scan {
                self.scan().await?;
                if !self.ready.is_empty() {
                    continue;
                }
            }
            if self.cfg.watch == WatchMode::ProcessOnce && self.initial_done() {
                self.report_progress(ctx);
                return Ok(SourcePoll::Finished);
            }
            return Ok(SourcePoll::Idle);
        }
    }

    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        let mut initial: Option<BTreeSet<String>> = None;
        for (_, bytes) in &state.snapshots {
            let s: DirectoryState = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "directory source".into(),
                message: format!("cannot read the checkpointed file positions: {e}"),
            })?;
            let mine: Vec<String> = s.done.into_iter().filter(|n| self.owns(n)).collect();
            self.done.extend(mine);
            if let Some((name, pos)) = s.current
                && self.owns(&name)
            {
                self.resume.insert(name, pos);
            }
            if let Some(i) = s.initial {
                let mine: Vec<String> = i.into_iter().filter(|n| self.owns(n)).collect();
                initial.get_or_insert_with(BTreeSet::new).extend(mine);
            }
            if self.schema == SchemaGuard::default() {
                self.schema = s.schema;
            }
        }
        if self.cfg.watch == WatchMode::ProcessOnce {
            self.initial = initial;
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        let mut current = self.current.as_ref().map(|(f, r)| (f.name.clone(), r.position()));
        // A file opened from restored state but not yet reopened keeps its position.
        if current.is_none()
            && let Some((n, p)) = self.resume.iter().next()
        {
            current = Some((n.clone(), p.clone()));
        }
        let state = DirectoryState {
            done: self.done.iter().cloned().collect(),
            current,
            initial: self.initial.as_ref().map(|i| i.iter().cloned().collect()),
            schema: self.schema.clone(),
        };
        postcard::to_allocvec(&state)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing directory state: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn schema_guard_names_both_files_and_the_column() {
        let mut g = SchemaGuard::default();
        let a = Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("x", DataType::Utf8, true)]);
        let b = Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("x", DataType::Int32, true)]);
        g.check("/d/a.parquet", &a).unwrap();
        g.check("/d/a2.parquet", &a).unwrap();
        let e = g.check("/d/b.parquet", &b).unwrap_err().to_string();
        assert!(e.contains("/d/b.parquet") && e.contains("/d/a.parquet") && e.contains("column 2"), "{e}");
        assert!(e.contains("`x` Utf8 vs `x` Int32"), "{e}");
    }

    #[test]
    fn watch_modes_parse() {
        assert_eq!(WatchMode::parse("process_once", 5).unwrap(), WatchMode::ProcessOnce);
        assert!(
            matches!(WatchMode::parse("PROCESS_CONTINUOUSLY", 0), Err(SourceError::Config { key, .. }) if key == "source.watch.interval")
        );
        assert!(WatchMode::parse("sometimes", 5).unwrap_err().to_string().contains("source.watch.type"));
    }
}
