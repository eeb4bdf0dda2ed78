//! The `operator` binary end to end, as a user runs it: `runner-csv-sql-json` (the
//! `csv-sql-json` job through the runner, against the same bare single-threaded
//! decode → SQL → encode loop), `runner-startup` (a one-row job against
//! `operator --version`, i.e. what a bounded job costs beyond starting a process) and
//! `runner-dedup` (CSV → dedup on `id` → JSON files per state backend, against the same
//! job without `unique.keys`, its output verified; in [`crate::runner_dedup`]).
//!
//! The binary is looked up next to `pipeline-bench` (build it with
//! `cargo build --release -p operators-runner --bin operator`) or given with
//! `--operator PATH`. Its CPU time and peak memory come from its own summary line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

/// The `operator` binary: `explicit`, or the one beside this executable.
pub fn operator_binary(explicit: Option<PathBuf>) -> Result<PathBuf, BoxError> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("operator"),
    };
    if !path.is_file() {
        return Err(format!(
            "no operator binary at {} (build it: cargo build --release -p operators-runner --bin operator, \
             or pass --operator PATH)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// One run of the binary: wall time and what its summary line says.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildRun {
    /// Wall-clock time from spawn to exit.
    pub wall: Duration,
    /// Rows the job read.
    pub rows_in: u64,
    /// Rows the job wrote.
    pub rows_out: u64,
    /// CPU time of the process.
    pub cpu: Duration,
    /// Peak resident memory of the process, bytes.
    pub peak_rss_bytes: u64,
}

/// Parses `summary: rows in N, rows out N, …, cpu X.XXs, peak memory N MiB`.
fn parse_summary(stderr: &str) -> Option<ChildRun> {
    let line = stderr.lines().rev().find(|l| l.contains("summary: rows in"))?;
    let number_after = |label: &str| -> Option<f64> {
        let rest = &line[line.find(label)? + label.len()..];
        let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        digits.parse().ok()
    };
    Some(ChildRun {
        wall: Duration::ZERO,
        rows_in: number_after("rows in")? as u64,
        rows_out: number_after("rows out")? as u64,
        cpu: Duration::from_secs_f64(number_after("cpu")?),
        peak_rss_bytes: (number_after("peak memory")? as u64) << 20,
    })
}

/// Runs `operator args…` in `cwd` to its end.
pub fn run_operator(binary: &Path, cwd: &Path, args: &[&str]) -> Result<ChildRun, BoxError> {
    let started = Instant::now();
    let out = Command::new(binary).current_dir(cwd).args(args).env("RUST_LOG", "warn").output()?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("operator failed ({}):\n{stderr}", out.status).into());
    }
    let mut run = parse_summary(&stderr).ok_or_else(|| format!("no summary line in:\n{stderr}"))?;
    run.wall = wall;
    Ok(run)
}

/// Wall time of `operator --version`: the cost of starting the process at all.
pub fn version_wall(binary: &Path) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let out = Command::new(binary).arg("--version").output()?;
    if !out.status.success() {
        return Err(format!("operator --version failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(started.elapsed())
}

/// The SQL input schema of the bench's CSV files, as `stream.sql.schema.json` takes it.
pub const SCHEMA_JSON: &str = r#"{"id":"BigInt","name":"String","city":"String","x":"String","y":"String","tags":"String","score":"Double","ts":"Timestamp"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_read() {
        let s = "job `x` started\nsummary: rows in 2000000, rows out 990000, dead-lettered 0, filtered 1010000, \
                 duration 0.712s, 2808988 rows/s, cpu 1.18s, peak memory 96 MiB\njob finished\n";
        let r = parse_summary(s).unwrap();
        assert_eq!((r.rows_in, r.rows_out), (2_000_000, 990_000));
        assert_eq!(r.cpu, Duration::from_millis(1180));
        assert_eq!(r.peak_rss_bytes, 96 << 20);
        assert!(parse_summary("no summary").is_none());
    }
}
