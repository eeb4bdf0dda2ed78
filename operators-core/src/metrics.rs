//! Per-operator counters: records and bytes in and out, dead letters, backpressure, progress.
//!
//! Counters are plain atomics updated once per batch, so they cost nothing measurable on
//! the hot path. They accumulate over the whole job, across restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one operator subtask.
#[derive(Debug, Default)]
pub struct TaskMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    dead_letters: AtomicU64,
    late_records: AtomicU64,
    backpressure_ns: AtomicU64,
    progress_done: AtomicU64,
    progress_total: AtomicU64,
}

impl TaskMetrics {
    pub(crate) fn add_in(&self, records: usize, bytes: usize) {
        self.records_in.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, records: usize, bytes: usize) {
        self.records_out.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_dead_letters(&self, n: usize) {
        self.dead_letters.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_late_records(&self, n: usize) {
        self.late_records.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_backpressure_ns(&self, ns: u64) {
        self.backpressure_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Sets the progress of a bounded source: `done` of `total` units (`None`: unknown total).
    pub fn set_progress(&self, done: u64, total: Option<u64>) {
        self.progress_done.store(done, Ordering::Relaxed);
        self.progress_total.store(total.map_or(0, |t| t.saturating_add(1)), Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let total = self.progress_total.load(Ordering::Relaxed);
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            late_records: self.late_records.load(Ordering::Relaxed),
            backpressure_ms: self.backpressure_ns.load(Ordering::Relaxed) / 1_000_000,
            progress_done: self.progress_done.load(Ordering::Relaxed),
            progress_total: total.checked_sub(1),
        }
    }
}

/// A copy of counters, summed over subtasks where it describes an operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Bytes received (Arrow buffer sizes).
    pub bytes_in: u64,
    /// Bytes emitted (Arrow buffer sizes).
    pub bytes_out: u64,
    /// Records sent to the dead-letter output.
    pub dead_letters: u64,
    /// Records that arrived after their window's allowed lateness (event-time windows),
    /// sent to the late-records output or, with none connected, dropped and counted here.
    pub late_records: u64,
    /// Time spent waiting for space in a full downstream channel, ms.
    pub backpressure_ms: u64,
    /// Units of work done (sources that know their input size).
    pub progress_done: u64,
    /// Units of work in total, when known.
    pub progress_total: Option<u64>,
}

impl MetricsSnapshot {
    fn add(&mut self, o: &MetricsSnapshot) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.dead_letters += o.dead_letters;
        self.late_records += o.late_records;
        self.backpressure_ms += o.backpressure_ms;
        self.progress_done += o.progress_done;
        self.progress_total = match (self.progress_total, o.progress_total) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) => b,
            (a, None) => a,
        };
    }
}

/// Counters of all subtasks of one operator.
#[derive(Debug)]
pub struct OperatorMetrics {
    /// Operator id.
    pub id: String,
    /// What kind of operator (`source`, `transform`, `sink`) and what it does.
    pub description: String,
    /// Current parallelism.
    pub parallelism: usize,
    pub(crate) subtasks: Vec<Arc<TaskMetrics>>,
}

impl OperatorMetrics {
    /// Counters summed over subtasks.
    pub fn total(&self) -> MetricsSnapshot {
        let mut sum = MetricsSnapshot::default();
        for s in &self.subtasks {
            sum.add(&s.snapshot());
        }
        sum
    }

    /// Counters per subtask.
    pub fn per_subtask(&self) -> Vec<MetricsSnapshot> {
        self.subtasks.iter().map(|s| s.snapshot()).collect()
    }
}

/// CPU time and peak memory of this process, as the kernel accounts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessUsage {
    /// User plus system CPU time since the process started.
    pub cpu: std::time::Duration,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
}

impl ProcessUsage {
    /// Reads `/proc/self`. `None` where there is no such file system (not Linux).
    ///
    /// ```
    /// if let Some(u) = operators_core::metrics::ProcessUsage::now() {
    ///     assert!(u.peak_rss_bytes > 0);
    /// }
    /// ```
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let peak_kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())?;
        // Linux counts CPU time in clock ticks of 1/100 s on every common configuration.
        Some(Self { cpu: std::time::Duration::from_millis((utime + stime) * 10), peak_rss_bytes: peak_kib * 1024 })
    }
}
