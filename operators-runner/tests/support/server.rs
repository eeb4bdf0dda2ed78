//! A job server (`operator serve`) for tests to drive over HTTP and with the client
//! commands.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Running, json_rows, operator};

/// The schema of the rows `write_csv_input` writes.
pub const SCHEMA: &str = r#"{"id":"BigInt","name":"String","score":"Double"}"#;

/// A server running on a free port with its state in `state`.
pub struct Server {
    pub running: Running,
    pub api: Api,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Calls to a server, with or without its token.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
}

impl Server {
    pub fn start(cwd: &Path, state: &Path, token: Option<&str>) -> Self {
        let mut cmd = operator(cwd);
        cmd.args(["serve", "--rest.port", "0", "--state.dir", state.to_str().unwrap()]).env("RUST_LOG", "info");
        if let Some(t) = token {
            cmd.env("OPERATOR_REST_TOKEN", t);
        }
        let mut running = Running::start(cmd);
        let line = running.wait_for_line("operator server listening on", Duration::from_secs(30));
        let base = line.split("listening on ").nth(1).unwrap().trim().to_string();
        Self { running, api: Api { base, token: token.map(String::from) } }
    }

    pub fn kill(&mut self) {
        self.running.child.kill().unwrap();
        let _ = self.running.child.wait();
    }
}

impl Api {
    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).build().into()
    }

    pub fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// `(status, body)`; a body that is not JSON comes back as a JSON string.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let agent = Self::agent();
        let mut response = match method {
            "GET" => {
                let mut r = agent.get(&url);
                if let Some(a) = self.auth() {
                    r = r.header("Authorization", &a);
                }
                r.call()
            }
            "PATCH" => {
                let mut r = agent.patch(&url);
                if let Some(a) = self.auth() {
                    r = r.header("Authorization", &a);
                }
                r.send_empty()
            }
            _ => {
                let mut r = agent.post(&url);
                if let Some(a) = self.auth() {
                    r = r.header("Authorization", &a);
                }
                r.send_json(body.unwrap_or_else(|| json!({})))
            }
        }
        .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub fn run(&self, body: Value) -> String {
        let (status, answer) = self.call("POST", "/jars/operator.jar/run", Some(body));
        assert_eq!(status, 200, "{answer}");
        answer["jobid"].as_str().unwrap().to_string()
    }

    pub fn state(&self, jid: &str) -> String {
        self.get(&format!("/jobs/{jid}"))["state"].as_str().unwrap().to_string()
    }

    pub fn wait_state(&self, jid: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(jid);
            if state == want {
                return;
            }
            assert!(Instant::now() < deadline, "job {jid} is {state}, not {want}; log:\n{}", self.log(jid));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self, jid: &str) -> String {
        self.call("GET", &format!("/jobs/{jid}/log"), None).1.as_str().unwrap_or_default().to_string()
    }

    pub fn completed_checkpoints(&self, jid: &str) -> u64 {
        self.get(&format!("/jobs/{jid}/checkpoints"))["counts"]["completed"].as_u64().unwrap()
    }

    pub fn wait_checkpoints(&self, jid: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.completed_checkpoints(jid) < n {
            assert!(Instant::now() < deadline, "job {jid} completed no {n} checkpoints; log:\n{}", self.log(jid));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn savepoint(&self, jid: &str, request: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.get(&format!("/jobs/{jid}/savepoints/{request}"));
            match status["status"]["id"].as_str() {
                Some("COMPLETED") => {
                    return status["operation"]["location"]
                        .as_str()
                        .unwrap_or_else(|| panic!("savepoint failed: {status}"))
                        .to_string();
                }
                Some("IN_PROGRESS") => {}
                other => panic!("unexpected savepoint status {other:?}: {status}"),
            }
            assert!(Instant::now() < deadline, "savepoint did not complete");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client command against this server.
    pub fn client(&self, cwd: &Path, args: &[&str]) -> Output {
        let server = self.base.trim_start_matches("http://").to_string();
        let mut cmd = operator(cwd);
        cmd.arg(args[0]).args(["-m", &server]).args(&args[1..]);
        if let Some(t) = &self.token {
            cmd.env("OPERATOR_REST_TOKEN", t);
        }
        cmd.output().unwrap()
    }
}

/// A continuously watched CSV directory into JSON files, exactly once.
pub fn job_args(name: &str, input: &Path, out: &Path, rate: u32) -> Vec<String> {
    let mut args: Vec<String> = [
        "--job.name",
        name,
        "--source.type",
        "csv",
        "--source.path",
        input.to_str().unwrap(),
        "--source.watch.interval",
        "100",
        "--source.watch.settle",
        "50",
        "--source.batch.size",
        "500",
        "--stream.sql.schema.json",
        SCHEMA,
        "--sink.type",
        "file",
        "--sink.path",
        out.to_str().unwrap(),
        "--stream.checkpoint.mode",
        "EXACTLY_ONCE",
        "--stream.checkpoint.interval",
        "200",
        "--stream.checkpoint.min.pause",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if rate > 0 {
        args.extend(["--stream.rate.limit".to_string(), rate.to_string()]);
    }
    args
}

/// The ids of the rows committed in `out`: `(rows, distinct ids)`.
pub fn ids(out: &Path) -> (usize, BTreeSet<i64>) {
    let rows = json_rows(out);
    (rows.len(), rows.iter().map(|r| r["id"].as_i64().unwrap()).collect())
}

/// Waits until `out` holds as many rows as `expected`, then asserts each id once.
pub fn wait_rows(out: &Path, expected: &BTreeMap<i64, (String, f64)>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, seen) = ids(out);
        if n >= expected.len() {
            assert_eq!(n, seen.len(), "{what}: no row twice");
            assert_eq!(seen, expected.keys().copied().collect::<BTreeSet<_>>(), "{what}: no row lost");
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {n} of {} rows", expected.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}
