//! The checkpoint coordinator's shell: carries out, inside an attempt's event loop, the
//! commands of the pure state machine in [`crate::checkpoint::coordinator`] (barriers,
//! statistics, checkpoint files, notices to the tasks, savepoint answers).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::checkpoint::coordinator::{CheckpointCoordinator, Command, Location, MetadataOutcome, Savepoint};
use crate::checkpoint::storage::{
    CheckpointMetadata, CheckpointStorage, OperatorSnapshot, SubtaskSnapshot, write_metadata, write_savepoint,
};
use crate::control::{Ack, TaskControl, TaskEvent, TaskId};
use crate::error::{Error, Result};
use crate::graph::JobGraph;
use crate::message::Barrier;

use super::{JobShared, SavepointRequest, SavepointStatus, lock};

/// What the shell needs to answer a savepoint request.
pub(super) struct SavepointToken {
    request_id: String,
    /// A terminal savepoint after which the job counts as canceled.
    cancel: bool,
}

type Machine = CheckpointCoordinator<TaskId, Box<Ack>, SavepointToken>;
type CoordCommand = Command<TaskId, Box<Ack>, SavepointToken>;

/// Carries out what the checkpoint coordinator (`checkpoint/coordinator.rs`) decides:
/// barriers to the sources, statistics, the checkpoint's files, the tasks' abort and
/// complete notices, savepoint answers. It decides nothing itself.
pub(super) struct Coordinator<'a> {
    pub(super) machine: Machine,
    /// Origin of the machine's monotonic time: the attempt's start.
    pub(super) origin: Instant,
    pub(super) storage: Option<&'a CheckpointStorage>,
    pub(super) shared: &'a JobShared,
    pub(super) graph: &'a JobGraph,
    pub(super) max_parallelism: u16,
    pub(super) tasks: Vec<(TaskId, mpsc::UnboundedSender<TaskControl>, bool)>,
    /// The terminal savepoint taken, and whether the job then counts as canceled.
    pub(super) stop_savepoint: Option<(PathBuf, bool)>,
}

impl Coordinator<'_> {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.machine.deadline().map(|d| self.origin + d)
    }

    fn notify(&self, msg: impl Fn() -> TaskControl) {
        for (_, control, _) in &self.tasks {
            let _ = control.send(msg());
        }
    }

    pub(super) async fn queue_savepoint(
        &mut self,
        req: SavepointRequest,
        last_completed: &mut Option<PathBuf>,
    ) -> Result<()> {
        let token = SavepointToken { request_id: req.request_id, cancel: req.cancel };
        let savepoint = Savepoint { target: req.target, terminal: req.terminal, drain: req.drain, token };
        let cmds = self.machine.savepoint_requested(savepoint);
        self.execute(cmds, None, last_completed).await
    }

    /// Triggers whatever is due; fails a checkpoint that timed out.
    pub(super) async fn tick(&mut self, next_id: &mut u64, last_completed: &mut Option<PathBuf>) -> Result<()> {
        let cmds = self.machine.tick(self.now(), self.shared.clock.now_ms());
        // The supervisor carries the next id into the next attempt.
        *next_id = self.machine.next_id();
        self.execute(cmds, None, last_completed).await
    }

    pub(super) async fn on_event(&mut self, ev: TaskEvent, last_completed: &mut Option<PathBuf>) -> Result<()> {
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
    pub(super) fn end(&mut self, reason: &str) {
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
