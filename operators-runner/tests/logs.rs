//! The log on stderr as a service manager, `nohup` or a container runtime sees it: a file,
//! where no terminal escape sequence belongs; and `--log.format json`, one JSON object a
//! line for log shippers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{operator, write_csv_input};

/// A one-file CSV job into JSON-lines files, under `dir`. `hadoop.home.dir` makes the
/// runner say where the HDFS client's configuration comes from: a log line with fields
/// every run writes.
fn job_args(dir: &Path) -> Vec<String> {
    write_csv_input(&dir.join("in"), 1, 20, true);
    [
        "--source.type",
        "csv",
        "--source.path",
        dir.join("in").to_str().unwrap(),
        "--source.firstLine.schema",
        "true",
        "--source.watch.type",
        "PROCESS_ONCE",
        "--sink.type",
        "file",
        "--sink.path",
        dir.join("out").to_str().unwrap(),
        "--hadoop.home.dir",
        "/opt/hadoop",
    ]
    .map(String::from)
    .to_vec()
}

/// `cmd` with stderr into `log` at info level, colour not turned off by the environment.
fn logged(mut cmd: Command, log: &Path) -> Command {
    cmd.env("RUST_LOG", "info").env_remove("NO_COLOR").stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(log).unwrap());
    cmd
}

/// Runs `operator serve` with stderr into `log` until it has logged that it listens.
fn serve_until_listening(dir: &Path, log: &Path, extra: &[&str]) -> String {
    let mut cmd = operator(dir);
    cmd.args(["serve", "--rest.port", "0", "--state.dir", dir.join("state").to_str().unwrap()]).args(extra);
    let mut child = logged(cmd, log).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("job server listening") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("job server listening"), "the server logged nothing within 30 s:\n{text}");
    text
}

fn assert_no_escapes(what: &str, text: &str) {
    assert!(!text.contains('\u{1b}'), "{what}: escape sequences in a log written to a file:\n{text}");
}

#[test]
fn runner_and_server_logs_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runner.log");
    let status = logged(operator(dir.path()), &log).args(job_args(dir.path())).status().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains(" INFO ") && text.contains("hadoop.home.dir"), "the runner logged its line:\n{text}");
    assert_no_escapes("runner", &text);

    let text = serve_until_listening(dir.path(), &dir.path().join("server.log"), &[]);
    assert!(text.contains(" INFO "), "{text}");
    assert_no_escapes("server", &text);
}

/// Every log line is a JSON object with a timestamp, a level and a message.
fn assert_json_lines(what: &str, text: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: `{l}` is not JSON: {e}")))
        .collect();
    assert!(!lines.is_empty(), "{what}: no JSON log line in:\n{text}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{what}: {l}");
        assert!(l["fields"]["message"].is_string(), "{what}: {l}");
    }
    // Nothing else on stderr looks like a log line in text form.
    assert!(
        !text.lines().any(|l| l.contains(" INFO ") || l.contains(" WARN ")),
        "{what}: a text log line among the JSON:\n{text}"
    );
    assert_no_escapes(what, text);
    lines
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runner.log");
    let status =
        logged(operator(dir.path()), &log).args(job_args(dir.path())).args(["--log.format", "json"]).status().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    let lines = assert_json_lines("runner", &text);
    assert!(lines.iter().any(|l| l["level"] == "INFO" && l["fields"]["key"] == "hadoop.home.dir"), "{text}");

    let text = serve_until_listening(dir.path(), &dir.path().join("server.log"), &["--log.format", "json"]);
    let lines = assert_json_lines("server", &text);
    assert!(
        lines.iter().any(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains("job server listening"))),
        "{text}"
    );

    // A format that does not exist is refused, naming the parameter.
    let out = operator(dir.path()).args(job_args(dir.path())).args(["--log.format", "xml"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("log.format"), "{err}");
}
