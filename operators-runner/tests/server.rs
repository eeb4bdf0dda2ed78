//! `operator serve`, driven as a data platform drives a Flink session cluster: jobs
//! submitted over `POST /jars/:jarid/run`, listed, canceled with a savepoint and
//! resubmitted from it, many side by side with one failing, behind a token, and resumed
//! under the same id after the server is SIGKILLed. The `operator` client commands
//! against the same server. Every path also under `/v1`, where Flink's own clients call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::server::{Api, SCHEMA, Server, ids, job_args, wait_rows};
use support::write_csv_input;

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn submit_cancel_with_a_savepoint_and_resubmit_from_it_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state, sp) =
        (tmp.path().join("in"), tmp.path().join("out"), tmp.path().join("state"), tmp.path().join("sp"));
    let expected = write_csv_input(&input, 20, 5000, false);
    let server = Server::start(tmp.path(), &state, None);

    let jars = server.get("/jars");
    assert_eq!(jars["files"][0]["id"], "operator.jar");
    assert_eq!(jars["files"][0]["entry"][0]["name"], "com._4paradigm.csp.operator.Main");

    // Refusals create nothing.
    let (status, body) = server.call(
        "POST",
        "/jars/operator.jar/run",
        Some(json!({"programArgs": "--job.name a", "programArgsList": ["--job.name", "a"]})),
    );
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("programArgsList"), "{body}");
    let (status, body) =
        server.call("POST", "/jars/operator.jar/run", Some(json!({"programArgs": "--source.type nosuch"})));
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("source.type"), "{body}");
    let (status, _) = server.call("POST", "/jars/other.jar/run", Some(json!({})));
    assert_eq!(status, 400);
    assert_eq!(server.get("/jobs")["jobs"], json!([]));
    assert_eq!(std::fs::read_dir(state.join("jobs")).unwrap().count(), 0, "no job recorded");

    // The toolkit's call: the entry class as jar id, one quoted programArgs string.
    let program_args = format!(
        "--job.name 'server job' --source.type csv --source.path {} --source.watch.interval 100 \
         --source.watch.settle 50 --source.batch.size 500 --stream.sql.schema.json '{SCHEMA}' \
         --stream.rate.limit 20000 --sink.type file --sink.path {} --stream.checkpoint.mode EXACTLY_ONCE \
         --stream.checkpoint.interval 200 --stream.checkpoint.min.pause 0",
        input.display(),
        out.display()
    );
    let (status, answer) = server.call(
        "POST",
        "/jars/com._4paradigm.csp.operator.Main/run",
        Some(json!({"programArgs": program_args, "entryClass": "com._4paradigm.csp.operator.Main"})),
    );
    assert_eq!(status, 200, "{answer}");
    let jid = answer["jobid"].as_str().unwrap().to_string();
    assert_eq!(jid.len(), 32);
    let overview = server.get("/jobs/overview");
    assert_eq!(overview["jobs"][0]["name"], "server job");
    server.wait_checkpoints(&jid, 2);
    let details = server.get(&format!("/jobs/{jid}"));
    assert!(details["vertices"][0]["metrics"]["write-records"].as_u64().unwrap() > 0, "{details}");

    // Cancel with a savepoint, midway.
    let (status, body) = server.call(
        "POST",
        &format!("/jobs/{jid}/savepoints"),
        Some(json!({"target-directory": sp, "cancel-job": true})),
    );
    assert_eq!(status, 202, "{body}");
    let location = server.savepoint(&jid, body["request-id"].as_str().unwrap());
    let name = Path::new(&location).file_name().unwrap().to_string_lossy().into_owned();
    let suffix = name.strip_prefix(&format!("savepoint-{}-", &jid[..6])).unwrap_or_else(|| panic!("{name}"));
    assert!(suffix.len() == 12 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert!(Path::new(&location).starts_with(&sp));
    server.wait_state(&jid, "CANCELED", Duration::from_secs(30));
    let (midway, _) = ids(&out);
    assert!(midway > 0 && midway < expected.len(), "canceled midway: {midway}");
    assert!(server.log(&jid).contains("submitted"));

    // Resubmitted from the savepoint, as a list, bounded: a new job id, every row once.
    let mut args = job_args("server job", &input, &out, 0);
    args.extend(["--source.watch.type".into(), "PROCESS_ONCE".into()]);
    let again = server.run(json!({"programArgsList": args, "savepointPath": location}));
    assert_ne!(again, jid);
    server.wait_state(&again, "FINISHED", Duration::from_secs(60));
    wait_rows(&out, &expected, "resubmitted from the savepoint");
    let all = server.get("/jobs")["jobs"].as_array().unwrap().len();
    assert_eq!(all, 2);
}

#[test]
fn ten_jobs_side_by_side_one_failing_and_the_client_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let server = Server::start(tmp.path(), &state, None);
    let mut good = Vec::new();
    for i in 0..9 {
        let (input, out) = (tmp.path().join(format!("in{i}")), tmp.path().join(format!("out{i}")));
        let expected = write_csv_input(&input, 2, 300, false);
        let jid = server.run(json!({"programArgsList": job_args(&format!("job {i}"), &input, &out, 0)}));
        good.push((jid, out, expected));
    }
    let bad_input = tmp.path().join("bad");
    std::fs::create_dir_all(&bad_input).unwrap();
    std::fs::write(bad_input.join("broken.csv"), "1,a,1.5\nnot-a-number,b,2\n").unwrap();
    let mut bad_args = job_args("broken", &bad_input, &tmp.path().join("bad-out"), 0);
    bad_args.extend(["--job.retry.strategy".into(), "none".into()]);
    let bad = server.run(json!({"programArgsList": bad_args}));

    server.wait_state(&bad, "FAILED", Duration::from_secs(60));
    let exceptions = server.get(&format!("/jobs/{bad}/exceptions"));
    let root = exceptions["root-exception"].as_str().unwrap();
    assert!(root.contains("broken.csv"), "the failure names the file: {exceptions}");
    assert!(!exceptions["exceptionHistory"]["entries"].as_array().unwrap().is_empty());
    for (jid, out, expected) in &good {
        wait_rows(out, expected, jid);
        assert_eq!(server.state(jid), "RUNNING");
    }
    let cluster = server.get("/overview");
    assert_eq!((cluster["jobs-running"].as_u64(), cluster["jobs-failed"].as_u64()), (Some(9), Some(1)), "{cluster}");

    // The client: list, savepoint, stop, cancel.
    let cwd = tmp.path();
    let listed = stdout(&server.client(cwd, &["list", "-r"]));
    assert!(good.iter().all(|(jid, _, _)| listed.contains(jid.as_str())), "{listed}");
    assert!(!listed.contains(&bad) && listed.contains("job 3") && listed.contains("(RUNNING)"), "{listed}");
    let listed = stdout(&server.client(cwd, &["list", "--json"]));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 10);

    let sp = tmp.path().join("sp");
    let (first, second, third) = (&good[0].0, &good[1].0, &good[2].0);
    let printed = stdout(&server.client(cwd, &["savepoint", first, sp.to_str().unwrap()]));
    let location = printed.trim().strip_prefix("Savepoint completed. Path: ").unwrap_or_else(|| panic!("{printed}"));
    assert!(Path::new(location).join("_metadata").is_file(), "{printed}");
    assert_eq!(server.state(first), "RUNNING");
    let printed = stdout(&server.client(cwd, &["stop", "-p", sp.to_str().unwrap(), second]));
    assert!(printed.starts_with("Savepoint completed. Path: "), "{printed}");
    server.wait_state(second, "FINISHED", Duration::from_secs(30));
    let printed = stdout(&server.client(cwd, &["cancel", third]));
    assert_eq!(printed.trim(), format!("Cancelled job {third}."));
    server.wait_state(third, "CANCELED", Duration::from_secs(30));

    // A client run, with a savepoint from the first job, is a new job.
    let (input, out) = (tmp.path().join("in0"), tmp.path().join("out-run"));
    let mut args: Vec<String> = vec!["run".into(), "-s".into(), location.into(), "--".into()];
    args.extend(job_args("from the client", &input, &out, 0));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let printed = stdout(&server.client(cwd, &args));
    let new = printed.trim().strip_prefix("Job has been submitted with JobID ").unwrap_or_else(|| panic!("{printed}"));
    server.wait_state(new, "RUNNING", Duration::from_secs(10));
    let refused = server.client(cwd, &["cancel", "00000000000000000000000000000000"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404"), "{refused:?}");
}

#[test]
fn the_token_guards_the_api_and_no_secret_reaches_a_log_or_an_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state) = (tmp.path().join("in"), tmp.path().join("out"), tmp.path().join("state"));
    write_csv_input(&input, 1, 10, false);
    let server = Server::start(tmp.path(), &state, Some("tok-5d1e"));
    let anonymous = Api { base: server.base.clone(), token: None };
    assert_eq!(anonymous.call("GET", "/jobs", None).0, 401);
    assert_eq!(anonymous.call("POST", "/jars/operator.jar/run", Some(json!({}))).0, 401);
    let (status, page) = anonymous.call("GET", "/", None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<html"), "the page asks for the token itself");

    let mut args = job_args("with secrets", &input, &out, 0);
    args.extend(["--sink.es.password".into(), "hunter2-very-secret".into()]);
    let jid = server.run(json!({"programArgsList": args}));
    server.wait_checkpoints(&jid, 1);
    let config = server.get(&format!("/jobs/{jid}/config"));
    assert_eq!(config["execution-config"]["user-config"]["sink.es.password"], "****", "{config}");
    assert_eq!(config["execution-config"]["user-config"]["job.name"], "with secrets");
    let log = server.log(&jid);
    assert!(log.contains("sink.es.password"), "the ignored parameter is named: {log}");
    let server_log = server.call("GET", "/jobmanager/log", None).1;
    for text in [config.to_string(), log, server_log.to_string()] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.join("jobs").join(&jid).join("job.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the job record is its owner's only");
    }
    for path in [
        "/jars".to_string(),
        "/jobs/overview".into(),
        format!("/jobs/{jid}"),
        format!("/jobs/{jid}/config"),
        format!("/jobs/{jid}/exceptions"),
        format!("/jobs/{jid}/checkpoints"),
        format!("/jobs/{jid}/log"),
        "/jobmanager/log".into(),
        "/taskmanagers".into(),
        "/overview".into(),
        "/config".into(),
    ] {
        assert_eq!(anonymous.call("GET", &path, None).0, 401, "GET {path}");
    }
    for path in ["/jars/upload".to_string(), format!("/jobs/{jid}/savepoints"), format!("/jobs/{jid}/stop")] {
        assert_eq!(anonymous.call("POST", &path, Some(json!({}))).0, 401, "POST {path}");
    }
    assert_eq!(anonymous.call("PATCH", &format!("/jobs/{jid}?mode=cancel"), None).0, 401);
    assert_eq!(server.state(&jid), "RUNNING");
    // A refused submission names the parameter, not the password beside it.
    let (status, refusal) = server.call(
        "POST",
        "/jars/operator.jar/run",
        Some(json!({"programArgs": "--sink.es.password hunter2-very-secret --source.type nosuch"})),
    );
    assert_eq!(status, 400);
    assert!(refusal.to_string().contains("source.type") && !refusal.to_string().contains("hunter2"), "{refusal}");
    let refused = anonymous.client(tmp.path(), &["list"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("token"), "{refused:?}");
    assert!(stdout(&server.client(tmp.path(), &["list"])).contains(&jid));

    let Server { mut running, .. } = server;
    running.child.kill().unwrap();
    let (_, stderr) = running.finish(Duration::from_secs(10));
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_server_killed_and_started_again_resumes_its_jobs_under_the_same_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut server = Server::start(tmp.path(), &state, None);
    // Three exactly-once jobs, slowed so that the kills land while they run.
    let mut jobs = Vec::new();
    for i in 0..3 {
        let (input, out) = (tmp.path().join(format!("in{i}")), tmp.path().join(format!("out{i}")));
        let expected = write_csv_input(&input, 20, 2000, false);
        let jid = server.run(json!({"programArgsList": job_args(&format!("resumed {i}"), &input, &out, 8000)}));
        jobs.push((jid, out, expected));
    }
    let mut want: Vec<Value> = jobs.iter().map(|(jid, _, _)| json!({"id": jid, "status": "RUNNING"})).collect();
    want.sort_by_key(|j| j["id"].to_string());
    for _ in 0..3 {
        for (jid, _, _) in &jobs {
            server.wait_checkpoints(jid, 1);
        }
        // A random moment after the first checkpoint of each job in this run.
        std::thread::sleep(Duration::from_millis(rand::random_range(100..1500)));
        server.kill();
        server = Server::start(tmp.path(), &state, None);
        // A resumed job is CREATED until its tasks are up: look again while one is.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listed = loop {
            let mut listed = server.get("/jobs")["jobs"].as_array().unwrap().clone();
            listed.sort_by_key(|j| j["id"].to_string());
            if !listed.iter().any(|j| j["status"] == "CREATED") || Instant::now() > deadline {
                break listed;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(listed, want, "resumed under the same ids");
        for (jid, _, _) in &jobs {
            assert!(server.log(jid).contains("resumed after a server restart"));
        }
    }
    for (jid, out, expected) in &jobs {
        wait_rows(out, expected, &format!("job {jid} across server kills"));
        let (status, _) = server.call("PATCH", &format!("/jobs/{jid}?mode=cancel"), None);
        assert_eq!(status, 202);
        server.wait_state(jid, "CANCELED", Duration::from_secs(30));
        // The record follows the job's end (a server killed in between would resume it).
        let record = state.join("jobs").join(jid).join("job.json");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&record).unwrap().contains("\"CANCELED\"") {
            assert!(Instant::now() < deadline, "the record of {jid} still says it runs");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Ended jobs stay ended: a new start resumes nothing.
    server.kill();
    let server = Server::start(tmp.path(), &state, None);
    assert_eq!(server.get("/jobs")["jobs"], json!([]));
}

#[test]
fn every_api_path_answers_also_under_v1_as_flinks_own_clients_call_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state, sp) =
        (tmp.path().join("in"), tmp.path().join("out"), tmp.path().join("state"), tmp.path().join("sp"));
    write_csv_input(&input, 2, 1000, false);
    let server = Server::start(tmp.path(), &state, Some("tok-v1"));
    // The same server, addressed as Flink's command-line and Java REST clients address it.
    let v1 = Api { base: format!("{}/v1", server.base), token: server.token.clone() };
    // A call answered the same, status and body, at the bare path and under `/v1`.
    let same = |method: &str, path: &str, body: Option<Value>| {
        let bare = server.call(method, path, body.clone());
        let versioned = v1.call(method, path, body);
        assert_eq!(versioned, bare, "{method} /v1{path} answers as {method} {path}");
        bare
    };

    // The token guards `/v1` as it guards the bare paths.
    let anonymous = Api { base: server.base.clone(), token: None };
    let anonymous_v1 = Api { base: v1.base.clone(), token: None };
    for (method, path) in [("GET", "/jobs/overview"), ("GET", "/jars"), ("POST", "/jars/operator.jar/run")] {
        let bare = anonymous.call(method, path, Some(json!({})));
        assert_eq!(bare.0, 401, "{method} {path}");
        assert_eq!(anonymous_v1.call(method, path, Some(json!({}))), bare, "{method} /v1{path}");
    }

    // Submitted, watched and savepointed under `/v1` only.
    let jid = v1.run(json!({"programArgsList": job_args("versioned", &input, &out, 0)}));
    assert_eq!(jid.len(), 32);
    v1.wait_checkpoints(&jid, 1);
    for path in ["/jars".to_string(), "/config".into(), "/jobs".into(), format!("/jobs/{jid}/config")] {
        assert_eq!(same("GET", &path, None).0, 200, "GET {path}");
    }
    assert_eq!(same("POST", "/jars/upload", Some(json!({}))).0, 200);
    for path in ["/taskmanagers".to_string(), "/jobmanager/log".into(), format!("/jobs/{jid}/log")] {
        // Bodies that move with the clock or the log: the status only.
        assert_eq!(v1.call("GET", &path, None).0, 200, "GET /v1{path}");
    }

    let trigger = format!("/jobs/{jid}/savepoints");
    let (status, body) = v1.call("POST", &trigger, Some(json!({"target-directory": sp, "cancel-job": false})));
    assert_eq!(status, 202, "{body}");
    let request = body["request-id"].as_str().unwrap().to_string();
    let location = v1.savepoint(&jid, &request);
    assert!(Path::new(&location).join("_metadata").is_file(), "{location}");
    let (status, answer) = same("GET", &format!("/jobs/{jid}/savepoints/{request}"), None);
    assert_eq!(status, 200);
    assert_eq!(answer["operation"]["location"], location.as_str());
    assert_eq!(v1.state(&jid), "RUNNING");

    // Not found is the same 404 with the same body under `/v1`.
    let unknown = "00000000000000000000000000000000";
    for path in [
        format!("/jobs/{unknown}"),
        format!("/jobs/{unknown}/config"),
        format!("/jobs/{unknown}/checkpoints"),
        format!("/jobs/{unknown}/exceptions"),
        format!("/jobs/{jid}/savepoints/nosuch"),
    ] {
        assert_eq!(same("GET", &path, None).0, 404, "GET {path}");
    }
    assert_eq!(same("POST", &format!("/jobs/{unknown}/savepoints"), Some(json!({}))).0, 404);
    assert_eq!(same("PATCH", &format!("/jobs/{unknown}?mode=cancel"), None).0, 404);

    // Stop with a savepoint under `/v1`, as `flink stop -p` does.
    let (status, body) =
        v1.call("POST", &format!("/jobs/{jid}/stop"), Some(json!({"drain": false, "targetDirectory": sp})));
    assert_eq!(status, 202, "{body}");
    let stopped_at = v1.savepoint(&jid, body["request-id"].as_str().unwrap());
    assert!(Path::new(&stopped_at).join("_metadata").is_file(), "{stopped_at}");
    v1.wait_state(&jid, "FINISHED", Duration::from_secs(30));

    // Once the job has ended its answers hold still, so whole bodies compare.
    for path in [
        "/jobs".to_string(),
        "/jobs/overview".into(),
        "/overview".into(),
        format!("/jobs/{jid}/checkpoints"),
        format!("/jobs/{jid}/exceptions"),
    ] {
        assert_eq!(same("GET", &path, None).0, 200, "GET {path}");
    }
    let details = |api: &Api| {
        let mut d = api.get(&format!("/jobs/{jid}"));
        // The time of the answer itself.
        d.as_object_mut().unwrap().remove("now");
        d
    };
    assert_eq!(details(&v1), details(&server.api));
    assert_eq!(details(&v1)["state"], "FINISHED");
}
