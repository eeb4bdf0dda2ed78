//! Checkpoint settings, mirroring Flink's `CheckpointConfig`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// Delivery guarantee of checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointingMode {
    /// Barriers are aligned: an input that delivered the barrier is parked until every
    /// input has, so the snapshot holds exactly the records before the barrier.
    #[default]
    ExactlyOnce,
    /// Inputs are never parked; after a restore some records may be processed twice.
    AtLeastOnce,
}

impl FromStr for CheckpointingMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "EXACTLY_ONCE" => Ok(CheckpointingMode::ExactlyOnce),
            "AT_LEAST_ONCE" => Ok(CheckpointingMode::AtLeastOnce),
            other => Err(Error::config(
                "checkpoint.mode",
                format!("unknown mode `{other}`; expected EXACTLY_ONCE or AT_LEAST_ONCE"),
            )),
        }
    }
}

/// How periodic checkpoints are taken and kept.
///
/// ```
/// use std::time::Duration;
/// use operators_core::checkpoint::{CheckpointConfig, CheckpointingMode};
/// let cfg = CheckpointConfig::new("/tmp/checkpoints")
///     .with_interval(Duration::from_secs(10))
///     .with_mode(CheckpointingMode::AtLeastOnce)
///     .with_retained(3);
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointConfig {
    /// Directory under which each job keeps its checkpoints (`<dir>/<job name>/chk-<n>`).
    pub dir: PathBuf,
    /// Time between checkpoint triggers. Default 60 s.
    pub interval: Duration,
    /// Exactly-once (aligned) or at-least-once. Default exactly-once.
    pub mode: CheckpointingMode,
    /// A checkpoint not complete after this long fails. Default 10 min.
    pub timeout: Duration,
    /// Minimum time from the end of one checkpoint to the trigger of the next. Default 0.
    pub min_pause: Duration,
    /// Consecutive checkpoint failures tolerated before the job fails. Default 0.
    pub tolerable_failures: u32,
    /// Checkpoints in flight at once; only 1 is supported. Default 1.
    pub max_concurrent: u32,
    /// Completed checkpoints kept on disk. Default 1.
    pub retained: usize,
    /// Keep checkpoints when the job is canceled. Default true.
    pub retain_on_cancel: bool,
    /// On start, resume from the newest checkpoint a previous run of the same job left
    /// behind (after a crash), as Flink's high-availability mode does. Checkpoints of a
    /// job that finished are removed, so a finished job starts afresh. Default true.
    pub resume_from_latest: bool,
}

impl CheckpointConfig {
    /// Checkpoints under `dir` with Flink's defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            interval: Duration::from_secs(60),
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            tolerable_failures: 0,
            max_concurrent: 1,
            retained: 1,
            retain_on_cancel: true,
            resume_from_latest: true,
        }
    }

    /// Sets the interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: CheckpointingMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the minimum pause between checkpoints.
    pub fn with_min_pause(mut self, min_pause: Duration) -> Self {
        self.min_pause = min_pause;
        self
    }

    /// Sets the number of tolerable consecutive failures.
    pub fn with_tolerable_failures(mut self, n: u32) -> Self {
        self.tolerable_failures = n;
        self
    }

    /// Sets the number of retained checkpoints.
    pub fn with_retained(mut self, n: usize) -> Self {
        self.retained = n;
        self
    }

    /// Sets whether checkpoints survive cancellation.
    pub fn with_retain_on_cancel(mut self, retain: bool) -> Self {
        self.retain_on_cancel = retain;
        self
    }

    /// Sets whether to resume from a previous run's newest checkpoint.
    pub fn with_resume_from_latest(mut self, resume: bool) -> Self {
        self.resume_from_latest = resume;
        self
    }

    /// Checks the settings without touching the file system.
    pub fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::config("checkpoint.interval", "must be greater than 0 ms"));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("checkpoint.timeout", "must be greater than 0 ms"));
        }
        if self.timeout < self.min_pause {
            return Err(Error::config(
                "checkpoint.timeout",
                format!(
                    "{} ms is shorter than checkpoint.min-pause ({} ms)",
                    self.timeout.as_millis(),
                    self.min_pause.as_millis()
                ),
            ));
        }
        if self.retained == 0 {
            return Err(Error::config(
                "checkpoint.retained",
                "must be at least 1 (the newest checkpoint is needed to recover)",
            ));
        }
        if self.max_concurrent != 1 {
            return Err(Error::config(
                "checkpoint.max-concurrent",
                format!("{} is not supported; only 1 checkpoint may be in flight", self.max_concurrent),
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return Err(Error::config("checkpoint.dir", "must not be empty"));
        }
        // `hdfs:///x` would otherwise be the relative path `./hdfs:/x`.
        crate::path::check_store("checkpoint.dir", &self.dir)?;
        Ok(())
    }

    /// Creates the directory if needed and checks that it can be written. This is the
    /// part of the checks that does I/O; [`Pipeline::start`](crate::Pipeline::start)
    /// runs it, a dry run does not.
    pub fn check_dir(&self) -> Result<()> {
        probe_dir(&self.dir, "checkpoint.dir")
    }
}

/// Creates `dir`, checks that it can be written ([`crate::fs::probe_dir`]) and read.
pub(crate) fn probe_dir(dir: &Path, key: &str) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| Error::config(key, format!("cannot {what} `{}`: {e}", dir.display()));
    let fs = crate::fs::for_path(dir).map_err(|e| Error::config(key, e.to_string()))?;
    crate::fs::probe_dir(&*fs, dir).map_err(|(what, e)| fail(what, e))?;
    fs.list(dir).map_err(|e| fail("read", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: Error) -> String {
        match e {
            Error::Config { key, .. } => key,
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        let base = CheckpointConfig::new("/tmp/x");
        assert_eq!(key_of(base.clone().with_interval(Duration::ZERO).validate().unwrap_err()), "checkpoint.interval");
        assert_eq!(key_of(base.clone().with_retained(0).validate().unwrap_err()), "checkpoint.retained");
        assert_eq!(
            key_of(
                base.clone()
                    .with_timeout(Duration::from_millis(500))
                    .with_min_pause(Duration::from_secs(1))
                    .validate()
                    .unwrap_err()
            ),
            "checkpoint.timeout"
        );
        let mut two = base.clone();
        two.max_concurrent = 2;
        assert_eq!(key_of(two.validate().unwrap_err()), "checkpoint.max-concurrent");
        assert!(base.validate().is_ok());
    }

    #[test]
    fn a_url_is_not_taken_for_a_relative_path() {
        let e = CheckpointConfig::new("hdfs:///tmp/ck").validate().unwrap_err();
        assert!(e.to_string().contains("hdfs:///tmp/ck"), "{e}");
        assert_eq!(key_of(e), "checkpoint.dir");
        assert_eq!(key_of(CheckpointConfig::new("file:///tmp/ck").validate().unwrap_err()), "checkpoint.dir");
    }

    #[test]
    fn validating_touches_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("not-yet");
        CheckpointConfig::new(&ck).validate().unwrap();
        assert!(!ck.exists());
    }

    #[test]
    fn modes_parse_case_insensitively() {
        assert_eq!("exactly_once".parse::<CheckpointingMode>().unwrap(), CheckpointingMode::ExactlyOnce);
        assert_eq!("At_Least_Once".parse::<CheckpointingMode>().unwrap(), CheckpointingMode::AtLeastOnce);
        assert!("twice".parse::<CheckpointingMode>().is_err());
    }

    #[test]
    fn unwritable_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        // A path below a regular file can never be created.
        let cfg = CheckpointConfig::new(file.join("sub"));
        assert_eq!(key_of(cfg.check_dir().unwrap_err()), "checkpoint.dir");
    }
}
