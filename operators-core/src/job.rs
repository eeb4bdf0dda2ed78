//! Running a pipeline: the [`Job`] handle, the supervisor that restarts failed attempts,
//! and the checkpoint coordinator.
//!
//! A job runs as a sequence of *attempts*. Each attempt creates every operator subtask
//! from its factory, restores it from the newest complete checkpoint (or the savepoint
//! the job started from), connects the bounded channels and spawns one tokio task per
//! subtask. The coordinator runs inside the attempt's event loop: it triggers
//! checkpoints at the sources, collects acknowledgements, writes the metadata atomically
//! and tells every task when a checkpoint is complete so sinks can commit. When a task
//! fails, every task of the attempt is stopped and the restart strategy decides whether
//! a new attempt starts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::channel::{DOWNSTREAM_CLOSED, EdgeOutput, InputGate, OutputRouter};
use crate::checkpoint::coordinator::{CheckpointCoordinator, Command, Location, MetadataOutcome, Savepoint};
use crate::checkpoint::restore::{plan_restore, validate_restore};
use crate::checkpoint::stats::{CheckpointStats, RestoredRecord, StatsTracker};
use crate::checkpoint::storage::{
    CheckpointMetadata, CheckpointStorage, LoadedCheckpoint, OperatorSnapshot, SubtaskSnapshot, read_metadata,
    write_metadata, write_savepoint,
};
use crate::checkpoint::{CheckpointConfig, config::probe_dir};
use crate::clock::{SharedClock, SystemClock};
use crate::control::{Ack, TaskControl, TaskEvent, TaskId};
use crate::error::{Error, Result};
use crate::graph::{JobGraph, NodeKind, Partitioning, VertexInfo};
use crate::key::{DEFAULT_MAX_PARALLELISM, MAX_MAX_PARALLELISM, key_group_range};
use crate::message::{Barrier, CheckpointKind, Message};
use crate::metrics::{MetricsSnapshot, OperatorMetrics, TaskMetrics};
use crate::operator::TaskInfo;
use crate::restart::{RestartStrategy, RestartTracker};
use crate::state::{StateBackend, StateBackendKind};
use crate::task::{KeyedSetup, OperatorFactory, TaskCheckpointing, TaskEnv, run_operator_task, run_source_task};

/// Where to restore a job from when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSettings {
    /// A savepoint or checkpoint directory (or its `_metadata` file, or a job's
    /// checkpoint root, meaning its newest checkpoint).
    pub path: PathBuf,
    /// Start even if the snapshot has state for operators this job no longer has.
    pub allow_non_restored_state: bool,
}

/// Settings of a job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Job name; also names the job's checkpoint directory.
    pub name: String,
    /// Default parallelism of operators that do not set their own. Default 1.
    pub parallelism: usize,
    /// Number of key groups; bounds parallelism and is fixed for the life of the state.
    /// Default 128.
    pub max_parallelism: u16,
    /// Capacity, in batches, of each channel between two subtasks. Default 2: enough to
    /// overlap producer and consumer, and little data in flight, so that checkpoint
    /// barriers do not queue behind a long backlog when a sink is slow.
    pub channel_capacity: usize,
    /// Periodic checkpoints; `None` disables them (and savepoints).
    pub checkpointing: Option<CheckpointConfig>,
    /// Where working keyed state lives. Default sled.
    pub state_backend: StateBackendKind,
    /// A custom backend, overriding `state_backend`.
    pub custom_state_backend: Option<Arc<dyn StateBackend>>,
    /// Directory for sled working state. Default `<temp>/operators-state`.
    pub local_state_dir: PathBuf,
    /// What to do after a failure. Default: fixed delay, 4 attempts, 60 s.
    pub restart: RestartStrategy,
    /// Start from this savepoint or checkpoint.
    pub restore: Option<RestoreSettings>,
    /// Default target of savepoints. Default `<checkpoint dir>/savepoints`.
    pub savepoint_dir: Option<PathBuf>,
    /// Clock for state TTL and timestamps. Default: the system clock.
    pub clock: SharedClock,
    /// How long a source that has nothing to read waits before it is polled again.
    /// Default 20 ms.
    pub idle_wait: Duration,
    /// The id of this run (32 lower-case hex characters). Default: a random one. A
    /// job server sets it to resume a job under the id its clients know.
    pub job_id: Option<String>,
}

impl JobConfig {
    /// Defaults, with checkpointing off.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            channel_capacity: 2,
            checkpointing: None,
            state_backend: StateBackendKind::default(),
            custom_state_backend: None,
            local_state_dir: std::env::temp_dir().join("operators-state"),
            restart: RestartStrategy::default(),
            restore: None,
            savepoint_dir: None,
            clock: Arc::new(SystemClock),
            idle_wait: Duration::from_millis(20),
            job_id: None,
        }
    }

    /// Sets the default parallelism.
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets the number of key groups.
    pub fn with_max_parallelism(mut self, max: u16) -> Self {
        self.max_parallelism = max;
        self
    }

    /// Sets the channel capacity in batches.
    pub fn with_channel_capacity(mut self, capacity: usize) -> Self {
        self.channel_capacity = capacity;
        self
    }

    /// Enables checkpoints.
    pub fn with_checkpointing(mut self, checkpointing: CheckpointConfig) -> Self {
        self.checkpointing = Some(checkpointing);
        self
    }

    /// Sets the state backend.
    pub fn with_state_backend(mut self, kind: StateBackendKind) -> Self {
        self.state_backend = kind;
        self
    }

    /// Uses a custom state backend.
    pub fn with_custom_state_backend(mut self, backend: Arc<dyn StateBackend>) -> Self {
        self.custom_state_backend = Some(backend);
        self
    }

    /// Sets the directory of sled working state.
    pub fn with_local_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_state_dir = dir.into();
        self
    }

    /// Sets the restart strategy.
    pub fn with_restart(mut self, restart: RestartStrategy) -> Self {
        self.restart = restart;
        self
    }

    /// Starts from a savepoint or checkpoint.
    pub fn with_restore(mut self, path: impl Into<PathBuf>, allow_non_restored_state: bool) -> Self {
        self.restore = Some(RestoreSettings { path: path.into(), allow_non_restored_state });
        self
    }

    /// Sets the default savepoint directory.
    pub fn with_savepoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.savepoint_dir = Some(dir.into());
        self
    }

    /// Sets the job id (32 lower-case hex characters, as Flink's).
    pub fn with_job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks every setting without touching the file system: a dry run calls it and
    /// changes nothing. [`JobConfig::check_dirs`] holds the checks that need I/O.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::config("job.name", "must not be empty"));
        }
        if self.parallelism == 0 {
            return Err(Error::config("parallelism", "must be at least 1"));
        }
        if self.max_parallelism == 0 || self.max_parallelism > MAX_MAX_PARALLELISM {
            return Err(Error::config(
                "max-parallelism",
                format!("{} is outside 1..={MAX_MAX_PARALLELISM}", self.max_parallelism),
            ));
        }
        if self.parallelism > usize::from(self.max_parallelism) {
            return Err(Error::config(
                "parallelism",
                format!("{} exceeds max-parallelism {}", self.parallelism, self.max_parallelism),
            ));
        }
        if self.channel_capacity == 0 {
            return Err(Error::config("channel-capacity", "must be at least 1"));
        }
        if let Some(cp) = &self.checkpointing {
            cp.validate()?;
        }
        // A URL here would be read as a relative path (`hdfs:///x` as `./hdfs:/x`).
        crate::path::check_local("state.local-dir", &self.local_state_dir)?;
        if let Some(dir) = &self.savepoint_dir {
            crate::path::check_local("savepoint.dir", dir)?;
        }
        if let Some(r) = &self.restore {
            crate::path::check_local("savepoint.path", &r.path)?;
        }
        if let Some(id) = &self.job_id
            && !is_job_id(id)
        {
            return Err(Error::config("job-id", format!("`{id}` is not 32 lower-case hex characters")));
        }
        self.restart.validate()?;
        Ok(())
    }

    /// The checks of the settings that need I/O: creates the checkpoint directory if
    /// needed and checks that it can be written. [`Pipeline::start`](crate::Pipeline::start)
    /// runs them when the job starts.
    pub fn check_dirs(&self) -> Result<()> {
        if let Some(cp) = &self.checkpointing {
            cp.check_dir()?;
        }
        Ok(())
    }

    fn savepoint_target(&self) -> Option<PathBuf> {
        self.savepoint_dir.clone().or_else(|| self.checkpointing.as_ref().map(|c| c.dir.join("savepoints")))
    }
}

/// Lifecycle of a job, with Flink's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Built, not yet running.
    Created,
    /// Running.
    Running,
    /// Failed; waiting to restart.
    Restarting,
    /// All input processed (or stopped with a savepoint).
    Finished,
    /// Failed and not restarted.
    Failed,
    /// Canceled.
    Canceled,
}

impl JobStatus {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Finished | JobStatus::Failed | JobStatus::Canceled)
    }
}

/// How a job ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// `Finished` or `Canceled`.
    pub status: JobStatus,
    /// The savepoint written by stop-with-savepoint or cancel-with-savepoint.
    pub savepoint: Option<PathBuf>,
    /// Restarts that happened.
    pub restarts: u32,
}

/// State of a savepoint request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SavepointStatus {
    /// Not done yet.
    InProgress,
    /// Written to `location`.
    Completed {
        /// The savepoint directory.
        location: PathBuf,
    },
    /// Failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One operator's metrics, for [`Job::metrics`].
#[derive(Debug, Clone, Serialize)]
pub struct OperatorMetricsSnapshot {
    /// Operator id.
    pub id: String,
    /// Kind and description.
    pub description: String,
    /// Parallelism.
    pub parallelism: usize,
    /// Counters summed over subtasks.
    pub total: MetricsSnapshot,
    /// Counters per subtask.
    pub subtasks: Vec<MetricsSnapshot>,
}

/// The checkpoint settings of a running job, as Flink's `/checkpoints/config` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointConfigInfo {
    /// `exactly_once` or `at_least_once`.
    pub mode: String,
    /// Interval, ms.
    pub interval: u64,
    /// Timeout, ms.
    pub timeout: u64,
    /// Minimum pause, ms.
    pub min_pause: u64,
    /// Checkpoints in flight at once.
    pub max_concurrent: u32,
    /// Tolerated consecutive failures.
    pub tolerable_failed_checkpoints: u32,
    /// Retained checkpoints.
    pub retained: usize,
    /// Whether checkpoints survive cancellation.
    pub retain_on_cancellation: bool,
    /// State backend name.
    pub state_backend: String,
    /// Where checkpoints are stored.
    pub checkpoint_storage: String,
}

struct StatusState {
    status: JobStatus,
    timestamps: BTreeMap<JobStatus, i64>,
    failure: Option<String>,
    /// Every failure so far, newest last (at most [`MAX_EXCEPTIONS`]).
    exceptions: VecDeque<JobException>,
    end_ms: Option<i64>,
    restarts: u32,
}

/// Failures kept per job for [`Job::exceptions`].
const MAX_EXCEPTIONS: usize = 16;

/// One failure of a job: one that it restarted after, or the one it ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobException {
    /// When, ms since epoch.
    pub timestamp: i64,
    /// The error.
    pub message: String,
}

pub(crate) struct JobShared {
    id: String,
    /// Unique to this start of the job, even when `id` is kept across starts.
    run_id: String,
    name: String,
    start_ms: i64,
    status: Mutex<StatusState>,
    status_tx: watch::Sender<JobStatus>,
    metrics: Vec<OperatorMetrics>,
    stats: Mutex<StatsTracker>,
    vertices: Vec<VertexInfo>,
    checkpoint_config: Option<CheckpointConfigInfo>,
    savepoints: Mutex<HashMap<String, SavepointStatus>>,
    savepoint_tx: watch::Sender<u64>,
    clock: SharedClock,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a panic while holding the lock; the data (counters, statuses) is
    // still meaningful, so keep serving it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobShared {
    fn set_status(&self, status: JobStatus, failure: Option<String>) {
        let now = self.clock.now_ms();
        let mut s = lock(&self.status);
        s.status = status;
        s.timestamps.insert(status, now);
        if let Some(message) = failure {
            if s.exceptions.len() == MAX_EXCEPTIONS {
                s.exceptions.pop_front();
            }
            s.exceptions.push_back(JobException { timestamp: now, message: message.clone() });
            s.failure = Some(message);
        }
        if status.is_terminal() {
            s.end_ms = Some(now);
        }
        drop(s);
        let _ = self.status_tx.send(status);
    }

    fn set_savepoint(&self, request_id: &str, status: SavepointStatus) {
        lock(&self.savepoints).insert(request_id.to_string(), status);
        self.savepoint_tx.send_modify(|v| *v += 1);
    }
}

pub(crate) struct SavepointRequest {
    request_id: String,
    target: PathBuf,
    terminal: bool,
    drain: bool,
    /// A terminal savepoint after which the job counts as canceled, not finished
    /// (Flink's `cancel-job`).
    cancel: bool,
}

enum JobCommand {
    Cancel,
    Savepoint(SavepointRequest),
}

/// A running (or ended) job.
///
/// Dropping the handle does not stop the job; call [`Job::cancel`].
pub struct Job {
    shared: Arc<JobShared>,
    commands: mpsc::UnboundedSender<JobCommand>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<Result<JobOutcome>>>>,
    config: JobConfig,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("status", &self.status())
            .finish()
    }
}

/// Summary of a job, as in Flink's `/jobs/overview`.
#[derive(Debug, Clone, Serialize)]
pub struct JobOverview {
    /// Job id.
    pub jid: String,
    /// Job name.
    pub name: String,
    /// Status.
    pub state: JobStatus,
    /// Start, ms since epoch.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// End, ms since epoch, or -1.
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Duration so far, ms.
    pub duration: i64,
    /// Last status change, ms since epoch.
    #[serde(rename = "last-modification")]
    pub last_modification: i64,
    /// Status change times.
    pub timestamps: BTreeMap<JobStatus, i64>,
    /// Why the job failed, if it did.
    pub failure: Option<String>,
    /// Restarts so far.
    pub restarts: u32,
}

impl Job {
    /// Starts `graph`; `config` has been validated by the caller.
    pub(crate) fn start(graph: JobGraph, config: JobConfig) -> Result<Job> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config("runtime", "a job must be started from inside a tokio runtime"));
        }
        let storage = config.checkpointing.as_ref().map(|c| CheckpointStorage::new(&c.dir, &config.name));
        // Decide what to restore from, and check it fits the graph before anything runs.
        let initial_restore = match (&config.restore, &storage) {
            (Some(r), _) => {
                let loaded = read_metadata(&r.path)?;
                validate_restore(&graph, &loaded, config.max_parallelism, r.allow_non_restored_state)?;
                Some(loaded)
            }
            (None, Some(storage)) if config.checkpointing.as_ref().is_some_and(|c| c.resume_from_latest) => {
                match storage.latest()? {
                    Some(dir) => {
                        let loaded = read_metadata(&dir)?;
                        validate_restore(&graph, &loaded, config.max_parallelism, false).map_err(|e| {
                            Error::Restore {
                                path: dir.clone(),
                                message: format!(
                                    "{e}. This checkpoint was left by an earlier run of job `{}` that did not finish; \
                                 remove `{}` to start afresh",
                                    config.name,
                                    storage.root().display()
                                ),
                            }
                        })?;
                        tracing::info!(checkpoint = %dir.display(), "resuming from the newest checkpoint of a previous run");
                        Some(loaded)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let backend: Arc<dyn StateBackend> = match &config.custom_state_backend {
            Some(b) => b.clone(),
            None => config.state_backend.build(config.local_state_dir.clone())?,
        };
        if graph.nodes.iter().any(|n| n.key.is_some()) && backend.name() == "sled" {
            probe_dir(&config.local_state_dir, "state.local-dir")?;
        }
        let job_id = config.job_id.clone().unwrap_or_else(new_job_id);
        let metrics = graph
            .nodes
            .iter()
            .map(|n| OperatorMetrics {
                id: n.id.clone(),
                description: describe_node(n),
                parallelism: n.parallelism,
                subtasks: (0..n.parallelism).map(|_| Arc::new(TaskMetrics::default())).collect(),
            })
            .collect();
        let now = config.clock.now_ms();
        let (status_tx, _) = watch::channel(JobStatus::Created);
        let (savepoint_tx, _) = watch::channel(0);
        let shared = Arc::new(JobShared {
            id: job_id,
            run_id: new_job_id(),
            name: config.name.clone(),
            start_ms: now,
            status: Mutex::new(StatusState {
                status: JobStatus::Created,
                timestamps: BTreeMap::from([(JobStatus::Created, now)]),
                failure: None,
                exceptions: VecDeque::new(),
                end_ms: None,
                restarts: 0,
            }),
            status_tx,
            metrics,
            stats: Mutex::new(StatsTracker::default()),
            vertices: graph.vertices(),
            checkpoint_config: config.checkpointing.as_ref().map(|c| CheckpointConfigInfo {
                mode: match c.mode {
                    crate::checkpoint::CheckpointingMode::ExactlyOnce => "exactly_once".into(),
                    crate::checkpoint::CheckpointingMode::AtLeastOnce => "at_least_once".into(),
                },
                interval: millis(c.interval),
                timeout: millis(c.timeout),
                min_pause: millis(c.min_pause),
                max_concurrent: c.max_concurrent,
                tolerable_failed_checkpoints: c.tolerable_failures,
                retained: c.retained,
                retain_on_cancellation: c.retain_on_cancel,
                state_backend: backend.name().to_string(),
                checkpoint_storage: c.dir.display().to_string(),
            }),
            savepoints: Mutex::new(HashMap::new()),
            savepoint_tx,
            clock: config.clock.clone(),
        });
        let (commands, commands_rx) = mpsc::unbounded_channel();
        // Every task of the job runs inside this span, so a log subscriber can tell the
        // lines of one job from another's (a job server keeps a log per job).
        let span = tracing::info_span!("job", job_id = %shared.id, job_name = %config.name);
        let supervisor = crate::task::spawn(
            supervise(graph, config.clone(), shared.clone(), commands_rx, initial_restore, storage, backend)
                .instrument(span),
        );
        Ok(Job { shared, commands, supervisor: Mutex::new(Some(supervisor)), config })
    }

    /// Id of this run (32 hex characters, like Flink's).
    pub fn id(&self) -> &str {
        &self.shared.id
    }
    /// The configuration the job was started with.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// Job name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Current status.
    pub fn status(&self) -> JobStatus {
        lock(&self.shared.status).status
    }

    /// Waits until the status satisfies `pred`, returning it.
    pub async fn wait_for_status(&self, pred: impl Fn(JobStatus) -> bool) -> JobStatus {
        let mut rx = self.shared.status_tx.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if pred(s) || s.is_terminal() {
                return s;
            }
            if rx.changed().await.is_err() {
                return self.status();
            }
        }
    }

    /// Summary in the shape of Flink's job overview.
    pub fn overview(&self) -> JobOverview {
        let s = lock(&self.shared.status);
        let now = self.shared.clock.now_ms();
        let end = s.end_ms.unwrap_or(-1);
        JobOverview {
            jid: self.shared.id.clone(),
            name: self.shared.name.clone(),
            state: s.status,
            start_time: self.shared.start_ms,
            end_time: end,
            duration: if end >= 0 { end } else { now } - self.shared.start_ms,
            last_modification: s.timestamps.values().copied().max().unwrap_or(self.shared.start_ms),
            timestamps: s.timestamps.clone(),
            failure: s.failure.clone(),
            restarts: s.restarts,
        }
    }

    /// The failures of this job so far, oldest first: each one it restarted after, and
    /// the one it failed with.
    pub fn exceptions(&self) -> Vec<JobException> {
        lock(&self.shared.status).exceptions.iter().cloned().collect()
    }

    /// The operators of the job.
    pub fn vertices(&self) -> &[VertexInfo] {
        &self.shared.vertices
    }

    /// Per-operator counters.
    pub fn metrics(&self) -> Vec<OperatorMetricsSnapshot> {
        self.shared
            .metrics
            .iter()
            .map(|m| OperatorMetricsSnapshot {
                id: m.id.clone(),
                description: m.description.clone(),
                parallelism: m.parallelism,
                total: m.total(),
                subtasks: m.per_subtask(),
            })
            .collect()
    }

    /// Checkpoint statistics.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        lock(&self.shared.stats).snapshot()
    }

    /// Checkpoint settings, when checkpointing is on.
    pub fn checkpoint_config(&self) -> Option<CheckpointConfigInfo> {
        self.shared.checkpoint_config.clone()
    }

    /// Cancels the job. Returns immediately; use [`Job::wait`] to see it end.
    pub fn cancel(&self) {
        let _ = self.commands.send(JobCommand::Cancel);
    }

    /// Requests a savepoint without waiting; returns its request id
    /// (see [`Job::savepoint_status`]). `stop`: the job stops after it (stop-with-
    /// savepoint); `drain`: sources end their streams first so operators flush.
    /// `target_dir` is a local path: a URL is refused (resolve a `file://` URL with
    /// [`crate::path::local_dir`] first).
    pub fn request_savepoint(&self, target_dir: Option<PathBuf>, stop: bool, drain: bool) -> Result<String> {
        self.savepoint_request(target_dir, stop, drain, false)
    }

    /// Requests a savepoint after which the job stops and ends `Canceled` (Flink's
    /// `cancel-job: true`, `flink cancel -s`); returns its request id. Unlike
    /// [`Job::cancel`], every row read before the savepoint is committed and the job
    /// can go on from it.
    pub fn request_cancel_with_savepoint(&self, target_dir: Option<PathBuf>) -> Result<String> {
        self.savepoint_request(target_dir, true, false, true)
    }

    fn savepoint_request(&self, target_dir: Option<PathBuf>, stop: bool, drain: bool, cancel: bool) -> Result<String> {
        if let Some(dir) = &target_dir {
            // Refused before anything is written: `hdfs:///x` would be `./hdfs:/x`.
            crate::path::check_local("target-directory", dir)?;
        }
        let base = match target_dir.or_else(|| self.config.savepoint_target()) {
            Some(b) => b,
            None => {
                return Err(Error::config(
                    "savepoint.dir",
                    "no savepoint directory: pass one, or configure checkpointing or a savepoint directory",
                ));
            }
        };
        if self.config.checkpointing.is_none() {
            return Err(Error::config("checkpoint.dir", "savepoints need checkpoint storage; enable checkpointing"));
        }
        if self.status().is_terminal() {
            return Err(Error::config("savepoint", format!("the job is {:?}", self.status())));
        }
        let request_id = format!("{:032x}", rand::random::<u128>());
        let target =
            base.join(format!("savepoint-{}-{:012x}", &self.shared.id[..6], rand::random::<u64>() & 0xFFFF_FFFF_FFFF));
        self.shared.set_savepoint(&request_id, SavepointStatus::InProgress);
        let req = SavepointRequest { request_id: request_id.clone(), target, terminal: stop, drain, cancel };
        if self.commands.send(JobCommand::Savepoint(req)).is_err() {
            self.shared.set_savepoint(&request_id, SavepointStatus::Failed { reason: "the job has ended".into() });
        }
        Ok(request_id)
    }

    /// Status of a savepoint request.
    pub fn savepoint_status(&self, request_id: &str) -> Option<SavepointStatus> {
        lock(&self.shared.savepoints).get(request_id).cloned()
    }

    async fn await_savepoint(&self, request_id: &str) -> Result<PathBuf> {
        let mut rx = self.shared.savepoint_tx.subscribe();
        loop {
            match self.savepoint_status(request_id) {
                Some(SavepointStatus::Completed { location }) => return Ok(location),
                Some(SavepointStatus::Failed { reason }) => {
                    return Err(Error::CheckpointFailed {
                        checkpoint_id: 0,
                        reason: format!("savepoint failed: {reason}"),
                    });
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Internal("the job ended while a savepoint was pending".into()));
            }
        }
    }

    /// Takes a savepoint and returns its directory; the job keeps running.
    pub async fn trigger_savepoint(&self, target_dir: Option<PathBuf>) -> Result<PathBuf> {
        let id = self.request_savepoint(target_dir, false, false)?;
        self.await_savepoint(&id).await
    }

    /// Takes a savepoint after which the job finishes; returns its directory.
    pub async fn stop_with_savepoint(&self, target_dir: Option<PathBuf>, drain: bool) -> Result<PathBuf> {
        let id = self.request_savepoint(target_dir, true, drain)?;
        self.await_savepoint(&id).await
    }

    /// Waits for the job to end. The first caller gets the job's error if it failed;
    /// later callers get an error describing the failure.
    pub async fn wait(&self) -> Result<JobOutcome> {
        let handle = lock(&self.supervisor).take();
        if let Some(handle) = handle {
            return match handle.await {
                Ok(r) => r,
                Err(e) => Err(Error::Internal(format!("job supervisor panicked: {e}"))),
            };
        }
        let status = self.wait_for_status(JobStatus::is_terminal).await;
        let s = lock(&self.shared.status);
        match status {
            JobStatus::Failed => Err(Error::Internal(format!("job failed: {}", s.failure.clone().unwrap_or_default()))),
            other => Ok(JobOutcome { status: other, savepoint: None, restarts: s.restarts }),
        }
    }
}

fn describe_node(n: &crate::graph::Node) -> String {
    match &n.kind {
        NodeKind::Source(_) => format!("Source: {}", n.id),
        NodeKind::Transform(_) => n.id.clone(),
        NodeKind::Sink(_) => format!("Sink: {}", n.id),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A fresh random job id: 32 lower-case hex characters.
pub fn new_job_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `id` has the shape of a job id (32 lower-case hex characters).
pub fn is_job_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

enum AttemptOutcome {
    Finished { savepoint: Option<PathBuf> },
    Canceled,
    CanceledWithSavepoint(PathBuf),
    Failed(Error),
}

async fn supervise(
    graph: JobGraph,
    config: JobConfig,
    shared: Arc<JobShared>,
    mut commands: mpsc::UnboundedReceiver<JobCommand>,
    initial_restore: Option<LoadedCheckpoint>,
    storage: Option<CheckpointStorage>,
    backend: Arc<dyn StateBackend>,
) -> Result<JobOutcome> {
    if let Some(storage) = &storage
        && let Err(e) = storage.create_dirs()
    {
        shared.set_status(JobStatus::Failed, Some(e.to_string()));
        return Err(e);
    }
    let mut next_id = initial_restore.as_ref().map_or(1, |r| r.metadata.checkpoint_id + 1);
    if let Some(storage) = &storage {
        // Never reuse the id of a directory an earlier run left behind.
        if let Ok(Some(latest)) = storage.latest()
            && let Ok(l) = read_metadata(&latest)
        {
            next_id = next_id.max(l.metadata.checkpoint_id + 1);
        }
    }
    let mut restore = initial_restore;
    let mut last_completed: Option<PathBuf> = None;
    let mut tracker = RestartTracker::new(config.restart.clone());
    let mut attempt = 0u32;
    loop {
        if let Some(r) = &restore {
            lock(&shared.stats).restored(RestoredRecord {
                id: r.metadata.checkpoint_id,
                restore_timestamp: shared.clock.now_ms(),
                is_savepoint: r.metadata.kind == CheckpointKind::Savepoint,
                external_path: r.dir.display().to_string(),
            });
        }
        shared.set_status(JobStatus::Running, None);
        let started = Instant::now();
        let outcome = run_attempt(
            &graph,
            &config,
            &shared,
            &mut commands,
            restore.as_ref(),
            attempt,
            &mut next_id,
            &mut last_completed,
            storage.as_ref(),
            &backend,
        )
        .await;
        lock(&shared.stats).abandon_in_progress(shared.clock.now_ms());
        let restarts = tracker.restarts();
        match outcome {
            AttemptOutcome::Finished { savepoint } => {
                if let Some(storage) = &storage
                    && let Err(e) = storage.discard_all()
                {
                    tracing::warn!(error = %e, "could not remove the checkpoints of the finished job");
                }
                shared.set_status(JobStatus::Finished, None);
                return Ok(JobOutcome { status: JobStatus::Finished, savepoint, restarts });
            }
            AttemptOutcome::Canceled | AttemptOutcome::CanceledWithSavepoint(_) => {
                if let (Some(storage), Some(cp)) = (&storage, &config.checkpointing)
                    && !cp.retain_on_cancel
                    && let Err(e) = storage.discard_all()
                {
                    tracing::warn!(error = %e, "could not remove the checkpoints of the canceled job");
                }
                let savepoint = match outcome {
                    AttemptOutcome::CanceledWithSavepoint(s) => Some(s),
                    _ => None,
                };
                shared.set_status(JobStatus::Canceled, None);
                return Ok(JobOutcome { status: JobStatus::Canceled, savepoint, restarts });
            }
            AttemptOutcome::Failed(err) => {
                let Some(delay) = tracker.on_failure(Instant::now(), started, &err) else {
                    tracing::error!(error = %err, "job failed");
                    shared.set_status(JobStatus::Failed, Some(err.to_string()));
                    return Err(err);
                };
                tracing::warn!(error = %err, delay_ms = millis(delay), attempt = attempt + 1, "job failed; restarting");
                lock(&shared.status).restarts = tracker.restarts();
                shared.set_status(JobStatus::Restarting, Some(err.to_string()));
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        cmd = commands.recv() => match cmd {
                            Some(JobCommand::Cancel) => {
                                shared.set_status(JobStatus::Canceled, None);
                                return Ok(JobOutcome { status: JobStatus::Canceled, savepoint: None, restarts: tracker.restarts() });
                            }
                            Some(JobCommand::Savepoint(req)) => shared.set_savepoint(
                                &req.request_id,
                                SavepointStatus::Failed { reason: "the job is restarting".into() },
                            ),
                            None => { sleep.as_mut().await; break; }
                        }
                    }
                }
                attempt += 1;
                if let Some(path) = &last_completed {
                    match read_metadata(path) {
                        Ok(l) => restore = Some(l),
                        Err(e) => {
                            shared.set_status(JobStatus::Failed, Some(e.to_string()));
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
}

/// What the shell needs to answer a savepoint request.
struct SavepointToken {
    request_id: String,
    /// A terminal savepoint after which the job counts as canceled.
    cancel: bool,
}

type Machine = CheckpointCoordinator<TaskId, Box<Ack>, SavepointToken>;
type CoordCommand = Command<TaskId, Box<Ack>, SavepointToken>;

/// Carries out what the checkpoint coordinator (`checkpoint/coordinator.rs`) decides:
/// barriers to the sources, statistics, the checkpoint's files, the tasks' abort and
/// complete notices, savepoint answers. It decides nothing itself.
struct Coordinator<'a> {
    machine: Machine,
    /// Origin of the machine's monotonic time: the attempt's start.
    origin: Instant,
    storage: Option<&'a CheckpointStorage>,
    shared: &'a JobShared,
    graph: &'a JobGraph,
    max_parallelism: u16,
    tasks: Vec<(TaskId, mpsc::UnboundedSender<TaskControl>, bool)>,
    /// The terminal savepoint taken, and whether the job then counts as canceled.
    stop_savepoint: Option<(PathBuf, bool)>,
}

impl Coordinator<'_> {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn deadline(&self) -> Option<Instant> {
        self.machine.deadline().map(|d| self.origin + d)
    }

    fn notify(&self, msg: impl Fn() -> TaskControl) {
        for (_, control, _) in &self.tasks {
            let _ = control.send(msg());
        }
    }

    async fn queue_savepoint(&mut self, req: SavepointRequest, last_completed: &mut Option<PathBuf>) -> Result<()> {
        let token = SavepointToken { request_id: req.request_id, cancel: req.cancel };
        let savepoint = Savepoint { target: req.target, terminal: req.terminal, drain: req.drain, token };
        let cmds = self.machine.savepoint_requested(savepoint);
        self.execute(cmds, None, last_completed).await
    }

    /// Triggers whatever is due; fails a checkpoint that timed out.
    async fn tick(&mut self, next_id: &mut u64, last_completed: &mut Option<PathBuf>) -> Result<()> {
        let cmds = self.machine.tick(self.now(), self.shared.clock.now_ms());
        // The supervisor carries the next id into the next attempt.
        *next_id = self.machine.next_id();
        self.execute(cmds, None, last_completed).await
    }

    async fn on_event(&mut self, ev: TaskEvent, last_completed: &mut Option<PathBuf>) -> Result<()> {
        let now = self.now();
        match ev {
            TaskEvent::SourceFinished(task) => {
                self.machine.source_finished(task);
                Ok(())
            }
            TaskEvent::Decline { task, checkpoint_id, reason } => {
                let op = &self.graph.nodes[task.node].id;
                let reason = format!("declined by `{op}` subtask {}: {reason}", task.subtask);
                let cmds = self.machine.decline(now, checkpoint_id, task, reason);
                self.execute(cmds, None, last_completed).await
            }
            TaskEvent::Ack(ack) => {
                // Statistics for `Acknowledged`; the ack itself moves into the machine.
                let stats = (ack.written, ack.sync_ms, ack.align_ms);
                let cmds = self.machine.ack(now, ack.checkpoint_id, ack.task, ack);
                self.execute(cmds, Some(stats), last_completed).await
            }
        }
    }

    /// The attempt ends: discards the checkpoint in flight and answers waiting savepoints.
    fn end(&mut self, reason: &str) {
        for cmd in self.machine.attempt_ended(reason) {
            match cmd {
                Command::Discard { id } => {
                    if let Some(s) = self.storage {
                        s.discard(id);
                    }
                }
                Command::ReplySavepoint { token, result: Err(reason), .. } => {
                    self.shared.set_savepoint(&token.request_id, SavepointStatus::Failed { reason });
                }
                _ => {}
            }
        }
    }

    /// Executes commands in order. The I/O the machine waits for (the checkpoint
    /// directory, the metadata) is done here and its outcome reported back at once; the
    /// commands that result run next.
    async fn execute(
        &mut self,
        cmds: Vec<CoordCommand>,
        ack_stats: Option<(u64, u64, u64)>,
        last_completed: &mut Option<PathBuf>,
    ) -> Result<()> {
        let mut queue = VecDeque::from(cmds);
        // Full size of the checkpoint being completed, for its statistics.
        let mut full_size = 0;
        while let Some(cmd) = queue.pop_front() {
            match cmd {
                Command::Trigger { id, kind, terminal, drain, timestamp_ms } => {
                    let Some(storage) = self.storage else { continue };
                    lock(&self.shared.stats).triggered(id, kind, terminal, timestamp_ms, self.tasks.len());
                    match storage.create_checkpoint_dir(id) {
                        Ok(_) => {
                            tracing::debug!(checkpoint_id = id, ?kind, terminal, "triggering checkpoint");
                            let barrier = Barrier { checkpoint_id: id, timestamp_ms, kind, terminal };
                            for (_, control, is_source) in &self.tasks {
                                if *is_source {
                                    let _ = control.send(TaskControl::Trigger { barrier, drain });
                                }
                            }
                        }
                        // Counts as a failed checkpoint; storage may recover.
                        Err(e) => queue.extend(self.machine.trigger_failed(self.now(), id, e.to_string())),
                    }
                }
                Command::Acknowledged { id, .. } => {
                    if let Some((written, sync_ms, align_ms)) = ack_stats {
                        let now = self.shared.clock.now_ms();
                        lock(&self.shared.stats).acknowledged(id, now, written, sync_ms, align_ms);
                    }
                }
                Command::WriteMetadata { id, kind, timestamp_ms, acks, savepoint_target, .. } => {
                    let Some(storage) = self.storage else { continue };
                    let mut metadata =
                        CheckpointMetadata::new(&self.shared.name, &self.shared.id, id, kind, timestamp_ms);
                    // `acks` is in task order, so each operator's subtasks stay in order.
                    let mut per_node: Vec<Vec<SubtaskSnapshot>> = self.graph.nodes.iter().map(|_| Vec::new()).collect();
                    for (task, ack) in acks {
                        per_node[task.node].push(ack.snapshot);
                    }
                    for (node, subtasks) in self.graph.nodes.iter().zip(per_node) {
                        metadata.operators.insert(
                            node.id.clone(),
                            OperatorSnapshot {
                                parallelism: node.parallelism,
                                max_parallelism: self.max_parallelism,
                                subtasks,
                            },
                        );
                    }
                    full_size = metadata.full_size();
                    let outcome = write_checkpoint(storage.checkpoint_dir(id), metadata, savepoint_target).await;
                    queue.extend(self.machine.metadata_written(self.now(), id, outcome));
                }
                Command::Abort { id, reason } => {
                    tracing::warn!(checkpoint_id = id, %reason, "checkpoint failed");
                    if let Some(storage) = self.storage {
                        storage.discard(id);
                    }
                    lock(&self.shared.stats).failed(id, self.shared.clock.now_ms(), &reason);
                    self.notify(|| TaskControl::Abort(id));
                }
                Command::Retire { latest, retained, discard_below } => {
                    if let Some(storage) = self.storage {
                        let storage = storage.clone();
                        let retention = tokio::task::spawn_blocking(move || storage.retain(retained, latest)).await;
                        if let Ok(Err(e)) | Err(e) = retention.map_err(|e| Error::Internal(e.to_string())) {
                            tracing::warn!(error = %e, "checkpoint retention failed; old checkpoints remain on disk");
                        }
                    }
                    lock(&self.shared.stats).discarded(discard_below);
                }
                Command::Completed { id, location, .. } => {
                    let location = match (location, self.storage) {
                        (Location::Savepoint(target), _) => target,
                        (Location::CheckpointDir, Some(storage)) => storage.checkpoint_dir(id),
                        (Location::CheckpointDir, None) => continue,
                    };
                    let now = self.shared.clock.now_ms();
                    lock(&self.shared.stats).completed(id, now, full_size, location.display().to_string());
                    tracing::debug!(checkpoint_id = id, "checkpoint complete");
                    *last_completed = Some(location);
                }
                Command::ReplySavepoint { token, terminal, result } => match result {
                    Ok(location) => {
                        if terminal {
                            self.stop_savepoint = Some((location.clone(), token.cancel));
                        }
                        self.shared.set_savepoint(&token.request_id, SavepointStatus::Completed { location });
                    }
                    Err(reason) => self.shared.set_savepoint(&token.request_id, SavepointStatus::Failed { reason }),
                },
                Command::NotifyComplete { id } => self.notify(|| TaskControl::Complete(id)),
                Command::Discard { id } => {
                    if let Some(storage) = self.storage {
                        storage.discard(id);
                    }
                }
                Command::FailJob { error } => return Err(error),
            }
        }
        Ok(())
    }
}

/// Writes `_metadata` into `dir` and, for a savepoint, copies the checkpoint to `target`,
/// off the async workers.
async fn write_checkpoint(dir: PathBuf, metadata: CheckpointMetadata, target: Option<PathBuf>) -> MetadataOutcome {
    let written = tokio::task::spawn_blocking(move || write_metadata(&dir, &metadata).map(|_| metadata)).await;
    let metadata = match written {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return MetadataOutcome::MetadataFailed(e),
        Err(e) => return MetadataOutcome::MetadataFailed(Error::Internal(format!("metadata writer panicked: {e}"))),
    };
    let Some(target) = target else { return MetadataOutcome::Written };
    match tokio::task::spawn_blocking(move || write_savepoint(&target, &metadata)).await {
        Ok(Ok(_)) => MetadataOutcome::Written,
        Ok(Err(e)) => MetadataOutcome::SavepointFailed(e),
        Err(e) => MetadataOutcome::SavepointCrashed(format!("savepoint writer panicked: {e}")),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "canceled".into();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Picks the error that caused a failure: consequences (closed channels, cancellations)
/// are reported only when nothing else is known.
fn root_cause(errors: Vec<Error>) -> Error {
    let is_consequence = |e: &Error| match e {
        Error::Canceled => true,
        Error::Internal(m) => m.contains(DOWNSTREAM_CLOSED),
        Error::Operator { source, .. } => {
            matches!(source.as_ref(), Error::Internal(m) if m.contains(DOWNSTREAM_CLOSED))
        }
        _ => false,
    };
    let mut fallback = None;
    for e in errors {
        if !is_consequence(&e) {
            return e;
        }
        fallback.get_or_insert(e);
    }
    fallback.unwrap_or_else(|| Error::Internal("a task failed without an error".into()))
}

#[allow(clippy::too_many_arguments)]
async fn run_attempt(
    graph: &JobGraph,
    config: &JobConfig,
    shared: &JobShared,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
    restore: Option<&LoadedCheckpoint>,
    attempt: u32,
    next_id: &mut u64,
    last_completed: &mut Option<PathBuf>,
    storage: Option<&CheckpointStorage>,
    backend: &Arc<dyn StateBackend>,
) -> AttemptOutcome {
    let mut restore_plan = match restore {
        Some(loaded) => {
            let g = graph;
            match plan_restore(g, loaded, storage, config.max_parallelism) {
                Ok(p) => p,
                Err(e) => return AttemptOutcome::Failed(e),
            }
        }
        None => HashMap::new(),
    };

    // Channels: inputs[node][subtask] and outputs[node][subtask].
    let mut inputs: Vec<Vec<Vec<mpsc::Receiver<Message>>>> =
        graph.nodes.iter().map(|n| (0..n.parallelism).map(|_| Vec::new()).collect()).collect();
    let mut outputs: Vec<Vec<Vec<EdgeOutput>>> =
        graph.nodes.iter().map(|n| (0..n.parallelism).map(|_| Vec::new()).collect()).collect();
    for edge in &graph.edges {
        let (pa, pb) = (graph.nodes[edge.from].parallelism, graph.nodes[edge.to].parallelism);
        match &edge.partitioning {
            Partitioning::Forward => {
                for i in 0..pa {
                    let (tx, rx) = mpsc::channel(config.channel_capacity);
                    outputs[edge.from][i].push(EdgeOutput {
                        port: edge.port,
                        partitioning: edge.partitioning.clone(),
                        senders: vec![tx],
                        next: 0,
                    });
                    inputs[edge.to][i].push(rx);
                }
            }
            _ => {
                let mut senders: Vec<Vec<mpsc::Sender<Message>>> = (0..pa).map(|_| Vec::with_capacity(pb)).collect();
                for downstream in inputs[edge.to].iter_mut() {
                    for sender in senders.iter_mut() {
                        let (tx, rx) = mpsc::channel(config.channel_capacity);
                        sender.push(tx);
                        downstream.push(rx);
                    }
                }
                for (i, s) in senders.into_iter().enumerate() {
                    outputs[edge.from][i].push(EdgeOutput {
                        port: edge.port,
                        partitioning: edge.partitioning.clone(),
                        senders: s,
                        // Spread the round robin's starting point over the subtasks.
                        next: i % pb,
                    });
                }
            }
        }
    }

    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let checkpointing = match (&config.checkpointing, storage) {
        (Some(cp), Some(storage)) => Some(TaskCheckpointing { storage: storage.clone(), mode: cp.mode }),
        _ => None,
    };
    let mut join_set = JoinSet::new();
    let mut task_of = HashMap::new();
    let mut controls = Vec::new();
    for (node_idx, node) in graph.nodes.iter().enumerate() {
        let node_inputs = std::mem::take(&mut inputs[node_idx]);
        let node_outputs = std::mem::take(&mut outputs[node_idx]);
        for (subtask, (ins, outs)) in node_inputs.into_iter().zip(node_outputs).enumerate() {
            let id = TaskId { node: node_idx, subtask };
            let info = Arc::new(TaskInfo {
                job_name: Arc::from(config.name.as_str()),
                job_id: Arc::from(shared.id.as_str()),
                run_id: Arc::from(shared.run_id.as_str()),
                operator_id: Arc::from(node.id.as_str()),
                subtask,
                parallelism: node.parallelism,
                max_parallelism: config.max_parallelism,
                attempt,
            });
            let metrics = shared.metrics[node_idx].subtasks[subtask].clone();
            let (control_tx, control_rx) = mpsc::unbounded_channel();
            let is_source = matches!(node.kind, NodeKind::Source(_));
            controls.push((id, control_tx, is_source));
            let env = TaskEnv {
                id,
                info: info.clone(),
                control: control_rx,
                events: events_tx.clone(),
                inputs: InputGate::new(ins),
                output: OutputRouter::new(info.operator_id.clone(), outs, config.max_parallelism, metrics.clone()),
                metrics,
                checkpointing: checkpointing.clone(),
                clock: config.clock.clone(),
                restore: restore_plan.remove(&id),
                keyed: node.key.clone().map(|selector| KeyedSetup {
                    backend: backend.clone(),
                    key_groups: key_group_range(subtask, node.parallelism, config.max_parallelism),
                    selector,
                }),
                idle_wait: config.idle_wait,
            };
            let handle = match &node.kind {
                NodeKind::Source(f) => join_set.spawn(run_source_task(env, f.clone()).in_current_span()),
                NodeKind::Transform(f) => {
                    join_set.spawn(run_operator_task(env, OperatorFactory::Transform(f.clone())).in_current_span())
                }
                NodeKind::Sink(f) => {
                    join_set.spawn(run_operator_task(env, OperatorFactory::Sink(f.clone())).in_current_span())
                }
            };
            task_of.insert(handle.id(), id);
        }
    }

    let machine = CheckpointCoordinator::new(
        checkpointing.as_ref().and(config.checkpointing.as_ref()),
        controls.iter().map(|(id, _, _)| *id),
        controls.iter().filter(|(_, _, is_source)| *is_source).map(|(id, _, _)| *id),
        *next_id,
        Duration::ZERO,
    );
    let mut coord = Coordinator {
        machine,
        origin: Instant::now(),
        storage,
        shared,
        graph,
        max_parallelism: config.max_parallelism,
        tasks: controls,
        stop_savepoint: None,
    };
    let mut commands_open = true;

    let failure = loop {
        let deadline = coord.deadline();
        tokio::select! {
            Some(ev) = events_rx.recv() => {
                if let Err(e) = coord.on_event(ev, last_completed).await {
                    break e;
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(JobCommand::Cancel) => {
                    join_set.abort_all();
                    while join_set.join_next().await.is_some() {}
                    coord.end("the job was canceled");
                    return AttemptOutcome::Canceled;
                }
                Some(JobCommand::Savepoint(req)) => {
                    if let Err(e) = coord.queue_savepoint(req, last_completed).await {
                        break e;
                    }
                }
                None => commands_open = false,
            },
            res = join_set.join_next_with_id() => match res {
                None => {
                    coord.end("the job finished");
                    return match coord.stop_savepoint.take() {
                        Some((savepoint, true)) => AttemptOutcome::CanceledWithSavepoint(savepoint),
                        other => AttemptOutcome::Finished { savepoint: other.map(|(s, _)| s) },
                    };
                }
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((_, Err(e)))) => break e,
                Some(Err(e)) => {
                    let task = task_of.get(&e.id()).copied();
                    let (operator, subtask) = task.map_or((String::from("?"), 0), |t| (graph.nodes[t.node].id.clone(), t.subtask));
                    break Error::Panic { operator, subtask, message: panic_message(e) };
                }
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        if let Err(e) = coord.tick(next_id, last_completed).await {
            break e;
        }
    };

    // Stop everything, then find the error that started it.
    join_set.abort_all();
    let mut errors = vec![failure];
    while let Some(res) = join_set.join_next_with_id().await {
        match res {
            Ok((_, Err(e))) => errors.push(e),
            Err(e) if e.is_panic() => {
                let task = task_of.get(&e.id()).copied();
                let (operator, subtask) =
                    task.map_or((String::from("?"), 0), |t| (graph.nodes[t.node].id.clone(), t.subtask));
                errors.push(Error::Panic { operator, subtask, message: panic_message(e) });
            }
            _ => {}
        }
    }
    let error = root_cause(errors);
    coord.end(&format!("the job failed: {error}"));
    AttemptOutcome::Failed(error)
}
