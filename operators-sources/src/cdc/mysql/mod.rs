//! MySQL/MariaDB change data capture: a table's rows, then every change to them from the
//! server's binary log, exactly once across restarts.
//!
//! ```no_run
//! use operators_core::builtins::DiscardSink;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sources::cdc::mysql::{MySqlCdcSource, StartupMode};
//! use operators_sources::jdbc::DbConfig;
//!
//! # async fn run() -> operators_core::Result<()> {
//! let db = DbConfig::parse("source.db.url", "mysql://127.0.0.1:3306/shop", Some("cdc"), Some("secret"))?;
//! let orders = MySqlCdcSource::new(db, "orders")?.with_startup(StartupMode::Initial);
//! let pipeline = Pipeline::new();
//! pipeline.source("orders", orders).sink("discard", DiscardSink::default());
//! pipeline.run(JobConfig::new("follow orders")).await?;
//! # Ok(()) }
//! ```
//!
//! # Server settings
//!
//! The server writes a row-based binary log with full row images: `log_bin`,
//! `binlog_format=ROW`, `binlog_row_image=FULL`, and a `server_id`. The user needs
//! `SELECT` on the table, `REPLICATION SLAVE` and `REPLICATION CLIENT` (MariaDB 10.5+:
//! `BINLOG MONITOR`). The source checks the settings when it opens and names the one that
//! is wrong.
//!
//! # Startup modes (Flink CDC's)
//!
//! - `initial`: the table's rows, then its changes. The snapshot needs no lock: it reads
//!   the table in chunks of its primary key ([`MySqlCdcSource::with_chunk_size`]), each in a
//!   consistent-snapshot transaction whose binlog position MariaDB reports, and a change
//!   in the log is emitted only if its transaction starts at or after its row's chunk's
//!   position ([`ChunkFilter`]). Writes may run during the snapshot: no row is missed or
//!   taken twice. A restart during the snapshot continues with the next chunk.
//!   (MySQL does not report a consistent snapshot's position: use another mode there.)
//! - `latest-offset`: changes from the end of the log when the job first starts.
//! - `earliest-offset`: every change the server still has in its log.
//! - `timestamp`: changes of statements from a time on (the log is read from its start
//!   and earlier changes passed over).
//! - `specific-offset`: changes from a binlog `file:pos` at a transaction's start.
//!
//! # Position in checkpoints
//!
//! The snapshot's chunks read so far and the log position: the start of the transaction
//! being read and how many of its changes were emitted. A restored job reads the log from
//! there, so a checkpoint taken inside a large transaction resumes inside it.
//!
//! # Limits
//!
//! One table, with a one-column integer primary key; its schema must not change while it
//! is followed (a DDL statement on it, seen in the log, stops the job naming the table and
//! the statement). Only subtask 0 reads.

mod binlog;
mod position;
mod schema;
mod snapshot;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use mysql_async::{Opts, OptsBuilder};
use operators_core::operator::{RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo};
use operators_core::{CheckpointId, Error, Result};
use serde::{Deserialize, Serialize};
use sqlx::{MySqlPool, Row};
use tokio::sync::mpsc;

use self::binlog::{LogMessage, LogReader};
pub use self::position::{BinlogPosition, Chunk, ChunkFilter, LogPosition};
use self::schema::{TABLE_KEY, TableInfo};
use crate::error::SourceError;
use crate::jdbc::{DbConfig, DbKind, DbPool, describe_sqlx};

/// Where a new job starts reading (a restored job continues from its checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMode {
    /// The table's rows, then its changes (`initial`, the default).
    Initial,
    /// Changes from the end of the log (`latest-offset`).
    LatestOffset,
    /// Every change in the server's log (`earliest-offset`).
    EarliestOffset,
    /// Changes of statements from this time on, in ms since 1970 (`timestamp`).
    Timestamp(i64),
    /// Changes from this position, which must be a transaction's start (`specific-offset`).
    SpecificOffset(BinlogPosition),
}

impl StartupMode {
    /// The setting for the mode names.
    pub const KEY: &'static str = "source.cdc.startup.mode";

    /// Reads a mode by its Flink CDC name; `timestamp_ms` and `offset` are the values of
    /// `source.cdc.startup.timestamp-millis` and `source.cdc.startup.specific-offset`,
    /// which those two modes need.
    pub fn parse(name: &str, timestamp_ms: Option<i64>, offset: Option<&str>) -> Result<Self, SourceError> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "initial" => StartupMode::Initial,
            "latest-offset" | "latest" => StartupMode::LatestOffset,
            "earliest-offset" | "earliest" => StartupMode::EarliestOffset,
            "timestamp" => StartupMode::Timestamp(timestamp_ms.ok_or_else(|| {
                SourceError::config("source.cdc.startup.timestamp-millis", "startup mode `timestamp` needs it")
            })?),
            "specific-offset" => {
                let key = "source.cdc.startup.specific-offset";
                let text = offset.ok_or_else(|| SourceError::config(key, "startup mode `specific-offset` needs it"))?;
                StartupMode::SpecificOffset(BinlogPosition::parse(key, text)?)
            }
            other => {
                return Err(SourceError::config(
                    Self::KEY,
                    format!(
                        "unknown mode `{other}`; one of initial, latest-offset, earliest-offset, timestamp, \
                         specific-offset"
                    ),
                ));
            }
        })
    }
}

/// Follows one MySQL/MariaDB table: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct MySqlCdcSource {
    db: DbConfig,
    database: String,
    table: String,
    startup: StartupMode,
    server_id: u32,
    chunk_size: usize,
    batch_rows: usize,
    bounded: bool,
}

/// The checkpointed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CdcState {
    /// `database.table`, to refuse a checkpoint of another table.
    table: String,
    /// Whether the startup mode was applied (a job's first start).
    started: bool,
    /// Snapshot chunks read, in key order.
    chunks: Vec<Chunk>,
    snapshot_done: bool,
    /// Where the log read stands, once it has a start.
    log: Option<LogPosition>,
    /// A bounded read's end.
    stop_at: Option<BinlogPosition>,
}

impl MySqlCdcSource {
    /// Follows `table` (`name`, or `database.name`; the database defaults to the URL's)
    /// of the MySQL/MariaDB server at `db`.
    pub fn new(db: DbConfig, table: &str) -> Result<Self, SourceError> {
        if db.kind() != DbKind::MySql {
            return Err(SourceError::config("source.db.url", "MySQL CDC needs a mysql:// or mariadb:// URL"));
        }
        let opts = Opts::from_url(db.url())
            .map_err(|e| SourceError::config("source.db.url", format!("`{}`: {e}", db.display())))?;
        let (database, name) = match table.trim().split_once('.') {
            Some((d, t)) => (d.trim_matches('`').to_string(), t.trim_matches('`').to_string()),
            None => match opts.db_name() {
                Some(d) => (d.to_string(), table.trim().trim_matches('`').to_string()),
                None => {
                    return Err(SourceError::config(
                        TABLE_KEY,
                        format!("`{table}` names no database, and the URL has none: write database.table"),
                    ));
                }
            },
        };
        if name.is_empty() || database.is_empty() {
            return Err(SourceError::config(TABLE_KEY, "give the table to follow"));
        }
        // A replica's id must be unique among the server's replicas; by default one from
        // the table's name, in Flink CDC's range, so that two jobs on different tables do
        // not meet and a restarted job takes over its own dead connection.
        let hash = xxhash_rust::xxh3::xxh3_64(format!("{database}.{name}").as_bytes());
        let server_id = 5400 + (hash % 1000) as u32;
        Ok(Self {
            db,
            database,
            table: name,
            startup: StartupMode::Initial,
            server_id,
            chunk_size: 8096,
            batch_rows: 8192,
            bounded: false,
        })
    }

    /// Where a new job starts (default [`StartupMode::Initial`]).
    pub fn with_startup(mut self, mode: StartupMode) -> Self {
        self.startup = mode;
        self
    }

    /// The replica id the source registers with (`source.cdc.server.id`); unique among
    /// the server's replicas. Default: one in 5400–6399 from the table's name.
    pub fn with_server_id(mut self, id: u32) -> Result<Self, SourceError> {
        if id == 0 {
            return Err(SourceError::config("source.cdc.server.id", "0 is not a replica id; give 1 to 4294967295"));
        }
        self.server_id = id;
        Ok(self)
    }

    /// Rows per snapshot chunk (`source.cdc.snapshot.chunk.size`, Flink CDC's
    /// `scan.incremental.snapshot.chunk.size`; default 8096, its default).
    pub fn with_chunk_size(mut self, rows: usize) -> Result<Self, SourceError> {
        if rows == 0 {
            return Err(SourceError::config("source.cdc.snapshot.chunk.size", "a chunk needs at least one row"));
        }
        self.chunk_size = rows;
        Ok(self)
    }

    /// Stops at the end the log had when the source began reading it, instead of
    /// following it (one-off copies, tests).
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }

    fn origin(&self) -> String {
        self.db.display()
    }

    fn opts(&self) -> Result<Opts> {
        let opts = Opts::from_url(self.db.url())
            .map_err(|e| Error::config("source.db.url", format!("`{}`: {e}", self.db.display())))?;
        let mut builder = OptsBuilder::from_opts(opts);
        if let Some(user) = self.db.username() {
            builder = builder.user(Some(user));
        }
        if let Some(password) = self.db.password() {
            builder = builder.pass(Some(password.expose()));
        }
        Ok(builder.into())
    }
}

impl SourceFactory for MySqlCdcSource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        Ok(Box::new(CdcReader {
            cfg: self.clone(),
            active: info.subtask == 0,
            pool: None,
            info: None,
            table_schema: Arc::new(Schema::empty()),
            state: CdcState::default(),
            log: None,
            task: None,
        }))
    }
}

struct CdcReader {
    cfg: MySqlCdcSource,
    active: bool,
    pool: Option<MySqlPool>,
    info: Option<Arc<TableInfo>>,
    /// The table's columns alone (the snapshot's batcher builds these).
    table_schema: SchemaRef,
    state: CdcState,
    log: Option<mpsc::Receiver<Result<LogMessage>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for CdcReader {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn sql_err(what: String, e: sqlx::Error) -> Error {
    Error::external(
        format!("{what}: {}", describe_sqlx(&e)),
        crate::jdbc::is_transient(&e),
        crate::jdbc::DriverError(e),
    )
}

impl CdcReader {
    fn pool(&self) -> Result<&MySqlPool> {
        self.pool.as_ref().ok_or_else(|| Error::Internal("CDC source used before open".into()))
    }

    fn table_info(&self) -> Result<Arc<TableInfo>> {
        self.info.clone().ok_or_else(|| Error::Internal("CDC source used before open".into()))
    }

    /// Refuses a server whose log the source cannot read.
    async fn check_server(&self) -> Result<()> {
        let origin = self.cfg.origin();
        let (log_bin, format, image): (i64, String, String) = sqlx::query_as(
            "select cast(@@log_bin as signed), cast(@@binlog_format as char), cast(@@binlog_row_image as char)",
        )
        .fetch_one(self.pool()?)
        .await
        .map_err(|e| sql_err(format!("reading the binlog settings of {origin}"), e))?;
        let refuse = |what: String| Err(Error::config("source.db.url", format!("{origin}: {what}")));
        if log_bin == 0 {
            return refuse("the binary log is off; start the server with log_bin (and binlog_format=ROW)".into());
        }
        if !format.eq_ignore_ascii_case("ROW") {
            return refuse(format!("binlog_format is {format}; change data capture needs ROW"));
        }
        if !image.eq_ignore_ascii_case("FULL") {
            return refuse(format!("binlog_row_image is {image}; change data capture needs FULL"));
        }
        Ok(())
    }

    /// The end of the server's log now.
    async fn log_end(&self) -> Result<BinlogPosition> {
        let origin = self.cfg.origin();
        let row = sqlx::query("show master status")
            .fetch_optional(self.pool()?)
            .await
            .map_err(|e| sql_err(format!("reading the binlog position of {origin} (needs REPLICATION CLIENT)"), e))?
            .ok_or_else(|| Error::config("source.db.url", format!("{origin} has no binary log (log_bin is off)")))?;
        let file: String = row.try_get(0).map_err(|e| sql_err("reading SHOW MASTER STATUS".into(), e))?;
        let pos: u64 = row.try_get(1).map_err(|e| sql_err("reading SHOW MASTER STATUS".into(), e))?;
        Ok(BinlogPosition::new(file, pos))
    }

    /// The start of the oldest log file the server has.
    async fn log_start(&self) -> Result<BinlogPosition> {
        let origin = self.cfg.origin();
        let row = sqlx::query("show binary logs")
            .fetch_optional(self.pool()?)
            .await
            .map_err(|e| sql_err(format!("listing the binary logs of {origin} (needs REPLICATION CLIENT)"), e))?
            .ok_or_else(|| Error::config("source.db.url", format!("{origin} has no binary log (log_bin is off)")))?;
        let file: String = row.try_get(0).map_err(|e| sql_err("reading SHOW BINARY LOGS".into(), e))?;
        Ok(BinlogPosition::new(file, 4))
    }

    /// Applies the startup mode on a job's first start.
    async fn start(&mut self) -> Result<()> {
        match self.cfg.startup.clone() {
            StartupMode::Initial => {}
            StartupMode::LatestOffset => self.begin_log(self.log_end().await?).await?,
            StartupMode::EarliestOffset | StartupMode::Timestamp(_) => self.begin_log(self.log_start().await?).await?,
            StartupMode::SpecificOffset(at) => self.begin_log(at).await?,
        }
        self.state.started = true;
        Ok(())
    }

    /// Ends the snapshot: the log is read from `at`.
    async fn begin_log(&mut self, at: BinlogPosition) -> Result<()> {
        self.state.snapshot_done = true;
        self.state.log = Some(LogPosition { at, skip: 0 });
        if self.cfg.bounded {
            self.state.stop_at = Some(self.log_end().await?);
        }
        Ok(())
    }

    async fn next_chunk(&mut self) -> Result<Option<arrow::record_batch::RecordBatch>> {
        let info = self.table_info()?;
        let after = match self.state.chunks.last() {
            None => None,
            Some(Chunk { upper: Some(u), .. }) => Some(*u),
            Some(Chunk { upper: None, .. }) => return Ok(None),
        };
        let read = snapshot::read_chunk(
            self.pool()?,
            &info,
            &self.table_schema,
            after,
            self.cfg.chunk_size,
            &self.cfg.origin(),
        )
        .await?;
        self.state.chunks.push(Chunk { upper: read.upper, at: read.at });
        if read.upper.is_none() {
            // The last chunk: the log is read from the earliest chunk's position.
            let first = self.state.chunks.iter().map(|c| c.at.clone()).min();
            if let Some(first) = first {
                self.begin_log(first).await?;
            }
        }
        Ok(Some(read.batch))
    }

    fn spawn_log(&mut self) -> Result<()> {
        let start = self.state.log.clone().ok_or_else(|| Error::Internal("log phase without a position".into()))?;
        let reader = LogReader {
            opts: self.cfg.opts()?,
            server_id: self.cfg.server_id,
            info: self.table_info()?,
            start,
            filter: ChunkFilter::new(self.state.chunks.clone()),
            since_ms: match self.cfg.startup {
                StartupMode::Timestamp(ms) => Some(ms),
                _ => None,
            },
            batch_rows: self.cfg.batch_rows,
            origin: self.cfg.origin(),
        };
        let (tx, rx) = mpsc::channel(4);
        self.task = Some(operators_core::spawn(reader.run(tx)));
        self.log = Some(rx);
        Ok(())
    }

    /// Moves the log position; the chunks are dropped once the log is past them.
    fn advance(&mut self, at: LogPosition) {
        let past_chunks = self.state.chunks.iter().map(|c| &c.at).max().is_some_and(|last| at.at >= *last);
        if past_chunks && at.skip == 0 {
            self.state.chunks.clear();
        }
        self.state.log = Some(at);
    }

    fn finished(&self) -> bool {
        match (&self.state.stop_at, &self.state.log) {
            (Some(stop), Some(at)) => at.skip == 0 && at.at >= *stop,
            _ => false,
        }
    }
}

#[async_trait]
impl Source for CdcReader {
    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        if let Some((_, bytes)) = state.snapshots.iter().find(|(i, _)| *i == 0) {
            let restored: CdcState = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "mysql cdc source".into(),
                message: format!("cannot read the checkpointed position: {e}"),
            })?;
            let table = format!("{}.{}", self.cfg.database, self.cfg.table);
            if restored.table != table {
                return Err(Error::config(
                    TABLE_KEY,
                    format!("the checkpoint follows `{}`, not `{table}`", restored.table),
                ));
            }
            self.state = restored;
        }
        Ok(())
    }

    async fn open(&mut self, _ctx: &mut SourceContext) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        let pool = match self.cfg.db.connect("source.db.url").await.map_err(SourceError::from)? {
            DbPool::MySql(p) => p,
            _ => return Err(Error::config("source.db.url", "MySQL CDC needs a mysql:// or mariadb:// URL")),
        };
        self.pool = Some(pool);
        self.check_server().await?;
        let info = TableInfo::describe(self.pool()?, &self.cfg.database, &self.cfg.table).await?;
        self.table_schema =
            Arc::new(Schema::new(info.schema.fields().iter().take(info.columns.len()).cloned().collect::<Vec<_>>()));
        self.info = Some(Arc::new(info));
        self.state.table = format!("{}.{}", self.cfg.database, self.cfg.table);
        if !self.state.started {
            self.start().await?;
        }
        Ok(())
    }

    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        if !self.active {
            return Ok(SourcePoll::Finished);
        }
        if !self.state.snapshot_done {
            return Ok(match self.next_chunk().await? {
                Some(batch) if batch.num_rows() > 0 => SourcePoll::Batch(batch),
                _ => SourcePoll::Idle,
            });
        }
        if self.finished() {
            return Ok(SourcePoll::Finished);
        }
        if self.log.is_none() {
            self.spawn_log()?;
        }
        let Some(rx) = self.log.as_mut() else { return Ok(SourcePoll::Idle) };
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Err(_) => Ok(SourcePoll::Idle),
            Ok(None) => Err(Error::Internal("the binlog reader stopped without an error".into())),
            Ok(Some(message)) => match message? {
                LogMessage::Batch(batch, at) => {
                    self.advance(at);
                    Ok(SourcePoll::Batch(batch))
                }
                LogMessage::Position(at) => {
                    self.advance(at);
                    Ok(if self.finished() { SourcePoll::Finished } else { SourcePoll::Idle })
                }
            },
        }
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        if !self.active {
            return Ok(None);
        }
        postcard::to_allocvec(&self.state)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing the CDC position: {e}")))
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        Ok(())
    }
}
