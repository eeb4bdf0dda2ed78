//! No secret is printed, logged, served or written where another user can read it: the
//! same credentials passed every way a user can — the command line in both forms, a
//! properties file, the environment, and `programArgs` / `programArgsList` over REST — for
//! the Kafka source and sink, Elasticsearch and the databases, each job failing on its bad
//! credential. Then the dry run, the job's stderr, `/jobs/:id/config`,
//! `/jobs/:id/exceptions`, the job and server logs, the status page and every file under
//! the working and state directories are searched for every value.
//!
//! Needs OpenSearch (`ES_URL`, `testing/services/opensearch.sh`) and MariaDB
//! (`testing/services/mariadb.sh`); Kafka fails at client creation (this build of
//! librdkafka refuses the TLS and OAuth properties), so no broker is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use operators_testkit::es::TestEs;
use serde_json::{Value, json};
use support::server::Server;
use support::{operator, write_csv_input};

/// A value unique to this run, so that a hit cannot come from anything else.
fn value(what: &str) -> String {
    format!("S3cr3t-{what}-{:08x}", std::process::id() ^ 0x5a5a_1234)
}

/// One job failing on a bad credential: its parameters (secrets among them), the secrets
/// to search for, and a text its failure must show (so the credential was really used).
struct Case {
    name: &'static str,
    params: Vec<(String, String)>,
    secrets: Vec<String>,
    failure: &'static str,
}

fn cases(input: &Path, es: &TestEs) -> Vec<Case> {
    let pem = format!("-----BEGIN PRIVATE KEY-----\nMIIE{}\n-----END PRIVATE KEY-----", value("pem"));
    let jaas = value("jaas");
    let kafka_secrets = |prefix: &str| {
        vec![
            (format!("{prefix}.ssl.key.pem"), pem.clone()),
            (format!("{prefix}.ssl.key.password"), value(&format!("{prefix}-keypw"))),
            (format!("{prefix}.ssl.keystore.password"), value(&format!("{prefix}-kspw"))),
            (format!("{prefix}.sasl.password"), value(&format!("{prefix}-saslpw"))),
            (format!("{prefix}.sasl.oauthbearer.client.secret"), value(&format!("{prefix}-oauth"))),
            (
                format!("{prefix}.sasl.jaas.config"),
                format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"{jaas}-{prefix}\";"
                ),
            ),
        ]
    };
    let csv = |sink: &[(&str, &str)]| {
        let mut p: Vec<(String, String)> = [
            ("source.type", "csv"),
            ("source.path", input.to_str().unwrap()),
            ("source.firstLine.schema", "true"),
            ("source.watch.type", "PROCESS_ONCE"),
        ]
        .iter()
        .chain(sink)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        p.push(("job.retry.strategy".into(), "none".into()));
        p
    };
    let secrets_of = |params: &[(String, String)], extra: &[String]| {
        let mut s: Vec<String> =
            params.iter().filter(|(k, _)| operators_core::secret::is_secret_key(k)).map(|(_, v)| v.clone()).collect();
        s.extend(extra.iter().cloned());
        // Each line of a PEM too: a client may echo one.
        s.push(format!("MIIE{}", value("pem")));
        s.push(jaas.clone());
        s
    };
    let (es_user, _) = es.credentials().cloned().unwrap();
    let es_url = es.servers().split(',').next().unwrap().to_string();
    let url_pw = value("es-url");
    let es_with_userinfo = es_url.replacen("://", &format!("://{es_user}:{url_pw}@"), 1);
    let db_url_pw = value("db-url");

    let mut kafka_sink =
        csv(&[("sink.type", "kafka"), ("sink.kafka.brokers", "127.0.0.1:9"), ("sink.kafka.topic", "t")]);
    kafka_sink.extend(kafka_secrets("sink.kafka"));
    kafka_sink.push(("rest.port".into(), "0".into()));
    kafka_sink.push(("rest.token".into(), value("rest-token")));
    let mut kafka_source: Vec<(String, String)> = [
        ("source.type", "kafka"),
        ("source.kafka.brokers", "127.0.0.1:9"),
        ("source.kafka.topic", "t"),
        ("group.id", "g"),
        ("stream.sql.schema", "struct<id:BigInt>"),
        ("sink.type", "stdout"),
        ("job.retry.strategy", "none"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    kafka_source.extend(kafka_secrets("source.kafka"));
    let es_index = es.index("secrets");
    let es_basic = csv(&[
        ("sink.type", "es"),
        ("sink.es.server", &es_url),
        ("sink.es.username", &es_user),
        ("sink.es.password", &value("es-pw")),
        ("sink.es.index", &es_index),
        ("sink.es.sync.type", "incremental"),
        ("sink.es.unique.column", "id"),
    ]);
    let es_in_url = csv(&[
        ("sink.type", "es"),
        ("sink.es.server", &es_with_userinfo),
        ("sink.es.index", &es_index),
        ("sink.es.sync.type", "incremental"),
        ("sink.es.unique.column", "id"),
    ]);
    let es_api_key = csv(&[
        ("sink.type", "es"),
        ("sink.es.server", &es_url),
        ("sink.es.api.key", &format!("operators-key:{}", value("es-apikey"))),
        ("sink.es.index", &es_index),
        ("sink.es.sync.type", "incremental"),
        ("sink.es.unique.column", "id"),
    ]);
    let db_source: Vec<(String, String)> = [
        ("source.type", "jdbc"),
        ("source.db.type", "mysql"),
        ("source.db.url", "jdbc:mysql://127.0.0.1:3306/test"),
        ("source.db.username", "root"),
        ("source.db.password", &value("db-pw")),
        ("source.db.table", "t"),
        ("sink.type", "stdout"),
        ("job.retry.strategy", "none"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let db_sink = csv(&[
        ("sink.type", "jdbc"),
        ("sink.db.url", &format!("mysql://root:{db_url_pw}@127.0.0.1:3306/test")),
        ("sink.db.table", "t"),
    ]);
    vec![
        Case { name: "kafka-sink", secrets: secrets_of(&kafka_sink, &[]), params: kafka_sink, failure: "sink.kafka." },
        Case {
            name: "kafka-source",
            secrets: secrets_of(&kafka_source, &[]),
            params: kafka_source,
            failure: "source.kafka.",
        },
        Case { name: "es-basic", secrets: secrets_of(&es_basic, &[]), params: es_basic, failure: "HTTP 401" },
        Case {
            name: "es-url",
            secrets: secrets_of(&es_in_url, std::slice::from_ref(&url_pw)),
            params: es_in_url,
            failure: "HTTP 401",
        },
        Case { name: "es-api-key", secrets: secrets_of(&es_api_key, &[]), params: es_api_key, failure: "HTTP 401" },
        Case { name: "db-source", secrets: secrets_of(&db_source, &[]), params: db_source, failure: "Access denied" },
        Case {
            name: "db-sink",
            secrets: secrets_of(&db_sink, std::slice::from_ref(&db_url_pw)),
            params: db_sink,
            failure: "Access denied",
        },
    ]
}

/// Fails naming where a secret showed, without printing the secret.
fn assert_hides(what: &str, text: &str, secrets: &[String]) {
    for (i, s) in secrets.iter().enumerate() {
        // Also as JSON and Rust debug output escape it (a PEM's new lines).
        let escaped = s.replace('\n', "\\n").replace('"', "\\\"");
        assert!(
            !text.contains(s.as_str()) && !text.contains(&escaped),
            "{what}: secret #{i} ({} chars, starts `{}`) shows",
            s.len(),
            &s[..6.min(s.len())]
        );
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn assert_files_hide(what: &str, root: &Path, secrets: &[String], except: &[&Path]) {
    for f in files_under(root) {
        if except.contains(&f.as_path()) {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert_hides(&format!("{what}: {}", f.display()), &String::from_utf8_lossy(&bytes), secrets);
    }
}

/// How a user gives the runner its parameters.
#[derive(Debug, Clone, Copy)]
enum Form {
    Spaced,
    Equals,
    PropertiesFile,
    Environment,
}

/// A properties-file value: backslashes and line ends escaped as `java.util.Properties`
/// reads them.
fn properties_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn runner(dir: &Path, case: &Case, form: Form, extra: &[&str]) -> std::process::Command {
    let mut cmd = operator(dir);
    cmd.env("RUST_LOG", "debug");
    match form {
        Form::Spaced => {
            for (k, v) in &case.params {
                cmd.arg(format!("--{k}")).arg(v);
            }
        }
        Form::Equals => {
            for (k, v) in &case.params {
                cmd.arg(format!("--{k}={v}"));
            }
        }
        Form::PropertiesFile => {
            let file = dir.join("job.properties");
            let text: String = case.params.iter().map(|(k, v)| format!("{k}={}\n", properties_value(v))).collect();
            std::fs::write(&file, text).unwrap();
            cmd.arg("--config").arg(&file);
        }
        Form::Environment => {
            for (k, v) in &case.params {
                cmd.env(format!("OPERATOR_{}", k.to_ascii_uppercase().replace(['.', '-'], "_")), v);
            }
        }
    }
    cmd.args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_the_runners_output_or_files() {
    let es = TestEs::start().await.unwrap();
    let top = tempfile::tempdir().unwrap();
    let input = top.path().join("in");
    write_csv_input(&input, 1, 5, true);
    let cases = cases(&input, &es);
    for case in &cases {
        for form in [Form::Spaced, Form::Equals, Form::PropertiesFile, Form::Environment] {
            let what = format!("{} ({form:?})", case.name);
            let dir = top.path().join(format!("{}-{form:?}", case.name));
            std::fs::create_dir_all(&dir).unwrap();
            let dry = tokio::task::block_in_place(|| runner(&dir, case, form, &["--dry-run"]).output().unwrap());
            let dry_text = format!("{}{}", String::from_utf8_lossy(&dry.stdout), String::from_utf8_lossy(&dry.stderr));
            // A database source reads its table's columns while planning, so its dry run
            // may fail on the credential already; either way nothing may show it.
            if dry.status.success() {
                assert!(dry_text.contains("****"), "{what}: the dry run lists the secrets masked: {dry_text}");
            } else {
                assert!(dry_text.contains(case.failure), "{what}: dry run: {dry_text}");
            }
            assert_hides(&format!("{what}: dry run"), &dry_text, &case.secrets);

            let run = tokio::task::block_in_place(|| runner(&dir, case, form, &[]).output().unwrap());
            let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
            assert!(!run.status.success(), "{what}: the bad credential must fail the job: {text}");
            assert!(text.contains(case.failure), "{what}: the failure names `{}`: {text}", case.failure);
            assert_hides(&format!("{what}: run"), &text, &case.secrets);
            let properties = dir.join("job.properties");
            assert_files_hide(&what, &dir, &case.secrets, &[properties.as_path()]);
        }
    }
}

/// The body of a run request in both of Flink's forms.
fn run_bodies(case: &Case) -> Vec<(&'static str, Value)> {
    let list: Vec<String> = case
        .params
        .iter()
        .filter(|(k, _)| !k.starts_with("rest."))
        .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
        .collect();
    // Keys and values alternate; every value quoted, as a user quotes a PEM or a query.
    let quoted: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, a)| if i % 2 == 0 { a.clone() } else { format!("'{}'", a.replace('\'', "")) })
        .collect();
    vec![
        ("programArgsList", json!({ "programArgsList": list })),
        ("programArgs", json!({ "programArgs": quoted.join(" ") })),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_the_servers_answers_logs_or_state() {
    let es = TestEs::start().await.unwrap();
    let top = tempfile::tempdir().unwrap();
    let input = top.path().join("in");
    write_csv_input(&input, 1, 5, true);
    let state = top.path().join("state");
    let token = value("server-token");
    let cases = cases(&input, &es);
    let server = tokio::task::block_in_place(|| Server::start(top.path(), &state, Some(&token)));
    let mut all: Vec<String> = vec![token.clone()];
    let mut jobs = Vec::new();
    for case in &cases {
        // The JAAS text loses its quotes in the programArgs form; it is searched for by its
        // password either way.
        all.extend(case.secrets.iter().cloned());
        for (form, body) in run_bodies(case) {
            let what = format!("{} ({form})", case.name);
            let (status, answer) =
                tokio::task::block_in_place(|| server.call("POST", "/jars/operator.jar/run", Some(body)));
            assert_hides(&format!("{what}: run answer"), &answer.to_string(), &case.secrets);
            assert_eq!(status, 200, "{what}: {answer}");
            let jid = answer["jobid"].as_str().unwrap().to_string();
            jobs.push((what, jid, case));
        }
    }
    for (what, jid, case) in &jobs {
        tokio::task::block_in_place(|| server.wait_state(jid, "FAILED", Duration::from_secs(60)));
        let exceptions = tokio::task::block_in_place(|| server.get(&format!("/jobs/{jid}/exceptions"))).to_string();
        assert!(exceptions.contains(case.failure), "{what}: the exception names `{}`: {exceptions}", case.failure);
        let config = tokio::task::block_in_place(|| server.get(&format!("/jobs/{jid}/config"))).to_string();
        assert!(config.contains("****"), "{what}: {config}");
        for (name, text) in [
            ("config", config),
            ("exceptions", exceptions),
            ("job", tokio::task::block_in_place(|| server.get(&format!("/jobs/{jid}"))).to_string()),
            ("job log", tokio::task::block_in_place(|| server.log(jid))),
        ] {
            assert_hides(&format!("{what}: {name}"), &text, &all);
        }
    }
    for path in ["/jobs/overview", "/jobmanager/log", "/config", "/overview"] {
        let (_, body) = tokio::task::block_in_place(|| server.call("GET", path, None));
        assert_hides(path, &body.to_string(), &all);
    }
    // The status page: the page itself, and what it shows comes from the answers above.
    let page = tokio::task::block_in_place(|| {
        let mut response = support::server::Api::agent().get(&format!("{}/", server.base)).call().unwrap();
        response.body_mut().read_to_string().unwrap()
    });
    assert_hides("status page", &page, &all);

    let (_, stderr) = tokio::task::block_in_place(|| {
        let mut server = server;
        server.kill();
        server.running.finish(Duration::from_secs(10))
    });
    assert!(!stderr.is_empty());
    assert_hides("server stderr", &stderr, &all);

    // Every file the server wrote, but the owner-only job records it needs to resume.
    let mut records = 0;
    let records_dir = state.join("jobs");
    for f in files_under(&state) {
        if f.file_name().is_some_and(|n| n == "job.json") && f.starts_with(&records_dir) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{}: mode {mode:o}", f.display());
            records += 1;
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert_hides(&f.display().to_string(), &String::from_utf8_lossy(&bytes), &all);
    }
    assert_eq!(records, jobs.len(), "one job record per job");
}
