//! Unit tests of the sink's parts that need no server: bulk bodies, the meaning of
//! answers, retry delays, and the settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use elasticsearch::http::StatusCode;

use super::config::{Backoff, BackoffKind, EsConfig, SyncMode, redact};
use super::retry::{Decision, classify, reason_of};
use super::service::{StatusClass, Writer, classify_status, error_text, typeless};
use super::sink::EsSink;

const KEY: &str = "sink.es.server";
const MODES: [SyncMode; 3] = [SyncMode::Incremental, SyncMode::Finite, SyncMode::Full];

fn config() -> EsConfig {
    EsConfig::parse(KEY, "127.0.0.1:9200").unwrap()
}

fn sink(mode: SyncMode) -> EsSink {
    EsSink::new(config(), "people", "id", mode)
}

/// A writer without servers: enough to build bodies, which never touches the network.
fn writer(settings: EsSink) -> Writer {
    Writer::new(&settings, Vec::new())
}

fn prefix(w: &Writer) -> String {
    String::from_utf8(w.build_action_prefix()).unwrap()
}

fn body(w: &Writer) -> String {
    String::from_utf8(w.buf.clone()).unwrap()
}

// ---- request building ----

#[test]
fn full_mode_indexes() {
    let w = writer(sink(SyncMode::Full));
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","_id":"#);
    assert_eq!(w.action_prefix, w.build_action_prefix());
    // A version is written into the document, not into the action, without external versioning.
    let w = writer(sink(SyncMode::Full).with_version("1586959594"));
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","_id":"#);
}

#[test]
fn full_mode_with_external_versioning_sends_the_version() {
    let w = writer(sink(SyncMode::Full).with_version("1586959594").with_external_versioning(true));
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","version":1586959594,"version_type":"external_gte","_id":"#);
    let w = writer(sink(SyncMode::Full).with_version(" 42 ").with_external_versioning(true));
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","version":42,"version_type":"external_gte","_id":"#);
    // Without an integer version there is nothing to compare (`validate` refuses this).
    let w = writer(sink(SyncMode::Full).with_version("v1").with_external_versioning(true));
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","_id":"#);
}

#[test]
fn update_modes_update_with_retry_on_conflict() {
    for mode in [SyncMode::Incremental, SyncMode::Finite] {
        let w = writer(sink(mode));
        assert_eq!(prefix(&w), r#"{"update":{"_index":"people","retry_on_conflict":5,"_id":"#, "{mode:?}");
        let w = writer(sink(mode).with_retry_on_conflict(0).with_version("7"));
        assert_eq!(prefix(&w), r#"{"update":{"_index":"people","retry_on_conflict":0,"_id":"#, "{mode:?}");
    }
}

#[test]
fn doc_type_is_sent_until_the_cluster_is_typeless() {
    let mut w = writer(sink(SyncMode::Full).with_doc_type("doc"));
    assert!(w.typed);
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","_type":"doc","_id":"#);
    // What `probe` does on Elasticsearch 7+ or OpenSearch.
    w.typed = false;
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","_id":"#);

    let w = writer(sink(SyncMode::Full).with_doc_type("doc").with_version("7").with_external_versioning(true));
    assert_eq!(
        prefix(&w),
        r#"{"index":{"_index":"people","_type":"doc","version":7,"version_type":"external_gte","_id":"#
    );
    let w = writer(sink(SyncMode::Incremental).with_doc_type("doc"));
    assert_eq!(prefix(&w), r#"{"update":{"_index":"people","_type":"doc","retry_on_conflict":5,"_id":"#);
    let w = writer(sink(SyncMode::Finite).with_doc_type("_doc"));
    assert_eq!(prefix(&w), r#"{"update":{"_index":"people","_type":"_doc","retry_on_conflict":5,"_id":"#);

    // An empty type is no type.
    let w = writer(sink(SyncMode::Full).with_doc_type(""));
    assert!(!w.typed);
    assert_eq!(prefix(&w), r#"{"index":{"_index":"people","_id":"#);
}

#[test]
fn full_mode_body() {
    let mut w = writer(sink(SyncMode::Full).with_version("1586959594"));
    w.add("1", br#"{"name":"a"}"#);
    w.add("x\"y", b"{}");
    let first =
        concat!(r#"{"index":{"_index":"people","_id":"1"}}"#, "\n", r#"{"name":"a","version":1586959594}"#, "\n");
    let second = concat!(r#"{"index":{"_index":"people","_id":"x\"y"}}"#, "\n", r#"{"version":1586959594}"#, "\n");
    assert_eq!(body(&w), format!("{first}{second}"));
    assert_eq!(w.items.len(), 2);
    assert_eq!(w.items[0].lines, 0..first.len());
    assert_eq!(w.items[1].lines, first.len()..first.len() + second.len());
    assert_eq!(w.id_of(&w.items[0]), "1");
    assert_eq!(w.id_of(&w.items[1]), "x\"y");
    assert_eq!(w.doc_of(&w.items[0]), r#"{"name":"a","version":1586959594}"#);
    assert_eq!(w.doc_of(&w.items[1]), r#"{"version":1586959594}"#);
    assert_eq!((w.items[1].attempts, w.items[1].conflicts), (0, 0));
}

#[test]
fn full_mode_body_without_version() {
    let mut w = writer(sink(SyncMode::Full));
    w.add("1", br#"{"n":1}"#);
    assert_eq!(body(&w), concat!(r#"{"index":{"_index":"people","_id":"1"}}"#, "\n", r#"{"n":1}"#, "\n"));
}

#[test]
fn incremental_mode_body() {
    let mut w = writer(sink(SyncMode::Incremental).with_version("v1").with_version_column("ts"));
    w.add("1", br#"{"name":"a"}"#);
    assert_eq!(
        body(&w),
        concat!(
            r#"{"update":{"_index":"people","retry_on_conflict":5,"_id":"1"}}"#,
            "\n",
            r#"{"doc":{"name":"a","ts":"v1"},"doc_as_upsert":true}"#,
            "\n"
        )
    );
    assert_eq!(w.doc_of(&w.items[0]), r#"{"name":"a","ts":"v1"}"#);
}

#[test]
fn finite_mode_body_has_no_version() {
    let mut w = writer(sink(SyncMode::Finite).with_version("1586959594"));
    w.add("1", br#"{"name":"a"}"#);
    assert_eq!(
        body(&w),
        concat!(
            r#"{"update":{"_index":"people","retry_on_conflict":5,"_id":"1"}}"#,
            "\n",
            r#"{"doc":{"name":"a"}}"#,
            "\n"
        )
    );
    assert_eq!(w.doc_of(&w.items[0]), r#"{"name":"a"}"#);
}

#[test]
fn full_by_actions() {
    let mut w = writer(sink(SyncMode::Full).with_bulk(2, 1 << 20, Duration::from_secs(60)));
    assert!(!w.is_full());
    w.add("1", br#"{"n":1}"#);
    assert!(!w.is_full());
    w.add("2", br#"{"n":2}"#);
    assert!(w.is_full());
}

#[test]
fn full_by_bytes() {
    // `{"index":{"_index":"people","_id":"1"}}\n{"n":1}\n`
    let one = 48;
    let mut w = writer(sink(SyncMode::Full).with_bulk(1000, one, Duration::from_secs(60)));
    w.add("1", br#"{"n":1}"#);
    assert_eq!(w.buf.len(), one);
    assert!(w.is_full());

    let mut w = writer(sink(SyncMode::Full).with_bulk(1000, one + 1, Duration::from_secs(60)));
    w.add("1", br#"{"n":1}"#);
    assert!(!w.is_full());
    w.add("2", br#"{"n":2}"#);
    assert!(w.is_full());

    // Limits of 0 are raised to 1: an empty buffer is never full.
    let w = writer(sink(SyncMode::Full).with_bulk(0, 0, Duration::from_secs(60)));
    assert!(!w.is_full());
}

// ---- the answer of one bulk item ----

#[test]
fn item_2xx_is_written() {
    for mode in MODES {
        for external in [false, true] {
            for status in [200, 201, 299] {
                assert_eq!(classify(status, mode, external, 0, 5), Decision::Written, "{status} {mode:?}");
                assert_eq!(classify(status, mode, external, 5, 5), Decision::Written, "{status} {mode:?}");
            }
        }
    }
}

#[test]
fn item_429_and_5xx_are_retried_in_every_mode() {
    for mode in MODES {
        for external in [false, true] {
            for status in [429, 500, 502, 503, 599] {
                assert_eq!(classify(status, mode, external, 0, 5), Decision::RetryBusy, "{status} {mode:?}");
                // Conflict retries have nothing to do with them.
                assert_eq!(classify(status, mode, external, 5, 5), Decision::RetryBusy, "{status} {mode:?}");
            }
        }
    }
}

#[test]
fn item_429_is_resent_retries_times_then_fails() {
    let backoff = Backoff { retries: 3, ..Backoff::default() };
    // What `flush` does with an item answered 429 every time.
    let (mut sent, mut attempts) = (0, 0);
    loop {
        sent += 1;
        assert_eq!(classify(429, SyncMode::Full, false, 0, 5), Decision::RetryBusy);
        attempts += 1;
        if backoff.exhausted(attempts) {
            break;
        }
    }
    assert_eq!((sent, attempts), (4, 4));
}

#[test]
fn item_404_is_skipped_in_finite_mode_only() {
    assert_eq!(classify(404, SyncMode::Finite, false, 0, 5), Decision::SkippedMissing);
    assert_eq!(classify(404, SyncMode::Finite, false, 5, 5), Decision::SkippedMissing);
    assert_eq!(classify(404, SyncMode::Incremental, false, 0, 5), Decision::DeadLetter);
    assert_eq!(classify(404, SyncMode::Full, false, 0, 5), Decision::DeadLetter);
    assert_eq!(classify(404, SyncMode::Full, true, 0, 5), Decision::DeadLetter);
}

#[test]
fn item_409_in_full_mode() {
    // A newer version is in the index.
    assert_eq!(classify(409, SyncMode::Full, true, 0, 5), Decision::SkippedStale);
    assert_eq!(classify(409, SyncMode::Full, true, 0, 0), Decision::SkippedStale);
    // Without external versioning an index action has no conflict to retry.
    assert_eq!(classify(409, SyncMode::Full, false, 0, 5), Decision::DeadLetter);
}

#[test]
fn item_409_on_an_update_is_retried_up_to_retry_on_conflict() {
    for mode in [SyncMode::Incremental, SyncMode::Finite] {
        for external in [false, true] {
            assert_eq!(classify(409, mode, external, 0, 5), Decision::RetryConflict, "{mode:?}");
            // The last conflict retry allowed, then one more.
            assert_eq!(classify(409, mode, external, 4, 5), Decision::RetryConflict, "{mode:?}");
            assert_eq!(classify(409, mode, external, 5, 5), Decision::DeadLetter, "{mode:?}");
            assert_eq!(classify(409, mode, external, 0, 0), Decision::DeadLetter, "{mode:?}");
        }
    }
    // What `flush` does with an update answered 409 every time: sent 1 + 2 times.
    let (mut sent, mut conflicts) = (1, 0);
    while classify(409, SyncMode::Incremental, false, conflicts, 2) == Decision::RetryConflict {
        conflicts += 1;
        sent += 1;
    }
    assert_eq!((sent, conflicts), (3, 2));
}

#[test]
fn other_item_answers_are_dead_letters() {
    for mode in MODES {
        for external in [false, true] {
            // 0: an item without status.
            for status in [0, 100, 199, 300, 400, 401, 403, 405, 408, 413, 428, 430, 499, 600] {
                assert_eq!(classify(status, mode, external, 0, 5), Decision::DeadLetter, "{status} {mode:?}");
            }
        }
    }
}

// ---- the answer of a whole request ----

fn status_class(code: u16) -> StatusClass {
    classify_status(StatusCode::from_u16(code).unwrap())
}

#[test]
fn request_statuses() {
    for code in [200, 201, 204, 299] {
        assert_eq!(status_class(code), StatusClass::Success, "{code}");
    }
    for code in [401, 403] {
        assert_eq!(status_class(code), StatusClass::Refused, "{code}");
    }
    for code in [429, 500, 502, 503, 504, 599] {
        assert_eq!(status_class(code), StatusClass::Busy, "{code}");
    }
    for code in [100, 300, 301, 304, 400, 404, 405, 409, 413, 600] {
        assert_eq!(status_class(code), StatusClass::Rejected, "{code}");
    }
}

// ---- retry decisions ----

#[test]
fn backoff_defaults() {
    assert_eq!(
        Backoff::default(),
        Backoff { enabled: true, kind: BackoffKind::Constant, delay: Duration::from_secs(60), retries: 5 }
    );
    assert_eq!(Backoff::default().max_retries(), 5);
}

#[test]
fn constant_backoff() {
    let b = Backoff { kind: BackoffKind::Constant, delay: Duration::from_millis(250), ..Backoff::default() };
    for attempt in [0, 1, 2, 3, 10, 17, u32::MAX] {
        assert_eq!(b.delay_for(attempt), Duration::from_millis(250), "{attempt}");
    }
}

#[test]
fn exponential_backoff_doubles_up_to_2_pow_16() {
    let b = Backoff { kind: BackoffKind::Exponential, delay: Duration::from_millis(100), ..Backoff::default() };
    assert_eq!(b.delay_for(0), Duration::from_millis(100));
    assert_eq!(b.delay_for(1), Duration::from_millis(100));
    assert_eq!(b.delay_for(2), Duration::from_millis(200));
    assert_eq!(b.delay_for(3), Duration::from_millis(400));
    assert_eq!(b.delay_for(4), Duration::from_millis(800));
    assert_eq!(b.delay_for(11), Duration::from_millis(102_400));
    // The factor stops at 2^16.
    assert_eq!(b.delay_for(17), Duration::from_millis(6_553_600));
    assert_eq!(b.delay_for(18), Duration::from_millis(6_553_600));
    assert_eq!(b.delay_for(u32::MAX), Duration::from_millis(6_553_600));
    // And the product saturates.
    let huge = Backoff { delay: Duration::MAX, ..b };
    assert_eq!(huge.delay_for(2), Duration::MAX);
}

#[test]
fn max_retries_and_exhaustion() {
    let b = Backoff { retries: 5, ..Backoff::default() };
    assert_eq!(b.max_retries(), 5);
    assert!(!b.exhausted(0));
    assert!(!b.exhausted(1));
    // The last retry allowed, then one more.
    assert!(!b.exhausted(5));
    assert!(b.exhausted(6));

    let off = Backoff { enabled: false, ..b };
    assert_eq!(off.max_retries(), 0);
    assert!(!off.exhausted(0));
    assert!(off.exhausted(1));

    let none = Backoff { retries: 0, ..b };
    assert_eq!(none.max_retries(), 0);
    assert!(none.exhausted(1));
}

// ---- helpers ----

#[test]
fn reasons_of_item_errors() {
    let error = serde_json::json!({
        "type": "mapper_parsing_exception",
        "reason": "failed to parse field [age]",
        "caused_by": { "type": "number_format_exception", "reason": "For input string: \"x\"" }
    });
    assert_eq!(
        reason_of(&Some(error)),
        ("mapper_parsing_exception".to_string(), "failed to parse field [age]".to_string())
    );
    assert_eq!(reason_of(&Some(serde_json::json!({}))), ("error".to_string(), String::new()));
    assert_eq!(reason_of(&Some(serde_json::json!({ "type": 3, "reason": 4 }))), ("error".to_string(), String::new()));
    assert_eq!(reason_of(&Some(serde_json::json!("boom"))), ("error".to_string(), "\"boom\"".to_string()));
    assert_eq!(reason_of(&None), ("error".to_string(), String::new()));
}

#[test]
fn error_text_is_trimmed_cut_and_redacted() {
    assert_eq!(error_text(b"  {\"error\":\"x\"}\n"), r#"{"error":"x"}"#);
    assert_eq!(error_text(b""), "");
    assert_eq!(error_text(b"\xffok"), "\u{fffd}ok");
    assert_eq!(error_text("a".repeat(500).as_bytes()), "a".repeat(500));
    assert_eq!(error_text("a".repeat(501).as_bytes()), format!("{}…", "a".repeat(500)));
    // Cut at 500 characters, not bytes.
    assert_eq!(error_text("é".repeat(500).as_bytes()), "é".repeat(500));
    assert_eq!(error_text("é".repeat(501).as_bytes()), format!("{}…", "é".repeat(500)));
    assert_eq!(
        error_text(b"cannot reach http://elastic:hunter2@es:9200/_bulk?password=pw&x=1"),
        "cannot reach http://elastic:****@es:9200/_bulk?password=****&x=1"
    );
}

#[test]
fn typeless_clusters() {
    let info = |number: &str| serde_json::json!({ "version": { "number": number } });
    assert!(!typeless(&info("6.8.23")));
    assert!(typeless(&info("7.0.0")));
    assert!(typeless(&info("7.17.4")));
    assert!(typeless(&info("8.15.0")));
    assert!(!typeless(&info("garbage")));
    for number in ["1.3.0", "2.11.0"] {
        let opensearch = serde_json::json!({ "version": { "number": number, "distribution": "opensearch" } });
        assert!(typeless(&opensearch), "{number}");
    }
    let es6 = serde_json::json!({ "version": { "number": "6.8.0", "distribution": "elasticsearch" } });
    assert!(!typeless(&es6));
    // An answer without a version is taken as an old cluster.
    assert!(!typeless(&serde_json::json!({})));
    assert!(!typeless(&serde_json::Value::Null));
}

#[test]
fn sync_modes_parse() {
    let key = "sink.es.sync.type";
    assert_eq!(SyncMode::parse(key, "incremental").unwrap(), SyncMode::Incremental);
    assert_eq!(SyncMode::parse(key, "FINITE").unwrap(), SyncMode::Finite);
    assert_eq!(SyncMode::parse(key, " Full\n").unwrap(), SyncMode::Full);
    assert_eq!(
        SyncMode::parse(key, " Upsert ").unwrap_err().to_string(),
        "invalid setting `sink.es.sync.type`: unknown sync type `upsert`; expected incremental, finite or full"
    );
    assert_eq!(
        SyncMode::parse(key, "").unwrap_err().to_string(),
        "invalid setting `sink.es.sync.type`: unknown sync type ``; expected incremental, finite or full"
    );
    assert!(SyncMode::Incremental.writes_version());
    assert!(SyncMode::Full.writes_version());
    assert!(!SyncMode::Finite.writes_version());
}

fn nodes(c: &EsConfig) -> Vec<&str> {
    c.nodes().iter().map(|u| u.as_str()).collect()
}

#[test]
fn hosts_parse() {
    let c = EsConfig::parse(KEY, "127.0.0.1:9200, es-2:9201 ,,https://es.example:9243").unwrap();
    assert_eq!(nodes(&c), ["http://127.0.0.1:9200/", "http://es-2:9201/", "https://es.example:9243/"]);
    assert_eq!(c.key, KEY);
    assert_eq!(
        format!("{c:?}"),
        concat!(
            r#"EsConfig { nodes: ["http://127.0.0.1:9200/", "http://es-2:9201/", "https://es.example:9243/"], "#,
            r#"auth: "none", timeout: 60s }"#
        )
    );
}

#[test]
fn credentials_in_urls_are_taken_out() {
    let c = EsConfig::parse(KEY, "https://elastic:hunter2@es.example:9243,es-2:9200").unwrap();
    assert_eq!(nodes(&c), ["https://es.example:9243/", "http://es-2:9200/"]);
    let debug = format!("{c:?}");
    assert_eq!(
        debug,
        r#"EsConfig { nodes: ["https://es.example:9243/", "http://es-2:9200/"], auth: "basic", timeout: 60s }"#
    );
    assert!(!debug.contains("hunter2") && !debug.contains("elastic"), "{debug}");
    // The clients get the servers without credentials too.
    let urls: Vec<String> = c.clients().unwrap().into_iter().map(|n| n.url).collect();
    assert_eq!(urls, ["https://es.example:9243/", "http://es-2:9200/"]);
}

#[test]
fn a_password_without_user_leaves_the_url_too() {
    let c = EsConfig::parse(KEY, "https://:hunter2@es.example:9243").unwrap();
    assert_eq!(nodes(&c), ["https://es.example:9243/"]);
    assert_eq!(c.basic_auth(), Some(("", "hunter2")));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn user_info_is_percent_decoded() {
    let c = EsConfig::parse(KEY, "https://el%40stic:p%40ss+word@es.example:9243").unwrap();
    assert_eq!(c.basic_auth(), Some(("el@stic", "p@ss+word")));
}

#[test]
fn servers_with_different_credentials_are_refused() {
    let same = EsConfig::parse(KEY, "https://u:p@a:9200,https://u:p@b:9200,c:9200").unwrap();
    assert_eq!(same.basic_auth(), Some(("u", "p")));
    let e = EsConfig::parse(KEY, "https://u:p@a:9200,https://u:q@b:9200").unwrap_err().to_string();
    assert!(e.contains("sink.es.server") && e.contains("different credentials"), "{e}");
    assert!(!e.contains(":q@"), "{e}");
}

#[test]
fn debug_never_shows_credentials() {
    let c = config().with_basic_auth("elastic", "hunter2").with_request_timeout(Duration::from_millis(1500));
    assert_eq!(format!("{c:?}"), r#"EsConfig { nodes: ["http://127.0.0.1:9200/"], auth: "basic", timeout: 1.5s }"#);
    let c = config().with_api_key("id:hunter2");
    assert_eq!(format!("{c:?}"), r#"EsConfig { nodes: ["http://127.0.0.1:9200/"], auth: "api key", timeout: 60s }"#);
    // The sink shows its settings with them.
    let debug = format!("{:?}", EsSink::new(c, "people", "id", SyncMode::Full));
    assert!(debug.contains(r#"auth: "api key""#) && !debug.contains("hunter2"), "{debug}");
}

#[test]
fn bad_hosts_are_refused_naming_the_key() {
    let e = |servers: &str| EsConfig::parse(KEY, servers).unwrap_err().to_string();
    let none = "invalid setting `sink.es.server`: no server given; expected host:port[,host:port...]";
    assert_eq!(e(""), none);
    assert_eq!(e(" , ,"), none);
    assert_eq!(e("ftp://es:21"), "invalid setting `sink.es.server`: `ftp://es:21`: only http and https are supported");
    assert_eq!(
        e("http://elastic:hunter2@es:notaport"),
        concat!(
            "invalid setting `sink.es.server`: `http://elastic:****@es:notaport` is not host:port or a URL: ",
            "invalid port number"
        )
    );
}

#[test]
fn a_bad_ca_certificate_is_refused_naming_the_key() {
    let Err(e) = config().with_ca_certificate(b"not a certificate").clients() else {
        panic!("a CA certificate without PEM block was accepted");
    };
    let e = e.to_string();
    assert!(e.starts_with("invalid setting `sink.es.server`: the CA certificate is not valid PEM: "), "{e}");
}

#[test]
fn redact_masks_passwords() {
    assert_eq!(redact("https://elastic:hunter2@es:9200/_bulk"), "https://elastic:****@es:9200/_bulk");
    assert_eq!(redact("es:9200 api_key=abc def"), "es:9200 api_key=**** def");
    assert_eq!(redact("http://es:9200/"), "http://es:9200/");
}
