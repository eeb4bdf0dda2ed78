//! `operator serve` with its state on HDFS (`testing/services/hdfs.sh`): job records,
//! checkpoints and savepoints under an `hdfs://` state directory, a job writing to HDFS
//! canceled with a savepoint and resubmitted from it (every row once), job records
//! readable by their owner only, a running job resumed under its id after the server is
//! SIGKILLed and started again, and the client's savepoint command to an hdfs:// target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::server::{Server, ids, job_args, wait_rows};
use support::{hdfs_dir, write_csv_input};

/// The permission bits of the file at `path` on the test HDFS.
fn permission(path: &str) -> u16 {
    let url = std::env::var("HDFS_URL").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = hdfs_native::ClientBuilder::new().with_url(&url).build().unwrap();
        client.get_file_info(path).await.unwrap().permission
    })
}

#[test]
fn a_server_with_its_state_on_hdfs_savepoints_resubmits_and_resumes_there() {
    let tmp = tempfile::tempdir().unwrap();
    let root = hdfs_dir("server");
    let state = root.join("state");
    let (input, out) = (tmp.path().join("in"), root.join("out"));
    let expected = write_csv_input(&input, 20, 3000, false);
    let mut server = Server::start(tmp.path(), &state, None);

    let jid = server.run(json!({"programArgsList": job_args("hdfs server job", &input, &out, 5000)}));
    server.wait_checkpoints(&jid, 2);
    // The job's checkpoints are under the state directory on HDFS, by job id.
    let fs = operators_core::fs::for_path(&state).unwrap();
    let checkpoints = state.join("checkpoints").join(&jid).join("hdfs_server_job");
    assert!(fs.list(&checkpoints).unwrap().iter().any(|e| e.name().starts_with("chk-")), "{}", checkpoints.display());
    // The record holds the submission (secrets too): its owner's alone.
    let record = state.join("jobs").join(&jid).join("job.json");
    let (_, record_path) = operators_hdfs::split_url(record.to_str().unwrap()).unwrap();
    assert_eq!(permission(record_path), 0o600, "{}", record.display());

    // Canceled with a savepoint to the default directory, under the state directory.
    let (status, body) = server.call("POST", &format!("/jobs/{jid}/savepoints"), Some(json!({"cancel-job": true})));
    assert_eq!(status, 202, "{body}");
    let location = server.savepoint(&jid, body["request-id"].as_str().unwrap());
    assert!(location.starts_with(state.join("savepoints").to_str().unwrap()), "{location}");
    server.wait_state(&jid, "CANCELED", Duration::from_secs(30));
    let (midway, _) = ids(&out);
    assert!(midway > 0 && midway < expected.len(), "canceled midway: {midway}");

    // Resubmitted from the savepoint on HDFS: a new job, slowed so that a server kill
    // lands while it runs; resumed under its id from the records on HDFS.
    let args = job_args("hdfs server job", &input, &out, 3000);
    let again = server.run(json!({"programArgsList": args, "savepointPath": location}));
    server.wait_checkpoints(&again, 1);
    server.kill();
    server = Server::start(tmp.path(), &state, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.get("/jobs")["jobs"].clone();
        if status == json!([{"id": again, "status": "RUNNING"}]) {
            break;
        }
        assert!(Instant::now() < deadline, "not resumed: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.log(&again).contains("resumed after a server restart"));
    // The client command, with an hdfs:// target of its own.
    let target = root.join("client-savepoints");
    let o = server.client(tmp.path(), &["savepoint", &again, target.to_str().unwrap()]);
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let location = printed.trim().strip_prefix("Savepoint completed. Path: ").unwrap_or_else(|| panic!("{printed}"));
    assert!(location.starts_with(target.to_str().unwrap()), "{location}");
    assert!(fs.is_file(&std::path::Path::new(location).join("_metadata")).unwrap(), "{location}");
    wait_rows(&out, &expected, "across the savepoint and a server kill");
    let (status, _) = server.call("PATCH", &format!("/jobs/{again}?mode=cancel"), None);
    assert_eq!(status, 202);
    server.wait_state(&again, "CANCELED", Duration::from_secs(30));
    drop(server);
    let _ = fs.remove_dir_all(&root);
}
