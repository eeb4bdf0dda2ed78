//! Checkpoint statistics in the shape of Flink's `/jobs/:id/checkpoints` response.
//!
//! Field names follow Flink's JSON (`counts`, `summary`, `latest`, `history`,
//! `end_to_end_duration`, ...), so the REST layer serializes these types as they are.
//! Beyond Flink, the summary includes `sync_duration`: the longest time a task stopped
//! processing to take its snapshot, the pause that asynchronous snapshots keep short.

use std::collections::VecDeque;

use serde::Serialize;

use crate::message::{CheckpointId, CheckpointKind};

const HISTORY_LEN: usize = 10;
const SUMMARY_WINDOW: usize = 1000;

/// Status of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    /// Triggered, not yet acknowledged by every task.
    InProgress,
    /// Complete and durable.
    Completed,
    /// Declined, timed out, or aborted.
    Failed,
}

/// One checkpoint, as listed in `latest` and `history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRecord {
    /// Checkpoint id.
    pub id: CheckpointId,
    /// Status.
    pub status: CheckpointStatus,
    /// Whether this is a savepoint.
    pub is_savepoint: bool,
    /// `CHECKPOINT`, `SAVEPOINT` or `SYNC_SAVEPOINT` (stop-with-savepoint).
    pub checkpoint_type: &'static str,
    /// Trigger time, ms since epoch.
    pub trigger_timestamp: i64,
    /// Time of the newest acknowledgement, ms since epoch.
    pub latest_ack_timestamp: i64,
    /// Bytes written by this checkpoint (new deltas, operator state).
    pub checkpointed_size: u64,
    /// Bytes of all files the checkpoint references (its full state).
    pub state_size: u64,
    /// Trigger to completion, ms.
    pub end_to_end_duration: u64,
    /// Longest synchronous snapshot pause of any task, ms.
    pub sync_duration: u64,
    /// Longest barrier alignment of any task, ms.
    pub alignment_duration: u64,
    /// Number of subtasks that take part.
    pub num_subtasks: usize,
    /// Number that acknowledged.
    pub num_acknowledged_subtasks: usize,
    /// Directory of the checkpoint or savepoint, once complete.
    pub external_path: Option<String>,
    /// Whether it has since been deleted by retention.
    pub discarded: bool,
    /// Why it failed.
    pub failure_message: Option<String>,
}

/// The checkpoint a run restored from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoredRecord {
    /// Checkpoint id.
    pub id: CheckpointId,
    /// When the restore happened, ms since epoch.
    pub restore_timestamp: i64,
    /// Whether it was a savepoint.
    pub is_savepoint: bool,
    /// Where it was read from.
    pub external_path: String,
}

/// Checkpoint counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckpointCounts {
    /// Restores from a checkpoint or savepoint.
    pub restored: u64,
    /// Checkpoints triggered.
    pub total: u64,
    /// In flight.
    pub in_progress: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
}

/// Distribution of one measure over recent completed checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// Minimum.
    pub min: u64,
    /// Maximum.
    pub max: u64,
    /// Mean.
    pub avg: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Distribution {
    fn of(values: &VecDeque<u64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v: Vec<u64> = values.iter().copied().collect();
        v.sort_unstable();
        let pct = |q: f64| -> f64 {
            // Nearest-rank percentile.
            let rank = (q * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1] as f64
        };
        Self {
            min: v[0],
            max: v[v.len() - 1],
            avg: v.iter().sum::<u64>() / v.len() as u64,
            p50: pct(0.50),
            p90: pct(0.90),
            p95: pct(0.95),
            p99: pct(0.99),
            p999: pct(0.999),
        }
    }
}

/// Distributions over recent completed checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckpointSummary {
    /// Full state size, bytes.
    pub state_size: Distribution,
    /// Bytes written per checkpoint.
    pub checkpointed_size: Distribution,
    /// Trigger to completion, ms.
    pub end_to_end_duration: Distribution,
    /// Longest synchronous pause per checkpoint, ms.
    pub sync_duration: Distribution,
    /// Longest alignment per checkpoint, ms.
    pub alignment_duration: Distribution,
}

/// The newest checkpoint of each kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatestCheckpoints {
    /// Newest completed checkpoint or savepoint.
    pub completed: Option<CheckpointRecord>,
    /// Newest completed savepoint.
    pub savepoint: Option<CheckpointRecord>,
    /// Newest failure.
    pub failed: Option<CheckpointRecord>,
    /// What the current run restored from.
    pub restored: Option<RestoredRecord>,
}

/// Checkpoint statistics of a job (Flink's `/jobs/:id/checkpoints`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckpointStats {
    /// Counts.
    pub counts: CheckpointCounts,
    /// Distributions.
    pub summary: CheckpointSummary,
    /// Newest of each kind.
    pub latest: LatestCheckpoints,
    /// Most recent checkpoints, newest first.
    pub history: Vec<CheckpointRecord>,
}

/// Accumulates statistics as checkpoints progress.
#[derive(Debug, Default)]
pub(crate) struct StatsTracker {
    stats: CheckpointStats,
    state_size: VecDeque<u64>,
    checkpointed_size: VecDeque<u64>,
    duration: VecDeque<u64>,
    sync: VecDeque<u64>,
    alignment: VecDeque<u64>,
}

fn push_window(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == SUMMARY_WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

impl StatsTracker {
    pub(crate) fn snapshot(&self) -> CheckpointStats {
        let mut s = self.stats.clone();
        s.summary = CheckpointSummary {
            state_size: Distribution::of(&self.state_size),
            checkpointed_size: Distribution::of(&self.checkpointed_size),
            end_to_end_duration: Distribution::of(&self.duration),
            sync_duration: Distribution::of(&self.sync),
            alignment_duration: Distribution::of(&self.alignment),
        };
        s
    }

    pub(crate) fn triggered(
        &mut self,
        id: CheckpointId,
        kind: CheckpointKind,
        terminal: bool,
        ts: i64,
        subtasks: usize,
    ) {
        self.stats.counts.total += 1;
        self.stats.counts.in_progress += 1;
        let record = CheckpointRecord {
            id,
            status: CheckpointStatus::InProgress,
            is_savepoint: kind == CheckpointKind::Savepoint,
            checkpoint_type: match (kind, terminal) {
                (CheckpointKind::Checkpoint, _) => "CHECKPOINT",
                (CheckpointKind::Savepoint, false) => "SAVEPOINT",
                (CheckpointKind::Savepoint, true) => "SYNC_SAVEPOINT",
            },
            trigger_timestamp: ts,
            latest_ack_timestamp: ts,
            checkpointed_size: 0,
            state_size: 0,
            end_to_end_duration: 0,
            sync_duration: 0,
            alignment_duration: 0,
            num_subtasks: subtasks,
            num_acknowledged_subtasks: 0,
            external_path: None,
            discarded: false,
            failure_message: None,
        };
        self.stats.history.insert(0, record);
        self.stats.history.truncate(HISTORY_LEN);
    }

    fn record_mut(&mut self, id: CheckpointId) -> Option<&mut CheckpointRecord> {
        self.stats.history.iter_mut().find(|r| r.id == id)
    }

    pub(crate) fn acknowledged(&mut self, id: CheckpointId, ts: i64, written: u64, sync_ms: u64, align_ms: u64) {
        if let Some(r) = self.record_mut(id) {
            r.num_acknowledged_subtasks += 1;
            r.latest_ack_timestamp = ts;
            r.checkpointed_size += written;
            r.sync_duration = r.sync_duration.max(sync_ms);
            r.alignment_duration = r.alignment_duration.max(align_ms);
        }
    }

    pub(crate) fn completed(&mut self, id: CheckpointId, ts: i64, state_size: u64, path: String) {
        self.stats.counts.in_progress = self.stats.counts.in_progress.saturating_sub(1);
        self.stats.counts.completed += 1;
        let Some(r) = self.record_mut(id) else { return };
        r.status = CheckpointStatus::Completed;
        r.state_size = state_size;
        r.end_to_end_duration = u64::try_from(ts - r.trigger_timestamp).unwrap_or(0);
        r.external_path = Some(path);
        let r = r.clone();
        push_window(&mut self.state_size, r.state_size);
        push_window(&mut self.checkpointed_size, r.checkpointed_size);
        push_window(&mut self.duration, r.end_to_end_duration);
        push_window(&mut self.sync, r.sync_duration);
        push_window(&mut self.alignment, r.alignment_duration);
        if r.is_savepoint {
            self.stats.latest.savepoint = Some(r.clone());
        }
        self.stats.latest.completed = Some(r);
    }

    pub(crate) fn failed(&mut self, id: CheckpointId, ts: i64, reason: &str) {
        self.stats.counts.in_progress = self.stats.counts.in_progress.saturating_sub(1);
        self.stats.counts.failed += 1;
        let Some(r) = self.record_mut(id) else { return };
        r.status = CheckpointStatus::Failed;
        r.end_to_end_duration = u64::try_from(ts - r.trigger_timestamp).unwrap_or(0);
        r.failure_message = Some(reason.to_string());
        self.stats.latest.failed = Some(r.clone());
    }

    pub(crate) fn discarded(&mut self, up_to_excluding: CheckpointId) {
        for r in &mut self.stats.history {
            if r.id < up_to_excluding && r.status == CheckpointStatus::Completed && !r.is_savepoint {
                r.discarded = true;
            }
        }
    }

    pub(crate) fn restored(&mut self, record: RestoredRecord) {
        self.stats.counts.restored += 1;
        self.stats.latest.restored = Some(record);
    }

    /// Checkpoints in flight are dropped when an attempt ends.
    pub(crate) fn abandon_in_progress(&mut self, ts: i64) {
        let ids: Vec<CheckpointId> =
            self.stats.history.iter().filter(|r| r.status == CheckpointStatus::InProgress).map(|r| r.id).collect();
        for id in ids {
            self.failed(id, ts, "the job attempt ended before the checkpoint completed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_counts() {
        let mut t = StatsTracker::default();
        for id in 1..=100u64 {
            t.triggered(id, CheckpointKind::Checkpoint, false, 0, 2);
            t.acknowledged(id, id as i64, 10, id, 0);
            t.completed(id, id as i64, 1000, format!("chk-{id}"));
        }
        t.triggered(101, CheckpointKind::Savepoint, true, 0, 2);
        t.failed(101, 5, "declined");
        let s = t.snapshot();
        assert_eq!(s.counts.completed, 100);
        assert_eq!(s.counts.failed, 1);
        assert_eq!(s.counts.in_progress, 0);
        assert_eq!(s.summary.end_to_end_duration.p50, 50.0);
        assert_eq!(s.summary.sync_duration.p99, 99.0);
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history[0].id, 101);
        assert_eq!(s.latest.failed.as_ref().unwrap().checkpoint_type, "SYNC_SAVEPOINT");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["latest"]["completed"]["end_to_end_duration"].is_u64());
        assert_eq!(json["history"][0]["status"], "FAILED");
    }
}
