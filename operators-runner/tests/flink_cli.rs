//! Flink 1.20's own command-line client against `operator serve`, as a platform that
//! manages a Flink session cluster with `bin/flink` drives it: `flink list`, `flink
//! savepoint`, `flink stop -p` (stop with a savepoint), `flink cancel`, and a job
//! resubmitted from the CLI's savepoint over REST that finishes with every row exactly
//! once. The client is the real one (`org.apache.flink.client.cli.CliFrontend` of
//! flink-dist 1.20.0, from PyPI's `apache-flink-libraries`), installed by
//! `testing/services/flink-client.sh`, whose wrapper `FLINK_CLIENT` names. It calls the
//! REST API under `/v1/…`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::{Server, ids, job_args, wait_rows};
use support::write_csv_input;

/// The script that installs the client and prints its wrapper's path.
const SCRIPT: &str = "testing/services/flink-client.sh";

/// A JVM start and a few REST calls; generous, for a loaded machine.
const CLI_TIMEOUT: Duration = Duration::from_secs(180);

/// The wrapper in `FLINK_CLIENT` (default: where `flink-client.sh` installs it in this
/// checkout), or a failure saying how to install it (a missing client is a failed test,
/// never a skipped one).
fn flink_client() -> PathBuf {
    let how = format!(
        "install Flink 1.20's command-line client with `{SCRIPT}` (or `testing/services/start-all.sh`) \
         and set FLINK_CLIENT to the wrapper it prints (`{SCRIPT} path`)"
    );
    let path = match std::env::var_os("FLINK_CLIENT").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/services/flink-client/bin/flink"),
    };
    match std::fs::metadata(&path).map(|m| executable(&m)) {
        Ok(true) => path,
        Ok(false) => panic!("FLINK_CLIENT={} is not an executable file: {how}", path.display()),
        Err(e) => panic!("FLINK_CLIENT={}: {e}: {how}", path.display()),
    }
}

#[cfg(unix)]
fn executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    m.is_file() && m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(m: &std::fs::Metadata) -> bool {
    m.is_file()
}

/// What one run of the CLI printed.
struct Printed {
    stdout: String,
    stderr: String,
}

/// The real `flink` command-line client pointed at one server (`-m host:port`).
struct Flink {
    bin: PathBuf,
    address: String,
    cwd: PathBuf,
    log: PathBuf,
}

impl Flink {
    fn new(server: &Server, cwd: &Path) -> Self {
        Self {
            bin: flink_client(),
            address: server.base.trim_start_matches("http://").trim_end_matches('/').to_string(),
            cwd: cwd.to_path_buf(),
            log: cwd.join("flink-client.log"),
        }
    }

    /// `flink <action> -m <server> <args…>`, to its end; panics, with what it printed and
    /// its log, unless it succeeds.
    fn run(&self, action: &str, args: &[&str]) -> Printed {
        let n = std::fs::read_dir(&self.cwd).unwrap().count();
        let (out, err) = (self.cwd.join(format!("flink-{n}.out")), self.cwd.join(format!("flink-{n}.err")));
        let mut child = Command::new(&self.bin)
            .arg(action)
            .args(["-m", &self.address])
            .args(args)
            .current_dir(&self.cwd)
            .env("FLINK_CLIENT_LOG", &self.log)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({SCRIPT}): {e}", self.bin.display()));
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let printed = Printed {
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        };
        let ok = status.is_some_and(|s| s.success());
        if !ok {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            panic!(
                "`flink {action} -m {} {}` {}\nstdout:\n{}\nstderr:\n{}\nclient log (tail):\n{}",
                self.address,
                args.join(" "),
                match status {
                    Some(s) => format!("failed: {s}"),
                    None => format!("did not end within {CLI_TIMEOUT:?}"),
                },
                printed.stdout,
                printed.stderr,
                tail.join("\n")
            );
        }
        printed
    }
}

/// The path after `Savepoint completed. Path: ` in what the CLI printed.
fn savepoint_path(printed: &Printed) -> String {
    printed
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no savepoint path printed:\n{}\nstderr:\n{}", printed.stdout, printed.stderr))
        .trim()
        .to_string()
}

/// A savepoint location as a local path (Flink prints `file:` URIs for local paths).
fn local(location: &str) -> PathBuf {
    let path = location.strip_prefix("file://").or_else(|| location.strip_prefix("file:")).unwrap_or(location);
    PathBuf::from(path)
}

#[test]
fn flinks_own_client_lists_savepoints_stops_and_cancels_and_the_job_resumes_exactly_once() {
    // Fails here, before anything starts, when the client is not installed.
    flink_client();
    let tmp = tempfile::tempdir().unwrap();
    let (state, sp) = (tmp.path().join("state"), tmp.path().join("sp"));
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    let (other_input, other_out) = (tmp.path().join("in-other"), tmp.path().join("out-other"));
    // 100 000 rows at 1 000 rows a second: still reading when the CLI stops it, although
    // each CLI command takes a JVM start and a few calls. Both jobs watch their input
    // directory, so they run until they are stopped or canceled.
    let expected = write_csv_input(&input, 20, 5000, false);
    write_csv_input(&other_input, 2, 1000, false);
    let cli_dir = tmp.path().join("cli");
    std::fs::create_dir_all(&cli_dir).unwrap();
    let server = Server::start(tmp.path(), &state, None);
    let flink = Flink::new(&server, &cli_dir);

    let jid = server.run(json!({"programArgsList": job_args("flink-cli-job", &input, &out, 1000)}));
    let other = server.run(json!({"programArgsList": job_args("flink-cli-other", &other_input, &other_out, 0)}));
    server.wait_checkpoints(&jid, 1);
    server.wait_checkpoints(&other, 1);

    // `flink list`: both running jobs, by id and name.
    let listed = flink.run("list", &[]).stdout;
    for (id, name) in [(&jid, "flink-cli-job"), (&other, "flink-cli-other")] {
        let line = listed
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("job {id} not listed:\n{listed}"));
        assert!(line.contains(&format!(" : {name} (RUNNING)")), "{line}\n{listed}");
    }
    assert!(listed.contains("Running/Restarting Jobs"), "{listed}");

    // `flink savepoint <jid> <dir>`: a savepoint in the directory; the job runs on.
    let printed = flink.run("savepoint", &[jid.as_str(), sp.to_str().unwrap()]);
    assert!(printed.stdout.contains(&format!("Triggering savepoint for job {jid}.")), "{}", printed.stdout);
    let first = local(&savepoint_path(&printed));
    assert!(first.starts_with(&sp), "{} is under {}", first.display(), sp.display());
    assert!(first.join("_metadata").is_file(), "{}: {}", first.display(), printed.stdout);
    assert_eq!(server.state(&jid), "RUNNING");

    // `flink stop -p <dir> <jid>`: stopped with a savepoint, midway.
    let printed = flink.run("stop", &["-p", sp.to_str().unwrap(), jid.as_str()]);
    assert!(
        printed.stdout.contains(&format!("Suspending job \"{jid}\" with a CANONICAL savepoint.")),
        "{}",
        printed.stdout
    );
    let location = savepoint_path(&printed);
    let stopped_at = local(&location);
    assert_ne!(stopped_at, first, "a savepoint of its own");
    assert!(stopped_at.starts_with(&sp) && stopped_at.join("_metadata").is_file(), "{}", printed.stdout);
    server.wait_state(&jid, "FINISHED", Duration::from_secs(60));
    let (midway, _) = ids(&out);
    assert!(midway < expected.len(), "stopped midway: {midway} of {} rows", expected.len());

    // Resubmitted over REST from the path the CLI printed, bounded: every row once.
    let mut args = job_args("flink-cli-job", &input, &out, 0);
    args.extend(["--source.watch.type".into(), "PROCESS_ONCE".into()]);
    let again = server.run(json!({"programArgsList": args, "savepointPath": location}));
    assert_ne!(again, jid);
    server.wait_state(&again, "FINISHED", Duration::from_secs(120));
    wait_rows(&out, &expected, "resubmitted from the savepoint of `flink stop -p`");

    // `flink cancel <jid>`: the other job ends CANCELED.
    assert_eq!(server.state(&other), "RUNNING");
    let printed = flink.run("cancel", &[other.as_str()]);
    assert!(printed.stdout.contains(&format!("Cancelled job {other}.")), "{}", printed.stdout);
    server.wait_state(&other, "CANCELED", Duration::from_secs(60));

    // And `flink list` now shows no running job.
    let listed = flink.run("list", &["-r"]).stdout;
    assert!(listed.contains("No running jobs."), "{listed}");
}
