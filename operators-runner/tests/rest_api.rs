//! The Flink-shaped REST API of the runner: read a running job, take a savepoint, stop
//! with a savepoint, restart from it, and lose or repeat no row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Running, hidden_files, json_rows, operator, write_csv_input};

fn base_url(line: &str) -> String {
    line.split("listening on ").nth(1).unwrap().trim().to_string()
}

fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().body_mut().read_json().unwrap()
}

fn post(url: &str, body: Value) -> (u16, Value) {
    let mut resp = ureq::post(url).send_json(body).unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap())
}

fn poll_savepoint(base: &str, jid: &str, request: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = get(&format!("{base}/jobs/{jid}/savepoints/{request}"));
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

fn args<'a>(input: &'a Path, out: &'a Path, ck: &'a Path, sp: &'a Path) -> Vec<&'a str> {
    vec![
        "--job.name",
        "rest-job",
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
        r#"{"id":"BigInt","name":"String","score":"Double"}"#,
        "--stream.rate.limit",
        "20000",
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
        "--stream.checkpoint.dir",
        ck.to_str().unwrap(),
        "--savepoint.dir",
        sp.to_str().unwrap(),
        "--progress",
        "off",
    ]
}

#[test]
fn read_savepoint_stop_and_restart_without_loss_or_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, ck, sp) =
        (tmp.path().join("in"), tmp.path().join("out"), tmp.path().join("ck"), tmp.path().join("sp"));
    let expected = write_csv_input(&input, 20, 5000, false);

    let mut cmd = operator(tmp.path());
    cmd.args(args(&input, &out, &ck, &sp)).args(["--rest.port", "0"]);
    let mut job = Running::start(cmd);
    let base = base_url(&job.wait_for_line("REST API listening on", Duration::from_secs(30)));

    // The API listens before the job's tasks are up, so the job may still be CREATED
    // (Flink's state for that moment) on the first look.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut overview = get(&format!("{base}/jobs/overview"));
    while overview["jobs"][0]["state"] == "CREATED" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        overview = get(&format!("{base}/jobs/overview"));
    }
    let jid = overview["jobs"][0]["jid"].as_str().unwrap().to_string();
    assert_eq!(overview["jobs"][0]["name"], "rest-job");
    assert_eq!(overview["jobs"][0]["state"], "RUNNING");
    assert!(overview["jobs"][0]["start-time"].as_i64().unwrap() > 0);
    assert_eq!(get(&format!("{base}/jobs"))["jobs"], json!([{"id": jid, "status": "RUNNING"}]));

    // Checkpoints complete; the statistics have Flink's shape.
    let deadline = Instant::now() + Duration::from_secs(30);
    let checkpoints = loop {
        let c = get(&format!("{base}/jobs/{jid}/checkpoints"));
        if c["counts"]["completed"].as_u64().unwrap() >= 2 {
            break c;
        }
        assert!(Instant::now() < deadline, "no checkpoints: {c}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(checkpoints["latest"]["completed"]["id"].as_u64().unwrap() >= 2);
    assert!(checkpoints["summary"]["end_to_end_duration"]["p99"].is_number());
    assert!(checkpoints["history"].as_array().unwrap().len() >= 2);
    let config = get(&format!("{base}/jobs/{jid}/checkpoints/config"));
    assert_eq!(config["mode"], "exactly_once");
    assert_eq!(config["interval"], 200);

    let details = get(&format!("{base}/jobs/{jid}"));
    let vertices = details["vertices"].as_array().unwrap();
    assert_eq!(vertices.len(), 3, "source, rate limit, sink: {details}");
    let source = &vertices[0];
    assert_eq!(source["id"], "source");
    assert!(source["metrics"]["write-records"].as_u64().unwrap() > 0);
    let sink = vertices.iter().find(|v| v["id"] == "sink").unwrap();
    assert!(sink["metrics"]["read-records"].as_u64().unwrap() > 0);
    assert_eq!(details["plan"]["type"], "STREAMING");

    // A target directory with a scheme is refused with Flink's 400 and `errors`, naming
    // the field and the value; the job runs on, and nothing is made of it locally
    // (taken as a path, `gs://b/sp` was `./gs:/b/sp`).
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for (path, field, value, cancel) in [
        ("savepoints", "target-directory", "gs://b/sp", false),
        ("savepoints", "target-directory", "s3://bucket/sp", true),
        ("stop", "targetDirectory", "gs://b/sp", false),
    ] {
        let request = json!({field: value, "cancel-job": cancel, "drain": false});
        let mut resp = agent.post(&format!("{base}/jobs/{jid}/{path}")).send_json(&request).unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{request}");
        let answer: Value = resp.body_mut().read_json().unwrap();
        let error = answer["errors"][0].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("`{field}`")) && error.contains(&format!("`{value}`")) && error.contains("file://"),
            "{request}: {answer}"
        );
    }
    assert_eq!(get(&format!("{base}/jobs/{jid}"))["state"], "RUNNING");
    assert!(!tmp.path().join("gs:").exists() && !tmp.path().join("s3:").exists());

    // A savepoint while the job runs on.
    let (code, body) =
        post(&format!("{base}/jobs/{jid}/savepoints"), json!({"target-directory": sp, "cancel-job": false}));
    assert_eq!(code, 202);
    let location = poll_savepoint(&base, &jid, body["request-id"].as_str().unwrap());
    assert!(Path::new(&location).join("_metadata").is_file());
    assert_eq!(get(&format!("{base}/jobs/{jid}"))["state"], "RUNNING");

    // Stop with a savepoint, midway through the input.
    let (code, body) = post(&format!("{base}/jobs/{jid}/stop"), json!({"drain": false, "targetDirectory": sp}));
    assert_eq!(code, 202);
    let stopped_at = poll_savepoint(&base, &jid, body["request-id"].as_str().unwrap());
    let (status, log) = job.finish(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("stopped with savepoint {stopped_at}")), "{log}");
    let midway = json_rows(&out).len();
    assert!(midway > 0 && midway < expected.len(), "stopped midway: {midway}");

    // Restart from the savepoint and read what is left.
    let mut resumed = args(&input, &out, &ck, &sp);
    resumed.extend(["--savepoint", &stopped_at, "--source.watch.type", "PROCESS_ONCE"]);
    let o = operator(tmp.path()).args(&resumed).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let rows = json_rows(&out);
    let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "no row twice");
    assert_eq!(ids, expected.keys().copied().collect::<BTreeSet<_>>(), "no row lost");
    assert!(hidden_files(&out).is_empty());
}

#[test]
fn the_bearer_token_is_required_and_patch_cancels() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, ck, sp) =
        (tmp.path().join("in"), tmp.path().join("out"), tmp.path().join("ck"), tmp.path().join("sp"));
    write_csv_input(&input, 2, 1000, false);
    let mut cmd = operator(tmp.path());
    cmd.args(args(&input, &out, &ck, &sp)).args(["--rest.port", "0", "--rest.token", "s3cret"]);
    let mut job = Running::start(cmd);
    let base = base_url(&job.wait_for_line("REST API listening on", Duration::from_secs(30)));
    let unauthorized = ureq::get(&format!("{base}/jobs")).call();
    assert!(matches!(unauthorized, Err(ureq::Error::StatusCode(401))), "{unauthorized:?}");
    let jobs: Value = ureq::get(&format!("{base}/jobs"))
        .header("Authorization", "Bearer s3cret")
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let jid = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let missing = ureq::get(&format!("{base}/jobs/0000/checkpoints")).header("Authorization", "Bearer s3cret").call();
    assert!(matches!(missing, Err(ureq::Error::StatusCode(404))), "{missing:?}");
    let resp =
        ureq::patch(&format!("{base}/jobs/{jid}")).header("Authorization", "Bearer s3cret").send_empty().unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let (status, log) = job.finish(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(log.contains("job canceled"), "{log}");
}
