//! A database query read into Arrow batches.
//!
//! When the job starts, the query is prepared: a wrong password, an unknown table, a
//! syntax error or a column type the source cannot map stops the job before any row
//! moves, naming the query or column. Rows then stream from a background task through a
//! channel of two batches (`fetch.size` rows each), so memory stays flat however large the
//! result. The source is bounded: it finishes after the last row.
//!
//! Position in checkpoints:
//! - with a key column (`key.column`, an integer or text column with unique values), the
//!   table is read in key order, page by page, and the checkpoint holds the last key
//!   emitted: a restored job continues after it;
//! - otherwise the checkpoint holds the number of rows emitted, and a restored job runs
//!   the query again and skips them — exact only if the query returns rows in a stable
//!   order (give it an ORDER BY, or set a key column).
//!
//! Only subtask 0 reads; the source is meant to run with parallelism 1.
//!
//! MySQL/MariaDB report text with a binary collation (`utf8mb4_bin`, MariaDB's JSON) as
//! binary. For a table read the declared column types correct this; a custom query
//! returns such columns as bytes unless it casts them (`cast(j as char)`).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int8Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::TryStreamExt;
use operators_core::operator::{RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo};
use operators_core::{CheckpointId, Error, Result};
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use sqlx::{Column, Executor, Row, Statement, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use super::{ColumnKind, DbConfig, DbKind, DbPool, DriverError, describe_sqlx, quote_ident};
use crate::error::SourceError;

/// Reads a table or query.
///
/// ```no_run
/// use operators_sources::jdbc::{DbConfig, JdbcSource};
/// let db = DbConfig::parse("source.db.url", "postgres://127.0.0.1/test", Some("app"), Some("secret"))?;
/// let source = JdbcSource::new(db).with_table("orders").with_key_column("id").with_fetch_size(1000)?;
/// # Ok::<(), operators_sources::SourceError>(())
/// ```
#[derive(Debug, Clone)]
pub struct JdbcSource {
    db: DbConfig,
    table: Option<String>,
    sql: Option<String>,
    fetch_size: usize,
    key_column: Option<String>,
}

/// Where a database read stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DbPosition {
    /// This many rows of the query were emitted.
    Rows(u64),
    /// Rows up to and including this integer key were emitted.
    AfterInt(i64),
    /// Rows up to and including this text key were emitted.
    AfterText(String),
    /// Everything was read.
    Done,
}

impl JdbcSource {
    /// A source on `db`; set a table or a query.
    pub fn new(db: DbConfig) -> Self {
        Self { db, table: None, sql: None, fetch_size: 50, key_column: None }
    }

    /// Reads `table` (`select * from <table>` unless a query is given).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Reads the result of `sql`.
    pub fn with_sql(mut self, sql: impl Into<String>) -> Self {
        self.sql = Some(sql.into());
        self
    }

    /// Rows per round trip and per batch (default 50, the toolkit's); 0 is refused,
    /// naming `source.db.fetch.size`.
    pub fn with_fetch_size(mut self, rows: usize) -> crate::Result<Self> {
        self.fetch_size = crate::error::at_least_one("source.db.fetch.size", rows)?;
        Ok(self)
    }

    /// Reads in the order of this unique column and resumes after the last key.
    pub fn with_key_column(mut self, column: impl Into<String>) -> Self {
        self.key_column = Some(column.into());
        self
    }

    /// The query the source runs.
    pub fn query(&self) -> std::result::Result<String, SourceError> {
        match (&self.sql, &self.table) {
            (Some(sql), _) => Ok(sql.trim().trim_end_matches(';').to_string()),
            (None, Some(t)) => Ok(format!("select * from {}", quote_ident(self.db.kind(), t))),
            (None, None) => Err(SourceError::config("source.db.table", "give a table or a query (source.db.sql)")),
        }
    }

    fn query_key(&self) -> &'static str {
        if self.sql.is_some() { "source.db.sql" } else { "source.db.table" }
    }

    /// Connects, prepares the query and returns the Arrow schema of its rows, without
    /// reading any row.
    pub async fn describe(&self) -> std::result::Result<(DbPool, Vec<(String, ColumnKind)>, SchemaRef), SourceError> {
        let query = self.query()?;
        let pool = self.db.connect("source.db.url").await?;
        let columns = prepare(&pool, &query).await.map_err(|e| {
            SourceError::config(self.query_key(), format!("query `{query}` failed: {}", describe_sqlx(&e)))
        })?;
        let declared = self.mysql_declared_types(&pool).await;
        let mut mapped = Vec::with_capacity(columns.len());
        for (name, type_name) in columns {
            // MySQL flags text with a binary collation (utf8mb4_bin, MariaDB's JSON) as
            // binary; the table's declared type tells them apart.
            if let Some(declared) = declared.iter().find(|(n, _)| *n == name).map(|(_, t)| t.as_str()) {
                let text_kind = match declared {
                    "json" => Some(ColumnKind::Json),
                    "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
                        Some(ColumnKind::Text)
                    }
                    _ => None,
                };
                if let Some(kind) = text_kind {
                    mapped.push((name, kind));
                    continue;
                }
            }
            let kind = ColumnKind::from_type_name(pool.kind(), &type_name).ok_or_else(|| {
                SourceError::config(
                    self.query_key(),
                    format!(
                        "column `{name}` of `{query}` has type {type_name}, which the source cannot map; \
                         cast it in the query (for example to text)"
                    ),
                )
            })?;
            mapped.push((name, kind));
        }
        if let Some(key) = &self.key_column {
            match mapped.iter().find(|(n, _)| n == key) {
                None => {
                    return Err(SourceError::config(
                        "source.db.key.column",
                        format!("column `{key}` is not in the result of `{query}`"),
                    ));
                }
                Some((_, k))
                    if !matches!(k, ColumnKind::I16 | ColumnKind::I32 | ColumnKind::I64 | ColumnKind::Text) =>
                {
                    return Err(SourceError::config(
                        "source.db.key.column",
                        format!("column `{key}` must be an integer or text column to read in key order"),
                    ));
                }
                Some(_) => {}
            }
        }
        let schema =
            Arc::new(Schema::new(mapped.iter().map(|(n, k)| Field::new(n, k.arrow_type(), true)).collect::<Vec<_>>()));
        Ok((pool, mapped, schema))
    }
}

impl JdbcSource {
    /// For a MySQL table read, the declared data type of each column (lower case).
    async fn mysql_declared_types(&self, pool: &DbPool) -> Vec<(String, String)> {
        let (DbPool::MySql(p), Some(table), None) = (pool, &self.table, &self.sql) else {
            return Vec::new();
        };
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s.to_string()), n.to_string()),
            None => (None, table.clone()),
        };
        let sql = "select cast(column_name as char), cast(data_type as char) from information_schema.columns \
                   where table_schema = coalesce(?, database()) and table_name = ?";
        sqlx::query_as::<_, (String, String)>(sql)
            .bind(schema)
            .bind(name)
            .fetch_all(p)
            .await
            .map(|rows| rows.into_iter().map(|(c, t)| (c, t.to_ascii_lowercase())).collect())
            .unwrap_or_default()
    }
}

/// Column names and driver type names of a prepared query.
async fn prepare(pool: &DbPool, query: &str) -> std::result::Result<Vec<(String, String)>, sqlx::Error> {
    fn cols<C: Column>(columns: &[C]) -> Vec<(String, String)> {
        columns.iter().map(|c| (c.name().to_string(), c.type_info().name().to_string())).collect()
    }
    Ok(match pool {
        DbPool::Postgres(p) => cols(p.prepare(query).await?.columns()),
        DbPool::MySql(p) => cols(p.prepare(query).await?.columns()),
        DbPool::Sqlite(p) => cols(p.prepare(query).await?.columns()),
    })
}

impl SourceFactory for JdbcSource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        self.query()?;
        Ok(Box::new(JdbcReader {
            cfg: self.clone(),
            active: info.subtask == 0,
            pool: None,
            columns: Vec::new(),
            schema: Arc::new(Schema::empty()),
            rows: None,
            task: None,
            position: DbPosition::Rows(0),
            total: None,
            read: 0,
        }))
    }
}

pub(crate) enum ColumnBuilder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    pub(crate) fn new(kind: ColumnKind) -> Self {
        match kind {
            ColumnKind::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            ColumnKind::I8 => ColumnBuilder::I8(Int8Builder::new()),
            ColumnKind::I16 => ColumnBuilder::I16(Int16Builder::new()),
            ColumnKind::I32 => ColumnBuilder::I32(Int32Builder::new()),
            ColumnKind::I64 => ColumnBuilder::I64(Int64Builder::new()),
            ColumnKind::U8 => ColumnBuilder::U8(UInt8Builder::new()),
            ColumnKind::U16 => ColumnBuilder::U16(UInt16Builder::new()),
            ColumnKind::U32 => ColumnBuilder::U32(UInt32Builder::new()),
            ColumnKind::U64 => ColumnBuilder::U64(UInt64Builder::new()),
            ColumnKind::F32 => ColumnBuilder::F32(Float32Builder::new()),
            ColumnKind::F64 | ColumnKind::Decimal => ColumnBuilder::F64(Float64Builder::new()),
            ColumnKind::Text | ColumnKind::Json | ColumnKind::Uuid | ColumnKind::Time | ColumnKind::Dynamic => {
                ColumnBuilder::Text(StringBuilder::new())
            }
            ColumnKind::Bytes => ColumnBuilder::Bytes(BinaryBuilder::new()),
            ColumnKind::Date => ColumnBuilder::Date(Date32Builder::new()),
            ColumnKind::Timestamp => ColumnBuilder::Ts(TimestampMicrosecondBuilder::new()),
            ColumnKind::TimestampTz => ColumnBuilder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    /// Appends a null.
    pub(crate) fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::I8(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) => b.append_null(),
            ColumnBuilder::U8(b) => b.append_null(),
            ColumnBuilder::U16(b) => b.append_null(),
            ColumnBuilder::U32(b) => b.append_null(),
            ColumnBuilder::U64(b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Bytes(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Ts(b) => b.append_null(),
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::I8(b) => Arc::new(b.finish()),
            ColumnBuilder::I16(b) => Arc::new(b.finish()),
            ColumnBuilder::I32(b) => Arc::new(b.finish()),
            ColumnBuilder::I64(b) => Arc::new(b.finish()),
            ColumnBuilder::U8(b) => Arc::new(b.finish()),
            ColumnBuilder::U16(b) => Arc::new(b.finish()),
            ColumnBuilder::U32(b) => Arc::new(b.finish()),
            ColumnBuilder::U64(b) => Arc::new(b.finish()),
            ColumnBuilder::F32(b) => Arc::new(b.finish()),
            ColumnBuilder::F64(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

pub(crate) fn days(d: chrono::NaiveDate) -> i32 {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((d - epoch).num_days()).unwrap_or(i32::MAX)
}

/// Reads one row's columns into the builders; one implementation per driver.
pub(crate) trait AppendRow {
    fn append(
        &self,
        kinds: &[ColumnKind],
        builders: &mut [ColumnBuilder],
    ) -> std::result::Result<(), (usize, sqlx::Error)>;
}

macro_rules! get {
    ($row:expr, $i:expr, $t:ty) => {
        $row.try_get::<Option<$t>, _>($i).map_err(|e| ($i, e))?
    };
}

macro_rules! append_common {
    ($row:expr, $i:expr, $kind:expr, $b:expr) => {
        match ($kind, $b) {
            (ColumnKind::Bool, ColumnBuilder::Bool(b)) => b.append_option(get!($row, $i, bool)),
            (ColumnKind::I64, ColumnBuilder::I64(b)) => b.append_option(get!($row, $i, i64)),
            (ColumnKind::F64, ColumnBuilder::F64(b)) => b.append_option(get!($row, $i, f64)),
            (ColumnKind::Text, ColumnBuilder::Text(b)) => b.append_option(get!($row, $i, String)),
            (ColumnKind::Bytes, ColumnBuilder::Bytes(b)) => b.append_option(get!($row, $i, Vec<u8>)),
            (ColumnKind::Date, ColumnBuilder::Date(b)) => b.append_option(get!($row, $i, chrono::NaiveDate).map(days)),
            (ColumnKind::Time, ColumnBuilder::Text(b)) => {
                b.append_option(get!($row, $i, chrono::NaiveTime).map(|t| t.to_string()))
            }
            (ColumnKind::Timestamp, ColumnBuilder::Ts(b)) => {
                b.append_option(get!($row, $i, chrono::NaiveDateTime).map(|t| t.and_utc().timestamp_micros()))
            }
            (kind, _) => return Err(($i, sqlx::Error::Decode(format!("no reader for {kind:?}").into()))),
        }
    };
}

impl AppendRow for sqlx::postgres::PgRow {
    fn append(
        &self,
        kinds: &[ColumnKind],
        builders: &mut [ColumnBuilder],
    ) -> std::result::Result<(), (usize, sqlx::Error)> {
        for (i, (kind, b)) in kinds.iter().zip(builders.iter_mut()).enumerate() {
            match (kind, b) {
                (ColumnKind::I16, ColumnBuilder::I16(b)) => b.append_option(get!(self, i, i16)),
                (ColumnKind::I32, ColumnBuilder::I32(b)) => b.append_option(get!(self, i, i32)),
                (ColumnKind::F32, ColumnBuilder::F32(b)) => b.append_option(get!(self, i, f32)),
                (ColumnKind::Decimal, ColumnBuilder::F64(b)) => {
                    b.append_option(get!(self, i, rust_decimal::Decimal).and_then(|d| d.to_f64()))
                }
                (ColumnKind::Json, ColumnBuilder::Text(b)) => {
                    b.append_option(get!(self, i, serde_json::Value).map(|v| v.to_string()))
                }
                (ColumnKind::Uuid, ColumnBuilder::Text(b)) => {
                    b.append_option(get!(self, i, sqlx::types::Uuid).map(|v| v.to_string()))
                }
                (ColumnKind::TimestampTz, ColumnBuilder::Ts(b)) => {
                    b.append_option(get!(self, i, chrono::DateTime<chrono::Utc>).map(|t| t.timestamp_micros()))
                }
                (kind, b) => append_common!(self, i, *kind, b),
            }
        }
        Ok(())
    }
}

impl AppendRow for sqlx::mysql::MySqlRow {
    fn append(
        &self,
        kinds: &[ColumnKind],
        builders: &mut [ColumnBuilder],
    ) -> std::result::Result<(), (usize, sqlx::Error)> {
        for (i, (kind, b)) in kinds.iter().zip(builders.iter_mut()).enumerate() {
            match (kind, b) {
                // Text with a binary collation arrives typed as a blob; its bytes are UTF-8.
                (ColumnKind::Text | ColumnKind::Json, ColumnBuilder::Text(b))
                    if self.column(i).type_info().name().contains("BLOB") =>
                {
                    b.append_option(self.try_get_unchecked::<Option<String>, _>(i).map_err(|e| (i, e))?)
                }
                (ColumnKind::I8, ColumnBuilder::I8(b)) => b.append_option(get!(self, i, i8)),
                // I16 is SMALLINT or YEAR, both two-byte integers on the wire; sqlx offers
                // YEAR as no Rust type, so the value is read without its type check.
                (ColumnKind::I16, ColumnBuilder::I16(b)) => {
                    b.append_option(self.try_get_unchecked::<Option<i16>, _>(i).map_err(|e| (i, e))?)
                }
                (ColumnKind::I32, ColumnBuilder::I32(b)) => b.append_option(get!(self, i, i32)),
                (ColumnKind::U8, ColumnBuilder::U8(b)) => b.append_option(get!(self, i, u8)),
                (ColumnKind::U16, ColumnBuilder::U16(b)) => b.append_option(get!(self, i, u16)),
                (ColumnKind::U32, ColumnBuilder::U32(b)) => b.append_option(get!(self, i, u32)),
                (ColumnKind::U64, ColumnBuilder::U64(b)) => b.append_option(get!(self, i, u64)),
                (ColumnKind::F32, ColumnBuilder::F32(b)) => b.append_option(get!(self, i, f32)),
                (ColumnKind::Decimal, ColumnBuilder::F64(b)) => {
                    b.append_option(get!(self, i, rust_decimal::Decimal).and_then(|d| d.to_f64()))
                }
                (ColumnKind::Json, ColumnBuilder::Text(b)) => {
                    b.append_option(get!(self, i, serde_json::Value).map(|v| v.to_string()))
                }
                (ColumnKind::TimestampTz, ColumnBuilder::Ts(b)) => {
                    b.append_option(get!(self, i, chrono::DateTime<chrono::Utc>).map(|t| t.timestamp_micros()))
                }
                (kind, b) => append_common!(self, i, *kind, b),
            }
        }
        Ok(())
    }
}

impl AppendRow for sqlx::sqlite::SqliteRow {
    fn append(
        &self,
        kinds: &[ColumnKind],
        builders: &mut [ColumnBuilder],
    ) -> std::result::Result<(), (usize, sqlx::Error)> {
        for (i, (kind, b)) in kinds.iter().zip(builders.iter_mut()).enumerate() {
            match (kind, b) {
                // SQLite keeps NUMERIC values as integers or reals.
                (ColumnKind::Decimal, ColumnBuilder::F64(b)) => b.append_option(get!(self, i, f64)),
                (ColumnKind::Dynamic, ColumnBuilder::Text(b)) => {
                    // No declared type: take the value as it is stored.
                    let raw = self.try_get_raw(i).map_err(|e| (i, e))?;
                    if raw.is_null() {
                        b.append_null();
                        continue;
                    }
                    let stored = raw.type_info().name().to_string();
                    let text = match stored.as_str() {
                        "INTEGER" => get!(self, i, i64).map(|v| v.to_string()),
                        "REAL" => get!(self, i, f64).map(|v| v.to_string()),
                        _ => get!(self, i, String),
                    };
                    b.append_option(text);
                }
                (kind, b) => append_common!(self, i, *kind, b),
            }
        }
        Ok(())
    }
}

/// Turns rows into batches of `capacity` rows.
pub(crate) struct Batcher {
    schema: SchemaRef,
    kinds: Vec<ColumnKind>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    origin: String,
    seen: u64,
}

impl Batcher {
    pub(crate) fn new(schema: SchemaRef, kinds: Vec<ColumnKind>, origin: String, first_row: u64) -> Self {
        let builders = kinds.iter().map(|k| ColumnBuilder::new(*k)).collect();
        Self { schema, kinds, builders, rows: 0, origin, seen: first_row }
    }

    pub(crate) fn push<R: AppendRow>(&mut self, row: &R) -> Result<()> {
        self.seen += 1;
        row.append(&self.kinds, &mut self.builders).map_err(|(col, e)| {
            Error::bad_record(
                format!("{} row {}", self.origin, self.seen),
                format!("column `{}`: {}", self.schema.field(col).name(), describe_sqlx(&e)),
            )
        })?;
        self.rows += 1;
        Ok(())
    }

    /// Rows appended since the last [`Batcher::take`].
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    pub(crate) fn take(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::arrow("building a batch from database rows", e))
    }
}

type BatchResult = Result<RecordBatch>;

/// Streams the result of `query`, skipping `skip` rows, into `tx` in batches.
async fn stream_query(
    pool: DbPool,
    query: String,
    mut batcher: Batcher,
    fetch: usize,
    mut skip: u64,
    tx: mpsc::Sender<BatchResult>,
) {
    macro_rules! run {
        ($pool:expr) => {{
            let mut rows = sqlx::query(&query).fetch($pool);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => {
                        if skip > 0 {
                            skip -= 1;
                            batcher.seen += 1;
                            continue;
                        }
                        if let Err(e) = batcher.push(&row) {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        if batcher.rows >= fetch {
                            let batch = batcher.take();
                            if tx.send(batch).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let err =
                            Error::external(format!("reading `{query}`"), super::is_transient(&e), DriverError(e));
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                }
            }
        }};
    }
    match &pool {
        DbPool::Postgres(p) => run!(p),
        DbPool::MySql(p) => run!(p),
        DbPool::Sqlite(p) => run!(p),
    }
    if batcher.rows > 0 {
        let batch = batcher.take();
        let _ = tx.send(batch).await;
    }
}

struct JdbcReader {
    cfg: JdbcSource,
    active: bool,
    pool: Option<DbPool>,
    columns: Vec<(String, ColumnKind)>,
    schema: SchemaRef,
    rows: Option<mpsc::Receiver<BatchResult>>,
    task: Option<tokio::task::JoinHandle<()>>,
    position: DbPosition,
    total: Option<u64>,
    /// Rows emitted by this run (for progress).
    read: u64,
}

impl Drop for JdbcReader {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl JdbcReader {
    fn emitted(&self) -> u64 {
        match &self.position {
            DbPosition::Rows(n) => *n,
            _ => 0,
        }
    }

    /// One page of rows after the last key.
    async fn next_page(&mut self, key: &str) -> Result<Option<RecordBatch>> {
        let Some(pool) = self.pool.clone() else { return Ok(None) };
        let kind = pool.kind();
        let limit = self.cfg.fetch_size;
        let sql = page_sql(kind, &self.cfg.query()?, key, limit, &self.position);
        let kinds: Vec<ColumnKind> = self.columns.iter().map(|(_, k)| *k).collect();
        let mut batcher = Batcher::new(self.schema.clone(), kinds, self.cfg.db.display(), 0);
        macro_rules! page {
            ($pool:expr) => {{
                let mut query = sqlx::query(&sql);
                match &self.position {
                    DbPosition::AfterInt(v) => query = query.bind(*v),
                    DbPosition::AfterText(v) => query = query.bind(v.clone()),
                    _ => {}
                }
                let rows = query.fetch_all($pool).await.map_err(|e| {
                    Error::external(format!("reading `{sql}`"), super::is_transient(&e), DriverError(e))
                })?;
                for row in &rows {
                    batcher.push(row)?;
                }
            }};
        }
        match &pool {
            DbPool::Postgres(p) => page!(p),
            DbPool::MySql(p) => page!(p),
            DbPool::Sqlite(p) => page!(p),
        }
        if batcher.rows == 0 {
            return Ok(None);
        }
        let full = batcher.rows >= limit;
        let batch = batcher.take()?;
        let key_col = batch.column_by_name(key).cloned();
        let last = batch.num_rows() - 1;
        self.position = match key_col {
            Some(c) if matches!(c.data_type(), DataType::Utf8) => {
                DbPosition::AfterText(c.as_string::<i32>().value(last).to_string())
            }
            Some(c) => {
                let ints = arrow::compute::cast(&c, &DataType::Int64)
                    .map_err(|e| Error::arrow("reading the key column", e))?;
                DbPosition::AfterInt(ints.as_primitive::<Int64Type>().value(last))
            }
            None => return Err(Error::Internal(format!("key column `{key}` missing from a page"))),
        };
        if !full {
            // A short page is the last one: once it is emitted the read is complete.
            self.position = DbPosition::Done;
        }
        self.read += batch.num_rows() as u64;
        Ok(Some(batch))
    }
}

/// The query of one page of a read in key order: the first page, or the page after the
/// position's key, which is bound as the statement's one parameter (never spliced in).
pub(super) fn page_sql(kind: DbKind, inner: &str, key: &str, limit: usize, position: &DbPosition) -> String {
    let q = quote_ident(kind, key);
    let param = if kind == DbKind::Postgres { "$1" } else { "?" };
    match position {
        DbPosition::AfterInt(_) | DbPosition::AfterText(_) => {
            format!("select * from ({inner}) as q where q.{q} > {param} order by q.{q} limit {limit}")
        }
        _ => format!("select * from ({inner}) as q order by q.{q} limit {limit}"),
    }
}

#[async_trait]
impl Source for JdbcReader {
    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        if let Some((_, bytes)) = state.snapshots.iter().find(|(i, _)| *i == 0) {
            self.position = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "jdbc source".into(),
                message: format!("cannot read the checkpointed position: {e}"),
            })?;
        }
        Ok(())
    }

    async fn open(&mut self, ctx: &mut SourceContext) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        let (pool, columns, schema) = self.cfg.describe().await?;
        let query = self.cfg.query()?;
        let count_sql = format!("select count(*) from ({query}) as q");
        let count: std::result::Result<i64, sqlx::Error> = match &pool {
            DbPool::Postgres(p) => sqlx::query_scalar(&count_sql).fetch_one(p).await,
            DbPool::MySql(p) => sqlx::query_scalar(&count_sql).fetch_one(p).await,
            DbPool::Sqlite(p) => sqlx::query_scalar(&count_sql).fetch_one(p).await,
        };
        self.total = count.ok().and_then(|c| u64::try_from(c).ok());
        ctx.set_progress(self.emitted(), self.total);
        self.columns = columns;
        self.schema = schema;
        if self.cfg.key_column.is_none() && self.position != DbPosition::Done {
            let (tx, rx) = mpsc::channel(2);
            let kinds: Vec<ColumnKind> = self.columns.iter().map(|(_, k)| *k).collect();
            let skip = self.emitted();
            let batcher = Batcher::new(self.schema.clone(), kinds, self.cfg.db.display(), skip);
            self.task =
                Some(operators_core::spawn(stream_query(pool.clone(), query, batcher, self.cfg.fetch_size, skip, tx)));
            self.rows = Some(rx);
        }
        self.pool = Some(pool);
        Ok(())
    }

    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        if !self.active || self.position == DbPosition::Done {
            return Ok(SourcePoll::Finished);
        }
        if let Some(key) = self.cfg.key_column.clone() {
            let batch = self.next_page(&key).await?;
            let Some(batch) = batch else {
                self.position = DbPosition::Done;
                return Ok(SourcePoll::Finished);
            };
            ctx.set_progress(self.read, self.total);
            return Ok(SourcePoll::Batch(batch));
        }
        let Some(rx) = self.rows.as_mut() else {
            return Ok(SourcePoll::Finished);
        };
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Err(_) => Ok(SourcePoll::Idle),
            Ok(None) => {
                self.position = DbPosition::Done;
                ctx.set_progress(self.total.unwrap_or(0), self.total);
                Ok(SourcePoll::Finished)
            }
            Ok(Some(batch)) => {
                let batch = batch?;
                let n = self.emitted() + batch.num_rows() as u64;
                self.position = DbPosition::Rows(n);
                ctx.set_progress(n, self.total);
                Ok(SourcePoll::Batch(batch))
            }
        }
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        if !self.active {
            return Ok(None);
        }
        postcard::to_allocvec(&self.position)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing the database position: {e}")))
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        Ok(())
    }
}
