//! Database scenarios on PostgreSQL: the source and the sink against bare sqlx loops.

use std::time::Duration;

use futures::TryStreamExt;
use operators_core::builtins::{DiscardSink, GeneratorSource};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::jdbc::JdbcSink;
use operators_sources::jdbc::{DbConfig, JdbcSource};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool, QueryBuilder, Row};

use crate::{Run, measure};

/// The PostgreSQL the benches use: `DATABASE_URL`, or the local test server.
pub fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A scratch schema with a table of `rows` generated rows (or empty).
pub struct Scratch {
    /// Connections to the bench database.
    pub pool: PgPool,
    /// The scratch schema, dropped by [`Scratch::drop`].
    pub schema: String,
}

impl Scratch {
    /// Creates the schema with `src` (holding `rows` rows) and an empty `dst`.
    pub async fn new(rows: u64) -> Result<Self, Box<dyn std::error::Error>> {
        let pool = PgPoolOptions::new().max_connections(4).connect(&url()).await.map_err(|e| {
            format!("PostgreSQL at {} is not answering ({e}); start it with pg_ctlcluster or set DATABASE_URL", url())
        })?;
        let schema = format!("bench_{:08x}", rand::random::<u32>());
        pool.execute(format!("create schema {schema}").as_str()).await?;
        pool.execute(
            format!("create table {schema}.src (id int8 primary key, name text, score float8, ts timestamp)").as_str(),
        )
        .await?;
        pool.execute(format!("create table {schema}.dst (id int8, key int8, value float8, name text)").as_str())
            .await?;
        if rows > 0 {
            pool.execute(
                format!(
                    "insert into {schema}.src select g, 'name-' || g, g * 0.5, timestamp '2024-01-01' + g * interval '1 second' \
                     from generate_series(1, {rows}) g"
                )
                .as_str(),
            )
            .await?;
        }
        Ok(Self { pool, schema })
    }

    /// The connection settings of the scratch schema.
    pub fn config(&self) -> Result<DbConfig, Box<dyn std::error::Error>> {
        Ok(DbConfig::parse("bench", &format!("{}?currentSchema={}", url(), self.schema), None, None)?)
    }

    /// Empties `dst` between rounds.
    pub async fn truncate_dst(&self) -> Result<(), sqlx::Error> {
        self.pool.execute(format!("truncate {}.dst", self.schema).as_str()).await.map(|_| ())
    }

    /// Drops the schema and closes the pool.
    pub async fn drop(self) {
        let _ = self.pool.execute(format!("drop schema {} cascade", self.schema).as_str()).await;
        self.pool.close().await;
    }
}

/// The source: table → discard.
pub async fn source_pipeline(s: &Scratch, fetch: usize) -> Run {
    let sink = DiscardSink::default();
    let Ok(db) = s.config() else { return Run { rows: 0, wall: Duration::ZERO, cpu: Duration::ZERO } };
    let Ok(source) = JdbcSource::new(db).with_table("src").with_fetch_size(fetch) else {
        eprintln!("fetch size {fetch}: must be at least 1");
        return Run { rows: 0, wall: Duration::ZERO, cpu: Duration::ZERO };
    };
    let p = Pipeline::new();
    p.source("db", source).sink("discard", sink.clone());
    measure(|| async {
        match p.run(JobConfig::new("db-source").with_restart(RestartStrategy::None)).await {
            Ok(_) => sink.rows(),
            Err(e) => {
                eprintln!("db-source failed: {e}");
                0
            }
        }
    })
    .await
}

/// The baseline: the same query streamed with sqlx, every value decoded.
pub async fn source_baseline(s: &Scratch) -> Run {
    let sql = format!("select * from {}.src", s.schema);
    measure(|| async {
        let mut rows = sqlx::query(&sql).fetch(&s.pool);
        let mut n = 0u64;
        let mut checksum = 0f64;
        while let Ok(Some(row)) = rows.try_next().await {
            let id: Option<i64> = row.try_get(0).unwrap_or(None);
            let name: Option<String> = row.try_get(1).unwrap_or(None);
            let score: Option<f64> = row.try_get(2).unwrap_or(None);
            let ts: Option<chrono::NaiveDateTime> = row.try_get(3).unwrap_or(None);
            checksum += id.unwrap_or(0) as f64 + score.unwrap_or(0.0) + name.map_or(0, |n| n.len()) as f64;
            checksum += ts.map_or(0, |t| t.and_utc().timestamp()) as f64;
            n += 1;
        }
        std::hint::black_box(checksum);
        n
    })
    .await
}

/// The sink: generator → table, at least once.
pub async fn sink_pipeline(s: &Scratch, rows: u64, batch: usize) -> Run {
    let Ok(db) = s.config() else { return Run { rows: 0, wall: Duration::ZERO, cpu: Duration::ZERO } };
    let p = Pipeline::new();
    p.source("gen", GeneratorSource::bounded(rows).with_batch_size(batch))
        .sink("db", JdbcSink::new(db, "dst").with_batch_size(batch));
    let run = measure(|| async {
        match p.run(JobConfig::new("db-sink").with_restart(RestartStrategy::None)).await {
            Ok(_) => rows,
            Err(e) => {
                eprintln!("db-sink failed: {e}");
                0
            }
        }
    })
    .await;
    let written: i64 =
        sqlx::query_scalar(&format!("select count(*) from {}.dst", s.schema)).fetch_one(&s.pool).await.unwrap_or(-1);
    if written != rows as i64 {
        eprintln!("db-sink wrote {written} of {rows} rows");
        return Run { rows: 0, ..run };
    }
    run
}

/// The baseline: the same rows inserted with sqlx, the same rows per statement.
pub async fn sink_baseline(s: &Scratch, rows: u64, batch: usize) -> Run {
    let table = format!("{}.dst", s.schema);
    measure(|| async {
        let mut start = 0u64;
        while start < rows {
            let end = (start + batch as u64).min(rows);
            let mut qb = QueryBuilder::<sqlx::Postgres>::new(format!("insert into {table} (id, key, value, name) "));
            qb.push_values(start..end, |mut b, id| {
                let id = id as i64;
                b.push_bind(id)
                    .push_bind(id % 1000)
                    .push_bind(id as f64 * 0.5)
                    .push_bind(format!("name-{}", id % 1000));
            });
            if qb.build().execute(&s.pool).await.is_err() {
                return 0;
            }
            start = end;
        }
        rows
    })
    .await
}
