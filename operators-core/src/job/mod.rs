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
//!
//! Here: the [`Job`] handle and its status. [`JobConfig`] is in `config.rs`, the attempts
//! in `supervisor.rs`, the shell that carries out the checkpoint coordinator's commands in
//! `coordinator.rs`, and the coordinator's decisions in [`crate::checkpoint::coordinator`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::checkpoint::config::probe_dir;
use crate::checkpoint::restore::validate_restore;
use crate::checkpoint::stats::{CheckpointStats, StatsTracker};
use crate::checkpoint::storage::{CheckpointStorage, read_metadata};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::graph::{JobGraph, NodeKind, VertexInfo};
use crate::metrics::{MetricsSnapshot, OperatorMetrics, TaskMetrics};
use crate::state::StateBackend;

mod config;
mod coordinator;
mod supervisor;

pub use config::{JobConfig, RestoreSettings};
use supervisor::supervise;

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

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
            None => config.state_backend.build(config.local_state_dir.clone(), config.state_memory_budget)?,
        };
        if graph.nodes.iter().any(|n| n.key.is_some()) && backend.name() == "disk" {
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
    /// savepoint); `drain`: sources end their streams first so operators flush, which
    /// only a stopping job can do (`drain` without `stop` is refused).
    /// `target_dir` is a local path or a URL of a registered store (resolve a setting's
    /// text with [`crate::path::store_dir`] first: a `file://` URL is refused here).
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
        if drain && !stop {
            // Drained sources end their streams, but a barrier that is not the last one
            // leaves the job waiting for a final checkpoint nothing would trigger.
            return Err(Error::config("drain", "ending the streams needs the job to stop after the savepoint"));
        }
        if let Some(dir) = &target_dir {
            // Refused before anything is written: `hdfs:///x` would be `./hdfs:/x`.
            crate::path::check_store("target-directory", dir)?;
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

pub(super) fn millis(d: Duration) -> u64 {
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
