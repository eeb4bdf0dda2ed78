//! HiveServer2 → discard through the Hive source, against a bare fetch loop with the same
//! client and fetch size (the local HiveServer2 of `testing/services/hive.sh`, or
//! `HIVE_URL`/`HIVE_USER`/`HIVE_PASSWORD`).

use std::io::Write;

use operators_core::builtins::DiscardSink;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sources::hive::{HiveConfig, HiveSession, HiveSource};

use crate::{Run, measure};

type BoxError = Box<dyn std::error::Error>;

/// The server's settings: the environment, or the local test server's defaults.
pub fn config() -> Result<HiveConfig, BoxError> {
    let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
    Ok(HiveConfig::parse(
        "HIVE_URL",
        &var("HIVE_URL", "jdbc:hive2://127.0.0.1:10000/default"),
        Some(&var("HIVE_USER", "operators")),
        Some(&var("HIVE_PASSWORD", "operators-hive-pw")),
    )?)
}

/// A table of `rows` rows of five columns (bigint, string, double, timestamp, int),
/// loaded from one text file.
pub struct Fixture {
    /// The table's name.
    pub table: String,
    /// Its rows.
    pub rows: u64,
}

fn run_sql(statements: &[String]) -> Result<(), BoxError> {
    let mut session = HiveSession::open(&config()?)
        .map_err(|e| format!("HiveServer2 is not answering ({e}); start it with testing/services/hive.sh start"))?;
    for s in statements {
        if let Some(q) = session.execute(s)? {
            session.close_query(q)?;
        }
    }
    session.close();
    Ok(())
}

impl Fixture {
    /// Creates and loads the table.
    pub fn new(rows: u64) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("rows.csv");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for i in 0..rows {
            writeln!(out, "{i},name-{i},{},2024-01-01 00:00:00.{:03},{}", i as f64 * 0.5, i % 1000, i % 7)?;
        }
        out.flush()?;
        drop(out);
        let table = format!("bench_hive_{:08x}", rand::random::<u32>());
        run_sql(&[
            format!(
                "create table {table} (id bigint, name string, score double, ts timestamp, n int) \
                 row format delimited fields terminated by ','"
            ),
            format!("load data local inpath '{}' into table {table}", file.display()),
        ])?;
        Ok(Fixture { table, rows })
    }

    /// The statement both variants run.
    pub fn statement(&self, limit: Option<u64>) -> String {
        match limit {
            Some(n) => format!("select * from {} limit {n}", self.table),
            None => format!("select * from {}", self.table),
        }
    }

    /// Drops the table.
    pub fn drop(self) {
        let _ = run_sql(&[format!("drop table {}", self.table)]);
    }
}

/// The Hive source → discard.
pub async fn pipeline(statement: &str, fetch: usize) -> Run {
    let sink = DiscardSink::default();
    let source = match config().and_then(|c| Ok(HiveSource::new(c).with_sql(statement).with_fetch_size(fetch)?)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hive source: {e}");
            return Run { rows: 0, wall: std::time::Duration::ZERO, cpu: std::time::Duration::ZERO };
        }
    };
    let p = Pipeline::new();
    p.source("hive", source).sink("discard", sink.clone());
    measure(|| async {
        match p.run(JobConfig::new("hive-bench").with_restart(RestartStrategy::None)).await {
            Ok(_) => sink.rows(),
            Err(e) => {
                eprintln!("hive pipeline failed: {e}");
                0
            }
        }
    })
    .await
}

/// The bare loop: one session, the statement, `fetch` rows per call until the end, each
/// batch's rows counted.
pub async fn baseline(statement: &str, fetch: usize) -> Run {
    let statement = statement.to_string();
    measure(|| async move {
        let read = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let config = config().map_err(|e| e.to_string())?;
            let mut session = HiveSession::open(&config).map_err(|e| e.to_string())?;
            let query = session.execute(&statement).map_err(|e| e.to_string())?.ok_or("no result")?;
            let mut rows = 0u64;
            while let Some(batch) = session.fetch(&query, fetch).map_err(|e| e.to_string())? {
                rows += batch.num_rows() as u64;
                std::hint::black_box(&batch);
            }
            session.close_query(query).map_err(|e| e.to_string())?;
            session.close();
            Ok(rows)
        })
        .await;
        match read {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                eprintln!("bare fetch loop failed: {e}");
                0
            }
            Err(e) => {
                eprintln!("bare fetch loop panicked: {e}");
                0
            }
        }
    })
    .await
}
