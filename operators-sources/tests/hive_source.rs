//! The Hive source against the local HiveServer2 (`testing/services/hive.sh`, `HIVE_URL`,
//! `HIVE_USER`, `HIVE_PASSWORD`): every Hive type into Arrow, compared with the server's
//! own text of each value; NULLs in every column; the errors a user meets (a wrong
//! password, an unknown table, a syntax error) with the server's message and SQLSTATE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arrow::array::{Array, AsArray};
use operators_sources::hive::{HiveConfig, HiveSession};

/// The local HiveServer2's settings; a test fails naming the script when they are missing.
fn hive(password: Option<&str>) -> HiveConfig {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: start HiveServer2 with testing/services/hive.sh start and export its env")
        })
    };
    let password = password.map(String::from).unwrap_or_else(|| var("HIVE_PASSWORD"));
    HiveConfig::parse("source.db.url", &var("HIVE_URL"), Some(&var("HIVE_USER")), Some(&password)).unwrap()
}

#[test]
fn a_session_runs_a_query_and_a_wrong_password_is_refused_by_name() {
    let mut session = HiveSession::open(&hive(None))
        .unwrap_or_else(|e| panic!("HiveServer2 is not answering ({e}); start it with testing/services/hive.sh start"));
    let query = session.execute("select 1 as one, 'a' as two").unwrap().unwrap();
    let batch = session.fetch(&query, 10).unwrap().unwrap();
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(batch.schema().field(0).name(), "one");
    assert!(session.fetch(&query, 10).unwrap().is_none());
    session.close_query(query).unwrap();
    session.close();

    let e = HiveSession::open(&hive(Some("wrong"))).err().unwrap().to_string();
    assert!(e.contains("source.db.password") && e.contains("refused"), "{e}");
}

/// Runs statements in one session (fixtures).
fn run(statements: &[&str]) {
    let mut session = HiveSession::open(&hive(None)).unwrap();
    for s in statements {
        if let Some(q) = session.execute(s).unwrap_or_else(|e| panic!("`{s}`: {e}")) {
            session.close_query(q).unwrap();
        }
    }
    session.close();
}

/// Every row of `sql`, read through the source into batches.
fn read_all(sql: &str) -> Vec<arrow::record_batch::RecordBatch> {
    let mut session = HiveSession::open(&hive(None)).unwrap();
    let query = session.execute(sql).unwrap().unwrap();
    let mut batches = Vec::new();
    while let Some(b) = session.fetch(&query, 2).unwrap() {
        batches.push(b);
    }
    session.close_query(query).unwrap();
    session.close();
    batches
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

const COLUMNS: [&str; 17] =
    ["ti", "si", "i", "bi", "f", "d", "dm", "s", "vc", "c", "b", "dt", "ts", "bin", "arr", "m", "st"];

#[test]
fn every_type_reads_as_the_server_writes_it_with_nulls_in_every_column() {
    let t = unique("types");
    run(&[
        &format!(
            "create table {t} (id int, ti tinyint, si smallint, i int, bi bigint, f float, d double, dm decimal(10,2), \
             s string, vc varchar(20), c char(5), b boolean, dt date, ts timestamp, bin binary, arr array<int>, \
             m map<string,int>, st struct<a:int,b:string>) stored as orc"
        ),
        &format!(
            "insert into {t} select 1, cast(-128 as tinyint), cast(-32768 as smallint), 2147483647, \
             -9223372036854775808, cast(1.1 as float), 3.141592653589793, cast(-12345678.99 as decimal(10,2)), \
             'text 北京 \"q\"', cast('v' as varchar(20)), cast('ab' as char(5)), true, cast('1969-12-31' as date), \
             cast('2021-03-04 05:06:07.123456789' as timestamp), cast('bytes' as binary), array(1, 2), \
             map('k', 1), named_struct('a', 1, 'b', 'x') \
             union all select 2, cast(null as tinyint), cast(null as smallint), cast(null as int), \
             cast(null as bigint), cast(null as float), cast(null as double), cast(null as decimal(10,2)), \
             cast(null as string), cast(null as varchar(20)), cast(null as char(5)), cast(null as boolean), \
             cast(null as date), cast(null as timestamp), cast(null as binary), if(false, array(1), null), \
             if(false, map('k', 1), null), if(false, named_struct('a', 1, 'b', 'x'), null) \
             union all select 3, cast(127 as tinyint), cast(0 as smallint), 0, 1, cast(-0.5 as float), -1e300, \
             cast(1.5 as decimal(10,2)), '', cast('' as varchar(20)), cast('abcde' as char(5)), false, \
             cast('2024-02-29' as date), cast('1970-01-01 00:00:00' as timestamp), cast('' as binary), array(3), \
             map('a', cast(null as int)), named_struct('a', cast(null as int), 'b', cast(null as string))"
        ),
    ]);
    let batches = read_all(&format!("select * from {t} order by id"));
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 3);
    let types: Vec<String> = batch.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(
        types,
        [
            "Int32",
            "Int8",
            "Int16",
            "Int32",
            "Int64",
            "Float32",
            "Float64",
            "Decimal128(10, 2)",
            "Utf8",
            "Utf8",
            "Utf8",
            "Boolean",
            "Date32",
            "Timestamp(ns)",
            "Binary",
            "Utf8",
            "Utf8",
            "Utf8"
        ]
    );
    // Plain names (HiveServer2 would say `<table>.ti` for `select *`).
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names[1..], COLUMNS.map(String::from));
    // Row 2 is NULL in every column but the key.
    for c in 1..batch.num_columns() {
        assert!(batch.column(c).is_null(1), "column {} of the NULL row", batch.schema().field(c).name());
    }
    // Each primitive value against the server's own text of it (`cast(c as string)`).
    let casts: Vec<String> = COLUMNS[..14].iter().map(|c| format!("cast({c} as string)")).collect();
    let server = read_all(&format!("select {} from {t} order by id", casts.join(", ")));
    let server = arrow::compute::concat_batches(&server[0].schema(), &server).unwrap();
    let options = arrow::util::display::FormatOptions::default();
    for (c, name) in COLUMNS[..14].iter().enumerate() {
        let ours = batch.column(c + 1);
        let text = server.column(c).as_string::<i32>();
        for row in [0, 2] {
            let mine = match ours.data_type() {
                arrow::datatypes::DataType::Binary => {
                    String::from_utf8(ours.as_binary::<i32>().value(row).to_vec()).unwrap()
                }
                _ => arrow::util::display::ArrayFormatter::try_new(ours.as_ref(), &options)
                    .unwrap()
                    .value(row)
                    .to_string()
                    .replace('T', " "),
            };
            if matches!(ours.data_type(), arrow::datatypes::DataType::Float32 | arrow::datatypes::DataType::Float64) {
                // Java writes 1e300 as 1.0E300: compare the numbers.
                let theirs: f64 = text.value(row).parse().unwrap();
                assert_eq!(mine.parse::<f64>().unwrap(), theirs, "column {name}, row {row}");
            } else if *name == "b" {
                // Hive's cast of a boolean to string is upper case.
                assert_eq!(mine.to_uppercase(), text.value(row), "column {name}, row {row}");
            } else if *name == "c" {
                // char(5) comes padded, as HiveServer2 returns it; its cast to string is not.
                assert_eq!(mine, format!("{:<5}", text.value(row)), "column {name}, row {row}");
            } else {
                assert_eq!(mine, text.value(row), "column {name}, row {row}");
            }
        }
    }
    // The complex types are the JSON HiveServer2 writes for them.
    let json = |c: usize, row: usize| batch.column(c).as_string::<i32>().value(row).to_string();
    assert_eq!(
        (json(15, 0), json(16, 0), json(17, 0)),
        ("[1,2]".into(), r#"{"k":1}"#.into(), r#"{"a":1,"b":"x"}"#.into())
    );
    assert_eq!(
        (json(15, 2), json(16, 2), json(17, 2)),
        ("[3]".into(), r#"{"a":null}"#.into(), r#"{"a":null,"b":null}"#.into())
    );
    // And out as JSON, as the sinks write rows.
    let mut out = Vec::new();
    operators_core::codec::JsonEncoder::new().encode_lines(&batch, &mut out).unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["dm"], serde_json::json!(-12345678.99));
    assert_eq!(lines[0]["ts"], "2021-03-04 05:06:07.123");
    assert_eq!(lines[0]["arr"], "[1,2]");
    assert_eq!(lines[0]["bi"], serde_json::json!(i64::MIN));
    assert_eq!(lines[1]["s"], serde_json::Value::Null);
    run(&[&format!("drop table {t}")]);
}

#[test]
fn an_unknown_table_and_a_syntax_error_carry_the_servers_message_and_sqlstate() {
    let mut session = HiveSession::open(&hive(None)).unwrap();
    let e = session.execute("select * from no_such_table_here").err().unwrap();
    let text = format!("{e} / {:?}", std::error::Error::source(&e).map(|s| s.to_string()));
    assert!(text.contains("no_such_table_here") && text.contains("SQLSTATE 42S02"), "{text}");
    let e = session.execute("selec 1").err().unwrap();
    let text = format!("{e} / {:?}", std::error::Error::source(&e).map(|s| s.to_string()));
    assert!(text.contains("SQLSTATE 42000"), "{text}");
    session.close();
}

/// A TCP proxy in front of HiveServer2 whose connections the test can cut: the server
/// "going away" mid-fetch, without stopping the shared test server under other tests.
struct CuttingProxy {
    port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let held = connections.clone();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        operators_core::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let upstream = upstream.clone();
                let task = operators_core::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                held.lock().unwrap().push(task.abort_handle());
            }
        });
        CuttingProxy { port, connections, accepted }
    }

    /// Closes every connection open now.
    fn cut(&self) -> usize {
        let open: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for c in &open {
            c.abort();
        }
        open.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_mid_fetch_is_read_again_from_the_checkpoint_exactly_once() {
    use operators_core::builtins::{CommittedOutput, RateLimitTransform, TwoPhaseMemorySink};
    use operators_core::checkpoint::CheckpointConfig;
    use operators_core::restart::RestartStrategy;
    use operators_core::{JobConfig, Pipeline};
    use operators_sources::hive::HiveSource;
    use std::io::Write;
    use std::time::Duration;

    const ROWS: i64 = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rows.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
    for id in 0..ROWS {
        writeln!(file, "{id},name-{id}").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let t = unique("cut");
    let load = format!("load data local inpath '{}' into table {t}", data.display());
    let create = format!("create table {t} (id bigint, name string) row format delimited fields terminated by ','");
    tokio::task::block_in_place(|| run(&[&create, &load]));

    let url = std::env::var("HIVE_URL").unwrap();
    let upstream = url.trim_start_matches("jdbc:hive2://").split('/').next().unwrap().to_string();
    let proxy = CuttingProxy::start(upstream).await;
    let (user, password) = (std::env::var("HIVE_USER").unwrap(), std::env::var("HIVE_PASSWORD").unwrap());
    let config = HiveConfig::parse(
        "source.db.url",
        &format!("jdbc:hive2://127.0.0.1:{}/default", proxy.port),
        Some(&user),
        Some(&password),
    )
    .unwrap();
    let out = CommittedOutput::default();
    let p = Pipeline::new();
    p.source("hive", HiveSource::new(config).with_table(&t).with_fetch_size(500).unwrap())
        .transform("slow", RateLimitTransform::new(10_000).unwrap())
        .sink("out", TwoPhaseMemorySink::new(out.clone()));
    let ck = tmp.path().join("ck");
    let job = p
        .start(
            JobConfig::new("hive-cut")
                .with_restart(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_millis(100) })
                .with_checkpointing(CheckpointConfig::new(&ck).with_interval(Duration::from_millis(50))),
        )
        .unwrap();
    // Cut the connection once some rows are committed, and again later.
    let mut cuts = 0;
    for at in [3_000, 11_000] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while out.num_rows() < at && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cuts += proxy.cut();
    }
    tokio::time::timeout(Duration::from_secs(60), job.wait()).await.expect("the job ended").unwrap();
    assert!(cuts >= 2, "{cuts} connections cut");
    // A session per run: the job ran again after each cut.
    let sessions = proxy.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sessions >= 3, "{sessions} sessions: the cuts did not make the job read again");
    let mut ids: Vec<i64> = out
        .batches()
        .iter()
        .flat_map(|b| b.column_by_name("id").unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), total), (ROWS as usize, ROWS as usize), "every row once");
    tokio::task::block_in_place(|| run(&[&format!("drop table {t}")]));
}
