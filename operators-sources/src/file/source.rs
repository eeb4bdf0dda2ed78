//! The directory source: listing, settling and taking files, one reader task per file
//! being read, and the state that makes a restored job resume where it stopped.

use super::*;

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
    concurrent_files: usize,
}

/// Files read at once by default: one per core, at most 4 (beyond that, the rest of the
/// job is the limit).
fn default_concurrent_files() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
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
            concurrent_files: default_concurrent_files(),
        }
    }

    /// How many files a subtask reads at once (at least 1). With 1, rows come in file
    /// name order, which deduplication ("the first row of each key") relies on.
    pub fn with_concurrent_files(mut self, files: usize) -> Self {
        self.concurrent_files = files.max(1);
        self
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
        // Two batches per file in flight at most: enough to keep a reader busy while
        // the source emits another file's batch.
        let (events_tx, events) = tokio::sync::mpsc::channel(2 * self.concurrent_files);
        Ok(Box::new(DirectoryReader {
            cfg: self.clone(),
            subtask: info.subtask,
            parallelism: info.parallelism,
            done: BTreeSet::new(),
            active: BTreeMap::new(),
            events,
            events_tx,
            resume: HashMap::new(),
            candidates: BTreeMap::new(),
            ready: BTreeSet::new(),
            initial: None,
            sizes: HashMap::new(),
            next_scan: Instant::now(),
            schema: SchemaGuard::default(),
            dir_checked: false,
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
pub(super) struct DirectoryState {
    pub(super) done: Vec<String>,
    /// Files being read and where to go on in each.
    pub(super) reading: Vec<(String, FilePosition)>,
    pub(super) initial: Option<Vec<String>>,
    pub(super) schema: SchemaGuard,
}

/// The state as written before several files could be read at once (one `current`).
#[derive(Debug, Deserialize)]
struct DirectoryStateV1 {
    done: Vec<String>,
    current: Option<(String, FilePosition)>,
    initial: Option<Vec<String>>,
    schema: SchemaGuard,
}

impl DirectoryState {
    pub(super) fn decode(bytes: &[u8]) -> std::result::Result<Self, postcard::Error> {
        match postcard::from_bytes::<DirectoryState>(bytes) {
            Ok(s) => Ok(s),
            Err(e) => match postcard::from_bytes::<DirectoryStateV1>(bytes) {
                Ok(v1) => Ok(DirectoryState {
                    done: v1.done,
                    reading: v1.current.into_iter().collect(),
                    initial: v1.initial,
                    schema: v1.schema,
                }),
                Err(_) => Err(e),
            },
        }
    }
}

/// What a file's reader task tells the source.
enum FileEvent {
    /// A batch, the dead letters found before it, and the position after it.
    Batch { name: String, batch: RecordBatch, dead: Vec<DeadLetter>, position: FilePosition, bytes_done: u64 },
    /// The file is read to its end.
    End { name: String, dead: Vec<DeadLetter> },
    /// Reading failed (the error names the file).
    Failed { error: Error },
}

/// A file being read by its own task.
struct ActiveFile {
    /// Where a restored job goes on: after the last batch emitted (or the restored
    /// position, or the start when `None`).
    position: Option<FilePosition>,
    bytes_done: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ActiveFile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `reader` to its end, sending what it finds; stops when the source is gone.
async fn read_file(name: String, mut reader: Box<dyn FileReader>, events: tokio::sync::mpsc::Sender<FileEvent>) {
    loop {
        let mut dead = Vec::new();
        let event = match reader.next_batch(&mut dead).await {
            Ok(Some(batch)) => FileEvent::Batch {
                name: name.clone(),
                batch,
                dead,
                position: reader.position(),
                bytes_done: reader.bytes_done(),
            },
            Ok(None) => FileEvent::End { name: name.clone(), dead },
            Err(error) => FileEvent::Failed { error },
        };
        let last = !matches!(event, FileEvent::Batch { .. });
        if events.send(event).await.is_err() || last {
            return;
        }
    }
}

struct DirectoryReader {
    cfg: DirectorySource,
    subtask: usize,
    parallelism: usize,
    done: BTreeSet<String>,
    /// Files being read, by name.
    active: BTreeMap<String, ActiveFile>,
    events: tokio::sync::mpsc::Receiver<FileEvent>,
    events_tx: tokio::sync::mpsc::Sender<FileEvent>,
    resume: HashMap<String, FilePosition>,
    candidates: BTreeMap<String, Observation>,
    ready: BTreeSet<String>,
    /// PROCESS_ONCE: the files present at the first listing.
    initial: Option<BTreeSet<String>>,
    sizes: HashMap<String, u64>,
    next_scan: Instant,
    schema: SchemaGuard,
    /// The directory was found to exist (where the store can tell a missing directory
    /// from an empty one).
    dir_checked: bool,
}

/// Files a source does not read: hidden ones, and files still being written under a
/// temporary name — Flink's `.inprogress`, and `._COPYING_` of `hdfs dfs -put` (HDFS
/// lists a file being written with the length of its finished blocks only, so a
/// directory source must not take it for a complete file).
fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_') || name.ends_with(".inprogress") || name.ends_with("._COPYING_")
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
        if !self.dir_checked {
            loc.check_directory("source.path").await?;
            self.dir_checked = true;
        }
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
        let wall_now = chrono::Utc::now();
        let mut listed = BTreeSet::new();
        for meta in listing.objects {
            let Some(name) = meta.location.filename().map(str::to_string) else { continue };
            if is_hidden(&name) || !self.owns(&name) || self.done.contains(&name) {
                continue;
            }
            listed.insert(name.clone());
            if self.active.contains_key(&name) || self.ready.contains(&name) {
                continue;
            }
            if self.initial.as_ref().is_some_and(|i| !i.contains(&name)) {
                // PROCESS_ONCE reads only what was there at start.
                continue;
            }
            let modified = meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX);
            // The modification time says how long the file has not changed: a file last
            // written `settle` ago or earlier is complete now, without a second listing
            // (which cost every bounded job a fixed `settle` of idle time). A clock
            // ahead of ours counts as "just written".
            let unchanged_for = (wall_now - meta.last_modified).to_std().unwrap_or(Duration::ZERO);
            let since = now.checked_sub(unchanged_for).unwrap_or(now);
            let stable = |o: &Observation| o.size == meta.size && o.modified == modified;
            let settled = match self.candidates.get(&name) {
                Some(prev) if stable(prev) => now.duration_since(prev.since) >= self.cfg.settle,
                _ => {
                    self.candidates.insert(name.clone(), Observation { size: meta.size, modified, since });
                    unchanged_for >= self.cfg.settle
                }
            };
            if settled {
                self.candidates.remove(&name);
                self.sizes.insert(name.clone(), meta.size);
                self.ready.insert(name);
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
                .filter(|n| !self.active.contains_key(*n))
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
        // Look again when the first candidate will have settled.
        let first_settled = self
            .candidates
            .values()
            .map(|o| self.cfg.settle.saturating_sub(now.duration_since(o.since)))
            .min()
            .map(|wait| wait.max(Duration::from_millis(10)));
        self.next_scan = now + first_settled.map_or(interval, |w| w.min(interval));
        Ok(())
    }

    fn initial_done(&self) -> bool {
        self.initial.as_ref().is_some_and(|i| i.iter().all(|n| self.done.contains(n)))
            && self.active.is_empty()
            && self.ready.is_empty()
    }

    fn report_progress(&self, ctx: &SourceContext) {
        if let Some(initial) = &self.initial {
            let total: u64 = initial.iter().filter_map(|n| self.sizes.get(n)).sum();
            let done: u64 = initial.iter().filter(|n| self.done.contains(*n)).filter_map(|n| self.sizes.get(n)).sum();
            let current: u64 = self.active.values().map(|a| a.bytes_done).sum();
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
        let bytes_done = match &position {
            Some(FilePosition::Text { offset, .. }) => *offset,
            _ => 0,
        };
        // Opened here, in name order: the schema check compares each file with the first.
        let reader = self.cfg.format.open(loc, &file, position.clone(), &mut self.schema).await?;
        let task = operators_core::spawn(read_file(name.clone(), reader, self.events_tx.clone()));
        self.active.insert(name, ActiveFile { position, bytes_done, task });
        Ok(())
    }
}

#[async_trait]
impl Source for DirectoryReader {
    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        loop {
            while self.active.len() < self.cfg.concurrent_files {
                let Some(name) = self.ready.pop_first() else { break };
                self.open_next(name).await?;
            }
            if !self.active.is_empty() {
                // The readers are busy on their own tasks; the next thing one finds.
                let Some(event) = self.events.recv().await else {
                    return Err(Error::Internal("directory source: the file readers' channel closed".into()));
                };
                match event {
                    FileEvent::Batch { name, batch, dead, position, bytes_done } => {
                        for d in dead {
                            ctx.dead_letter(d);
                        }
                        if let Some(a) = self.active.get_mut(&name) {
                            a.position = Some(position);
                            a.bytes_done = bytes_done;
                        }
                        self.report_progress(ctx);
                        return Ok(SourcePoll::Batch(batch));
                    }
                    FileEvent::End { name, dead } => {
                        for d in dead {
                            ctx.dead_letter(d);
                        }
                        tracing::debug!(file = %self.cfg.location.file_display(&name), "file read");
                        self.active.remove(&name);
                        self.done.insert(name);
                        self.report_progress(ctx);
                        continue;
                    }
                    FileEvent::Failed { error } => return Err(error),
                }
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
            let s = DirectoryState::decode(bytes).map_err(|e| Error::State {
                operator: "directory source".into(),
                message: format!("cannot read the checkpointed file positions: {e}"),
            })?;
            let mine: Vec<String> = s.done.into_iter().filter(|n| self.owns(n)).collect();
            self.done.extend(mine);
            for (name, pos) in s.reading {
                if self.owns(&name) {
                    self.resume.insert(name, pos);
                }
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
        // Files being read, at the position after their last emitted batch; restored
        // positions of files not reopened yet are kept as they are.
        let mut reading: Vec<(String, FilePosition)> =
            self.active.iter().filter_map(|(n, a)| Some((n.clone(), a.position.clone()?))).collect();
        reading.extend(self.resume.iter().map(|(n, p)| (n.clone(), p.clone())));
        let state = DirectoryState {
            done: self.done.iter().cloned().collect(),
            reading,
            initial: self.initial.as_ref().map(|i| i.iter().cloned().collect()),
            schema: self.schema.clone(),
        };
        postcard::to_allocvec(&state)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing directory state: {e}")))
    }

    async fn close(&mut self) -> Result<()> {
        // Dropping a file stops its reader task.
        self.active.clear();
        Ok(())
    }
}
