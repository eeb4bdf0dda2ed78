//! The client commands of the `operator` binary, with the `flink` CLI's flags:
//! `run`, `list`, `cancel`, `stop` and `savepoint` against a server (`operator serve`).
//!
//! Each prints what a person reads (Flink's wording where Flink has one), or the
//! server's JSON with `--json`. `-m host:port` names the server (default
//! 127.0.0.1:8081); `--token T` or `OPERATOR_REST_TOKEN` its token.

use std::time::{Duration, Instant};

use operators_core::secret::Secret;
use serde_json::{Value, json};

use super::http::JAR_ID;

/// The client command names.
pub const COMMANDS: [&str; 5] = ["run", "list", "cancel", "stop", "savepoint"];

/// The client usage text.
pub const CLI_HELP: &str = "\
operator run [-m host:port] [-s SAVEPOINT] [--allowNonRestoredState] [-p N] -- <job parameters>
operator list [-m host:port] [-r] [-a]
operator cancel [-m host:port] [-s DIR] JOBID
operator stop [-m host:port] [-p DIR] [-d] JOBID
operator savepoint [-m host:port] JOBID [DIR]

common: --token TOKEN (or OPERATOR_REST_TOKEN), --json (print the server's JSON)
savepoint directories are local paths, file:// or hdfs:// URLs (s3://, gs://, ... are refused)
";

struct Client {
    base: String,
    token: Option<Secret>,
    agent: ureq::Agent,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {}", t.expose()));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("PATCH", _) => {
                let mut r = self.agent.patch(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_empty()
            }
            (_, body) => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.unwrap_or_else(|| json!({})))
            }
        };
        let mut response = result.map_err(|e| format!("cannot reach the server at {}: {e}", self.base))?;
        let status = response.status();
        let text = response.body_mut().read_to_string().map_err(|e| format!("{method} {path}: {e}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.as_u16() == 401 {
            return Err("the server wants its token: --token TOKEN or OPERATOR_REST_TOKEN".into());
        }
        if !status.is_success() {
            let errors = value["errors"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                .unwrap_or_else(|| value.to_string());
            return Err(format!("{method} {path}: {status}: {errors}"));
        }
        Ok(value)
    }

    /// Polls a savepoint request to its end; returns the savepoint's location.
    fn await_savepoint(&self, job: &str, request: &str) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let status = self.call("GET", &format!("/jobs/{job}/savepoints/{request}"), None)?;
            if status["status"]["id"] == "COMPLETED" {
                if let Some(location) = status["operation"]["location"].as_str() {
                    return Ok(location.to_string());
                }
                return Err(format!("the savepoint failed: {}", status["operation"]["failure-cause"]));
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(format!("the savepoint of job {job} did not complete in 10 minutes"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

struct Common {
    client: Client,
    json: bool,
    rest: Vec<String>,
}

fn common(args: &[String], token_env: Option<String>) -> Result<Common, String> {
    let mut server = "127.0.0.1:8081".to_string();
    let mut token = token_env.filter(|t| !t.is_empty()).map(Secret::new);
    let mut json = false;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-m" | "--jobmanager" => server = it.next().cloned().ok_or("`-m` needs host:port")?,
            "--token" => token = Some(Secret::new(it.next().cloned().ok_or("`--token` needs a value")?)),
            "--json" => json = true,
            "--" => {
                rest.push(a.clone());
                rest.extend(it.by_ref().cloned());
            }
            _ => rest.push(a.clone()),
        }
    }
    let base = if server.starts_with("http://") || server.starts_with("https://") {
        server.trim_end_matches('/').to_string()
    } else {
        format!("http://{server}")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    Ok(Common { client: Client { base, token, agent }, json, rest })
}

fn flag_value(it: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<String, String> {
    it.next().cloned().ok_or_else(|| format!("`{flag}` needs a value"))
}

/// A savepoint directory given as `what` (a flag, or a command's DIR), checked by the
/// rule the server applies ([`operators_core::path::store_dir`]: a local path, a
/// `file://` URL or an `hdfs://` URL) before the server is called; returns the path to
/// send. A URL with another scheme is refused here, naming `what`, the value and what is
/// supported.
fn savepoint_dir(what: &str, value: &str) -> Result<String, String> {
    crate::register_file_systems().map_err(|e| e.to_string())?;
    match operators_core::path::store_dir(what, value) {
        Ok(path) => Ok(path.to_string_lossy().into_owned()),
        Err(operators_core::Error::Config { key, message }) => Err(format!("`{key}`: {message}")),
        Err(other) => Err(other.to_string()),
    }
}

fn print(json: bool, value: &Value, human: String) {
    if json {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

/// Runs client command `command` with `args`; the error is what to print.
pub fn main(command: &str, args: &[String], token_env: Option<String>) -> Result<(), String> {
    let Common { client, json, rest } = common(args, token_env)?;
    let mut it = rest.iter();
    match command {
        "run" => {
            let (mut savepoint, mut allow, mut parallelism, mut params) = (None, false, None, Vec::new());
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-s" | "--fromSavepoint" => savepoint = Some(savepoint_dir(a, &flag_value(&mut it, a)?)?),
                    "-n" | "--allowNonRestoredState" => allow = true,
                    "-p" | "--parallelism" => {
                        let v = flag_value(&mut it, a)?;
                        parallelism = Some(v.parse::<u64>().map_err(|_| format!("`{a}`: `{v}` is not a number"))?);
                    }
                    "--" => params.extend(it.by_ref().cloned()),
                    // Job parameters may follow without `--` too: the first `--key` starts them.
                    _ => {
                        params.push(a.clone());
                        params.extend(it.by_ref().cloned());
                    }
                }
            }
            let body = json!({
                "entryClass": super::http::ENTRY_CLASS,
                "programArgsList": params,
                "savepointPath": savepoint,
                "allowNonRestoredState": allow,
                "parallelism": parallelism,
            });
            let answer = client.call("POST", &format!("/jars/{JAR_ID}/run"), Some(body))?;
            let id = answer["jobid"].as_str().unwrap_or_default().to_string();
            print(json, &answer, format!("Job has been submitted with JobID {id}"));
        }
        "list" => {
            let (mut running_only, mut all) = (false, false);
            for a in it {
                match a.as_str() {
                    "-r" | "--running" => running_only = true,
                    "-a" | "--all" => all = true,
                    other => return Err(format!("`operator list`: unknown argument `{other}`")),
                }
            }
            let answer = client.call("GET", "/jobs/overview", None)?;
            let mut jobs: Vec<Value> = answer["jobs"].as_array().cloned().unwrap_or_default();
            jobs.sort_by_key(|j| j["start-time"].as_i64().unwrap_or(0));
            let running = |j: &Value| matches!(j["state"].as_str(), Some("RUNNING" | "RESTARTING" | "CREATED"));
            let line = |j: &Value| {
                let start = chrono::DateTime::from_timestamp_millis(j["start-time"].as_i64().unwrap_or(0))
                    .map(|t| t.format("%d.%m.%Y %H:%M:%S").to_string())
                    .unwrap_or_default();
                format!(
                    "{start} : {} : {} ({})",
                    j["jid"].as_str().unwrap_or(""),
                    j["name"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or("")
                )
            };
            let (live, ended): (Vec<Value>, Vec<Value>) = jobs.into_iter().partition(running);
            let mut out = String::new();
            if live.is_empty() {
                out.push_str("No running jobs.");
            } else {
                out.push_str("------------------ Running/Restarting Jobs -------------------\n");
                out.push_str(&live.iter().map(line).collect::<Vec<_>>().join("\n"));
                out.push_str("\n--------------------------------------------------------------");
            }
            if all || !running_only {
                if ended.is_empty() {
                    out.push_str("\nNo finished, canceled or failed jobs.");
                } else {
                    out.push_str("\n---------------------- Terminated Jobs -----------------------\n");
                    out.push_str(&ended.iter().map(line).collect::<Vec<_>>().join("\n"));
                    out.push_str("\n--------------------------------------------------------------");
                }
            }
            let shown = if running_only {
                json!({ "jobs": live })
            } else {
                json!({ "jobs": live.iter().chain(&ended).collect::<Vec<_>>() })
            };
            print(json, &shown, out);
        }
        "cancel" => {
            let (mut dir, mut with_savepoint, mut id) = (None, false, None);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-s" | "--withSavepoint" => {
                        with_savepoint = true;
                        // The directory is optional: the server's default when none follows.
                        if let Some(next) = it.clone().next()
                            && !operators_core::is_job_id(next)
                        {
                            dir = it.next().map(|d| savepoint_dir(a, d)).transpose()?;
                        }
                    }
                    other => id = Some(other.to_string()),
                }
            }
            let id = id.ok_or("`operator cancel` needs a JOBID")?;
            if with_savepoint {
                let answer = client.call(
                    "POST",
                    &format!("/jobs/{id}/savepoints"),
                    Some(json!({"target-directory": dir, "cancel-job": true})),
                )?;
                let location = client.await_savepoint(&id, answer["request-id"].as_str().unwrap_or_default())?;
                print(
                    json,
                    &json!({"jobid": id, "location": location}),
                    format!("Cancelled job {id}. Savepoint stored in {location}."),
                );
            } else {
                client.call("PATCH", &format!("/jobs/{id}?mode=cancel"), None)?;
                print(json, &json!({"jobid": id}), format!("Cancelled job {id}."));
            }
        }
        "stop" => {
            let (mut dir, mut drain, mut id) = (None, false, None);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-p" | "--savepointPath" => dir = Some(savepoint_dir(a, &flag_value(&mut it, a)?)?),
                    "-d" | "--drain" => drain = true,
                    other => id = Some(other.to_string()),
                }
            }
            let id = id.ok_or("`operator stop` needs a JOBID")?;
            let answer = client.call(
                "POST",
                &format!("/jobs/{id}/stop"),
                Some(json!({"targetDirectory": dir, "drain": drain})),
            )?;
            let location = client.await_savepoint(&id, answer["request-id"].as_str().unwrap_or_default())?;
            print(json, &json!({"jobid": id, "location": location}), format!("Savepoint completed. Path: {location}"));
        }
        "savepoint" => {
            let id = it.next().ok_or("`operator savepoint` needs a JOBID")?.clone();
            let dir = it.next().map(|d| savepoint_dir("operator savepoint JOBID DIR", d)).transpose()?;
            let answer = client.call(
                "POST",
                &format!("/jobs/{id}/savepoints"),
                Some(json!({"target-directory": dir, "cancel-job": false})),
            )?;
            let location = client.await_savepoint(&id, answer["request-id"].as_str().unwrap_or_default())?;
            print(json, &json!({"jobid": id, "location": location}), format!("Savepoint completed. Path: {location}"));
        }
        other => return Err(format!("unknown command `{other}`\n\n{CLI_HELP}")),
    }
    Ok(())
}
