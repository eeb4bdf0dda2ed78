//! Progress of bounded jobs and the summary at the end.
//!
//! On a terminal, a bar on stderr shows bytes (files) or rows (databases) done of the
//! total, the rate and the time left; elsewhere a log line every few seconds says the same.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use operators_core::Job;
use operators_core::metrics::ProcessUsage;

use super::plan::ProgressUnit;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar (terminals).
    Bar,
    /// Periodic log lines.
    Log,
    /// Nothing.
    Off,
}

impl ProgressMode {
    /// From the `progress` parameter: `auto` picks the bar on a terminal.
    pub fn from_param(value: Option<&str>) -> Self {
        match value {
            Some("bar") => ProgressMode::Bar,
            Some("log") => ProgressMode::Log,
            Some("off") => ProgressMode::Off,
            _ if std::io::stderr().is_terminal() => ProgressMode::Bar,
            _ => ProgressMode::Log,
        }
    }
}

fn source_progress(job: &Job, source_id: &str) -> (u64, Option<u64>, u64) {
    job.metrics()
        .into_iter()
        .find(|m| m.id == source_id)
        .map_or((0, None, 0), |m| (m.total.progress_done, m.total.progress_total, m.total.records_out))
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Waits `period`, or less when the job ends first: the runner awaits this task before
/// its summary, so a bare sleep here would add up to a period to every job's time.
async fn tick(job: &Job, period: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = job.wait_for_status(|s| s.is_terminal()) => {}
    }
}

/// Shows progress until the job ends.
pub async fn show_progress(job: Arc<Job>, source_id: &'static str, unit: ProgressUnit, mode: ProgressMode) {
    match mode {
        ProgressMode::Off => {}
        ProgressMode::Bar => {
            let template = match unit {
                ProgressUnit::Bytes => {
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({percent}%) {bytes_per_sec} ETA {eta} {msg}"
                }
                ProgressUnit::Rows => {
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({percent}%) {per_sec} ETA {eta} {msg}"
                }
            };
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            loop {
                let (done, total, rows) = source_progress(&job, source_id);
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(done);
                bar.set_message(format!("{rows} rows"));
                if job.status().is_terminal() {
                    if job.status() == operators_core::JobStatus::Finished
                        && let Some(total) = total
                    {
                        bar.set_position(total);
                    }
                    bar.finish();
                    break;
                }
                tick(&job, Duration::from_millis(100)).await;
            }
        }
        ProgressMode::Log => {
            let started = Instant::now();
            let mut last = Instant::now();
            while !job.status().is_terminal() {
                tick(&job, Duration::from_millis(200)).await;
                if last.elapsed() < Duration::from_secs(5) {
                    continue;
                }
                last = Instant::now();
                let (done, total, rows) = source_progress(&job, source_id);
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = rows as f64 / secs;
                let (done_s, total_s) = match unit {
                    ProgressUnit::Bytes => (human_bytes(done), total.map(human_bytes)),
                    ProgressUnit::Rows => (format!("{done} rows"), total.map(|t| format!("{t} rows"))),
                };
                match total.filter(|t| *t > 0) {
                    Some(t) => {
                        let eta =
                            if done > 0 { secs * (t.saturating_sub(done)) as f64 / done as f64 } else { f64::NAN };
                        tracing::info!(
                            "progress: {:.1}% ({done_s} of {}), {rows} rows, {rate:.0} rows/s, ETA {eta:.0}s",
                            done as f64 * 100.0 / t as f64,
                            total_s.unwrap_or_default()
                        );
                    }
                    None => tracing::info!("progress: {done_s}, {rows} rows, {rate:.0} rows/s"),
                }
            }
        }
    }
}

/// Counts for the end-of-job summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Rows the source read (emitted or dead-lettered).
    pub rows_in: u64,
    /// Rows the main sink received.
    pub rows_out: u64,
    /// Rows set aside as bad records, all operators.
    pub dead_lettered: u64,
    /// Rows dropped on purpose (SQL WHERE, deduplication).
    pub filtered: u64,
}

/// Computes the summary from the job's metrics.
pub fn summary(job: &Job, source_id: &str, sink_id: &str) -> Summary {
    let metrics = job.metrics();
    let find = |id: &str| metrics.iter().find(|m| m.id == id).map(|m| m.total.clone()).unwrap_or_default();
    let source = find(source_id);
    let sink = find(sink_id);
    let dead_lettered: u64 = metrics.iter().map(|m| m.total.dead_letters).sum();
    let rows_in = source.records_out + source.dead_letters;
    Summary {
        rows_in,
        rows_out: sink.records_in,
        dead_lettered,
        filtered: rows_in.saturating_sub(dead_lettered).saturating_sub(sink.records_in),
    }
}

/// The summary's resource figures, as `", cpu 1.23s, peak memory 45 MiB"`: the CPU time
/// the job took and the process's peak memory.
///
/// `start` and `end` are readings of the process's usage when the job started and when
/// it ended. The kernel counts CPU time from the process's start, which includes the
/// start-up and planning before the job (and, for a runner embedded in a longer-lived
/// process, everything that process did before), so the job's own share is the
/// difference. Without a reading at the start the CPU figure is left out rather than
/// overstated; without one at the end (no `/proc`) the text is empty.
pub fn usage_text(start: Option<ProcessUsage>, end: Option<ProcessUsage>) -> String {
    let Some(end) = end else { return String::new() };
    let cpu = match start {
        Some(start) => format!(", cpu {:.2}s", end.cpu.saturating_sub(start.cpu).as_secs_f64()),
        None => String::new(),
    };
    format!("{cpu}, peak memory {} MiB", end.peak_rss_bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_ms: u64, peak_mib: u64) -> ProcessUsage {
        ProcessUsage { cpu: Duration::from_millis(cpu_ms), peak_rss_bytes: peak_mib << 20 }
    }

    #[test]
    fn the_cpu_figure_counts_only_what_the_job_took() {
        // 7.01 s used before the job started, 0.25 s by the job.
        assert_eq!(usage_text(Some(usage(7010, 10)), Some(usage(7260, 48))), ", cpu 0.25s, peak memory 48 MiB");
        // No reading at the start: no CPU figure rather than the process's whole time.
        assert_eq!(usage_text(None, Some(usage(7260, 48))), ", peak memory 48 MiB");
        assert_eq!(usage_text(Some(usage(7010, 10)), None), "");
        assert_eq!(usage_text(None, None), "");
    }
}
