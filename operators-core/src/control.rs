//! What the job and its tasks say to each other: task ids, the coordinator's control
//! messages to a task, a task's events (acks, declines, a finished source) to the
//! coordinator, and what a task restores.

use std::path::PathBuf;

use crate::checkpoint::storage::{StateFile, SubtaskSnapshot};
use crate::message::{Barrier, CheckpointId};
use crate::operator::{Committable, RestoredState};

/// Position of a task in the job: operator (node index) and subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskId {
    pub(crate) node: usize,
    pub(crate) subtask: usize,
}

/// From the coordinator to a task.
#[derive(Debug)]
pub(crate) enum TaskControl {
    /// Sources: snapshot and emit this barrier. `drain`: end the stream first.
    Trigger { barrier: Barrier, drain: bool },
    /// A checkpoint completed.
    Complete(CheckpointId),
    /// A checkpoint failed.
    Abort(CheckpointId),
}

/// A task's acknowledgement of a checkpoint.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) task: TaskId,
    pub(crate) checkpoint_id: CheckpointId,
    pub(crate) snapshot: SubtaskSnapshot,
    pub(crate) written: u64,
    pub(crate) sync_ms: u64,
    pub(crate) align_ms: u64,
}

/// From a task to the coordinator.
#[derive(Debug)]
pub(crate) enum TaskEvent {
    Ack(Box<Ack>),
    Decline { task: TaskId, checkpoint_id: CheckpointId, reason: String },
    SourceFinished(TaskId),
}

/// Keyed state to load on restore.
#[derive(Debug, Clone)]
pub(crate) struct KeyedRestore {
    /// Chains of the old subtasks overlapping this subtask's key groups, in key-group order.
    pub(crate) chains: Vec<Vec<PathBuf>>,
    /// The old chain to keep using, when it covers exactly this subtask's key groups and
    /// lives in this job's shared directory.
    pub(crate) reuse: Option<Vec<StateFile>>,
    /// Id of the restored checkpoint.
    pub(crate) checkpoint_id: CheckpointId,
}

/// Everything a task restores.
#[derive(Debug, Clone)]
pub(crate) struct TaskRestore {
    pub(crate) operator_state: RestoredState,
    pub(crate) committables: Vec<Committable>,
    pub(crate) keyed: Option<KeyedRestore>,
}
