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
            "jdbc:hive2://h:10000/db",
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
