//! Checkpoints: configuration, barrier alignment, storage and statistics.
//!
//! The protocol is Chandy–Lamport as Flink runs it (asynchronous barrier snapshots):
//! the coordinator asks every source to snapshot its position and emit `Barrier(n)`;
//! a task with several inputs aligns the barrier ([`BarrierAligner`]), snapshots and
//! forwards it; sinks pre-commit; once every task acknowledged, the metadata is written
//! atomically and every task is told, so sinks commit. See `DESIGN.md`.

pub mod align;
pub mod config;
pub mod coordinator;
pub(crate) mod restore;
pub mod stats;
pub mod storage;

pub use align::{AlignAction, AlignStep, BarrierAligner};
pub use config::{CheckpointConfig, CheckpointingMode};
pub use stats::{CheckpointRecord, CheckpointStats, CheckpointStatus};
pub use storage::{CheckpointStorage, read_metadata};
