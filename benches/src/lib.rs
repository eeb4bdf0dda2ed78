//! Shared helpers of the benches: timing, the result line, peak memory.
//!
//! Every scenario prints one line
//! `<scenario> rows_per_s=<n> baseline_rows_per_s=<n> ratio=<n>` where the baseline is
//! measured in the same process and run, so machine noise affects both alike.

pub mod cdc;
pub mod csv;
pub mod db;
pub mod es;
pub mod hive;
pub mod kafka;
pub mod runner;
pub mod runner_dedup;
pub mod window;

use std::time::{Duration, Instant};

/// Rows per second of `rows` processed in `elapsed`.
pub fn rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Times an async block that returns the number of rows it processed.
pub async fn timed<F, Fut>(f: F) -> (u64, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let start = Instant::now();
    let rows = f().await;
    (rows, start.elapsed())
}

/// Prints the result line of a scenario.
pub fn report(scenario: &str, rows_per_s: f64, baseline_rows_per_s: f64) {
    println!(
        "{scenario} rows_per_s={:.0} baseline_rows_per_s={:.0} ratio={:.3}",
        rows_per_s,
        baseline_rows_per_s,
        rows_per_s / baseline_rows_per_s.max(1e-9)
    );
}

/// Peak resident set size of this process, in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    operators_core::metrics::ProcessUsage::now().map_or(0, |u| u.peak_rss_bytes)
}

/// CPU time (user + system) this process has used so far (Linux; zero elsewhere).
pub fn cpu_time() -> Duration {
    operators_core::metrics::ProcessUsage::now().map_or(Duration::ZERO, |u| u.cpu)
}

/// Wall time, CPU time and rows of one measured run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Rows processed.
    pub rows: u64,
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU time of the whole process.
    pub cpu: Duration,
}

impl Run {
    /// Rows per wall-clock second.
    pub fn rows_per_s(&self) -> f64 {
        rate(self.rows, self.wall)
    }

    /// Rows per CPU-second.
    pub fn rows_per_cpu_s(&self) -> f64 {
        rate(self.rows, self.cpu)
    }
}

/// Measures an async block returning the rows it processed.
pub async fn measure<F, Fut>(f: F) -> Run
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let cpu0 = cpu_time();
    let (rows, wall) = timed(f).await;
    Run { rows, wall, cpu: cpu_time().saturating_sub(cpu0) }
}

/// The best (highest) value: the run least disturbed by other load on the machine.
pub fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// Writes every dirty page of the machine to disk (`sync`) before a measured run, so
/// that the write-back of what the previous run wrote (the baseline's output is never
/// fsynced) is not paid by the next one: a run that fsyncs its output waited behind the
/// other variant's 100 MB otherwise.
pub fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

/// Resets the peak-RSS counter (Linux), so the next [`peak_rss_bytes`] covers only what
/// follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The median of `values` (sorted copy).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
