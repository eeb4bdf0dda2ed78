//! What flows on a channel between two tasks: record batches and in-band control.
//!
//! Control messages travel on the same bounded channel as data, so their position
//! relative to records is exact: everything before a barrier belongs to the checkpoint,
//! everything after it to the next.

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// Identifies a checkpoint or savepoint; increases monotonically within a job, across restarts.
pub type CheckpointId = u64;

/// Event-time watermark, in milliseconds since the Unix epoch.
pub type Watermark = i64;

/// The largest watermark; emitted when a stream is drained.
pub const MAX_WATERMARK: Watermark = i64::MAX;

/// Whether a barrier belongs to a periodic checkpoint or a user-triggered savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Periodic, retained only as configured.
    Checkpoint,
    /// Triggered by a user, self-contained, never deleted by the runtime.
    Savepoint,
}

/// A checkpoint barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// Checkpoint this barrier belongs to.
    pub checkpoint_id: CheckpointId,
    /// When the coordinator triggered it (ms since epoch).
    pub timestamp_ms: i64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// The last message on its channel: sources stop after emitting it (final checkpoint of
    /// a bounded job, or stop-with-savepoint), and tasks finish once it has passed.
    pub terminal: bool,
}

/// One message on a channel between tasks.
#[derive(Debug, Clone)]
pub enum Message {
    /// Records.
    Data(RecordBatch),
    /// A checkpoint barrier.
    Barrier(Barrier),
    /// Event time has advanced to this value on this channel.
    Watermark(Watermark),
    /// The producer of this channel has had no records for a while (an idle partition):
    /// the receiver leaves the channel out of its watermark minimum until the channel
    /// sends a record or a watermark again, so one quiet input does not stall event time.
    Idle,
    /// No more records will follow on this channel (barriers still may, until a terminal one).
    EndOfStream,
}
