//! The jobs of a server: submission, the record of each job in the state directory, and
//! resuming them when the server starts again.
//!
//! Layout of `--state.dir`:
//!
//! ```text
//! <state.dir>/jobs/<job id>/job.json     what was submitted, and whether it still runs
//! <state.dir>/jobs/<job id>/state/       the job's sled working state
//! <state.dir>/checkpoints/<job id>/...   its checkpoints (unless the job names a directory;
//!                                        then <that directory>/<job id>, as Flink does)
//! <state.dir>/savepoints/                savepoints, unless --state.savepoints.dir says
//! ```
//!
//! `job.json` holds the job's parameters as given, secrets included, because a job
//! resumed after a crash needs its passwords; the file is readable by its owner only and
//! no log line or answer shows its secrets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use operators_core::Job;
use operators_core::checkpoint::CheckpointStorage;
use operators_core::rest::JobRegistry;
use serde::{Deserialize, Serialize};

use super::logs::Logs;
use crate::runner::params::{Origin, Params, resolve};
use crate::runner::plan::plan;

/// What a client asked to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The job's parameters, `--key value` pairs.
    pub args: Vec<String>,
    /// Start from this savepoint (Flink's `savepointPath`).
    pub savepoint_path: Option<String>,
    /// Start even if the savepoint has state no operator takes.
    pub allow_non_restored_state: bool,
    /// Overrides `stream.parallelism`.
    pub parallelism: Option<u64>,
}

/// `job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    submission: Submission,
    submitted_ms: i64,
    /// `RUNNING` until the job ends, then its final status.
    state: String,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The parameters are wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// The server could not record or start the job (500).
    #[error("{0}")]
    Internal(String),
}

/// A job the server runs or ran.
pub struct ServerJob {
    /// The running job.
    pub job: Arc<Job>,
    /// Its parameters, secrets masked: key, value, origin.
    pub params: Vec<(String, String, String)>,
}

/// The jobs of one server.
#[derive(Clone)]
pub struct Jobs {
    state_dir: PathBuf,
    savepoints_dir: PathBuf,
    registry: JobRegistry,
    logs: Logs,
    jobs: Arc<Mutex<Vec<Arc<ServerJob>>>>,
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    // Renamed into place, so a crash mid-write leaves the old record, never half a one.
    std::fs::rename(&tmp, path)
}

impl Jobs {
    /// The jobs of a server keeping its records in `state_dir`.
    pub fn new(state_dir: PathBuf, savepoints_dir: Option<PathBuf>, logs: Logs) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir.join("jobs"))?;
        let savepoints_dir = savepoints_dir.unwrap_or_else(|| state_dir.join("savepoints"));
        Ok(Self { state_dir, savepoints_dir, registry: JobRegistry::default(), logs, jobs: Arc::default() })
    }

    /// The registry the REST routes read.
    pub fn registry(&self) -> JobRegistry {
        self.registry.clone()
    }

    /// The job with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ServerJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|j| j.job.id() == id).cloned()
    }

    /// Every job, oldest first.
    pub fn all(&self) -> Vec<Arc<ServerJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("jobs").join(id).join("job.json")
    }

    fn write_record(&self, record: &JobRecord) -> Result<(), SubmitError> {
        let path = self.record_path(&record.id);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
            write_private(&path, &bytes)
        };
        write().map_err(|e| SubmitError::Internal(format!("cannot record the job in {}: {e}", path.display())))
    }

    /// Resolves and plans `submission` as job `id` without starting it.
    fn prepare(&self, id: &str, submission: &Submission) -> Result<Params, SubmitError> {
        let cwd = std::env::current_dir().unwrap_or_default();
        // The server's environment is not the job's: only the submitted arguments count.
        let inv = resolve(submission.args.iter().cloned(), Vec::new(), &cwd)
            .map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        if inv.help || inv.dry_run || inv.version {
            return Err(SubmitError::BadRequest(
                "`--help`, `--dry-run` and `--version` are not job parameters".to_string(),
            ));
        }
        let mut params = inv.params;
        if let Some(p) = submission.parallelism {
            params.set("stream.parallelism", &p.to_string(), Origin::CommandLine);
        }
        if let Some(sp) = &submission.savepoint_path {
            params.set("savepoint", sp, Origin::CommandLine);
        }
        if submission.allow_non_restored_state {
            params.set("allow-non-restored-state", "true", Origin::CommandLine);
        }
        // Each job its own checkpoint and state directories, under the job id, as Flink
        // keeps `<checkpoint dir>/<job id>`: two jobs of one name never share them.
        let checkpoints =
            params.get("stream.checkpoint.dir").map_or_else(|| self.state_dir.join("checkpoints"), PathBuf::from);
        let checkpoints = checkpoints.join(id);
        params.set("stream.checkpoint.dir", &checkpoints.to_string_lossy(), Origin::CommandLine);
        let state = params
            .get("stream.state.dir")
            .map_or_else(|| self.state_dir.join("jobs").join(id).join("state"), |d| PathBuf::from(d).join(id));
        params.set("stream.state.dir", &state.to_string_lossy(), Origin::CommandLine);
        if !params.has("savepoint.dir") {
            params.set("savepoint.dir", &self.savepoints_dir.to_string_lossy(), Origin::CommandLine);
        }
        Ok(params)
    }

    /// Plans and starts `submission` as job `id`; with `resuming`, from its newest
    /// checkpoint when it has one.
    fn start(&self, id: &str, submission: &Submission, resuming: bool) -> Result<Arc<ServerJob>, SubmitError> {
        let params = self.prepare(id, submission)?;
        let planned = plan(&params).map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        for i in &planned.ignored {
            self.logs.job_line(id, format!("warning: {i}"));
        }
        let mut config = planned.config.with_job_id(id);
        if resuming
            && let Some(cp) = &config.checkpointing
            && CheckpointStorage::new(&cp.dir, &config.name).latest().ok().flatten().is_some()
        {
            // A checkpoint taken since the savepoint is newer than it: resume from that.
            config.restore = None;
        }
        let job = planned.pipeline.start(config).map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        let job = Arc::new(job);
        let entry = Arc::new(ServerJob { job: job.clone(), params: params.describe() });
        self.registry.add(job.clone());
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).push(entry.clone());
        Ok(entry)
    }

    /// Starts a new job; returns its id. Nothing is recorded or started when the
    /// parameters are wrong.
    pub fn submit(&self, submission: Submission) -> Result<String, SubmitError> {
        let id = operators_core::new_job_id();
        // Planned once before the record is written, so a bad parameter leaves no trace.
        let params = self.prepare(&id, &submission)?;
        plan(&params).map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        let record = JobRecord {
            id: id.clone(),
            submission: submission.clone(),
            submitted_ms: chrono::Utc::now().timestamp_millis(),
            state: "RUNNING".into(),
        };
        self.write_record(&record)?;
        match self.start(&id, &submission, false) {
            Ok(entry) => {
                self.logs.job_line(&id, format!("job `{}` submitted", entry.job.name()));
                self.watch(entry, record);
                Ok(id)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.state_dir.join("jobs").join(&id));
                Err(e)
            }
        }
    }

    /// Marks the record with the job's final status when it ends.
    fn watch(&self, entry: Arc<ServerJob>, mut record: JobRecord) {
        let jobs = self.clone();
        tokio::spawn(async move {
            let outcome = entry.job.wait().await;
            let status = entry.job.status();
            record.state =
                serde_json::to_value(status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            match &outcome {
                Ok(o) => match &o.savepoint {
                    Some(sp) => {
                        jobs.logs.job_line(&record.id, format!("job {status:?} with savepoint {}", sp.display()))
                    }
                    None => jobs.logs.job_line(&record.id, format!("job {status:?}")),
                },
                Err(e) => jobs.logs.job_line(&record.id, format!("job failed: {e}")),
            }
            // A file write and fsync: off the async workers that serve the API.
            let id = record.id.clone();
            let written = tokio::task::spawn_blocking(move || jobs.write_record(&record)).await;
            if let Ok(Err(e)) = written {
                tracing::error!(job_id = %id, error = %e, "cannot record the end of the job");
            }
        });
    }

    /// Starts again every job the records say was running; returns how many.
    pub fn resume_all(&self) -> usize {
        let dir = self.state_dir.join("jobs");
        let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
        let mut records: Vec<JobRecord> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path().join("job.json");
                let bytes = std::fs::read(&path).ok()?;
                match serde_json::from_slice::<JobRecord>(&bytes) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "unreadable job record; job not resumed");
                        None
                    }
                }
            })
            .collect();
        records.sort_by_key(|r| r.submitted_ms);
        let mut resumed = 0;
        for record in records {
            if record.state != "RUNNING" || !operators_core::is_job_id(&record.id) {
                continue;
            }
            match self.start(&record.id, &record.submission, true) {
                Ok(entry) => {
                    self.logs
                        .job_line(&record.id, format!("job `{}` resumed after a server restart", entry.job.name()));
                    self.watch(entry, record);
                    resumed += 1;
                }
                Err(e) => {
                    self.logs.job_line(&record.id, format!("job could not be resumed: {e}"));
                    tracing::error!(job_id = %record.id, error = %e, "job not resumed");
                }
            }
        }
        resumed
    }

    /// Whether a job is still running (for a clean shutdown).
    pub fn running(&self) -> Vec<Arc<Job>> {
        self.all().into_iter().map(|j| j.job.clone()).filter(|j| !j.status().is_terminal()).collect()
    }
}

/// Splits Flink's `programArgs` string as Flink does: on white space, except inside
/// single or double quotes, which are removed.
pub fn split_program_args(args: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut token = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == first {
                    closed = true;
                    break;
                }
                token.push(c);
            }
            if !closed {
                return Err(format!("programArgs: the quote {first} opened before `{token}` is not closed"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        out.push(token);
    }
    Ok(out)
}

/// Flink's `programArgsList`, with one leniency: an element holding a key and its value
/// (`"--source.path hdfs:///data"`, as the toolkit's README writes one) counts as the two.
/// A value that holds spaces (`"--stream.sql", "select * from t1"`) stays whole: only an
/// element that starts with `--` is split.
pub fn program_args_list(list: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    for arg in list {
        match arg.strip_prefix("--").and_then(|rest| rest.split_once(char::is_whitespace)) {
            Some((key, value)) if !key.is_empty() && !key.contains('=') => {
                out.push(format!("--{key}"));
                out.push(value.trim().to_string());
            }
            _ => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_args_split_as_flink_does() {
        let args = split_program_args(
            "--job.name test --sink.type orc --stream.sql 'select * from t1' --x \"a b\"  --schema struct<id:Int,name:String>",
        )
        .unwrap();
        assert_eq!(
            args,
            [
                "--job.name",
                "test",
                "--sink.type",
                "orc",
                "--stream.sql",
                "select * from t1",
                "--x",
                "a b",
                "--schema",
                "struct<id:Int,name:String>"
            ]
        );
        assert!(split_program_args("--stream.sql 'select 1").unwrap_err().contains("not closed"));
        assert!(split_program_args("   ").unwrap().is_empty());
    }

    #[test]
    fn a_list_element_with_key_and_value_counts_as_both() {
        let list = ["--source.path hdfs:///user/p", "--stream.sql", "select * from t1", "--x=a b"];
        assert_eq!(
            program_args_list(list.map(String::from).to_vec()),
            ["--source.path", "hdfs:///user/p", "--stream.sql", "select * from t1", "--x=a b"]
        );
    }
}
