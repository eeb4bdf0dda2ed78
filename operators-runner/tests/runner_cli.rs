//! The runner's command line: every refusal names the key and nothing runs; `--help`,
//! `--dry-run` and the precedence of environment, command line and properties file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{operator, run, stderr};

fn refused(args: &[&str], key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(&format!("`{key}`")), "{args:?}: the message names `{key}`: {err}");
    assert!(!err.contains("started"), "{args:?}: nothing ran: {err}");
    assert!(!dir.path().join("checkpoints").exists(), "{args:?}: nothing was created");
}

#[test]
fn refusals_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().to_str().unwrap();
    // An unknown key, with a suggestion.
    refused(&["--source.tpye", "csv"], "source.tpye");
    // A missing required key.
    refused(&["--sink.type", "file"], "source.type");
    refused(&["--source.type", "csv", "--sink.type", "file", "--sink.path", input], "source.path");
    refused(&["--source.type", "csv", "--source.path", input, "--sink.type", "file"], "sink.path");
    // Values of the wrong type.
    refused(&["--source.type", "csv", "--stream.parallelism", "many"], "stream.parallelism");
    refused(&["--source.type", "csv", "--stream.checkpoint.enable", "yes"], "stream.checkpoint.enable");
    refused(&["--source.type", "xml"], "source.type");
    refused(&["--source.type", "csv", "--source.watch.type", "SOMETIMES"], "source.watch.type");
    // Combinations that cannot work.
    refused(
        &[
            "--source.type",
            "parquet",
            "--source.path",
            input,
            "--sink.type",
            "es",
            "--sink.es.server",
            "localhost:9200",
            "--sink.es.index",
            "i",
        ],
        "sink.es.unique.column",
    );
    refused(
        &[
            "--source.type",
            "kafka_deduplication",
            "--source.kafka.brokers",
            "127.0.0.1:9",
            "--source.kafka.topic",
            "t",
            "--group.id",
            "g",
            "--sink.kafka.brokers",
            "127.0.0.1:9",
            "--sink.kafka.topic",
            "o",
        ],
        "unique.keys",
    );
    refused(
        &[
            "--source.type",
            "parquet",
            "--source.path",
            input,
            "--sink.type",
            "es",
            "--sink.es.server",
            "localhost:9200",
            "--sink.es.index",
            "i",
            "--sink.es.unique.column",
            "id",
        ],
        "source.watch.type",
    );
    refused(
        &[
            "--source.type",
            "jdbc",
            "--source.db.type",
            "hive",
            "--source.db.url",
            "postgres://h/db",
            "--source.db.table",
            "t",
        ],
        "source.db.type",
    );
    // Bad settings inside components are named with the toolkit's key too.
    refused(
        &[
            "--source.type",
            "csv",
            "--source.path",
            input,
            "--sink.type",
            "file",
            "--sink.path",
            input,
            "--stream.checkpoint.interval",
            "0",
        ],
        "stream.checkpoint.interval",
    );
    refused(
        &[
            "--source.type",
            "csv",
            "--source.path",
            input,
            "--sink.type",
            "file",
            "--sink.path",
            input,
            "--stream.checkpoint.timeout",
            "100",
            "--stream.checkpoint.min.pause",
            "1000",
        ],
        "stream.checkpoint.timeout",
    );
    refused(
        &[
            "--source.type",
            "csv",
            "--source.path",
            input,
            "--sink.type",
            "file",
            "--sink.path",
            input,
            "--source.field.delimiter",
            "ab",
        ],
        "source.field.delimiter",
    );
    refused(
        &[
            "--source.type",
            "csv",
            "--source.path",
            input,
            "--sink.type",
            "file",
            "--sink.path",
            input,
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema",
            "struct<id BigInt>",
        ],
        "stream.sql.schema",
    );
    refused(
        &[
            "--source.type",
            "csv",
            "--source.path",
            input,
            "--sink.type",
            "file",
            "--sink.path",
            input,
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema",
            "struct<id:BigInt>",
            "--stream.sql",
            "select nope from t1",
        ],
        "stream.sql",
    );
    refused(
        &["--source.type", "csv", "--source.path", "/no/such/dir", "--sink.type", "file", "--sink.path", input],
        "source.path",
    );
    refused(
        &[
            "--source.type",
            "csv",
            "--source.path",
            input,
            "--sink.type",
            "file",
            "--sink.path",
            input,
            "--source.bad.records",
            "dead-letter",
        ],
        "dead.letter.path",
    );
}

#[test]
fn help_lists_every_parameter() {
    let out = run(std::path::Path::new("."), &["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in
        ["source.type", "stream.checkpoint.mode", "sink.es.bulk.flush.backoff.delay", "unique.data.ttl.in.minute"]
    {
        assert!(text.contains(key), "{key}");
    }
    assert!(text.contains("[CSP StreamJob]") && text.contains("[AT_LEAST_ONCE]") && text.contains("[feas]"));
}

#[test]
fn dry_run_prints_the_resolved_configuration_and_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let out = run(
        dir.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            input.to_str().unwrap(),
            "--sink.type",
            "file",
            "--sink.path",
            dir.path().join("out").to_str().unwrap(),
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema",
            "struct<id:BigInt>",
            "--sink.merge.enable",
            "true",
            "--source.db.password",
            "hunter2",
            "--rest.token",
            "t0ken",
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("source.type = csv"), "{text}");
    assert!(
        text.contains("source.db.password = ****") && !text.contains("hunter2") && !text.contains("t0ken"),
        "{text}"
    );
    for op in ["source [source", "sql [transform", "merge [transform", "sink [sink"] {
        assert!(text.contains(op), "{op}: {text}");
    }
    assert!(!dir.path().join("checkpoints").exists(), "a dry run runs nothing");
}

#[test]
fn environment_beats_command_line_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("application.properties"),
        "source.type=csv\nsource.path=/from/file\njob.name=file name\nsink.type=stdout\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("cli")).unwrap();
    std::fs::create_dir(dir.path().join("env")).unwrap();
    let out = operator(dir.path())
        .args(["--source.path", "cli", "--job.name", "cli name", "--dry-run"])
        .env("OPERATOR_SOURCE_PATH", "env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("source.path = env    (environment OPERATOR_SOURCE_PATH)"), "{text}");
    assert!(text.contains("job.name = cli name    (command line)"), "{text}");
    assert!(text.contains("sink.type = stdout    (file"), "{text}");
}

/// The names in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_dry_run_resolves_validates_and_prints_and_changes_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let input = cwd.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // Every directory the job would write lies under `fresh`, which does not exist yet.
    let fresh = cwd.path().join("fresh");
    let under = |name: &str| fresh.join(name).to_str().unwrap().to_string();
    let (out, ck, late, dead, state, sp) =
        (under("out"), under("ck"), under("late"), under("dead"), under("state"), under("sp"));
    let o = run(
        cwd.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            input.to_str().unwrap(),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--sink.type",
            "file",
            "--sink.path",
            &out,
            "--stream.checkpoint.dir",
            &ck,
            "--stream.state.dir",
            &state,
            "--savepoint.dir",
            &sp,
            "--source.bad.records",
            "dead-letter",
            "--dead.letter.path",
            &dead,
            "--stream.sql.enable",
            "true",
            "--stream.sql.schema.json",
            r#"{"id":"BigInt","ts":"Timestamp","v":"BigInt"}"#,
            "--stream.sql",
            "select id, window_start, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)",
            "--stream.sql.watermark",
            "ts,200ms",
            "--stream.sql.late.path",
            &late,
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    for op in ["sink [sink", "late-records [sink", "dead-letters [sink"] {
        assert!(text.contains(op), "the graph has {op}: {text}");
    }
    assert!(!fresh.exists(), "a dry run created {:?}", names(&fresh));
    assert_eq!(names(cwd.path()), ["in"], "a dry run created nothing in the working directory either");
}

#[test]
fn an_unwritable_sink_directory_is_refused_when_the_job_starts_not_by_a_dry_run() {
    let cwd = tempfile::tempdir().unwrap();
    let input = cwd.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let file = cwd.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    // A directory below a regular file can never be created.
    let out = file.join("out");
    let ck = cwd.path().join("ck");
    let args = [
        "--source.type",
        "csv",
        "--source.path",
        input.to_str().unwrap(),
        "--source.watch.type",
        "PROCESS_ONCE",
        "--sink.type",
        "file",
        "--sink.path",
        out.to_str().unwrap(),
        "--stream.checkpoint.dir",
        ck.to_str().unwrap(),
        "--progress",
        "off",
    ];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let o = run(cwd.path(), &dry);
    assert!(o.status.success(), "a dry run does no I/O, so it cannot tell: {}", stderr(&o));
    let o = run(cwd.path(), &args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`sink.path`") && err.contains("cannot create") && err.contains("plain-file"), "{err}");
    assert!(!err.contains("started"), "nothing ran: {err}");
    assert!(!ck.exists(), "the refused job created no checkpoint directory");
}

#[test]
fn directories_with_a_scheme_are_refused_before_anything_runs_never_made_local() {
    let cwd = tempfile::tempdir().unwrap();
    let input = cwd.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let input = input.to_str().unwrap();
    let base = [
        "--source.type",
        "csv",
        "--source.watch.type",
        "PROCESS_ONCE",
        "--sink.type",
        "file",
        "--progress",
        "off",
        "--stream.sql.schema.json",
        r#"{"id":"BigInt","ts":"Timestamp","v":"BigInt"}"#,
    ];
    let none: &[&str] = &[];
    let dead_letters: &[&str] = &["--source.bad.records", "dead-letter"];
    let windowed: &[&str] = &[
        "--stream.sql.enable",
        "true",
        "--stream.sql",
        "select id, window_start, count(*) as cnt from t1 group by id, tumble(ts, interval '1' second)",
        "--stream.sql.watermark",
        "ts,200ms",
    ];
    // (hdfs:// is a store for all but the local working state: runner_hdfs.rs.)
    let cases: Vec<(&str, &str, &[&str])> = vec![
        ("stream.checkpoint.dir", "s3://bucket/checkpoints", none),
        ("stream.state.dir", "gs://bucket/state", none),
        ("stream.state.dir", "hdfs:///tmp/state", none),
        ("savepoint.dir", "s3a://b/savepoints", none),
        ("savepoint", "gs://b/savepoints/savepoint-1", none),
        ("sink.path", "s3://bucket/out", none),
        ("dead.letter.path", "abfs://c/dead", dead_letters),
        ("stream.sql.late.path", "viewfs://cluster/late", windowed),
    ];
    for (key, value, extra) in &cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--source.path", input]);
        if *key != "sink.path" {
            args.extend(["--sink.path", "out"]);
        }
        args.extend_from_slice(extra);
        let flag = format!("--{key}");
        args.extend([flag.as_str(), *value]);
        let o = run(cwd.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(&format!("`{key}`")) && err.contains(&format!("`{value}`")), "{key}: {err}");
        assert!(err.contains("local path") && err.contains("file://"), "{key}: the supported forms: {err}");
        assert_eq!(value.starts_with("hdfs:"), err.contains("directory on this machine"), "{key}: {err}");
        assert!(!err.contains("started"), "{key}: nothing ran: {err}");
        // The bug this guards against: `s3://x` taken as the relative path `./s3:/x`.
        assert_eq!(names(cwd.path()), ["in"], "{key}: nothing was created");
    }
}

#[test]
fn a_file_url_is_a_local_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let input = cwd.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,x\n2,y\n").unwrap();
    let out = cwd.path().join("out");
    let ck = cwd.path().join("ck");
    let o = run(
        cwd.path(),
        &[
            "--source.type",
            "csv",
            "--source.path",
            &format!("file://{}", input.display()),
            "--source.watch.type",
            "PROCESS_ONCE",
            "--stream.sql.schema",
            "struct<id:BigInt,name:String>",
            "--sink.type",
            "file",
            "--sink.path",
            &format!("file://{}", out.display()),
            "--stream.checkpoint.dir",
            &format!("file://localhost{}", ck.display()),
            "--progress",
            "off",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(support::json_rows(&out).len(), 2);
    assert!(names(cwd.path()).iter().all(|n| !n.starts_with("file:")), "{:?}", names(cwd.path()));
}

#[test]
fn client_commands_refuse_a_savepoint_directory_with_a_scheme_before_calling_the_server() {
    let cwd = tempfile::tempdir().unwrap();
    let job = "0123456789abcdef0123456789abcdef";
    // Port 9 (discard): were the server called, the error would be that it cannot be reached.
    for (args, named) in [
        (vec!["stop", "-m", "127.0.0.1:9", "-p", "s3://b/sp", job], "`-p`"),
        (vec!["cancel", "-m", "127.0.0.1:9", "-s", "s3://b/sp", job], "`-s`"),
        (vec!["savepoint", "-m", "127.0.0.1:9", job, "s3://b/sp"], "DIR"),
        (vec!["run", "-m", "127.0.0.1:9", "-s", "s3://b/sp", "--", "--source.type", "csv"], "`-s`"),
    ] {
        let o = run(cwd.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(named) && err.contains("`s3://b/sp`") && err.contains("file://"), "{args:?}: {err}");
        assert!(!err.contains("cannot reach"), "{args:?}: refused before the server was called: {err}");
    }
}
