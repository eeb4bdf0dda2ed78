//! The sink: its builder and factory, the subtask that writes rows, and the progress table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_clients::jdbc::{DbConfig, DbKind, DbPool, DriverError, describe_sqlx, quote_ident};
use operators_core::operator::{OperatorContext, Sink, SinkFactory, TaskInfo};
use operators_core::{CheckpointId, Error, Result, codec};
use serde::{Deserialize, Serialize};
use sqlx::{Executor, MySql, Postgres, QueryBuilder, Sqlite, Transaction};

use super::changelog::{self, CHANGE_COLUMNS, is_changelog};
use super::config::WriteMode;
use super::statement::{NullType, Value, rows_per_statement, value};

/// Name of the progress table the exactly-once mode keeps.
pub const PROGRESS_TABLE: &str = "operators_sink_progress";

/// Writes into a database table.
///
/// ```no_run
/// use operators_sinks::jdbc::{JdbcSink, WriteMode};
/// use operators_clients::jdbc::DbConfig;
/// let db = DbConfig::parse("sink.db.url", "postgres://127.0.0.1/test", Some("app"), None)?;
/// let sink = JdbcSink::new(db, "orders")
///     .with_mode(WriteMode::Upsert { keys: vec!["id".into()] })
///     .exactly_once(true);
/// # Ok::<(), operators_clients::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct JdbcSink {
    db: DbConfig,
    table: String,
    mode: WriteMode,
    batch_size: usize,
    flush_interval: Duration,
    exactly_once: bool,
    retries: u32,
    backoff: Duration,
}

impl JdbcSink {
    /// Inserts into `table`, at least once, 1000 rows per statement, flushing at least
    /// every second.
    pub fn new(db: DbConfig, table: impl Into<String>) -> Self {
        Self {
            db,
            table: table.into(),
            mode: WriteMode::Insert,
            batch_size: 1000,
            flush_interval: Duration::from_secs(1),
            exactly_once: false,
            retries: 5,
            backoff: Duration::from_millis(100),
        }
    }

    /// Sets insert or upsert.
    pub fn with_mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Rows per statement.
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Writes buffered rows at least this often.
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// One transaction per checkpoint, written when the checkpoint completes (needs
    /// checkpointing; without it the whole input is one transaction at the end).
    pub fn exactly_once(mut self, on: bool) -> Self {
        self.exactly_once = on;
        self
    }

    /// Retries of a statement that failed transiently, and the first backoff (doubling).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Checks the settings that need no connection.
    pub fn validate(&self) -> std::result::Result<(), crate::SinkError> {
        if self.table.trim().is_empty() {
            return Err(crate::SinkError::config("sink.db.table", "must not be empty"));
        }
        if let WriteMode::Upsert { keys } = &self.mode
            && keys.is_empty()
        {
            return Err(crate::SinkError::config("sink.db.key.columns", "upsert needs at least one key column"));
        }
        Ok(())
    }
}

impl SinkFactory for JdbcSink {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate()?;
        Ok(Box::new(JdbcWriter {
            mode: self.mode.clone(),
            cfg: self.clone(),
            sink_id: format!("{}/{}/{}", info.job_name, info.operator_id, self.table),
            run_id: info.run_id.to_string(),
            subtask: info.subtask,
            pool: None,
            table_columns: Vec::new(),
            text_casts: HashMap::new(),
            checked_schema: None,
            pending: Vec::new(),
            pending_rows: 0,
            last_flush: Instant::now(),
            epoch_rows: Vec::new(),
        }))
    }
}

enum Tx {
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// What finishes one checkpoint's writes after a crash.
#[derive(Serialize, Deserialize)]
struct Committable {
    run_id: String,
    subtask: usize,
    /// The checkpoint's rows as an Arrow IPC stream.
    rows: Vec<u8>,
}

struct JdbcWriter {
    cfg: JdbcSink,
    /// How rows are written: the configured mode, with [`WriteMode::SourceKey`] resolved
    /// to the key the stream names (see [`Self::check_columns`]).
    mode: WriteMode,
    sink_id: String,
    run_id: String,
    subtask: usize,
    pool: Option<DbPool>,
    table_columns: Vec<String>,
    /// PostgreSQL: the cast (`::JSONB`) after a text parameter bound to each column
    /// (by its exact name: the statement quotes the field names, so `"A"` and `a` are two
    /// columns) whose type is not text. PostgreSQL refuses a text parameter
    /// for a `jsonb`, `time`, `uuid` or `numeric` column unless it is cast; MySQL and
    /// SQLite convert text themselves.
    text_casts: HashMap<String, String>,
    checked_schema: Option<arrow::datatypes::SchemaRef>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    last_flush: Instant,
    /// Exactly once: every row of the current checkpoint, for the committable.
    epoch_rows: Vec<RecordBatch>,
}

/// The cast a text parameter needs for a PostgreSQL column of type `type_name` (as sqlx
/// names it: `JSONB`, `TIME`, `INT4[]`, an enum's name), or `None` for the text types.
///
/// A built-in type (`builtin`: its OID is below PostgreSQL's first user OID) is named
/// by sqlx in capitals and cast unquoted, which PostgreSQL folds to its catalog name; a
/// built-in name that is not plain gets no cast (the server then reports the mismatch).
/// A user-defined type (an enum, a domain, an extension's type) is named by sqlx as
/// PostgreSQL writes it (`oid::regtype::text`): quoted where its case or characters
/// need it (`"Mood"`), schema-qualified outside the search path. That is a cast target
/// as it stands.
pub(super) fn text_cast(type_name: &str, builtin: bool) -> Option<String> {
    if !builtin {
        return is_type_name(type_name).then(|| format!("::{type_name}"));
    }
    let textual = ["TEXT", "VARCHAR", "BPCHAR", "CHAR", "NAME", "UNKNOWN"];
    let plain = !type_name.is_empty()
        && type_name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '[' | ']' | ' '));
    (plain && !textual.iter().any(|t| t.eq_ignore_ascii_case(type_name))).then(|| format!("::{type_name}"))
}

/// Whether `name` has the shape PostgreSQL gives a type's name: dot-separated parts,
/// each a plain identifier or a double-quoted one (`""` inside), and an optional `[]`.
/// It is spliced into a statement, so nothing else is (sqlx names a type it could not
/// resolve `?`).
fn is_type_name(name: &str) -> bool {
    let name = name.strip_suffix("[]").unwrap_or(name);
    let mut rest = name;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            // Up to the closing quote; `""` is a quote inside the name.
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().is_some_and(|&(_, c)| c == '"') {
                        chars.next();
                    } else {
                        end = Some(i);
                        break;
                    }
                }
            }
            let Some(end) = end.filter(|&e| e > 0) else { return false };
            rest = &quoted[end + 1..];
        } else {
            let len = rest.find('.').unwrap_or(rest.len());
            let part = &rest[..len];
            let plain = part.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$');
            if !plain {
                return false;
            }
            rest = &rest[len..];
        }
        match rest.strip_prefix('.') {
            Some(next) => rest = next,
            None => return rest.is_empty(),
        }
    }
}

/// PostgreSQL's first OID for user-defined objects (`FirstNormalObjectId`): types below
/// it are the built-in catalog's.
const FIRST_USER_OID: u32 = 16384;

fn db_err(what: &str, e: sqlx::Error) -> Error {
    let e = DriverError(e);
    Error::external(what.to_string(), e.is_transient(), e)
}

fn ipc(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    codec::ipc::write_batches(&mut out, batches).map_err(|e| Error::arrow("encoding sink rows", e))?;
    Ok(out)
}

fn from_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    codec::ipc::read_batches(bytes).map_err(|e| Error::arrow("decoding sink rows", e))
}

/// Binds one value to a statement being built (a `QueryBuilder` or its `Separated`).
macro_rules! bind {
    ($b:expr, $value:expr) => {
        match $value {
            Value::Null(NullType::Bool) => $b.push_bind(None::<bool>),
            Value::Null(NullType::Int) => $b.push_bind(None::<i64>),
            Value::Null(NullType::Float) => $b.push_bind(None::<f64>),
            Value::Null(NullType::Text) => $b.push_bind(None::<String>),
            Value::Null(NullType::Bytes) => $b.push_bind(None::<Vec<u8>>),
            Value::Null(NullType::Date) => $b.push_bind(None::<chrono::NaiveDate>),
            Value::Null(NullType::Timestamp) => $b.push_bind(None::<chrono::NaiveDateTime>),
            Value::Bool(x) => $b.push_bind(x),
            Value::Int(x) => $b.push_bind(x),
            Value::Float(x) => $b.push_bind(x),
            Value::Text(x) => $b.push_bind(x),
            Value::Bytes(x) => $b.push_bind(x),
            Value::Date(x) => $b.push_bind(x),
            Value::Timestamp(x) => $b.push_bind(x),
        }
    };
}

/// Inserts `batch` with `exec`; evaluates to `Result<()>` (an async block scopes the `?`s,
/// so callers can retry).
macro_rules! insert_rows {
    ($db:ty, $exec:expr, $sink:expr, $batch:expr) => {
        async {
            let sink: &JdbcWriter = $sink;
            let batch: &RecordBatch = $batch;
            let kind = sink.kind();
            let table = quote_ident(kind, &sink.cfg.table);
            let names: Vec<String> = batch.schema().fields().iter().map(|f| quote_ident(kind, f.name())).collect();
            let columns: Vec<ArrayRef> = batch.columns().to_vec();
            let per = rows_per_statement(sink.cfg.batch_size, columns.len());
            let schema = batch.schema();
            let casts = sink.casts_of(&schema);
            let mut start = 0;
            while start < batch.num_rows() {
                let end = (start + per).min(batch.num_rows());
                let mut values = Vec::with_capacity(end - start);
                for row in start..end {
                    let mut v = Vec::with_capacity(columns.len());
                    for (c, f) in columns.iter().zip(schema.fields()) {
                        v.push(value(c.as_ref(), row, f.name())?);
                    }
                    values.push(v);
                }
                let mut qb = QueryBuilder::<$db>::new(format!("insert into {table} ({}) ", names.join(", ")));
                qb.push_values(values, |mut b, row| {
                    for (v, cast) in row.into_iter().zip(&casts) {
                        let text = v.is_text();
                        bind!(b, v);
                        if let (true, Some(cast)) = (text, cast) {
                            b.push_unseparated(cast);
                        }
                    }
                });
                qb.push(sink.upsert_clause(&batch.schema()));
                qb.build().execute($exec).await.map_err(|e| db_err(&format!("writing into {}", sink.cfg.table), e))?;
                start = end;
            }
            Ok::<(), Error>(())
        }
        .await
    };
}

/// Deletes the rows with the keys in `batch` (its columns are the key columns); evaluates
/// to `Result<()>`.
macro_rules! delete_rows {
    ($db:ty, $exec:expr, $sink:expr, $batch:expr) => {
        async {
            let sink: &JdbcWriter = $sink;
            let batch: &RecordBatch = $batch;
            let kind = sink.kind();
            let table = quote_ident(kind, &sink.cfg.table);
            let names: Vec<String> = batch.schema().fields().iter().map(|f| quote_ident(kind, f.name())).collect();
            let columns: Vec<ArrayRef> = batch.columns().to_vec();
            let schema = batch.schema();
            let casts = sink.casts_of(&schema);
            let per = rows_per_statement(sink.cfg.batch_size, columns.len());
            let mut start = 0;
            while start < batch.num_rows() {
                let end = (start + per).min(batch.num_rows());
                let mut qb = QueryBuilder::<$db>::new(format!("delete from {table} where "));
                for row in start..end {
                    if row > start {
                        qb.push(" or ");
                    }
                    qb.push("(");
                    for (i, ((name, c), cast)) in names.iter().zip(&columns).zip(&casts).enumerate() {
                        if i > 0 {
                            qb.push(" and ");
                        }
                        qb.push(format!("{name} = "));
                        let v = value(c.as_ref(), row, schema.field(i).name())?;
                        let text = v.is_text();
                        bind!(qb, v);
                        if let (true, Some(cast)) = (text, cast) {
                            qb.push(cast);
                        }
                    }
                    qb.push(")");
                }
                qb.build().execute($exec).await.map_err(|e| db_err(&format!("deleting from {}", sink.cfg.table), e))?;
                start = end;
            }
            Ok::<(), Error>(())
        }
        .await
    };
}

/// One statement's worth of work.
enum Op {
    /// Insert (or upsert) these rows.
    Write(RecordBatch),
    /// Delete the rows with these keys.
    Delete(RecordBatch),
}

impl JdbcWriter {
    fn kind(&self) -> DbKind {
        self.pool.as_ref().map_or(self.cfg.db.kind(), DbPool::kind)
    }

    fn pool(&self) -> Result<&DbPool> {
        self.pool.as_ref().ok_or_else(|| Error::Internal("database sink used before open".into()))
    }

    /// The cast after a text parameter of each of `schema`'s columns ([`Self::text_casts`]).
    fn casts_of(&self, schema: &arrow::datatypes::Schema) -> Vec<Option<&str>> {
        schema.fields().iter().map(|f| self.text_casts.get(f.name()).map(String::as_str)).collect()
    }

    fn upsert_clause(&self, schema: &arrow::datatypes::Schema) -> String {
        let WriteMode::Upsert { keys } = &self.mode else {
            return String::new();
        };
        let kind = self.kind();
        let updates: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name())
            .filter(|n| !keys.contains(n))
            .map(|n| {
                let q = quote_ident(kind, n);
                match kind {
                    DbKind::MySql => format!("{q} = values({q})"),
                    _ => format!("{q} = excluded.{q}"),
                }
            })
            .collect();
        match kind {
            DbKind::MySql if updates.is_empty() => {
                let k = quote_ident(kind, &keys[0]);
                format!(" on duplicate key update {k} = {k}")
            }
            DbKind::MySql => format!(" on duplicate key update {}", updates.join(", ")),
            _ => {
                let key_list: Vec<String> = keys.iter().map(|k| quote_ident(kind, k)).collect();
                if updates.is_empty() {
                    format!(" on conflict ({}) do nothing", key_list.join(", "))
                } else {
                    format!(" on conflict ({}) do update set {}", key_list.join(", "), updates.join(", "))
                }
            }
        }
    }

    /// Checks once per schema that every column of the batch exists in the table.
    fn check_columns(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        if self.checked_schema.as_ref() == Some(&schema) {
            return Ok(());
        }
        let changelog = is_changelog(&schema);
        if self.cfg.mode == WriteMode::SourceKey {
            let Some(keys) = operators_core::changelog::key_columns(&schema) else {
                return Err(Error::config(
                    "sink.db.key.columns",
                    format!(
                        "upsert into `{}` needs the key columns: the stream does not name its primary key (a CDC \
                         source's changes do, unless SQL rebuilt them)",
                        self.cfg.table
                    ),
                ));
            };
            self.mode = WriteMode::Upsert { keys };
        }
        let applied = changelog && matches!(self.mode, WriteMode::Upsert { .. });
        for f in schema.fields() {
            if applied && CHANGE_COLUMNS.contains(&f.name().as_str()) {
                // Applied, not stored (unless the table has such a column).
                continue;
            }
            if !self.table_columns.iter().any(|c| c.eq_ignore_ascii_case(f.name())) {
                if changelog && CHANGE_COLUMNS.contains(&f.name().as_str()) {
                    return Err(Error::config(
                        "sink.db.key.columns",
                        format!(
                            "the stream is a changelog (column `{}`, a CDC source's): give the key columns so that \
                             its updates and deletes are applied to `{}` by key, or add the column to the table to \
                             store the changes as rows",
                            f.name(),
                            self.cfg.table
                        ),
                    ));
                }
                return Err(Error::config(
                    "sink.db.table",
                    format!(
                        "column `{}` of the stream is not a column of table `{}` (columns: {})",
                        f.name(),
                        self.cfg.table,
                        self.table_columns.join(", ")
                    ),
                ));
            }
        }
        if let WriteMode::Upsert { keys } = &self.mode
            && let Some(k) = keys.iter().find(|k| schema.index_of(k).is_err())
        {
            return Err(Error::config("sink.db.key.columns", format!("key column `{k}` is not in the stream")));
        }
        self.checked_schema = Some(schema);
        Ok(())
    }

    /// The statements that write `batch`: for upserts one row per key (the last); for a
    /// changelog, the last change of each key as a delete or an upsert.
    fn ops(&self, batch: &RecordBatch) -> Result<Vec<Op>> {
        let batch = self.dedup(batch)?;
        let WriteMode::Upsert { keys } = &self.mode else {
            return Ok(vec![Op::Write(batch)]);
        };
        if !is_changelog(&batch.schema()) {
            return Ok(vec![Op::Write(batch)]);
        }
        let changes = changelog::split(&batch, &self.table_columns, keys)?;
        Ok(changes.deletes.map(Op::Delete).into_iter().chain(changes.upserts.map(Op::Write)).collect())
    }

    /// Writes `batch` on its own connection, retrying transient errors (at least once).
    async fn write_autocommit(&self, batch: &RecordBatch) -> Result<()> {
        for op in self.ops(batch)? {
            self.run_autocommit(&op).await?;
        }
        Ok(())
    }

    async fn run_autocommit(&self, op: &Op) -> Result<()> {
        let mut delay = self.cfg.backoff;
        let mut attempt = 0;
        loop {
            let result = match (self.pool()?, op) {
                (DbPool::Postgres(p), Op::Write(b)) => insert_rows!(Postgres, p, self, b),
                (DbPool::MySql(p), Op::Write(b)) => insert_rows!(MySql, p, self, b),
                (DbPool::Sqlite(p), Op::Write(b)) => insert_rows!(Sqlite, p, self, b),
                (DbPool::Postgres(p), Op::Delete(b)) => delete_rows!(Postgres, p, self, b),
                (DbPool::MySql(p), Op::Delete(b)) => delete_rows!(MySql, p, self, b),
                (DbPool::Sqlite(p), Op::Delete(b)) => delete_rows!(Sqlite, p, self, b),
            };
            match result {
                Err(e) if e.is_retryable() && attempt < self.cfg.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "database write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(match self.pool()? {
            DbPool::Postgres(p) => Tx::Postgres(p.begin().await.map_err(|e| db_err("starting a transaction", e))?),
            DbPool::MySql(p) => Tx::MySql(p.begin().await.map_err(|e| db_err("starting a transaction", e))?),
            DbPool::Sqlite(p) => Tx::Sqlite(p.begin().await.map_err(|e| db_err("starting a transaction", e))?),
        })
    }

    async fn write_tx(&self, tx: &mut Tx, batch: &RecordBatch) -> Result<()> {
        for op in self.ops(batch)? {
            match (&mut *tx, &op) {
                (Tx::Postgres(t), Op::Write(b)) => insert_rows!(Postgres, &mut **t, self, b),
                (Tx::MySql(t), Op::Write(b)) => insert_rows!(MySql, &mut **t, self, b),
                (Tx::Sqlite(t), Op::Write(b)) => insert_rows!(Sqlite, &mut **t, self, b),
                (Tx::Postgres(t), Op::Delete(b)) => delete_rows!(Postgres, &mut **t, self, b),
                (Tx::MySql(t), Op::Delete(b)) => delete_rows!(MySql, &mut **t, self, b),
                (Tx::Sqlite(t), Op::Delete(b)) => delete_rows!(Sqlite, &mut **t, self, b),
            }?;
        }
        Ok(())
    }

    fn progress_upsert(&self) -> String {
        let t = PROGRESS_TABLE;
        match self.kind() {
            DbKind::MySql => format!(
                "insert into {t} (sink_id, run_id, subtask, checkpoint_id) values (?, ?, ?, ?) \
                 on duplicate key update checkpoint_id = values(checkpoint_id)"
            ),
            DbKind::Postgres => format!(
                "insert into {t} (sink_id, run_id, subtask, checkpoint_id) values ($1, $2, $3, $4) \
                 on conflict (sink_id, run_id, subtask) do update set checkpoint_id = excluded.checkpoint_id"
            ),
            DbKind::Sqlite => format!(
                "insert into {t} (sink_id, run_id, subtask, checkpoint_id) values (?, ?, ?, ?) \
                 on conflict (sink_id, run_id, subtask) do update set checkpoint_id = excluded.checkpoint_id"
            ),
        }
    }

    /// Records `checkpoint` for (run, subtask) in the transaction, then commits it.
    async fn commit_tx(&self, tx: Tx, run_id: &str, subtask: usize, checkpoint: CheckpointId) -> Result<()> {
        let sql = self.progress_upsert();
        let sub = i64::try_from(subtask).unwrap_or(i64::MAX);
        let id = i64::try_from(checkpoint).unwrap_or(i64::MAX);
        macro_rules! finish {
            ($t:expr) => {{
                let mut t = $t;
                sqlx::query(&sql)
                    .bind(&self.sink_id)
                    .bind(run_id)
                    .bind(sub)
                    .bind(id)
                    .execute(&mut *t)
                    .await
                    .map_err(|e| db_err("recording progress", e))?;
                t.commit().await.map_err(|e| db_err("committing", e))?;
            }};
        }
        match tx {
            Tx::Postgres(t) => finish!(t),
            Tx::MySql(t) => finish!(t),
            Tx::Sqlite(t) => finish!(t),
        }
        Ok(())
    }

    /// The newest checkpoint committed for (run, subtask), from the progress table.
    async fn committed(&self, run_id: &str, subtask: usize) -> Result<Option<i64>> {
        let t = PROGRESS_TABLE;
        let sub = i64::try_from(subtask).unwrap_or(i64::MAX);
        let sql = match self.kind() {
            DbKind::Postgres => {
                format!("select checkpoint_id from {t} where sink_id = $1 and run_id = $2 and subtask = $3")
            }
            _ => format!("select checkpoint_id from {t} where sink_id = ? and run_id = ? and subtask = ?"),
        };
        let r: std::result::Result<Option<i64>, sqlx::Error> = match self.pool()? {
            DbPool::Postgres(p) => {
                sqlx::query_scalar(&sql).bind(&self.sink_id).bind(run_id).bind(sub).fetch_optional(p).await
            }
            DbPool::MySql(p) => {
                sqlx::query_scalar(&sql).bind(&self.sink_id).bind(run_id).bind(sub).fetch_optional(p).await
            }
            DbPool::Sqlite(p) => {
                sqlx::query_scalar(&sql).bind(&self.sink_id).bind(run_id).bind(sub).fetch_optional(p).await
            }
        };
        r.map_err(|e| db_err("reading the progress table", e))
    }

    /// At least once: writes what is buffered.
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.last_flush = Instant::now();
        for b in &batches {
            self.write_autocommit(b).await?;
        }
        Ok(())
    }

    /// For upserts, keeps the last row of each key (one statement cannot update a row twice).
    fn dedup(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let WriteMode::Upsert { keys } = &self.mode else {
            return Ok(batch.clone());
        };
        let selector = operators_core::key::KeySelector::new(keys.iter().cloned());
        let batch_keys = selector.extract(batch, 1)?;
        let mut last: std::collections::HashMap<&[u8], u32> =
            std::collections::HashMap::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            last.insert(batch_keys.key(row).bytes, row as u32);
        }
        if last.len() == batch.num_rows() {
            return Ok(batch.clone());
        }
        let mut rows: Vec<u32> = last.into_values().collect();
        rows.sort_unstable();
        arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(rows))
            .map_err(|e| Error::arrow("de-duplicating upsert rows", e))
    }
}

#[async_trait]
impl Sink for JdbcWriter {
    async fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        if self.pool.is_none() {
            self.pool = Some(self.cfg.db.connect("sink.db.url").await?);
        }
        let pool = self.pool()?.clone();
        let table = quote_ident(pool.kind(), &self.cfg.table);
        let probe = format!("select * from {table} where 1 = 0");
        let mut text_casts = HashMap::new();
        let columns: std::result::Result<Vec<String>, sqlx::Error> = async {
            use sqlx::{Column, Statement, TypeInfo};
            Ok(match &pool {
                DbPool::Postgres(p) => {
                    let statement = p.prepare(&probe).await?;
                    for c in statement.columns() {
                        let info = c.type_info();
                        // An extension's text type (citext) is not built in and gets its cast,
                        // which PostgreSQL accepts as well.
                        let builtin = info.oid().is_some_and(|oid| oid.0 < FIRST_USER_OID);
                        if let Some(cast) = text_cast(info.name(), builtin) {
                            text_casts.insert(c.name().to_string(), cast);
                        }
                    }
                    statement.columns().iter().map(|c| c.name().to_string()).collect()
                }
                DbPool::MySql(p) => p.prepare(&probe).await?.columns().iter().map(|c| c.name().to_string()).collect(),
                DbPool::Sqlite(p) => p.prepare(&probe).await?.columns().iter().map(|c| c.name().to_string()).collect(),
            })
        }
        .await;
        self.text_casts = text_casts;
        self.table_columns = columns.map_err(|e| {
            Error::config(
                "sink.db.table",
                format!("table `{}` cannot be written: {}", self.cfg.table, describe_sqlx(&e)),
            )
        })?;
        Ok(())
    }

    async fn recover(
        &mut self,
        committables: Vec<operators_core::operator::Committable>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.open(ctx).await?;
        for c in committables {
            self.commit(c.checkpoint_id, c.data).await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.cfg.mode == WriteMode::SourceKey
            && !self.pending.is_empty()
            && self.checked_schema.as_ref() != Some(&batch.schema())
        {
            // A new schema may name another key: the rows waiting were resolved by the
            // old one, and are written by it. (Exactly once, each batch of a commit is
            // checked before it is written.)
            self.flush().await?;
        }
        self.check_columns(&batch)?;
        if self.cfg.exactly_once {
            // Written when the checkpoint completes.
            self.epoch_rows.push(batch);
            return Ok(());
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= self.cfg.batch_size || self.last_flush.elapsed() >= self.cfg.flush_interval {
            self.flush().await?;
        }
        Ok(())
    }

    async fn pre_commit(
        &mut self,
        _checkpoint_id: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<Vec<u8>>> {
        if !self.cfg.exactly_once {
            self.flush().await?;
            return Ok(None);
        }
        if self.epoch_rows.is_empty() {
            return Ok(None);
        }
        let rows = ipc(&std::mem::take(&mut self.epoch_rows))?;
        let c = Committable { run_id: self.run_id.clone(), subtask: self.subtask, rows };
        postcard::to_allocvec(&c)
            .map(Some)
            .map_err(|e| Error::Internal(format!("serializing the sink's committable: {e}")))
    }

    async fn commit(&mut self, checkpoint_id: CheckpointId, committable: Vec<u8>) -> Result<()> {
        let c: Committable = postcard::from_bytes(&committable)
            .map_err(|e| Error::CorruptState { path: "database sink committable".into(), reason: e.to_string() })?;
        ensure_progress_table(self.pool()?).await?;
        let done = self.committed(&c.run_id, c.subtask).await?;
        if done.is_some_and(|d| d >= i64::try_from(checkpoint_id).unwrap_or(i64::MAX)) {
            // Committed before a crash: the rows are in already.
            return Ok(());
        }
        let rows = from_ipc(&c.rows)?;
        let mut tx = self.begin().await?;
        for b in &rows {
            // After a crash this writer has seen no batch: the schema (kept by IPC, its
            // metadata too) decides how the rows are written, as it did before.
            self.check_columns(b)?;
            self.write_tx(&mut tx, b).await?;
        }
        self.commit_tx(tx, &c.run_id, c.subtask, checkpoint_id).await
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        Ok(())
    }
}

/// Creates the progress table if it does not exist.
async fn ensure_progress_table(pool: &DbPool) -> Result<()> {
    let t = PROGRESS_TABLE;
    let ddl = format!(
        "create table if not exists {t} (sink_id varchar(255) not null, run_id varchar(64) not null, \
         subtask integer not null, checkpoint_id bigint not null, primary key (sink_id, run_id, subtask))"
    );
    let r = match pool {
        DbPool::Postgres(p) => p.execute(ddl.as_str()).await.map(|_| ()),
        DbPool::MySql(p) => p.execute(ddl.as_str()).await.map(|_| ()),
        DbPool::Sqlite(p) => p.execute(ddl.as_str()).await.map(|_| ()),
    };
    r.map_err(|e| db_err(&format!("creating {t}"), e))
}
