//! PostgreSQL change data capture: a table's rows, then every change to them from logical
//! replication (`pgoutput`), exactly once across restarts.
//!
//! ```no_run
//! use operators_core::builtins::DiscardSink;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sources::cdc::postgres::PostgresCdcSource;
//! use operators_sources::jdbc::DbConfig;
//!
//! # async fn run() -> operators_core::Result<()> {
//! let db = DbConfig::parse("source.db.url", "postgres://127.0.0.1:5432/shop", Some("cdc"), Some("secret"))?;
//! let orders = PostgresCdcSource::new(db, "public.orders")?;
//! let pipeline = Pipeline::new();
//! pipeline.source("orders", orders).sink("discard", DiscardSink::default());
//! pipeline.run(JobConfig::new("follow orders")).await?;
//! # Ok(()) }
//! ```
//!
//! # Server settings
//!
//! `wal_level=logical`, a free replication slot and WAL sender (`max_replication_slots`,
//! `max_wal_senders`); the user needs the `REPLICATION` attribute, `SELECT` on the table,
//! and the right to create a publication for it (or one made beforehand, named by
//! [`PostgresCdcSource::with_publication`]).
//!
//! # What the source creates
//!
//! On a job's first start: the publication (`FOR TABLE`, unless it exists) and the
//! replication slot (`pgoutput`), named from the table unless set. The slot keeps the WAL
//! the job has not confirmed: it stays when the job ends, for the job to continue from,
//! until dropped with `select pg_drop_replication_slot('<slot>')`. A slot that exists
//! when a job starts without a checkpoint is refused (another job may be following it).
//!
//! # Startup modes
//!
//! - `initial`: the slot is created first; then the table is read in chunks of its
//!   integer primary key, each in a REPEATABLE READ transaction whose snapshot
//!   (`pg_current_snapshot()`) is kept with the chunk. A change from the stream is emitted
//!   only if its transaction is one the snapshot of its row's chunk did not see
//!   ([`Snapshot::sees`]): PostgreSQL's own visibility rule, so no row is missed or taken
//!   twice, with no lock and writes running. A restart during the snapshot continues with
//!   the next chunk.
//! - `latest-offset`: changes from the slot's creation on.
//!
//! # Position in checkpoints
//!
//! The chunks, and the end LSN of the last transaction wholly emitted plus the changes of
//! the next one already emitted. The slot's confirmed position moves to a checkpoint's LSN
//! only when the checkpoint completes, so the server keeps everything a restore needs.
//!
//! # Row images
//!
//! `-U` and `-D` rows carry what the server sends of the old row: with the table's
//! default REPLICA IDENTITY the key only (other columns null), with `REPLICA IDENTITY
//! FULL` every column. A TOASTed value an update did not change is not sent; without
//! REPLICA IDENTITY FULL such a row is a bad record naming the column.
//!
//! # Limits
//!
//! One table, with a one-column integer primary key; a change of its columns stops the
//! job naming the table, as does a TRUNCATE. Only subtask 0 reads.

mod pgoutput;
mod visibility;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::FutureExt;
use operators_core::operator::{RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo};
use operators_core::{CheckpointId, Error, Result};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Column, Executor, PgPool, Statement, TypeInfo};
use tokio::sync::mpsc;

use self::pgoutput::{Datum, Message};
pub use self::visibility::Snapshot;
use crate::cdc::{ChangeColumns, ChangeKind, changelog_schema, key_at, snapshot_batch};
use crate::error::SourceError;
use crate::jdbc::source::{Batcher, ColumnBuilder, days};
use crate::jdbc::{ColumnKind, DbConfig, DbKind, DbPool, DriverError, describe_sqlx, is_transient};

const TABLE_KEY: &str = "source.db.table";

/// Where a new job starts (a restored job continues from its checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgStartupMode {
    /// The table's rows, then its changes (`initial`, the default).
    Initial,
    /// Changes from the slot's creation on (`latest-offset`).
    LatestOffset,
}

impl PgStartupMode {
    /// Reads a mode by its Flink CDC name.
    pub fn parse(name: &str) -> Result<Self, SourceError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "initial" => Ok(Self::Initial),
            "latest-offset" | "latest" => Ok(Self::LatestOffset),
            other => Err(SourceError::config(
                "source.cdc.startup.mode",
                format!("`{other}`: the PostgreSQL CDC source starts with initial or latest-offset"),
            )),
        }
    }
}

/// Follows one PostgreSQL table: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PostgresCdcSource {
    db: DbConfig,
    /// `schema.table` as given, or the table alone (the connection's current schema).
    table: String,
    startup: PgStartupMode,
    slot: Option<String>,
    publication: Option<String>,
    chunk_size: usize,
    batch_rows: usize,
}

impl PostgresCdcSource {
    /// Follows `table` (`name` or `schema.name`) of the PostgreSQL server at `db`.
    pub fn new(db: DbConfig, table: &str) -> Result<Self, SourceError> {
        if db.kind() != DbKind::Postgres {
            return Err(SourceError::config("source.db.url", "PostgreSQL CDC needs a postgres:// URL"));
        }
        if table.trim().is_empty() {
            return Err(SourceError::config(TABLE_KEY, "give the table to follow"));
        }
        Ok(Self {
            db,
            table: table.trim().to_string(),
            startup: PgStartupMode::Initial,
            slot: None,
            publication: None,
            chunk_size: 8096,
            batch_rows: 8192,
        })
    }

    /// Where a new job starts (default [`PgStartupMode::Initial`]).
    pub fn with_startup(mut self, mode: PgStartupMode) -> Self {
        self.startup = mode;
        self
    }

    /// The replication slot (`source.cdc.slot.name`; default `operators_<schema>_<table>`).
    pub fn with_slot(mut self, name: impl Into<String>) -> Self {
        self.slot = Some(name.into());
        self
    }

    /// The publication (`source.cdc.publication`; default the slot's name).
    pub fn with_publication(mut self, name: impl Into<String>) -> Self {
        self.publication = Some(name.into());
        self
    }

    /// Rows per snapshot chunk (default 8096).
    pub fn with_chunk_size(mut self, rows: usize) -> Result<Self, SourceError> {
        if rows == 0 {
            return Err(SourceError::config("source.cdc.snapshot.chunk.size", "a chunk needs at least one row"));
        }
        self.chunk_size = rows;
        Ok(self)
    }
}

impl SourceFactory for PostgresCdcSource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        Ok(Box::new(PgReader {
            cfg: self.clone(),
            active: info.subtask == 0,
            attempt: info.attempt,
            pool: None,
            table: None,
            state: PgState::default(),
            log: None,
            task: None,
            pending_acks: BTreeMap::new(),
            ack: None,
        }))
    }
}

/// A snapshot chunk: keys above the previous chunk's `upper` up to its own (none: the
/// last), read under `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PgChunk {
    upper: Option<i128>,
    snapshot: Snapshot,
}

/// The log position: the end of the last transaction wholly emitted, and the changes of
/// the next one already emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct PgPosition {
    lsn: u64,
    skip: u64,
    /// The 64-bit id of the last transaction read: the stream names transactions by their
    /// 32 low bits, widened next to this one (ids of transactions read in commit order stay
    /// within 2^31 of each other). 0: not yet known (the last chunk's snapshot is used).
    last_xid: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PgState {
    table: String,
    slot: String,
    started: bool,
    chunks: Vec<PgChunk>,
    snapshot_done: bool,
    log: Option<PgPosition>,
}

/// The followed table.
#[derive(Debug)]
struct PgTable {
    schema_name: String,
    name: String,
    /// The columns read, quoted (generated columns are not).
    select_list: String,
    columns: Vec<(String, ColumnKind)>,
    key: usize,
    /// The table's columns and the change columns.
    schema: SchemaRef,
    table_schema: SchemaRef,
}

impl PgTable {
    fn quoted(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema_name.replace('"', "\"\""), self.name.replace('"', "\"\""))
    }
}

enum LogMessage {
    Batch(RecordBatch, PgPosition),
    Position(PgPosition),
}

struct PgReader {
    cfg: PostgresCdcSource,
    active: bool,
    /// Restarts of the job within its process (0: a new start).
    attempt: u32,
    pool: Option<PgPool>,
    table: Option<Arc<PgTable>>,
    state: PgState,
    log: Option<mpsc::Receiver<Result<LogMessage>>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Positions of checkpoints taken and not yet complete.
    pending_acks: BTreeMap<CheckpointId, u64>,
    /// Where the stream task reads the confirmed LSN from.
    ack: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Drop for PgReader {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn sql_err(what: String, e: sqlx::Error) -> Error {
    Error::external(format!("{what}: {}", describe_sqlx(&e)), is_transient(&e), DriverError(e))
}

impl PgReader {
    fn pool(&self) -> Result<&PgPool> {
        self.pool.as_ref().ok_or_else(|| Error::Internal("CDC source used before open".into()))
    }

    fn table(&self) -> Result<Arc<PgTable>> {
        self.table.clone().ok_or_else(|| Error::Internal("CDC source used before open".into()))
    }

    async fn describe(&self) -> Result<PgTable> {
        let pool = self.pool()?;
        let (schema_name, name) = match self.cfg.table.split_once('.') {
            Some((s, t)) => (s.trim_matches('"').to_string(), t.trim_matches('"').to_string()),
            None => {
                let current: String = sqlx::query_scalar("select current_schema()::text")
                    .fetch_one(pool)
                    .await
                    .map_err(|e| sql_err("reading the current schema".into(), e))?;
                (current, self.cfg.table.trim_matches('"').to_string())
            }
        };
        let quoted = format!("\"{}\".\"{}\"", schema_name.replace('"', "\"\""), name.replace('"', "\"\""));
        // Generated columns are left out: pgoutput does not send them (before PostgreSQL 18).
        let names: Vec<String> = sqlx::query_scalar(
            "select attname::text from pg_attribute where attrelid = $1::regclass and attnum > 0 \
             and not attisdropped and attgenerated = '' order by attnum",
        )
        .bind(&quoted)
        .fetch_all(pool)
        .await
        .map_err(|e| Error::config(TABLE_KEY, format!("table {quoted} cannot be read: {}", describe_sqlx(&e))))?;
        let select_list =
            names.iter().map(|n| format!("\"{}\"", n.replace('"', "\"\""))).collect::<Vec<_>>().join(", ");
        let probe = format!("select {select_list} from {quoted}");
        let statement = pool
            .prepare(&probe)
            .await
            .map_err(|e| Error::config(TABLE_KEY, format!("table {quoted} cannot be read: {}", describe_sqlx(&e))))?;
        let mut columns = Vec::new();
        for c in statement.columns() {
            let type_name = c.type_info().name().to_string();
            let kind = ColumnKind::from_type_name(DbKind::Postgres, &type_name).ok_or_else(|| {
                Error::config(
                    TABLE_KEY,
                    format!("column `{}` of {quoted} has type {type_name}, which the source cannot read", c.name()),
                )
            })?;
            columns.push((c.name().to_string(), kind));
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "select a.attname::text from pg_index i join pg_attribute a on a.attrelid = i.indrelid \
             and a.attnum = any(i.indkey) where i.indrelid = $1::regclass and i.indisprimary",
        )
        .bind(&quoted)
        .fetch_all(pool)
        .await
        .map_err(|e| sql_err(format!("reading the primary key of {quoted}"), e))?;
        let key = match keys.as_slice() {
            [k] => columns
                .iter()
                .position(|(n, _)| n == k)
                .filter(|i| matches!(columns[*i].1, ColumnKind::I16 | ColumnKind::I32 | ColumnKind::I64)),
            _ => None,
        }
        .ok_or_else(|| {
            Error::config(
                TABLE_KEY,
                format!(
                    "{quoted} needs a primary key of one integer column (it has: {}); the snapshot reads in \
                     its order and changes are applied by it",
                    if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
                ),
            )
        })?;
        let table_fields: Vec<Field> = columns.iter().map(|(n, k)| Field::new(n, k.arrow_type(), true)).collect();
        let schema = changelog_schema(table_fields.clone(), &columns[key].0);
        Ok(PgTable {
            schema_name,
            name,
            select_list,
            columns,
            key,
            schema,
            table_schema: Arc::new(Schema::new(table_fields)),
        })
    }

    fn slot_name(&self, table: &PgTable) -> String {
        self.cfg.slot.clone().unwrap_or_else(|| {
            let raw = format!("operators_{}_{}", table.schema_name, table.name).to_ascii_lowercase();
            // Slot names: lower-case letters, digits and underscores, at most 63 bytes.
            let clean: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            clean.chars().take(63).collect()
        })
    }

    /// On a job's first start: the publication and the slot.
    async fn create_slot(&mut self, table: &PgTable) -> Result<u64> {
        let pool = self.pool()?.clone();
        let slot = self.state.slot.clone();
        let publication = self.cfg.publication.clone().unwrap_or_else(|| slot.clone());
        let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_publication where pubname = $1)")
            .bind(&publication)
            .fetch_one(&pool)
            .await
            .map_err(|e| sql_err("reading the publications".into(), e))?;
        if exists {
            let covers: bool = sqlx::query_scalar(
                "select exists (select 1 from pg_publication_tables where pubname = $1 and schemaname = $2 \
                 and tablename = $3)",
            )
            .bind(&publication)
            .bind(&table.schema_name)
            .bind(&table.name)
            .fetch_one(&pool)
            .await
            .map_err(|e| sql_err("reading the publications".into(), e))?;
            if !covers {
                return Err(Error::config(
                    "source.cdc.publication",
                    format!("publication `{publication}` does not publish {}", table.quoted()),
                ));
            }
        } else {
            pool.execute(format!("create publication \"{publication}\" for table {}", table.quoted()).as_str())
                .await
                .map_err(|e| sql_err(format!("creating publication {publication}"), e))?;
        }
        let taken: bool = sqlx::query_scalar("select exists (select 1 from pg_replication_slots where slot_name = $1)")
            .bind(&slot)
            .fetch_one(&pool)
            .await
            .map_err(|e| sql_err("reading the replication slots".into(), e))?;
        if taken && self.attempt == 0 {
            return Err(Error::config(
                "source.cdc.slot.name",
                format!(
                    "replication slot `{slot}` already exists, and this job starts without a checkpoint: another job \
                     may follow it; give another slot, or drop it (select pg_drop_replication_slot('{slot}'))"
                ),
            ));
        }
        if taken {
            // A restart of this job that failed before its first checkpoint: the slot is
            // its own, and nothing read from it was committed.
            tracing::warn!(slot = %slot, "the job restarts without a checkpoint: its replication slot is made again");
            sqlx::query("select pg_drop_replication_slot($1)")
                .bind(&slot)
                .execute(&pool)
                .await
                .map_err(|e| sql_err(format!("dropping replication slot {slot} (still in use?)"), e))?;
        }
        let lsn: String =
            sqlx::query_scalar("select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')")
                .bind(&slot)
                .fetch_one(&pool)
                .await
                .map_err(|e| sql_err(format!("creating replication slot {slot} (wal_level must be logical)"), e))?;
        Lsn::parse(&lsn).map(|l| l.as_u64()).map_err(|_| Error::Internal(format!("the server gave LSN `{lsn}`")))
    }

    /// A restored job's slot must still be there and not past the checkpoint (else the
    /// changes between would never come).
    async fn check_slot(&self) -> Result<()> {
        let slot = &self.state.slot;
        let confirmed: Option<Option<String>> =
            sqlx::query_scalar("select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1")
                .bind(slot)
                .fetch_optional(self.pool()?)
                .await
                .map_err(|e| sql_err("reading the replication slots".into(), e))?;
        let Some(confirmed) = confirmed else {
            return Err(Error::config(
                "source.cdc.slot.name",
                format!(
                    "replication slot `{slot}` of the checkpoint is gone; start the job again without it (initial)"
                ),
            ));
        };
        let confirmed = confirmed.and_then(|c| Lsn::parse(&c).ok()).map_or(0, |l| l.as_u64());
        let at = self.state.log.map_or(0, |p| p.lsn);
        if confirmed > at {
            return Err(Error::config(
                "source.cdc.slot.name",
                format!(
                    "replication slot `{slot}` confirmed {} but the checkpoint stands at {}: the changes between are \
                     gone from it (an older checkpoint or savepoint?); restore the newest, or start again (initial)",
                    Lsn::from_u64(confirmed),
                    Lsn::from_u64(at)
                ),
            ));
        }
        Ok(())
    }

    async fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
        let table = self.table()?;
        let after = match self.state.chunks.last() {
            None => None,
            Some(PgChunk { upper: Some(u), .. }) => Some(*u),
            Some(PgChunk { upper: None, .. }) => return Ok(None),
        };
        let pool = self.pool()?.clone();
        let mut tx = pool.begin().await.map_err(|e| sql_err("starting a snapshot".into(), e))?;
        tx.execute("set transaction isolation level repeatable read")
            .await
            .map_err(|e| sql_err("starting a snapshot".into(), e))?;
        let snapshot_text: String = sqlx::query_scalar("select pg_current_snapshot()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| sql_err("reading the snapshot".into(), e))?;
        let snapshot = Snapshot::parse(&snapshot_text)
            .ok_or_else(|| Error::Internal(format!("the server gave snapshot `{snapshot_text}`")))?;
        let key = format!("\"{}\"", table.columns[table.key].0.replace('"', "\"\""));
        let filter = if after.is_some() { format!(" where {key} > $1") } else { String::new() };
        let sql = format!(
            "select {} from {}{filter} order by {key} limit {}",
            table.select_list,
            table.quoted(),
            self.cfg.chunk_size
        );
        let mut query = sqlx::query(&sql);
        if let Some(after) = after {
            query = query.bind(i64::try_from(after).map_err(|_| Error::Internal(format!("key {after}")))?);
        }
        let rows = query.fetch_all(&mut *tx).await.map_err(|e| sql_err(format!("reading `{sql}`"), e))?;
        tx.commit().await.map_err(|e| sql_err("ending a snapshot".into(), e))?;
        let kinds = table.columns.iter().map(|(_, k)| *k).collect();
        let mut batcher = Batcher::new(table.table_schema.clone(), kinds, self.cfg.db.display(), 0);
        for row in &rows {
            batcher.push(row)?;
        }
        let n = batcher.len();
        let batch = batcher.take()?;
        let upper = if n >= self.cfg.chunk_size { key_at(batch.column(table.key), n - 1)? } else { None };
        self.state.chunks.push(PgChunk { upper, snapshot });
        if upper.is_none() {
            self.state.snapshot_done = true;
        }
        // Snapshot rows' position is the snapshot they were read under.
        snapshot_batch(
            table.schema.clone(),
            batch.columns(),
            n,
            (&table.schema_name, &table.name),
            &format!("snapshot:{snapshot_text}"),
        )
        .map(Some)
    }

    fn spawn_log(&mut self) -> Result<()> {
        let table = self.table()?;
        let start = self.state.log.ok_or_else(|| Error::Internal("log phase without a position".into()))?;
        let options = PgConnectOptions::from_str(self.cfg.db.url())
            .map_err(|e| Error::config("source.db.url", format!("{}: {e}", self.cfg.db.display())))?;
        let user = self.cfg.db.username().map(str::to_string).unwrap_or_else(|| options.get_username().to_string());
        let password = self.cfg.db.password().map(|p| p.expose().to_string()).unwrap_or_default();
        let database = options.get_database().unwrap_or(&user).to_string();
        let slot = self.state.slot.clone();
        let publication = self.cfg.publication.clone().unwrap_or_else(|| slot.clone());
        let config = ReplicationConfig::new(options.get_host(), user, password, database, slot, publication)
            .with_port(options.get_port())
            .with_start_lsn(Lsn::from_u64(start.lsn))
            .with_status_interval(Duration::from_secs(1))
            // Values arrive as text: pin the settings that shape it, as for the snapshot's
            // connection (sqlx reads typed values).
            .with_options("-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3");
        let ack = Arc::new(std::sync::atomic::AtomicU64::new(start.lsn));
        self.ack = Some(ack.clone());
        let stream = Stream {
            config,
            table,
            start,
            chunks: self.state.chunks.clone(),
            batch_rows: self.cfg.batch_rows,
            origin: self.cfg.db.display(),
            ack,
        };
        let (tx, rx) = mpsc::channel(4);
        self.task = Some(operators_core::spawn(stream.run(tx)));
        self.log = Some(rx);
        Ok(())
    }
}

/// The replication stream's reader.
struct Stream {
    config: ReplicationConfig,
    table: Arc<PgTable>,
    start: PgPosition,
    chunks: Vec<PgChunk>,
    batch_rows: usize,
    origin: String,
    /// The LSN to confirm to the server (moved by completed checkpoints).
    ack: Arc<std::sync::atomic::AtomicU64>,
}

impl Stream {
    async fn run(self, tx: mpsc::Sender<Result<LogMessage>>) {
        if let Err(e) = self.read(&tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    fn stream_err(&self, e: pgwire_replication::PgWireError) -> Error {
        let text = e.to_string();
        let retryable =
            !text.contains("SQLSTATE 42704") && !text.contains("SQLSTATE 55006") && !text.contains("SQLSTATE 42501");
        Error::external(format!("reading the replication stream of {}", self.origin), retryable, e)
    }

    async fn read(self, tx: &mpsc::Sender<Result<LogMessage>>) -> Result<()> {
        let mut client = ReplicationClient::connect(self.config.clone()).await.map_err(|e| self.stream_err(e))?;
        let mut relation: Option<u32> = None;
        let mut out = Changes::new(&self.table);
        let (mut position, mut sent) = (self.start, self.start);
        let mut skip = self.start.skip;
        let mut in_tx: Option<(u64, i64)> = None; // (xid widened, commit time ms)
        let mut last_xid = self.start.last_xid;
        let mut changes = 0u64;
        let mut acked = self.start.lsn;
        loop {
            let confirmed = self.ack.load(std::sync::atomic::Ordering::Relaxed);
            if confirmed > acked {
                client.update_applied_lsn(Lsn::from_u64(confirmed));
                acked = confirmed;
            }
            let next = match client.recv().now_or_never() {
                Some(next) => next,
                None => {
                    if out.len() > 0 {
                        let batch = out.take(&self.table)?;
                        if tx.send(Ok(LogMessage::Batch(batch, position))).await.is_err() {
                            return Ok(());
                        }
                        sent = position;
                    } else if position != sent {
                        if tx.send(Ok(LogMessage::Position(position))).await.is_err() {
                            return Ok(());
                        }
                        sent = position;
                    }
                    // Wake at least every second to confirm what checkpoints completed.
                    match tokio::time::timeout(Duration::from_secs(1), client.recv()).await {
                        Ok(next) => next,
                        Err(_) => continue,
                    }
                }
            };
            let event = match next.map_err(|e| self.stream_err(e))? {
                Some(event) => event,
                None => {
                    return Err(Error::external(
                        format!("reading the replication stream of {}", self.origin),
                        true,
                        "the stream ended",
                    ));
                }
            };
            match event {
                ReplicationEvent::Begin { xid, commit_time_micros, .. } => {
                    let reference = match (last_xid, self.chunks.last()) {
                        (0, Some(c)) => c.snapshot.xmax,
                        (reference, _) => reference,
                    };
                    let widen = Snapshot::widen_near(reference, xid);
                    last_xid = widen;
                    // Commit times count from 2000-01-01 in PostgreSQL.
                    in_tx = Some((widen, commit_time_micros / 1000 + 946_684_800_000));
                    changes = 0;
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    in_tx = None;
                    skip = 0;
                    changes = 0;
                    position = PgPosition { lsn: end_lsn.as_u64(), skip: 0, last_xid };
                }
                // The server's WAL moved on without a change for the table (PostgreSQL 15+
                // sends no empty transactions): between transactions the position follows,
                // so the slot lets go of WAL while the table is quiet.
                ReplicationEvent::KeepAlive { wal_end, .. }
                    if in_tx.is_none() && skip == 0 && wal_end.as_u64() > position.lsn =>
                {
                    position = PgPosition { lsn: wal_end.as_u64(), skip: 0, last_xid };
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let message = pgoutput::decode(&data).map_err(|e| {
                        Error::external(format!("decoding the replication stream of {}", self.origin), false, e)
                    })?;
                    let in_transaction = in_tx;
                    match message {
                        Message::Relation { id, namespace, name, columns }
                            if namespace == self.table.schema_name && name == self.table.name =>
                        {
                            let same = columns.len() == self.table.columns.len()
                                && columns.iter().zip(&self.table.columns).all(|(a, (b, _))| a.name == *b);
                            if !same {
                                return Err(Error::config(
                                    TABLE_KEY,
                                    format!(
                                        "table {} changed its columns (now: {}); the CDC source does not follow \
                                             schema changes",
                                        self.table.quoted(),
                                        columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                                    ),
                                ));
                            }
                            relation = Some(id);
                        }
                        Message::Truncate { relations } if relation.is_some_and(|r| relations.contains(&r)) => {
                            return Err(Error::config(
                                TABLE_KEY,
                                format!(
                                    "table {} was truncated; the CDC source does not follow TRUNCATE",
                                    self.table.quoted()
                                ),
                            ));
                        }
                        Message::Insert { relation: r, new } if Some(r) == relation => {
                            let (xid, commit_ms) = in_transaction.ok_or_else(|| outside(&self.origin))?;
                            changes += 1;
                            position = PgPosition { lsn: position.lsn, skip: changes.max(skip), last_xid };
                            if changes > skip && self.emits(&new, xid) {
                                out.push(
                                    &self.table,
                                    &new,
                                    None,
                                    ChangeKind::Insert,
                                    position,
                                    commit_ms,
                                    &self.origin,
                                )?;
                            }
                        }
                        Message::Update { relation: r, old, old_full, new } if Some(r) == relation => {
                            let (xid, commit_ms) = in_transaction.ok_or_else(|| outside(&self.origin))?;
                            changes += 1;
                            position = PgPosition { lsn: position.lsn, skip: changes.max(skip), last_xid };
                            if changes > skip {
                                let before = old.clone().unwrap_or_else(|| key_only(&self.table, &new));
                                let full = if old_full { old.as_deref() } else { None };
                                if self.emits(&before, xid) {
                                    out.push(
                                        &self.table,
                                        &before,
                                        None,
                                        ChangeKind::UpdateBefore,
                                        position,
                                        commit_ms,
                                        &self.origin,
                                    )?;
                                }
                                if self.emits(&new, xid) {
                                    out.push(
                                        &self.table,
                                        &new,
                                        full,
                                        ChangeKind::UpdateAfter,
                                        position,
                                        commit_ms,
                                        &self.origin,
                                    )?;
                                }
                            }
                        }
                        Message::Delete { relation: r, old } if Some(r) == relation => {
                            let (xid, commit_ms) = in_transaction.ok_or_else(|| outside(&self.origin))?;
                            changes += 1;
                            position = PgPosition { lsn: position.lsn, skip: changes.max(skip), last_xid };
                            if changes > skip && self.emits(&old, xid) {
                                out.push(
                                    &self.table,
                                    &old,
                                    None,
                                    ChangeKind::Delete,
                                    position,
                                    commit_ms,
                                    &self.origin,
                                )?;
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            if out.len() >= self.batch_rows {
                let batch = out.take(&self.table)?;
                if tx.send(Ok(LogMessage::Batch(batch, position))).await.is_err() {
                    return Ok(());
                }
                sent = position;
            }
        }
    }

    /// Whether a change of the row `values` in transaction `xid` is not in the snapshot.
    fn emits(&self, values: &[Datum], xid: u64) -> bool {
        if self.chunks.is_empty() {
            return true;
        }
        let Some(key) = datum_key(values.get(self.table.key)) else { return true };
        let i = self.chunks.partition_point(|c| c.upper.is_some_and(|u| u < key));
        self.chunks.get(i).is_none_or(|c| !c.snapshot.sees(xid))
    }
}

fn datum_key(d: Option<&Datum>) -> Option<i128> {
    match d {
        Some(Datum::Text(t)) => std::str::from_utf8(t).ok()?.parse().ok(),
        _ => None,
    }
}

/// The old row of an update that did not send it: the key (unchanged) and nulls.
fn key_only(table: &PgTable, new: &[Datum]) -> Vec<Datum> {
    (0..table.columns.len())
        .map(|i| if i == table.key { new.get(i).cloned().unwrap_or(Datum::Null) } else { Datum::Null })
        .collect()
}

/// A change outside a transaction: the stream is not what pgoutput sends.
fn outside(origin: &str) -> Error {
    Error::external(format!("reading the replication stream of {origin}"), false, "a change outside a transaction")
}

/// Builders of one batch of changes.
struct Changes {
    columns: Vec<ColumnBuilder>,
    change: ChangeColumns,
    rows: usize,
}

impl Changes {
    fn new(table: &PgTable) -> Self {
        Self {
            columns: table.columns.iter().map(|(_, k)| ColumnBuilder::new(*k)).collect(),
            change: ChangeColumns::default(),
            rows: 0,
        }
    }

    fn len(&self) -> usize {
        self.rows
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        table: &PgTable,
        values: &[Datum],
        old: Option<&[Datum]>,
        kind: ChangeKind,
        position: PgPosition,
        commit_ms: i64,
        origin: &str,
    ) -> Result<()> {
        if values.len() != table.columns.len() {
            return Err(Error::config(
                TABLE_KEY,
                format!(
                    "a change of {} has {} columns, the table {}",
                    table.quoted(),
                    values.len(),
                    table.columns.len()
                ),
            ));
        }
        // Formatted for messages only; the column is written without a String per change.
        let at = || format!("{}:{}", Lsn::from_u64(position.lsn), position.skip);
        for (i, ((name, column_kind), builder)) in table.columns.iter().zip(self.columns.iter_mut()).enumerate() {
            let value = match &values[i] {
                // An unchanged TOASTed value: the old row has it under REPLICA IDENTITY FULL.
                Datum::Unchanged => match old.and_then(|o| o.get(i)) {
                    Some(Datum::Text(t)) => Datum::Text(t.clone()),
                    Some(Datum::Null) => Datum::Null,
                    _ => {
                        return Err(Error::bad_record(
                            format!("{origin} {} change {}", table.quoted(), at()),
                            format!(
                                "column `{name}`: the update left this large value unchanged and the server did not \
                                 send it; set REPLICA IDENTITY FULL on the table"
                            ),
                        ));
                    }
                },
                other => other.clone(),
            };
            append_text(*column_kind, builder, &value).map_err(|m| {
                Error::bad_record(
                    format!("{origin} {} change {}", table.quoted(), at()),
                    format!("column `{name}`: {m}"),
                )
            })?;
        }
        self.change.append(
            kind,
            &table.schema_name,
            &table.name,
            format_args!("{}:{}", Lsn::from_u64(position.lsn), position.skip),
            Some(commit_ms),
        );
        self.rows += 1;
        Ok(())
    }

    fn take(&mut self, table: &PgTable) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        columns.extend(self.change.finish());
        self.rows = 0;
        RecordBatch::try_new(table.schema.clone(), columns).map_err(|e| Error::arrow("building a batch of changes", e))
    }
}

/// Appends a value in PostgreSQL's text output form as the database source reads the
/// column.
fn append_text(kind: ColumnKind, builder: &mut ColumnBuilder, value: &Datum) -> std::result::Result<(), String> {
    let text = match value {
        Datum::Null | Datum::Unchanged => {
            builder.append_null();
            return Ok(());
        }
        Datum::Text(t) => std::str::from_utf8(t).map_err(|e| format!("not UTF-8: {e}"))?,
    };
    let bad = || format!("cannot read `{text}` as {kind:?}");
    match builder {
        ColumnBuilder::Bool(b) => b.append_value(match text {
            "t" => true,
            "f" => false,
            _ => return Err(bad()),
        }),
        ColumnBuilder::I16(b) => b.append_value(text.parse().map_err(|_| bad())?),
        ColumnBuilder::I32(b) => b.append_value(text.parse().map_err(|_| bad())?),
        ColumnBuilder::I64(b) => b.append_value(text.parse().map_err(|_| bad())?),
        ColumnBuilder::F32(b) => b.append_value(text.parse().map_err(|_| bad())?),
        ColumnBuilder::F64(b) => b.append_value(text.parse().map_err(|_| bad())?),
        ColumnBuilder::Text(b) => match kind {
            // As the database source prints a TIME read through chrono.
            ColumnKind::Time => {
                b.append_value(chrono::NaiveTime::parse_from_str(text, "%H:%M:%S%.f").map_err(|_| bad())?.to_string())
            }
            // The database source reads JSON through serde_json: the same compact text.
            ColumnKind::Json => {
                let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
                b.append_value(v.to_string())
            }
            _ => b.append_value(text),
        },
        ColumnBuilder::Bytes(b) => {
            let hex = text.strip_prefix("\\x").ok_or_else(bad)?;
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            b.append_value(bytes.ok_or_else(bad)?)
        }
        ColumnBuilder::Date(b) => {
            b.append_value(days(chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?))
        }
        ColumnBuilder::Ts(b) => match kind {
            ColumnKind::TimestampTz => b.append_value(
                chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
                    .map_err(|_| bad())?
                    .timestamp_micros(),
            ),
            _ => b.append_value(
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|_| bad())?
                    .and_utc()
                    .timestamp_micros(),
            ),
        },
        _ => return Err(bad()),
    }
    Ok(())
}

#[async_trait]
impl Source for PgReader {
    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        if let Some((_, bytes)) = state.snapshots.iter().find(|(i, _)| *i == 0) {
            self.state = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "postgres cdc source".into(),
                message: format!("cannot read the checkpointed position: {e}"),
            })?;
        }
        Ok(())
    }

    async fn open(&mut self, _ctx: &mut SourceContext) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        let pool = match self.cfg.db.connect("source.db.url").await.map_err(SourceError::from)? {
            DbPool::Postgres(p) => p,
            _ => return Err(Error::config("source.db.url", "PostgreSQL CDC needs a postgres:// URL")),
        };
        self.pool = Some(pool);
        let table = self.describe().await?;
        let name = format!("{}.{}", table.schema_name, table.name);
        if self.state.started && self.state.table != name {
            return Err(Error::config(
                TABLE_KEY,
                format!("the checkpoint follows `{}`, not `{name}`", self.state.table),
            ));
        }
        if self.state.started {
            self.check_slot().await?;
        } else {
            self.state.table = name;
            self.state.slot = self.slot_name(&table);
            let lsn = self.create_slot(&table).await?;
            self.state.log = Some(PgPosition { lsn, skip: 0, last_xid: 0 });
            self.state.snapshot_done = self.cfg.startup == PgStartupMode::LatestOffset;
            self.state.started = true;
        }
        self.table = Some(Arc::new(table));
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
        if self.log.is_none() {
            self.spawn_log()?;
        }
        let Some(rx) = self.log.as_mut() else { return Ok(SourcePoll::Idle) };
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Err(_) => Ok(SourcePoll::Idle),
            Ok(None) => Err(Error::Internal("the replication reader stopped without an error".into())),
            Ok(Some(message)) => match message? {
                LogMessage::Batch(batch, at) => {
                    self.state.log = Some(at);
                    Ok(SourcePoll::Batch(batch))
                }
                LogMessage::Position(at) => {
                    self.state.log = Some(at);
                    Ok(SourcePoll::Idle)
                }
            },
        }
    }

    fn snapshot(&mut self, checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        if !self.active {
            return Ok(None);
        }
        if let Some(at) = self.state.log {
            self.pending_acks.insert(checkpoint_id, at.lsn);
        }
        postcard::to_allocvec(&self.state)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing the CDC position: {e}")))
    }

    async fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        // The slot may let go of what the completed checkpoint no longer needs.
        let done: Vec<CheckpointId> = self.pending_acks.range(..=checkpoint_id).map(|(k, _)| *k).collect();
        let mut lsn = None;
        for id in done {
            lsn = self.pending_acks.remove(&id).max(lsn);
        }
        if let (Some(lsn), Some(ack)) = (lsn, &self.ack) {
            ack.fetch_max(lsn, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
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
