//! The jobs of a server: submission, the record of each job in the state directory, and
//! resuming them when the server starts again.
//!
//! Layout of `--state.dir`:
//!
//! ```text
//! <state.dir>/jobs/<job id>/job.json     what was submitted, and whether it still runs
//! <state.dir>/jobs/<job id>/state/       the job's disk-backend keyed state
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
use operators_core::fs::FileSystem;
use operators_core::path::{local_dir, store_dir};
use operators_core::rest::JobRegistry;
use serde::{Deserialize, Serialize};

use super::logs::Logs;
use crate::runner::params::{Origin, Params, is_flag, resolve};
use crate::runner::plan::{PlanError, plan};

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
    /// Where jobs keep the working copies of their keyed state: under the state
    /// directory when it is local, else a directory of this server's own.
    scratch: PathBuf,
    registry: JobRegistry,
    logs: Logs,
    jobs: Arc<Mutex<Vec<Arc<ServerJob>>>>,
}

/// Writes a job record only its owner can read (it holds the submitted arguments, and
/// so any secret among them), atomically: a temporary file renamed into place, so that a
/// crash mid-write leaves the old record, never half a one.
fn write_private(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    // A temporary file left by a write that failed may still be held open (on HDFS,
    // under a lease for up to an hour): removed first, it cannot block this write.
    match fs.remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs.create_private(&tmp)?;
    file.write_all(bytes)?;
    file.finish()?;
    fs.rename(&tmp, path)
}

/// A new directory only this user can enter, under the system's temporary directory,
/// with a name nobody can guess (and so prepare for it) in advance.
fn private_temp_dir() -> std::io::Result<PathBuf> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let n = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let dir = std::env::temp_dir().join(format!("operator-server-{n:016x}"));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    // Not `recursive`: a directory already there was not made by this server.
    builder.create(&dir)?;
    Ok(dir)
}

/// The file system of the server's state directory.
fn store(dir: &Path) -> std::io::Result<Arc<dyn FileSystem>> {
    operators_core::fs::for_path(dir).map_err(|e| std::io::Error::other(e.to_string()))
}

impl Jobs {
    /// The jobs of a server keeping its records in `state_dir`.
    pub fn new(state_dir: PathBuf, savepoints_dir: Option<PathBuf>, logs: Logs) -> std::io::Result<Self> {
        // Submissions may name hdfs:// directories.
        crate::register_file_systems().map_err(|e| std::io::Error::other(e.to_string()))?;
        store(&state_dir)?.create_dir_all(&state_dir.join("jobs"))?;
        let savepoints_dir = savepoints_dir.unwrap_or_else(|| state_dir.join("savepoints"));
        let scratch = match operators_core::fs::scheme_of(&state_dir) {
            None => state_dir.join("jobs"),
            Some(_) => private_temp_dir()?,
        };
        Ok(Self { state_dir, savepoints_dir, scratch, registry: JobRegistry::default(), logs, jobs: Arc::default() })
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
            let fs = store(&path)?;
            if let Some(dir) = path.parent() {
                fs.create_dir_all(dir)?;
            }
            let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
            write_private(&*fs, &path, &bytes)
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
        // Directories are resolved by the one rule (a local path, a file:// URL, or
        // hdfs:// where the store may be remote) before the job id is joined to them, so
        // that a refusal names the value as given.
        let dir = |key: &str, value: &str| {
            let resolved = if key == "stream.state.dir" { local_dir(key, value) } else { store_dir(key, value) };
            resolved.map_err(|e| SubmitError::BadRequest(PlanError::from(e).to_string()))
        };
        if let Some(p) = submission.parallelism {
            params.set("stream.parallelism", &p.to_string(), Origin::CommandLine);
        }
        if let Some(sp) = &submission.savepoint_path {
            params.set("savepoint", &dir("savepointPath", sp)?.to_string_lossy(), Origin::CommandLine);
        }
        if submission.allow_non_restored_state {
            params.set("allow-non-restored-state", "true", Origin::CommandLine);
        }
        // Each job its own checkpoint and state directories, under the job id, as Flink
        // keeps `<checkpoint dir>/<job id>`: two jobs of one name never share them.
        let checkpoints = match params.get("stream.checkpoint.dir") {
            Some(d) => dir("stream.checkpoint.dir", d)?,
            None => self.state_dir.join("checkpoints"),
        };
        let checkpoints = checkpoints.join(id);
        params.set("stream.checkpoint.dir", &checkpoints.to_string_lossy(), Origin::CommandLine);
        let state = match params.get("stream.state.dir") {
            Some(d) => dir("stream.state.dir", d)?.join(id),
            // Working copies of keyed state are local: under the state directory when it
            // is, else in a directory of this server's own.
            None => self.scratch.join(id).join("state"),
        };
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
        if resuming && let Some(cp) = &config.checkpointing {
            // A checkpoint taken since the savepoint is newer than it: resume from that.
            // A store that cannot say (a NameNode down) leaves the job unresumed (its
            // record still says it runs, so the next start tries again), not rewound.
            let latest = CheckpointStorage::new(&cp.dir, &config.name)
                .latest()
                .map_err(|e| SubmitError::Internal(format!("cannot look for the job's checkpoints: {e}")))?;
            if latest.is_some() {
                config.restore = None;
            }
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
                let dir = self.state_dir.join("jobs").join(&id);
                let _ = store(&dir).and_then(|fs| fs.remove_dir_all(&dir));
                Err(e)
            }
        }
    }

    /// Marks the record with the job's final status when it ends.
    fn watch(&self, entry: Arc<ServerJob>, mut record: JobRecord) {
        let jobs = self.clone();
        operators_core::spawn(async move {
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
        let Ok(fs) = store(&dir) else { return 0 };
        let entries = match fs.list(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot list the job records; no job resumed");
                return 0;
            }
        };
        let mut records: Vec<JobRecord> = entries
            .into_iter()
            .filter(|e| e.is_dir)
            .filter_map(|e| {
                let path = e.path.join("job.json");
                let bytes = match fs.read(&path) {
                    Ok(bytes) => bytes,
                    // A directory left by a submission that failed before its record.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot read a job record; job not resumed");
                        return None;
                    }
                };
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
    let mut out: Vec<String> = Vec::new();
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
                // The quoted text is not shown: it may be a key or a password.
                let after = match out.last() {
                    Some(prev) if is_flag(prev) => format!("after `{prev}`"),
                    Some(_) => format!("after argument {}", out.len()),
                    None => "at the start".to_string(),
                };
                return Err(format!("programArgs: the quote {first} opened {after} is not closed"));
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
/// element that is a key (`--` and a letter) is split, and never the element after a bare
/// key, which is that key's value (a PEM key starts with `-----BEGIN`).
pub fn program_args_list(list: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    let mut value_next = false;
    for arg in list {
        if std::mem::take(&mut value_next) || !is_flag(&arg) {
            out.push(arg);
            continue;
        }
        match arg[2..].split_once(char::is_whitespace) {
            Some((key, value)) if !key.contains('=') => {
                out.push(format!("--{key}"));
                out.push(value.trim().to_string());
            }
            _ => {
                value_next = !arg.contains('=') && !VALUELESS_FLAGS.contains(&arg.as_str());
                out.push(arg);
            }
        }
    }
    out
}

/// Arguments that take no value.
const VALUELESS_FLAGS: &[&str] = &["--help", "--version", "--dry-run", "--allow-non-restored-state"];

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
    fn directories_with_a_scheme_are_refused_naming_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::new(dir.path().to_path_buf(), None, Logs::default()).unwrap();
        let id = operators_core::new_job_id();
        for (args, savepoint, key) in [
            (vec!["--stream.checkpoint.dir", "gs://b/ck"], None, "stream.checkpoint.dir"),
            (vec!["--stream.state.dir", "s3://bucket/state"], None, "stream.state.dir"),
            (vec!["--stream.state.dir", "hdfs://nn:8020/state"], None, "stream.state.dir"),
            (vec![], Some("s3a://b/sp/savepoint-1"), "savepointPath"),
        ] {
            let submission = Submission {
                args: args.iter().map(|s| s.to_string()).collect(),
                savepoint_path: savepoint.map(String::from),
                ..Submission::default()
            };
            match jobs.prepare(&id, &submission) {
                Err(SubmitError::BadRequest(e)) => {
                    assert!(e.contains(&format!("`{key}`")) && e.contains("file://"), "{e}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        // A file:// URL is the local directory it names, the job id joined to it.
        let submission = Submission {
            args: vec!["--stream.checkpoint.dir".into(), "file:///tmp/ck".into()],
            ..Submission::default()
        };
        let params = jobs.prepare(&id, &submission).unwrap();
        assert_eq!(params.get("stream.checkpoint.dir"), Some(format!("/tmp/ck/{id}").as_str()));
    }

    #[test]
    fn a_list_element_with_key_and_value_counts_as_both() {
        let list = ["--source.path hdfs:///user/p", "--stream.sql", "select * from t1", "--x=a b"];
        assert_eq!(
            program_args_list(list.map(String::from).to_vec()),
            ["--source.path", "hdfs:///user/p", "--stream.sql", "select * from t1", "--x=a b"]
        );
        // A value after its key stays whole, even one that starts with dashes or holds a
        // `--key value` look-alike.
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----";
        let list = ["--sink.kafka.ssl.key.pem", pem, "--dry-run", "--x y", "--stream.sql", "--a b"];
        assert_eq!(
            program_args_list(list.map(String::from).to_vec()),
            ["--sink.kafka.ssl.key.pem", pem, "--dry-run", "--x", "y", "--stream.sql", "--a b"]
        );
    }

    #[test]
    fn an_open_quote_is_named_without_its_text() {
        let err = split_program_args("--sink.es.password 'hunter2 --x y").unwrap_err();
        assert!(err.contains("after `--sink.es.password`") && !err.contains("hunter2"), "{err}");
    }
}
