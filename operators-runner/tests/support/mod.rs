//! Helpers for tests that drive the `operator` binary as a user would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod hive;
pub mod kill;
pub mod server;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The runner binary with a clean environment (no OPERATOR_* variables leak in).
pub fn operator(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_operator"));
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("OPERATOR_") || k.contains('.') {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs the binary to its end with `args`.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    operator(cwd).args(args).output().unwrap()
}

/// [`run`] off the async workers: for async tests whose services (the Elasticsearch test
/// server, a database pool) run on the test's runtime and must not be starved by a
/// blocking wait.
pub async fn run_off_runtime(cwd: &Path, args: &[&str]) -> Output {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || operator(&cwd).args(&args).output().unwrap()).await.unwrap()
}

/// Starts the binary with `args`, logging at info level into `log`, for a kill test to
/// SIGKILL it with [`kill_after`].
pub fn spawn_logged(cwd: &Path, args: &[&str], log: &Path) -> Child {
    operator(cwd)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The file system of `dir`: the local disk, or the test HDFS for an `hdfs://` URL.
fn store(dir: &Path) -> std::sync::Arc<dyn operators_core::fs::FileSystem> {
    operators_hdfs::register().unwrap();
    operators_core::fs::for_path(dir).unwrap()
}

/// A fresh directory on the test HDFS (`testing/services/hdfs.sh`; `HDFS_URL` names its
/// NameNode), not created. Fails naming the script when HDFS_URL is unset.
pub fn hdfs_dir(name: &str) -> PathBuf {
    let url = match std::env::var("HDFS_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "HDFS_URL is not set: start HDFS with `testing/services/hdfs.sh start` (or `eval \"$(testing/services/start-all.sh)\"`)"
        ),
    };
    PathBuf::from(format!("{}/operators-tests/{name}-{:016x}", url.trim_end_matches('/'), rand::random::<u64>()))
}

/// Rows of committed JSON-lines files in `dir` (local or on HDFS), as JSON objects;
/// panics on partial lines.
pub fn json_rows(dir: &Path) -> Vec<serde_json::Value> {
    let fs = store(dir);
    let mut rows = Vec::new();
    let Ok(entries) = fs.list(dir) else { return rows };
    let mut names: Vec<PathBuf> = entries.into_iter().map(|e| e.path).collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let text = String::from_utf8(fs.read(&path).unwrap()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{name}: partial line");
        for line in text.lines() {
            rows.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}")));
        }
    }
    rows
}

/// Hidden (in-progress) files left in `dir` (local or on HDFS).
pub fn hidden_files(dir: &Path) -> Vec<String> {
    store(dir)
        .list(dir)
        .map(|it| it.iter().map(|e| e.name().to_string()).filter(|n| n.starts_with('.')).collect())
        .unwrap_or_default()
}

/// Writes `files` CSV files of `rows_per_file` rows `id,name,score` into `dir` (local
/// or on HDFS); returns the expected rows keyed by id.
pub fn write_csv_input(dir: &Path, files: usize, rows_per_file: usize, header: bool) -> BTreeMap<i64, (String, f64)> {
    let fs = store(dir);
    fs.create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut expected = BTreeMap::new();
    for f in 0..files {
        let mut s = String::new();
        if header {
            s.push_str("id,name,score\n");
        }
        for r in 0..rows_per_file {
            let id = (f * rows_per_file + r) as i64;
            let name = format!("name \"{id}\", with comma");
            let score = (id % 1000) as f64 / 4.0;
            s.push_str(&format!("{id},\"{}\",{score}\n", name.replace('"', "\"\"")));
            expected.insert(id, (name, score));
        }
        fs.write(&dir.join(format!("input-{f:03}.csv")), s.as_bytes()).unwrap();
    }
    expected
}

/// A running binary whose stderr is collected line by line.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with `{needle}` within {timeout:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the process to exit and returns its status and the remaining stderr.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return (status, self.seen.join("\n"));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {timeout:?}; stderr:\n{}", self.seen.join("\n"));
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A test that ends, or fails, while its child still runs takes the child with it: the
/// job servers of the server tests were left running (orphaned, about 6 % of a core
/// each) after every `cargo test`.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lets `child` run for `delay`, then SIGKILLs it (`Child::kill` sends SIGKILL on Unix:
/// no shutdown code runs). Returns its exit status when it ended on its own first.
/// Blocking: call it from `spawn_blocking` in async tests.
pub fn kill_after(mut child: Child, delay: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < delay {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Writes `batches` into one Parquet file at `path`, a row group per batch.
pub fn write_parquet(path: &Path, batches: &[arrow::record_batch::RecordBatch]) {
    let Some(first) = batches.first() else { return };
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), first.schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
        w.flush().unwrap();
    }
    w.close().unwrap();
}
