//! The Elasticsearch sink through the official client over real HTTP against the real
//! OpenSearch in `ES_URL` (`testing/services/opensearch.sh`): the three sync modes,
//! versions, the collision refusal, auth, failover to a live node, dead letters, external
//! versioning, the clean-up, restarts. Against the test server of operators-testkit only
//! what a real server cannot be made to do: 429/503/409 on chosen items, a dropped
//! connection after applying a bulk, a slow answer, nodes of a cluster going down,
//! Elasticsearch 6's `_type` rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use operators_core::builtins::{CommittedOutput, FaultInjector, GeneratorSource, MapTransform, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::operator::{OperatorContext, SinkFactory, TaskInfo};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::elasticsearch::{Backoff, BackoffKind, EsConfig, EsSink, EsStats, SyncMode};
use operators_testkit::changelog::changes;
use operators_testkit::es::{EsFault, EsServerConfig, TestEs};
use serde_json::json;

fn quick_backoff() -> Backoff {
    Backoff { enabled: true, kind: BackoffKind::Constant, delay: Duration::from_millis(20), retries: 5 }
}

fn config(es: &TestEs) -> EsConfig {
    let mut c = EsConfig::parse("sink.es.server", es.servers()).unwrap();
    if let Some((u, p)) = es.credentials() {
        c = c.with_basic_auth(u, p);
    }
    c.with_request_timeout(Duration::from_secs(5))
}

fn sink(es: &TestEs, index: &str, mode: SyncMode) -> EsSink {
    EsSink::new(config(es), index, "id", mode)
        .with_bulk(300, 5 << 20, Duration::from_secs(60))
        .with_backoff(quick_backoff())
}

fn job(name: &str) -> JobConfig {
    JobConfig::new(name).with_restart(RestartStrategy::None)
}

fn checkpointed(name: &str, dir: &std::path::Path, restarts: u32) -> JobConfig {
    JobConfig::new(name)
        .with_restart(RestartStrategy::fixed_delay(restarts, Duration::from_millis(20)))
        .with_checkpointing(CheckpointConfig::new(dir).with_interval(Duration::from_millis(50)))
}

async fn run(es_sink: EsSink, rows: u64, name: &str) {
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(rows).with_batch_size(250)).sink("es", es_sink);
    p.run(job(name)).await.unwrap();
}

fn counts_add_up(stats: &EsStats) {
    let g = EsStats::get;
    assert_eq!(
        g(&stats.rows),
        g(&stats.written)
            + g(&stats.skipped_missing)
            + g(&stats.skipped_stale)
            + g(&stats.dead_lettered)
            + g(&stats.abandoned),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_indexes_every_row_with_the_version() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("full");
    let s = sink(&es, &index, SyncMode::Full).with_version("1586959594");
    let stats = s.stats();
    run(s, 2_000, "full").await;
    let docs = es.documents(&index).await.unwrap();
    assert_eq!(docs.len(), 2_000);
    let d = &docs["1234"];
    assert_eq!(d, &json!({"id": 1234, "key": 234, "value": 617.0, "name": "name-234", "version": 1586959594}));
    assert_eq!(EsStats::get(&stats.written), 2_000);
    counts_add_up(&stats);

    // Full overwrites: a second run with other content replaces whole documents.
    let s = EsSink::new(config(&es), &index, "id", SyncMode::Full).with_version("1586959595");
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10))
        .transform("narrow", MapTransform::new(|b| Ok(Some(b.project(&[0, 3]).unwrap()))))
        .sink("es", s);
    p.run(job("full-2")).await.unwrap();
    assert_eq!(es.get(&index, "3").await.unwrap().unwrap(), json!({"id": 3, "name": "name-3", "version": 1586959595}));
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_merges_into_existing_documents_and_inserts_new_ones() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("incremental");
    es.put(&index, "5", json!({"id": 5, "name": "old", "extra": "kept"})).await.unwrap();
    let s = sink(&es, &index, SyncMode::Incremental).with_version("7");
    let stats = s.stats();
    run(s, 100, "incremental").await;
    let docs = es.documents(&index).await.unwrap();
    assert_eq!(docs.len(), 100);
    assert_eq!(
        docs["5"],
        json!({"id": 5, "name": "name-5", "extra": "kept", "key": 5, "value": 2.5, "version": 7}),
        "merged: the field the rows do not have stays"
    );
    assert_eq!(docs["77"]["version"], json!(7));
    counts_add_up(&stats);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finite_updates_existing_documents_only_and_counts_the_missing() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("finite");
    for id in [3, 10, 42] {
        es.put(&index, &id.to_string(), json!({"id": id, "name": "old", "extra": 1})).await.unwrap();
    }
    // The version is not written in finite mode.
    let s = sink(&es, &index, SyncMode::Finite).with_version("9");
    let stats = s.stats();
    run(s, 100, "finite").await;
    let docs = es.documents(&index).await.unwrap();
    assert_eq!(docs.len(), 3, "no document created");
    assert_eq!(docs["42"], json!({"id": 42, "name": "name-42", "extra": 1, "key": 42, "value": 21.0}));
    assert_eq!(EsStats::get(&stats.written), 3);
    assert_eq!(EsStats::get(&stats.skipped_missing), 97);
    counts_add_up(&stats);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_column_that_collides_with_the_data_is_refused() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("collision");
    let s = sink(&es, &index, SyncMode::Full).with_version_column("name").with_version("1");
    let err = s.check_schema(&GeneratorSource::schema()).unwrap_err().to_string();
    assert!(err.contains("sink.es.version.column") && err.contains("`name`"), "{err}");
    // And a job that writes such rows fails before writing anything.
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10)).sink("es", s);
    let err = p.run(job("collision")).await.unwrap_err().to_string();
    assert!(err.contains("sink.es.version.column"), "{err}");
    assert_eq!(es.count(&index).await.unwrap(), 0);
    // Without a version there is nothing to collide with.
    let s = sink(&es, &index, SyncMode::Full).with_version_column("name");
    s.check_schema(&GeneratorSource::schema()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_api_key_work_and_wrong_credentials_fail_without_showing_them() {
    let es = TestEs::start().await.unwrap();
    let (user, password) = es.credentials().cloned().unwrap();
    let index = es.index("auth");
    run(sink(&es, &index, SyncMode::Full), 50, "auth").await;
    assert_eq!(es.count(&index).await.unwrap(), 50);

    let wrong = EsConfig::parse("sink.es.server", es.servers()).unwrap().with_basic_auth(&user, "wrong-pw-123");
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(5)).sink("es", EsSink::new(wrong, &index, "id", SyncMode::Full));
    let err = p.run(job("auth-wrong")).await.unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("credentials"), "{err}");
    assert!(!err.contains("wrong-pw-123") && !err.contains(&password), "{err}");

    // Without credentials the secured cluster refuses too: the sink does send them.
    let none = EsConfig::parse("sink.es.server", es.servers()).unwrap();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(5)).sink("es", EsSink::new(none, &index, "id", SyncMode::Full));
    let err = p.run(job("auth-none")).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");

    // Credentials in the server URL are taken out of it and never shown.
    let url = es.servers().replace("http://", &format!("http://{user}:{password}@"));
    let c = EsConfig::parse("sink.es.server", &url).unwrap();
    assert!(!format!("{c:?}").contains(&password), "{c:?}");
    run(EsSink::new(c, &index, "id", SyncMode::Full), 60, "auth-url").await;
    assert_eq!(es.count(&index).await.unwrap(), 60);

    let c = EsConfig::parse("sink.es.server", es.servers()).unwrap().with_api_key(&es.api_key());
    run(EsSink::new(c, &index, "id", SyncMode::Full), 70, "api-key").await;
    assert_eq!(es.count(&index).await.unwrap(), 70);
    es.delete_index(&index).await.unwrap();
}

/// A loopback address where nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_a_live_node_when_the_first_servers_are_down() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("failover-real");
    let servers = format!("{},{},{}", dead_address(), dead_address(), es.servers());
    let (user, password) = es.credentials().cloned().unwrap();
    let c = EsConfig::parse("sink.es.server", &servers)
        .unwrap()
        .with_basic_auth(&user, &password)
        .with_request_timeout(Duration::from_secs(5));
    let s = EsSink::new(c, &index, "id", SyncMode::Full).with_bulk(300, 5 << 20, Duration::from_secs(60));
    let stats = s.stats();
    run(s, 1_000, "failover-real").await;
    assert_eq!(es.count(&index).await.unwrap(), 1_000);
    assert!(EsStats::get(&stats.failovers) >= 2, "{stats:?}");
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_server_when_nodes_go_down_and_gives_up_when_all_are() {
    // Nodes of one cluster stopping while the job runs: the test server's three nodes.
    let es = TestEs::local(EsServerConfig { nodes: 3, ..Default::default() }).await.unwrap();
    let server = es.require_server().unwrap();
    server.stop_node(0);
    server.stop_node(1);
    let index = es.index("failover");
    let s = sink(&es, &index, SyncMode::Full);
    let stats = s.stats();
    run(s, 1_000, "failover").await;
    // (The harness talks to the first node, which is down: read the store.)
    assert_eq!(server.documents(&index).len(), 1_000);
    assert!(EsStats::get(&stats.failovers) >= 2, "{stats:?}");

    // All down: retried with backoff, then the task fails naming the servers tried.
    server.stop_node(2);
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(5)).sink("es", sink(&es, &index, SyncMode::Full));
    let err = p.run(job("all-down")).await.unwrap_err().to_string();
    assert!(err.contains("giving up after 5 retries") && err.contains("127.0.0.1"), "{err}");
}

/// Runs 3 000 rows into a fresh index with `faults` queued; returns the stats and the
/// time it took.
async fn with_faults(
    faults: Vec<EsFault>,
    backoff: Backoff,
    mode: SyncMode,
) -> (Arc<EsStats>, Duration, TestEs, String) {
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    es.require_server().unwrap().inject(faults);
    let index = es.index("faults");
    let s = EsSink::new(config(&es), &index, "id", mode)
        .with_bulk(500, 5 << 20, Duration::from_secs(60))
        .with_backoff(backoff)
        .with_retry_on_conflict(2)
        .with_version("3");
    let stats = s.stats();
    let started = Instant::now();
    run(s, 3_000, "faults").await;
    (stats, started.elapsed(), es, index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_items_429_are_retried_with_constant_backoff() {
    let backoff = Backoff { enabled: true, kind: BackoffKind::Constant, delay: Duration::from_millis(150), retries: 3 };
    // 700 items over two requests: the first request's 500 all rejected, then 200 of the
    // retry... each retry round waits the delay.
    let (stats, took, es, index) =
        with_faults(vec![EsFault::too_many_requests(500), EsFault::too_many_requests(200)], backoff, SyncMode::Full)
            .await;
    assert_eq!(es.count(&index).await.unwrap(), 3_000);
    assert_eq!(EsStats::get(&stats.retried), 700);
    assert_eq!(EsStats::get(&stats.written), 3_000);
    assert!(took >= Duration::from_millis(300), "two rounds of 150 ms backoff, took {took:?}");
    counts_add_up(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_doubles_and_gives_up_after_the_retries() {
    let backoff =
        Backoff { enabled: true, kind: BackoffKind::Exponential, delay: Duration::from_millis(40), retries: 3 };
    assert_eq!(backoff.delay_for(1), Duration::from_millis(40));
    assert_eq!(backoff.delay_for(3), Duration::from_millis(160));
    // 3 retries of the same items, all rejected: 40 + 80 + 160 ms, then the task fails.
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    es.require_server().unwrap().inject([EsFault::Items {
        status: 503,
        kind: "unavailable_shards_exception".into(),
        count: 40,
    }]);
    let index = es.index("give-up");
    let s = EsSink::new(config(&es), &index, "id", SyncMode::Full).with_backoff(backoff);
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10)).sink("es", s);
    let started = Instant::now();
    let err = p.run(job("give-up")).await.unwrap_err().to_string();
    assert!(started.elapsed() >= Duration::from_millis(280), "{:?}", started.elapsed());
    assert!(err.contains("after 3 retries") && err.contains("unavailable_shards_exception"), "{err}");

    // Backoff disabled: the first rejection fails.
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    es.require_server().unwrap().inject([EsFault::too_many_requests(1)]);
    let s = EsSink::new(config(&es), &index, "id", SyncMode::Full)
        .with_backoff(Backoff { enabled: false, ..quick_backoff() });
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10)).sink("es", s);
    let err = p.run(job("no-backoff")).await.unwrap_err().to_string();
    assert!(err.contains("after 0 retries") && err.contains("429"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_for_the_whole_request_is_retried() {
    let (stats, _, es, index) =
        with_faults(vec![EsFault::Unavailable, EsFault::Unavailable], quick_backoff(), SyncMode::Incremental).await;
    assert_eq!(es.count(&index).await.unwrap(), 3_000);
    assert_eq!(EsStats::get(&stats.request_retries), 2);
    counts_add_up(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_and_the_replay_writes_the_same_documents() {
    let (stats, _, es, index) = with_faults(vec![EsFault::DropConnection], quick_backoff(), SyncMode::Full).await;
    let server = es.require_server().unwrap();
    assert_eq!(server.pending_faults(), 0);
    let docs = server.documents(&index);
    assert_eq!(docs.len(), 3_000);
    // The dropped request was applied, then sent again: its documents are at version 2.
    assert_eq!(docs.values().filter(|(_, v)| *v == 2).count(), 500);
    assert!(EsStats::get(&stats.request_retries) >= 1);
    counts_add_up(&stats);
}

/// Retries of a request, unanswered or answered busy, come out of one budget: a cluster
/// alternating between dropping the connection and answering 503 is given up on after
/// `retries` retries, as each fault alone is (before, each unanswered try started a count
/// of its own and four retries passed a budget of three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_and_busy_requests_share_one_retry_budget() {
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    // A dropped connection applies to `_bulk` only, so the probe at start passes it by.
    let faults = [EsFault::DropConnection, EsFault::Unavailable, EsFault::DropConnection, EsFault::Unavailable];
    es.require_server().unwrap().inject(faults);
    let index = es.index("one-budget");
    let backoff = Backoff { retries: 3, ..quick_backoff() };
    let s = EsSink::new(config(&es), &index, "id", SyncMode::Incremental).with_backoff(backoff);
    let stats = s.stats();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(10)).sink("es", s);
    let err = p.run(job("one-budget")).await.unwrap_err().to_string();
    assert!(err.contains("giving up after 3 retries") && err.contains("503"), "{err}");
    assert_eq!(EsStats::get(&stats.request_retries), 3, "{stats:?}");
    assert_eq!(es.require_server().unwrap().pending_faults(), 0);
}

/// An answer item without a result says nothing of its document: the flush fails, the
/// restored job resends, and no row is lost or counted as nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_item_without_result_is_resent_not_dropped() {
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    es.require_server().unwrap().inject([EsFault::EmptyItems { count: 1 }]);
    let index = es.index("empty-item");
    let s = sink(&es, &index, SyncMode::Full).with_version("1");
    let stats = s.stats();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(3_000).with_batch_size(250)).sink("es", s);
    let dir = tempfile::tempdir().unwrap();
    let outcome = p.run(checkpointed("empty-item", dir.path(), 3)).await.unwrap();
    assert_eq!(es.require_server().unwrap().pending_faults(), 0);
    assert_eq!(outcome.restarts, 1, "{outcome:?}");
    assert_eq!(es.count(&index).await.unwrap(), 3_000);
    counts_add_up(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_over_the_timeout_is_retried() {
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    es.require_server().unwrap().inject([EsFault::Slow(Duration::from_millis(1500))]);
    let index = es.index("slow");
    let c = config(&es).with_request_timeout(Duration::from_millis(500));
    let s = EsSink::new(c, &index, "id", SyncMode::Full).with_backoff(quick_backoff());
    let stats = s.stats();
    run(s, 100, "slow").await;
    assert_eq!(es.count(&index).await.unwrap(), 100);
    assert_eq!(EsStats::get(&stats.request_retries), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_conflicts_are_retried_then_dead_lettered() {
    // 10 items conflict once: retried, written.
    let (stats, _, es, index) = with_faults(vec![EsFault::conflicts(10)], quick_backoff(), SyncMode::Incremental).await;
    assert_eq!(es.count(&index).await.unwrap(), 3_000);
    assert_eq!(EsStats::get(&stats.retried), 10);
    assert_eq!(EsStats::get(&stats.dead_lettered), 0);
    drop(es);

    // 10 rows whose updates conflict three times in a row: two retries, then dead letters.
    let es = TestEs::local(EsServerConfig::default()).await.unwrap();
    es.require_server().unwrap().inject([EsFault::conflicts(30)]);
    let index = es.index("conflicts");
    let s = sink(&es, &index, SyncMode::Incremental).with_retry_on_conflict(2);
    let stats = s.stats();
    let dead = CommittedOutput::default();
    let p = Pipeline::new();
    let out = p.source("gen", GeneratorSource::bounded(10).with_splits(1)).sink("es", s);
    out.dead_letters().sink("dead", TwoPhaseMemorySink::new(dead.clone()));
    p.run(checkpointed("conflicts", tempfile::tempdir().unwrap().path(), 0)).await.unwrap();
    assert_eq!(EsStats::get(&stats.dead_lettered), 10, "{stats:?}");
    assert_eq!(EsStats::get(&stats.retried), 20, "{stats:?}");
    assert_eq!(es.count(&index).await.unwrap(), 0);
    let letters = dead.batches();
    let reasons: Vec<String> = letters
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("reason").unwrap().as_string::<i32>().clone();
            (0..c.len()).map(move |i| c.value(i).to_string())
        })
        .collect();
    assert_eq!(reasons.len(), 10);
    assert!(reasons[0].contains("409") && reasons[0].contains("version_conflict_engine_exception"), "{reasons:?}");
    counts_add_up(&stats);
}

/// Rows whose `name` is a number except every tenth, for an index mapping `name` as long.
fn numeric_names(b: RecordBatch) -> operators_core::Result<Option<RecordBatch>> {
    let ids = b.column(0).as_primitive::<Int64Type>();
    let names: StringArray = (0..b.num_rows())
        .map(|i| {
            let id = ids.value(i);
            Some(if id % 10 == 3 { format!("not a number {id}") } else { id.to_string() })
        })
        .collect();
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[3] = Arc::new(names);
    Ok(Some(RecordBatch::try_new(b.schema(), cols).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_index_refuses_go_to_the_dead_letters_with_id_and_reason() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("mapping");
    es.create_index(&index, &["name"]).await.unwrap();
    let s = sink(&es, &index, SyncMode::Full);
    let stats = s.stats();
    let dead = CommittedOutput::default();
    let p = Pipeline::new();
    let out = p
        .source("gen", GeneratorSource::bounded(500))
        .transform("names", MapTransform::new(numeric_names))
        .sink("es", s);
    out.dead_letters().sink("dead", TwoPhaseMemorySink::new(dead.clone()));
    p.run(checkpointed("mapping", tempfile::tempdir().unwrap().path(), 0)).await.unwrap();
    assert_eq!(es.count(&index).await.unwrap(), 450);
    assert_eq!(EsStats::get(&stats.dead_lettered), 50);
    assert_eq!(dead.num_rows(), 50);
    let b = &dead.batches()[0];
    let origin = b.column_by_name("origin").unwrap().as_string::<i32>().value(0).to_string();
    let reason = b.column_by_name("reason").unwrap().as_string::<i32>().value(0).to_string();
    let record = b.column_by_name("record").unwrap().as_string::<i32>().value(0).to_string();
    assert!(origin.starts_with(&format!("{index}/")) && origin.ends_with('3'), "{origin}");
    assert!(reason.contains("400") && reason.contains("mapper_parsing_exception"), "{reason}");
    assert!(record.contains("not a number"), "{record}");
    counts_add_up(&stats);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_id_are_dead_lettered() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("no-id");
    let s = sink(&es, &index, SyncMode::Full);
    let stats = s.stats();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(100))
        .transform(
            "null-ids",
            MapTransform::new(|b| {
                let ids: Int64Array =
                    b.column(0).as_primitive::<Int64Type>().iter().map(|v| v.filter(|id| id % 25 != 0)).collect();
                let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
                fields[0] = Field::new("id", DataType::Int64, true);
                let mut cols = b.columns().to_vec();
                cols[0] = Arc::new(ids);
                Ok(Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()))
            }),
        )
        .sink("es", s);
    p.run(job("no-id")).await.unwrap();
    assert_eq!(es.count(&index).await.unwrap(), 96);
    assert_eq!(EsStats::get(&stats.dead_lettered), 4);
    counts_add_up(&stats);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_versioning_never_lets_an_older_run_overwrite_a_newer_one() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("external");
    let newer = sink(&es, &index, SyncMode::Full).with_version("200").with_external_versioning(true);
    run(newer, 100, "newer").await;
    // An older export re-run: every document is left alone.
    let older = EsSink::new(config(&es), &index, "id", SyncMode::Full)
        .with_version("100")
        .with_external_versioning(true)
        .with_backoff(quick_backoff());
    let stats = older.stats();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(100))
        .transform("changed", MapTransform::new(|b| Ok(Some(b.project(&[0, 1]).unwrap()))))
        .sink("es", older);
    p.run(job("older")).await.unwrap();
    assert_eq!(EsStats::get(&stats.skipped_stale), 100);
    let docs = es.documents(&index).await.unwrap();
    assert!(docs.values().all(|d| d["version"] == json!(200) && d.get("name").is_some()));
    // The same version again (a replay) is accepted.
    let again = sink(&es, &index, SyncMode::Full).with_version("200").with_external_versioning(true);
    let stats = again.stats();
    run(again, 100, "replay").await;
    assert_eq!(EsStats::get(&stats.written), 100);
    counts_add_up(&stats);
    // Refused where it cannot work.
    let err = sink(&es, &index, SyncMode::Incremental).with_version("1").with_external_versioning(true).validate();
    assert!(err.unwrap_err().to_string().contains("full"));
    let err = sink(&es, &index, SyncMode::Full).with_version("v1").with_external_versioning(true).validate();
    assert!(err.unwrap_err().to_string().contains("integer"));
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_a_full_sync_deletes_documents_of_older_versions() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("cleanup");
    run(sink(&es, &index, SyncMode::Full).with_version("1"), 300, "v1").await;
    // The second export has only 200 of the rows; with several sink subtasks the
    // clean-up waits for the final checkpoint.
    let s = sink(&es, &index, SyncMode::Full).with_version("2").with_cleanup(true);
    let stats = s.stats();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(200)).sink("es", s).parallelism(2);
    p.run(checkpointed("v2", tempfile::tempdir().unwrap().path(), 0)).await.unwrap();
    let docs = es.documents(&index).await.unwrap();
    assert_eq!(docs.len(), 200);
    assert!(docs.values().all(|d| d["version"] == json!(2)));
    assert_eq!(EsStats::get(&stats.deleted_stale), 100);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_6_gets_the_document_type_and_8_does_not() {
    let es = TestEs::local(EsServerConfig { major: 6, ..Default::default() }).await.unwrap();
    let index = es.index("typed");
    // Without a type, an Elasticsearch 6 refuses the request (the server checks it).
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(5)).sink("es", sink(&es, &index, SyncMode::Full));
    let err = p.run(job("untyped-6")).await.unwrap_err().to_string();
    assert!(err.contains("type is missing"), "{err}");
    run(sink(&es, &index, SyncMode::Full).with_doc_type("parquet"), 50, "typed-6").await;
    assert_eq!(es.count(&index).await.unwrap(), 50);

    let es = TestEs::local(EsServerConfig { major: 8, ..Default::default() }).await.unwrap();
    run(sink(&es, &index, SyncMode::Full).with_doc_type("parquet"), 50, "typed-8").await;
    assert_eq!(es.count(&index).await.unwrap(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_is_typeless_so_the_document_type_is_not_sent() {
    // OpenSearch reports `distribution: opensearch` and version 1.x/2.x: the typeless
    // API of Elasticsearch 7, where a `_type` in a bulk action is refused.
    let es = TestEs::start().await.unwrap();
    let index = es.index("typed-os");
    run(sink(&es, &index, SyncMode::Full).with_doc_type("parquet"), 50, "typed-os").await;
    assert_eq!(es.count(&index).await.unwrap(), 50);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_actions_are_flushed_by_interval_without_a_checkpoint() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("interval");
    let s = EsSink::new(config(&es), &index, "id", SyncMode::Full).with_bulk(1000, 5 << 20, Duration::from_millis(200));
    let info = TaskInfo {
        job_name: "t".into(),
        job_id: "t".into(),
        run_id: "t".into(),
        operator_id: "es".into(),
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        attempt: 0,
    };
    let mut task = s.create(&info).unwrap();
    let mut ctx = OperatorContext::standalone(info);
    task.open(&mut ctx).await.unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    // 3 actions are below every size trigger and no barrier comes: only the interval
    // ticker can make them visible.
    task.write_batch(batch, &mut ctx).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while es.count(&index).await.unwrap() < 3 {
        assert!(Instant::now() < deadline, "the interval flush did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.close().await.unwrap();
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_replay_into_the_same_documents() {
    let es = TestEs::start().await.unwrap();
    let index = es.index("restarts");
    let faults = FaultInjector::new().fail_at("map", [5, 17, 30]);
    let f2 = faults.clone();
    let s = sink(&es, &index, SyncMode::Incremental).with_version("5");
    let stats = s.stats();
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(20_000).with_batch_size(200))
        .parallelism(2)
        .transform("fail", MapTransform::new(move |b| f2.check("map").map(|()| Some(b))))
        .sink("es", s)
        .parallelism(2);
    p.run(checkpointed("restarts", tempfile::tempdir().unwrap().path(), 5)).await.unwrap();
    assert_eq!(faults.fired().len(), 3);
    assert_eq!(es.count(&index).await.unwrap(), 20_000);
    assert!(EsStats::get(&stats.rows) >= 20_000, "replays write rows again: {stats:?}");
    counts_add_up(&stats);
    es.delete_index(&index).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_indexes_and_deletes_by_id() {
    let es = TestEs::start().await.unwrap();
    for mode in [SyncMode::Full, SyncMode::Incremental] {
        let index = es.index("changes");
        let factory = sink(&es, &index, mode);
        let stats = factory.stats();
        let info = TaskInfo {
            job_name: "changes".into(),
            job_id: "changes".into(),
            run_id: "changes".into(),
            operator_id: "es".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
        };
        let mut ctx = OperatorContext::standalone(info.clone());
        let mut task = factory.create(&info).unwrap();
        task.open(&mut ctx).await.unwrap();
        task.write_batch(
            changes(&[
                ("+I", 1, Some("a")),
                ("+I", 2, Some("b")),
                ("+I", 3, Some("c")),
                ("-U", 2, Some("b")),
                ("+U", 2, Some("b2")),
                ("-D", 3, Some("c")),
            ]),
            &mut ctx,
        )
        .await
        .unwrap();
        // A delete of a document that is not there (its insert was before the job) is no error.
        task.write_batch(changes(&[("-D", 99, Some("x")), ("-U", 1, Some("a")), ("+U", 10, Some("a"))]), &mut ctx)
            .await
            .unwrap();
        task.pre_commit(1, &mut ctx).await.unwrap();
        task.close().await.unwrap();
        let docs = es.documents(&index).await.unwrap();
        let mut ids: Vec<&String> = docs.keys().collect();
        ids.sort();
        assert_eq!(ids, ["10", "2"], "{mode:?}: 1 moved to 10 by a key change, 3 deleted");
        assert_eq!(docs["2"], json!({"id": 2, "name": "b2"}), "{mode:?}: no change column in the document");
        assert_eq!(EsStats::get(&stats.dead_lettered), 0, "{mode:?}");
        es.delete_index(&index).await.unwrap();
    }
}
