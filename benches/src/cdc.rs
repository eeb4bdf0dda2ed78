//! MySQL/MariaDB binlog → discard through the CDC source, against a bare mysql_async
//! binlog loop that decodes the same rows (the local MariaDB, or `MYSQL_URL`).

use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Value};
use operators_core::builtins::DiscardSink;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sources::cdc::mysql::{BinlogPosition, MySqlCdcSource, StartupMode};
use operators_sources::jdbc::DbConfig;

use crate::{Run, measure};

type BoxError = Box<dyn std::error::Error>;

/// The server the bench uses: `MYSQL_URL`, or the local test server.
pub fn url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A scratch database whose table `items` was filled by `rows` inserts, and the binlog
/// span that holds them.
pub struct Fixture {
    conn: Conn,
    database: String,
    /// Where the inserts start in the log.
    pub start: BinlogPosition,
    /// Where they end.
    pub end: BinlogPosition,
    /// Rows inserted.
    pub rows: u64,
}

async fn log_end(conn: &mut Conn) -> Result<BinlogPosition, BoxError> {
    // Four columns: File, Position, Binlog_Do_DB, Binlog_Ignore_DB.
    let row: Option<mysql_async::Row> = conn.query_first("show master status").await?;
    let row = row.ok_or("the server has no binary log (log_bin is off)")?;
    let file: String = row.get_opt(0).ok_or("no File column")??;
    let pos: u64 = row.get_opt(1).ok_or("no Position column")??;
    Ok(BinlogPosition::new(file, pos))
}

impl Fixture {
    /// Creates the database and writes `rows` rows in inserts of 1000.
    pub async fn new(rows: u64) -> Result<Self, BoxError> {
        let mut conn = Conn::new(Opts::from_url(&url())?).await.map_err(|e| {
            format!("MariaDB at {} is not answering ({e}); start it with testing/services/mariadb.sh start", url())
        })?;
        let database = format!("bench_cdc_{:08x}", rand::random::<u32>());
        conn.query_drop(format!("create database {database}")).await?;
        conn.query_drop(format!(
            "create table {database}.items (id bigint primary key, name varchar(40), score double, ts datetime(3), n int)"
        ))
        .await?;
        let start = log_end(&mut conn).await?;
        let mut id = 0;
        while id < rows {
            let n = (rows - id).min(1000);
            let values: Vec<String> = (id..id + n)
                .map(|i| {
                    format!("({i}, 'name-{i}', {}, '2024-01-01 00:00:00.{:03}', {})", i as f64 * 0.5, i % 1000, i % 7)
                })
                .collect();
            conn.query_drop(format!("insert into {database}.items values {}", values.join(", "))).await?;
            id += n;
        }
        let end = log_end(&mut conn).await?;
        Ok(Self { conn, database, start, end, rows })
    }

    /// The source on the fixture's table, from its start to the end of the log.
    fn source(&self) -> Result<MySqlCdcSource, BoxError> {
        let db = DbConfig::parse("bench", &url(), None, None)?;
        Ok(MySqlCdcSource::new(db, &format!("{}.items", self.database))?
            .with_startup(StartupMode::SpecificOffset(self.start.clone()))
            .bounded(true))
    }

    /// Drops the database.
    pub async fn drop(mut self) {
        let _ = self.conn.query_drop(format!("drop database {}", self.database)).await;
        let _ = self.conn.disconnect().await;
    }
}

/// The CDC source → discard.
pub async fn pipeline(f: &Fixture) -> Run {
    let sink = DiscardSink::default();
    let Ok(source) = f.source() else { return Run { rows: 0, wall: Duration::ZERO, cpu: Duration::ZERO } };
    let p = Pipeline::new();
    p.source("cdc", source).sink("discard", sink.clone());
    measure(|| async {
        match p.run(JobConfig::new("cdc-bench").with_restart(RestartStrategy::None)).await {
            Ok(_) => sink.rows(),
            Err(e) => {
                eprintln!("cdc pipeline failed: {e}");
                0
            }
        }
    })
    .await
}

/// The bare loop: the same binlog span read with mysql_async, every row of the table
/// decoded and each of its values looked at.
pub async fn baseline(f: &Fixture) -> Run {
    measure(|| async {
        match bare_read(f).await {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("bare binlog loop failed: {e}");
                0
            }
        }
    })
    .await
}

async fn bare_read(f: &Fixture) -> Result<u64, BoxError> {
    let mut conn = Conn::new(Opts::from_url(&url())?).await?;
    conn.query_drop("set @mariadb_slave_capability = 4").await?;
    let request = BinlogStreamRequest::new(6399).with_filename(f.start.file.as_bytes()).with_pos(f.start.pos);
    let mut stream = conn.get_binlog_stream(request).await?;
    let (mut rows, mut file, mut non_null) = (0u64, f.start.file.clone(), 0u64);
    while let Some(event) = stream.next().await {
        let event = event?;
        let at = u64::from(event.header().log_pos());
        match event.read_data()? {
            Some(EventData::RotateEvent(r)) if at != 0 => file = r.name().into_owned(),
            Some(EventData::RowsEvent(data)) => {
                let tme = stream.get_tme(data.table_id()).ok_or("rows without their table map")?;
                if tme.database_name() == f.database.as_str() && tme.table_name() == "items" {
                    for row in data.rows(tme) {
                        let (_, after) = row?;
                        if let Some(after) = after {
                            for i in 0..after.len() {
                                if !matches!(
                                    after.as_ref(i),
                                    Some(mysql_async::binlog::value::BinlogValue::Value(Value::NULL))
                                ) {
                                    non_null += 1;
                                }
                            }
                            rows += 1;
                        }
                    }
                }
            }
            _ => {}
        }
        if BinlogPosition::new(file.clone(), at) >= f.end && at != 0 {
            break;
        }
    }
    std::hint::black_box(non_null);
    Ok(rows)
}
