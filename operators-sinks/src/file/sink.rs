//! The sink: its builder and factory, the subtask writing part files, and their commit.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use operators_core::fs::{FileSystem, FileWrite};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::codec::JsonEncoder;
use operators_core::operator::{Committable, OperatorContext, Sink, SinkFactory, TaskInfo, blocking};
use operators_core::{CheckpointId, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::SinkError;

use super::config::FileFormat;

/// Writes part files into a directory, exactly once with checkpoints.
///
/// ```
/// use std::time::Duration;
/// use operators_sinks::file::{FileFormat, FileSink};
/// let sink = FileSink::new("/tmp/out", FileFormat::JsonLines)
///     .with_roll_size(64 << 20)
///     .with_roll_interval(Some(Duration::from_secs(300)));
/// ```
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    roll_size: u64,
    roll_interval: Option<Duration>,
    prefix: String,
    /// The setting `dir` came from, named in errors.
    param: String,
}

impl FileSink {
    /// Parts in `dir` (created when the job starts, if missing), rolled at 128 MiB and
    /// at every checkpoint. `dir` is a local path or a URL of a registered file system
    /// (`hdfs://...` once `operators-hdfs` is registered); other URLs are refused by
    /// [`FileSink::validate`] (resolve a setting's text with
    /// [`operators_core::path::store_dir`] first).
    pub fn new(dir: impl Into<PathBuf>, format: FileFormat) -> Self {
        Self {
            dir: dir.into(),
            format,
            roll_size: 128 << 20,
            roll_interval: None,
            prefix: "part".into(),
            param: "sink.path".into(),
        }
    }

    /// The setting the directory came from, which errors name (default `sink.path`): a
    /// sink of late rows or dead letters is configured by another key.
    pub fn with_param(mut self, key: impl Into<String>) -> Self {
        self.param = key.into();
        self
    }

    /// Closes a part once it holds this many bytes.
    pub fn with_roll_size(mut self, bytes: u64) -> Self {
        self.roll_size = bytes.max(1);
        self
    }

    /// Closes a part once it is this old (checkpoints close parts anyway).
    pub fn with_roll_interval(mut self, interval: Option<Duration>) -> Self {
        self.roll_interval = interval;
        self
    }

    /// File name prefix (default `part`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks the settings without touching the file system (a dry run changes
    /// nothing): a usable prefix, and a directory that is a local path or a URL of a
    /// registered file system, not a URL the local file system would read as a relative
    /// path. [`FileSink::check_dir`] does the checks that need I/O.
    pub fn validate(&self) -> std::result::Result<(), SinkError> {
        if self.prefix.is_empty() || self.prefix.contains('/') || self.prefix.starts_with('.') {
            return Err(SinkError::config(
                "sink.file.prefix",
                format!("`{}` is not a usable file name prefix", self.prefix),
            ));
        }
        operators_core::path::check_store(&self.param, &self.dir).map_err(|e| match e {
            operators_core::Error::Config { key, message } => SinkError::config(key, message),
            other => SinkError::config(&self.param, other.to_string()),
        })
    }

    /// Creates the directory if missing and checks that it can be written. Run when the
    /// job starts ([`SinkFactory::preflight`]) and by every subtask it creates.
    pub fn check_dir(&self) -> std::result::Result<(), SinkError> {
        let fs = self.fs()?;
        operators_core::fs::probe_dir(&*fs, &self.dir).map_err(|(what, e)| self.dir_error(what, e))
    }

    /// A directory that cannot be used as configured (no permission, a file in the way)
    /// is a configuration error; a store that does not answer (a NameNode down) is an
    /// I/O error, which a restart may get past.
    fn dir_error(&self, what: &str, e: std::io::Error) -> SinkError {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::PermissionDenied
            | K::NotADirectory
            | K::AlreadyExists
            | K::IsADirectory
            | K::InvalidInput
            | K::ReadOnlyFilesystem
            | K::Unsupported => SinkError::config(&self.param, format!("cannot {what} `{}`: {e}", self.dir.display())),
            _ => SinkError::io(&self.dir, e),
        }
    }

    /// The file system the directory is on.
    fn fs(&self) -> std::result::Result<Arc<dyn FileSystem>, SinkError> {
        operators_core::fs::for_path(&self.dir).map_err(|e| SinkError::config(&self.param, e.to_string()))
    }
}

impl SinkFactory for FileSink {
    fn preflight(&self) -> Result<()> {
        self.validate()?;
        self.check_dir()?;
        Ok(())
    }

    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate()?;
        // Again for each subtask of each attempt: the directory may have gone since the
        // job started, and a part file cannot be created without it.
        self.check_dir()?;
        // The run, not the job id: a job resumed under its id by a job server must not
        // reuse the names of files the crashed run committed.
        let run = info.run_id.get(..8).unwrap_or(&info.run_id);
        Ok(Box::new(FileSinkWriter {
            cfg: Arc::new(self.clone()),
            token: format!("{run}a{}", info.attempt),
            subtask: info.subtask,
            seq: 0,
            current: None,
            closed: Vec::new(),
            cleaned: false,
        }))
    }
}

/// A part closed and waiting for its checkpoint: in-progress name, final name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PendingPart {
    pub(super) temp: String,
    pub(super) final_name: String,
}

/// A part's file: on the local disk (synced behind the writes, see [`OpenPart`]), or on
/// another file system.
enum PartFile {
    Local(File),
    Remote(Box<dyn FileWrite>),
}

impl Write for PartFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            PartFile::Local(f) => f.write(buf),
            PartFile::Remote(f) => f.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            PartFile::Local(f) => f.write_all(buf),
            PartFile::Remote(f) => f.write_all(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PartFile::Local(f) => f.flush(),
            PartFile::Remote(f) => f.flush(),
        }
    }
}

impl PartFile {
    /// Makes the file durable.
    fn finish(self) -> std::io::Result<()> {
        match self {
            PartFile::Local(f) => f.sync_all(),
            PartFile::Remote(f) => f.finish(),
        }
    }
}

enum PartWriter {
    /// `scratch` is the encode buffer, kept across batches: a fresh one per batch (about
    /// a MiB) was page-faulted in anew every time.
    Lines {
        out: BufWriter<PartFile>,
        csv_header: bool,
        scratch: Vec<u8>,
    },
    Parquet(Box<ArrowWriter<PartFile>>),
}

struct OpenPart {
    temp: PathBuf,
    final_name: String,
    writer: PartWriter,
    opened: Instant,
    bytes: u64,
    /// Write-behind: `bytes` when the last background `fdatasync` started, and that sync.
    /// Without it the fsync at close waited for the whole part to reach the disk (a
    /// fifth of a second for a 100 MB bounded job, with both cores idle); with it the
    /// disk writes the part while the job still runs and the close waits for the tail.
    synced_at: u64,
    syncing: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// Bytes written between two background syncs of a part.
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

struct FileSinkWriter {
    cfg: Arc<FileSink>,
    token: String,
    subtask: usize,
    seq: u64,
    current: Option<OpenPart>,
    closed: Vec<PendingPart>,
    cleaned: bool,
}

fn encode_err(path: &Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Encode { path: path.to_path_buf(), message: e.to_string() }
}

impl OpenPart {
    fn create(
        cfg: &FileSink,
        temp: PathBuf,
        final_name: String,
        schema: &SchemaRef,
    ) -> std::result::Result<Self, SinkError> {
        let file = if operators_core::fs::scheme_of(&temp).is_none() {
            PartFile::Local(File::create(&temp).map_err(|e| SinkError::io(&temp, e))?)
        } else {
            PartFile::Remote(cfg.fs()?.create(&temp).map_err(|e| SinkError::io(&temp, e))?)
        };
        let writer = match cfg.format {
            FileFormat::JsonLines => PartWriter::Lines {
                out: BufWriter::with_capacity(1 << 20, file),
                csv_header: false,
                scratch: Vec::new(),
            },
            FileFormat::Csv => PartWriter::Lines {
                out: BufWriter::with_capacity(1 << 20, file),
                csv_header: true,
                scratch: Vec::new(),
            },
            FileFormat::Parquet => {
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                let w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| encode_err(&temp, e))?;
                PartWriter::Parquet(Box::new(w))
            }
        };
        Ok(Self { temp, final_name, writer, opened: Instant::now(), bytes: 0, synced_at: 0, syncing: None })
    }

    /// Starts a background `fdatasync` once enough was written since the last one and
    /// that one has finished. An error of a background sync fails the part: after a
    /// failed fsync the kernel may have dropped the pages and a later fsync can succeed
    /// anyway, so the first error must not be lost.
    fn write_behind(&mut self) -> std::result::Result<(), SinkError> {
        // Saturating: a Parquet part's size estimate can shrink when a row group is encoded.
        if self.bytes.saturating_sub(self.synced_at) < WRITE_BEHIND_BYTES {
            return Ok(());
        }
        if self.syncing.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.join_sync()?;
        let file = match &self.writer {
            PartWriter::Lines { out, .. } => out.get_ref(),
            PartWriter::Parquet(w) => w.inner(),
        };
        // Another file system makes a part durable at its close only.
        let PartFile::Local(file) = file else { return Ok(()) };
        let file = file.try_clone().map_err(|e| SinkError::io(&self.temp, e))?;
        self.synced_at = self.bytes;
        self.syncing = Some(std::thread::spawn(move || file.sync_data()));
        Ok(())
    }

    fn join_sync(&mut self) -> std::result::Result<(), SinkError> {
        match self.syncing.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(SinkError::io(&self.temp, e)),
            Some(Err(_)) => Err(SinkError::io(&self.temp, std::io::Error::other("the background sync thread died"))),
        }
    }

    fn write(&mut self, format: FileFormat, batch: &RecordBatch) -> std::result::Result<(), SinkError> {
        match &mut self.writer {
            PartWriter::Lines { out, csv_header, scratch } => {
                let buf = scratch;
                buf.clear();
                match format {
                    FileFormat::Csv => {
                        let mut w = arrow::csv::WriterBuilder::new().with_header(*csv_header).build(&mut *buf);
                        w.write(batch).map_err(|e| encode_err(&self.temp, e))?;
                        *csv_header = false;
                    }
                    _ => JsonEncoder::new().encode_lines(batch, buf).map_err(|e| encode_err(&self.temp, e))?,
                }
                out.write_all(buf).map_err(|e| SinkError::io(&self.temp, e))?;
                self.bytes += buf.len() as u64;
            }
            PartWriter::Parquet(w) => {
                w.write(batch).map_err(|e| encode_err(&self.temp, e))?;
                self.bytes = w.bytes_written() as u64 + w.in_progress_size() as u64;
            }
        }
        self.write_behind()
    }

    /// Finishes and fsyncs the file.
    fn close(mut self) -> std::result::Result<PendingPart, SinkError> {
        self.join_sync()?;
        let file = match self.writer {
            PartWriter::Lines { out, .. } => out.into_inner().map_err(|e| SinkError::io(&self.temp, e.into_error()))?,
            PartWriter::Parquet(w) => w.into_inner().map_err(|e| encode_err(&self.temp, e))?,
        };
        file.finish().map_err(|e| SinkError::io(&self.temp, e))?;
        Ok(PendingPart { temp: file_name(&self.temp), final_name: self.final_name })
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Renames pending parts to their final names; idempotent.
pub(super) fn commit_parts(
    fs: &dyn FileSystem,
    dir: &Path,
    parts: &[PendingPart],
) -> std::result::Result<(), SinkError> {
    for p in parts {
        let temp = dir.join(&p.temp);
        let fin = dir.join(&p.final_name);
        // The rename itself tells whether it was done before (a commit repeated after a
        // restore): a status first would cost a round trip per part on a remote store.
        match fs.rename(&temp, &fin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !fs.is_file(&fin).map_err(|e| SinkError::io(&fin, e))? {
                    return Err(SinkError::LostPart { path: temp });
                }
            }
            Err(e) => return Err(SinkError::io(&temp, e)),
        }
    }
    fs.sync_dir(dir).map_err(|e| SinkError::io(dir, e))
}

/// Deletes in-progress files of other runs or attempts (their records are replayed), and
/// the probes of directory checks that a killed process left (on HDFS a probe lives for
/// a few round trips to the NameNode, which a SIGKILL can fall between).
pub(super) fn clean_stale(
    fs: &dyn FileSystem,
    dir: &Path,
    prefix: &str,
    token: &str,
) -> std::result::Result<usize, SinkError> {
    let head = format!(".{prefix}-");
    let mine = format!(".{prefix}-{token}-");
    let mut removed = 0;
    for entry in fs.list(dir).map_err(|e| SinkError::io(dir, e))? {
        let name = entry.name();
        let stale_part = name.starts_with(&head) && name.ends_with(".inprogress") && !name.starts_with(&mine);
        // Every subtask of this attempt checked the directory before its first row, so
        // a probe still there when the first checkpoint completes is a leftover.
        if stale_part || name.starts_with(".probe-") {
            match fs.remove_file(&entry.path) {
                Ok(()) => removed += 1,
                // Removed meanwhile: what this wanted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SinkError::io(&entry.path, e)),
            }
        }
    }
    Ok(removed)
}

impl FileSinkWriter {
    async fn roll(&mut self) -> Result<()> {
        if let Some(part) = self.current.take() {
            let pending = blocking("file sink", move || part.close()).await?;
            self.closed.push(pending);
        }
        Ok(())
    }

    fn next_names(&mut self) -> (PathBuf, String) {
        let ext = self.cfg.format.extension();
        let stem = format!("{}-{}-{}-{}", self.cfg.prefix, self.token, self.subtask, self.seq);
        self.seq += 1;
        (self.cfg.dir.join(format!(".{stem}.{ext}.inprogress")), format!("{stem}.{ext}"))
    }

    async fn clean_once(&mut self) -> Result<()> {
        if self.cleaned || self.subtask != 0 {
            return Ok(());
        }
        self.cleaned = true;
        let (dir, prefix, token) = (self.cfg.dir.clone(), self.cfg.prefix.clone(), self.token.clone());
        let fs = self.cfg.fs()?;
        let removed = blocking("file sink", move || clean_stale(&*fs, &dir, &prefix, &token)).await?;
        if removed > 0 {
            tracing::info!(removed, dir = %self.cfg.dir.display(), "removed in-progress files of earlier runs");
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSinkWriter {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut part = match self.current.take() {
            Some(p) => p,
            None => {
                let (temp, final_name) = self.next_names();
                let cfg = self.cfg.clone();
                let schema = batch.schema();
                blocking("file sink", move || OpenPart::create(&cfg, temp, final_name, &schema)).await?
            }
        };
        let format = self.cfg.format;
        let part = blocking("file sink", move || part.write(format, &batch).map(|_| part)).await?;
        let roll =
            part.bytes >= self.cfg.roll_size || self.cfg.roll_interval.is_some_and(|i| part.opened.elapsed() >= i);
        self.current = Some(part);
        if roll {
            self.roll().await?;
        }
        Ok(())
    }

    async fn pre_commit(
        &mut self,
        _checkpoint_id: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<Vec<u8>>> {
        self.roll().await?;
        if self.closed.is_empty() {
            return Ok(None);
        }
        let parts = std::mem::take(&mut self.closed);
        postcard::to_allocvec(&parts)
            .map(Some)
            .map_err(|e| operators_core::Error::Internal(format!("serializing pending parts: {e}")))
    }

    async fn commit(&mut self, _checkpoint_id: CheckpointId, committable: Vec<u8>) -> Result<()> {
        let parts: Vec<PendingPart> =
            postcard::from_bytes(&committable).map_err(|e| operators_core::Error::CorruptState {
                path: self.cfg.dir.clone(),
                reason: format!("file sink committable: {e}"),
            })?;
        let dir = self.cfg.dir.clone();
        let fs = self.cfg.fs()?;
        blocking("file sink", move || commit_parts(&*fs, &dir, &parts)).await
    }

    async fn recover(&mut self, committables: Vec<Committable>, _ctx: &mut OperatorContext) -> Result<()> {
        for c in committables {
            self.commit(c.checkpoint_id, c.data).await?;
        }
        Ok(())
    }

    async fn notify_checkpoint_complete(&mut self, _checkpoint_id: CheckpointId) -> Result<()> {
        // By now every subtask has recovered its restored parts: what is left of earlier
        // runs is garbage.
        self.clean_once().await
    }

    async fn close(&mut self) -> Result<()> {
        self.clean_once().await
    }
}
