//! The log phase: the binary log's row events of the followed table, read over the
//! replication protocol (mysql_async's binlog stream) and turned into changelog batches.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, NaiveTime};
use futures::{FutureExt, StreamExt};
use mysql_async::binlog::events::EventData;
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Value};
use operators_core::{Error, Result};
use tokio::sync::mpsc;

use super::position::{BinlogPosition, ChunkFilter, LogPosition};
use super::schema::{TABLE_KEY, TableColumn, TableInfo};
use crate::cdc::{ChangeColumns, ChangeKind};
use crate::jdbc::ColumnKind;
use crate::jdbc::source::{ColumnBuilder, days};

/// MariaDB's GTID event, which starts every transaction group (mysql_common does not
/// know MariaDB's event types; its data is not needed here).
const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB's compressed query and row events (`log_bin_compress=ON`), which mysql_common
/// cannot decode.
const MARIADB_COMPRESSED_FIRST: u8 = 165;
const MARIADB_COMPRESSED_LAST: u8 = 171;
/// XA PREPARE: the rows before it may yet be rolled back.
const XA_PREPARE_EVENT: u8 = 38;

/// How long a batch in the making waits for more changes.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Silence after which the connection is taken for dead: three heartbeat periods.
const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// What the log task sends.
#[derive(Debug)]
pub(crate) enum LogMessage {
    /// Changes, and the position after the last of them.
    Batch(RecordBatch, LogPosition),
    /// The read moved on without changes to the followed table.
    Position(LogPosition),
}

/// How to read the log.
// No Debug: the connection options hold the password.
#[derive(Clone)]
pub(crate) struct LogReader {
    pub opts: Opts,
    pub server_id: u32,
    pub info: Arc<TableInfo>,
    pub start: LogPosition,
    pub filter: ChunkFilter,
    /// `timestamp` startup: changes of statements before this time (ms) are passed over.
    pub since_ms: Option<i64>,
    pub batch_rows: usize,
    /// For messages: the server as the user named it.
    pub origin: String,
}

/// A mysql_async error as the job's error: a server's refusal is not retried (it would
/// refuse again), a lost connection is.
pub(crate) fn mysql_err(context: String, e: mysql_async::Error) -> Error {
    match &e {
        mysql_async::Error::Server(s) if s.code == 1236 => Error::external(
            format!("{context}: the server no longer has the position asked for (its binary log was purged?)"),
            false,
            e,
        ),
        mysql_async::Error::Server(s) if matches!(s.code, 1045 | 1227 | 1044 | 1142) => Error::external(
            format!("{context}: the user lacks a privilege the log needs (REPLICATION SLAVE, REPLICATION CLIENT)"),
            false,
            e,
        ),
        mysql_async::Error::Server(_) | mysql_async::Error::Url(_) => Error::external(context, false, e),
        _ => Error::external(context, true, e),
    }
}

impl LogReader {
    /// Reads the log into `tx` until the receiver goes away or an error, which is sent.
    pub(crate) async fn run(self, tx: mpsc::Sender<Result<LogMessage>>) {
        if let Err(e) = self.read(&tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn read(self, tx: &mpsc::Sender<Result<LogMessage>>) -> Result<()> {
        let origin = self.origin.clone();
        let mut conn =
            Conn::new(self.opts.clone()).await.map_err(|e| mysql_err(format!("connecting to {origin}"), e))?;
        // MariaDB's own events (GTID) rather than their rewriting into dummy queries.
        conn.query_drop("set @mariadb_slave_capability = 4")
            .await
            .map_err(|e| mysql_err(format!("preparing {origin} for the binlog"), e))?;
        // A heartbeat every 5 s while the log is idle: a dead connection is found.
        conn.query_drop("set @master_heartbeat_period = 5000000000")
            .await
            .map_err(|e| mysql_err(format!("preparing {origin} for the binlog"), e))?;
        let start = self.start.at.clone();
        let request = BinlogStreamRequest::new(self.server_id).with_filename(start.file.as_bytes()).with_pos(start.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| mysql_err(format!("reading the binlog of {origin} from {start}"), e))?;
        let mut st = Walk::new(self.start.clone());
        let mut out = ChangeBatch::new(&self.info);
        let mut sent = st.position();
        let mut filter = self.filter.clone();
        loop {
            // A batch in the making waits a little for more: many small batches cost more
            // than a few milliseconds of latency.
            let ready = match stream.next().now_or_never() {
                Some(next) => Some(next),
                None if out.len() > 0 => tokio::time::timeout(LINGER, stream.next()).await.ok(),
                None => None,
            };
            let next = match ready {
                Some(next) => next,
                None => {
                    // Nothing more for now: hand over what is there.
                    let at = st.position();
                    if out.len() > 0 {
                        let batch = out.take(&self.info)?;
                        if tx.send(Ok(LogMessage::Batch(batch, at.clone()))).await.is_err() {
                            return Ok(());
                        }
                        sent = at;
                    } else if at != sent {
                        if tx.send(Ok(LogMessage::Position(at.clone()))).await.is_err() {
                            return Ok(());
                        }
                        sent = at;
                    }
                    // The server sends a heartbeat every 5 s while the log is idle: silence
                    // for longer is a dead connection (a half-open socket never errs).
                    tokio::time::timeout(SILENCE_LIMIT, stream.next()).await.map_err(|_| {
                        Error::external(
                            format!("reading the binlog of {origin}"),
                            true,
                            format!("no event or heartbeat for {} s", SILENCE_LIMIT.as_secs()),
                        )
                    })?
                }
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    return Err(mysql_err(format!("reading the binlog of {origin} at {}", st.file_pos()), e));
                }
                None => {
                    return Err(Error::external(
                        format!("reading the binlog of {origin}"),
                        true,
                        "the server ended the stream",
                    ));
                }
            };
            let header = event.header();
            let end = u64::from(header.log_pos());
            if end != 0 {
                // Messages name the event's start.
                st.at = end.saturating_sub(u64::from(header.event_size()));
            }
            match header.event_type_raw() {
                MARIADB_GTID_EVENT => {
                    // flags2 (after the sequence number and domain id): a standalone
                    // group (DDL) is one statement with no COMMIT after it.
                    let standalone = event.data().get(12).is_some_and(|flags| flags & 1 == 1);
                    st.begin(standalone);
                    continue;
                }
                MARIADB_COMPRESSED_FIRST..=MARIADB_COMPRESSED_LAST => {
                    return Err(Error::config(
                        "source.db.url",
                        format!(
                            "{origin} writes compressed binlog events (log_bin_compress=ON), which the CDC source \
                             cannot read: turn it off"
                        ),
                    ));
                }
                XA_PREPARE_EVENT => {
                    return Err(Error::config(
                        TABLE_KEY,
                        format!(
                            "an XA transaction was prepared at {}; the CDC source does not follow XA transactions",
                            st.file_pos()
                        ),
                    ));
                }
                _ => {}
            }
            let data = event.read_data().map_err(|e| {
                Error::external(format!("decoding the binlog of {origin} at {}", st.file_pos()), false, e)
            })?;
            let is_rotate = matches!(data, Some(EventData::RotateEvent(_)));
            match data {
                Some(EventData::RotateEvent(r)) if header.log_pos() != 0 => {
                    st.rotate(BinlogPosition::new(r.name().into_owned(), r.position()));
                }
                // An artificial rotate: the server says which file it reads, at the start of
                // the stream and of every file it moves to without a rotate event (after a
                // restart). Its name may carry the checksum on MariaDB.
                Some(EventData::RotateEvent(r)) => {
                    if let Some(name) = artificial_rotate_name(r.name_raw(), &st.file)
                        && name != st.file
                    {
                        st.rotate(BinlogPosition::new(name, 4));
                    }
                }
                Some(EventData::XidEvent(_)) => st.commit(end),
                Some(EventData::QueryEvent(q)) => {
                    let sql = q.query();
                    let statement = sql.trim();
                    if statement.eq_ignore_ascii_case("BEGIN") {
                        st.begin(false);
                    } else if statement.eq_ignore_ascii_case("COMMIT") || statement.eq_ignore_ascii_case("ROLLBACK") {
                        st.commit(end);
                    } else if statement.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("SAVEPOINT"))
                        || statement.get(..11).is_some_and(|s| s.eq_ignore_ascii_case("ROLLBACK TO"))
                    {
                    } else {
                        if changes_table(&q.schema(), statement, &self.info.database, &self.info.table) {
                            return Err(Error::config(
                                TABLE_KEY,
                                format!(
                                    "table {} was changed at {} by `{}`; the CDC source does not follow schema \
                                     changes: restart the job from a new snapshot (startup mode initial) after the \
                                     target is changed alike",
                                    self.info.quoted(),
                                    st.file_pos(),
                                    shorten(statement)
                                ),
                            ));
                        }
                        if st.in_group && !st.standalone {
                            // A statement inside a transaction: logged as a statement, not as
                            // rows, so its changes cannot be read; refused for the followed table.
                            if writes_table(&q.schema(), statement, &self.info.database, &self.info.table) {
                                return Err(Error::config(
                                    "source.db.url",
                                    format!(
                                        "a change of {} at {} was logged as a statement (`{}`), not as rows: the \
                                         writing session had binlog_format STATEMENT or MIXED; the CDC source needs \
                                         ROW for every session",
                                        self.info.quoted(),
                                        st.file_pos(),
                                        shorten(statement)
                                    ),
                                ));
                            }
                        } else {
                            // A statement outside a transaction (DDL) is a group of its own.
                            st.commit(end);
                        }
                    }
                }
                Some(EventData::TableMapEvent(t))
                    if t.database_name() == self.info.database.as_str()
                        && t.table_name() == self.info.table.as_str()
                        && t.columns_count() != self.info.columns.len() as u64 =>
                {
                    return Err(Error::config(
                        TABLE_KEY,
                        format!(
                            "table {} has {} columns in the binlog at {} but {} when the job started; the CDC \
                                 source does not follow schema changes",
                            self.info.quoted(),
                            t.columns_count(),
                            st.file_pos(),
                            self.info.columns.len()
                        ),
                    ));
                }
                Some(EventData::RowsEvent(rows)) => {
                    let Some(tme) = stream.get_tme(rows.table_id()) else {
                        return Err(Error::Internal(format!(
                            "the binlog of {origin} at {} has rows without their table map",
                            st.file_pos()
                        )));
                    };
                    if tme.database_name() != self.info.database.as_str()
                        || tme.table_name() != self.info.table.as_str()
                    {
                        continue;
                    }
                    let ts_ms = i64::from(header.timestamp()) * 1000;
                    let too_early = self.since_ms.is_some_and(|since| ts_ms < since);
                    if filter.passed(&st.tx_start) {
                        filter = ChunkFilter::default();
                    }
                    // The transaction's start, written once per event: each change's
                    // position is it and the change's number.
                    let prefix = st.tx_start.to_string();
                    for row in rows.rows(tme) {
                        let (before, after) = row.map_err(|e| {
                            Error::external(
                                format!("decoding a row of {} at {}", self.info.quoted(), st.file_pos()),
                                false,
                                e,
                            )
                        })?;
                        let n = st.change();
                        if n <= st.skip || too_early {
                            continue;
                        }
                        let position = (prefix.as_str(), n);
                        let at = |row: &BinlogRow| -> Result<Option<i128>> { key_of(&self.info, row) };
                        let (before_kind, after_kind) = match (&before, &after) {
                            (Some(_), Some(_)) => (ChangeKind::UpdateBefore, ChangeKind::UpdateAfter),
                            (Some(_), None) => (ChangeKind::Delete, ChangeKind::Delete),
                            _ => (ChangeKind::Insert, ChangeKind::Insert),
                        };
                        if let Some(row) = &before
                            && at(row)?.is_none_or(|k| filter.emits(k, &st.tx_start))
                        {
                            out.push(&self.info, row, before_kind, position, ts_ms, &self.origin)?;
                        }
                        if let Some(row) = &after
                            && at(row)?.is_none_or(|k| filter.emits(k, &st.tx_start))
                        {
                            out.push(&self.info, row, after_kind, position, ts_ms, &self.origin)?;
                        }
                    }
                }
                _ => {}
            }
            if !is_rotate {
                st.passed(end);
            }
            if out.len() >= self.batch_rows {
                let at = st.position();
                let batch = out.take(&self.info)?;
                if tx.send(Ok(LogMessage::Batch(batch, at.clone()))).await.is_err() {
                    return Ok(());
                }
                sent = at;
            }
        }
    }
}

/// Where the walk through the log stands.
struct Walk {
    /// The file being read.
    file: String,
    /// The start of the event being read (for messages).
    at: u64,
    /// The end of the last transaction group.
    boundary: BinlogPosition,
    /// The start of the group being read (the boundary when none is open).
    tx_start: BinlogPosition,
    in_group: bool,
    /// The open group is one statement (MariaDB's standalone GTID: DDL).
    standalone: bool,
    /// Changes of the followed table seen in the open group.
    changes: u64,
    /// Changes to pass over in the first group (emitted before a restart).
    skip: u64,
}

impl Walk {
    fn new(start: LogPosition) -> Self {
        Self {
            file: start.at.file.clone(),
            at: start.at.pos,
            boundary: start.at.clone(),
            tx_start: start.at,
            in_group: false,
            standalone: false,
            changes: 0,
            skip: start.skip,
        }
    }

    fn file_pos(&self) -> String {
        format!("{}:{}", self.file, self.at)
    }

    fn begin(&mut self, standalone: bool) {
        if !self.in_group {
            self.in_group = true;
            self.standalone = standalone;
            self.tx_start = self.boundary.clone();
            self.changes = 0;
        }
    }

    /// Outside a group, the place between groups moves past every event read (format
    /// description, GTID lists, checkpoints): MariaDB's snapshot positions count them,
    /// so the next group starts where the server says it does. Never backwards: an
    /// artificial event at a stream's start carries an older position.
    fn passed(&mut self, end: u64) {
        if !self.in_group && self.skip == 0 && end > self.boundary.pos && self.boundary.file == self.file {
            self.boundary.pos = end;
            self.tx_start = self.boundary.clone();
        }
    }

    fn commit(&mut self, end: u64) {
        self.at = end;
        self.boundary = BinlogPosition::new(self.file.clone(), end);
        self.tx_start = self.boundary.clone();
        self.in_group = false;
        self.standalone = false;
        self.changes = 0;
        self.skip = 0;
    }

    fn rotate(&mut self, next: BinlogPosition) {
        self.file = next.file.clone();
        self.at = next.pos;
        if !self.in_group {
            self.boundary = next.clone();
            self.tx_start = next;
        }
    }

    /// Counts a change; its number in the group (1-based).
    fn change(&mut self) -> u64 {
        self.changes += 1;
        self.changes
    }

    /// The position to resume from after what was read.
    fn position(&self) -> LogPosition {
        // While a restored group is read again, the changes it emitted before count even
        // before they are passed over again: the position never goes back.
        if self.in_group || self.changes > 0 || self.skip > 0 {
            LogPosition { at: self.tx_start.clone(), skip: self.changes.max(self.skip) }
        } else {
            LogPosition { at: self.boundary.clone(), skip: 0 }
        }
    }
}

/// Whether `statement` (run with default database `schema`) alters, drops, renames or
/// truncates `database`.`table`. Names are compared whole, without quotes, so a
/// statement about another table with a longer name is not taken for it.
pub(crate) fn changes_table(schema: &str, statement: &str, database: &str, table: &str) -> bool {
    let lower = statement.trim_start().to_ascii_lowercase();
    let ddl = ["alter ", "drop ", "rename ", "truncate ", "create or replace "].iter().any(|p| lower.starts_with(p));
    ddl && names_table(schema, statement, database, table)
}

/// Whether `statement` is an INSERT, UPDATE, DELETE or REPLACE naming `database`.`table`.
pub(crate) fn writes_table(schema: &str, statement: &str, database: &str, table: &str) -> bool {
    let lower = statement.trim_start().to_ascii_lowercase();
    ["insert", "update", "delete", "replace"].iter().any(|p| lower.starts_with(p))
        && names_table(schema, statement, database, table)
}

/// Whether a whole word of `statement` names `database`.`table`.
fn names_table(schema: &str, statement: &str, database: &str, table: &str) -> bool {
    let mut tokens = statement
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')')
        .filter(|t| !t.is_empty());
    tokens.any(|token| {
        let parts: Vec<String> = token.split('.').map(|p| p.trim_matches('`').to_string()).collect();
        match parts.as_slice() {
            [t] => t == table && schema == database,
            [d, t] => d == database && t == table,
            _ => false,
        }
    })
}

/// The file an artificial rotate names: `base.NNNNNN`, without the checksum bytes MariaDB
/// may leave after it. `current` gives the base and the number's width.
pub(crate) fn artificial_rotate_name(raw: &[u8], current: &str) -> Option<String> {
    let (base, digits) = current.rsplit_once('.')?;
    let text = String::from_utf8_lossy(raw);
    let rest = text.strip_prefix(base)?.strip_prefix('.')?;
    let number: String = rest.chars().take_while(char::is_ascii_digit).take(digits.len().max(6)).collect();
    (number.len() >= digits.len()).then(|| format!("{base}.{number}"))
}

fn shorten(statement: &str) -> String {
    let mut s: String = statement.chars().take(120).collect();
    if s.len() < statement.len() {
        s.push('…');
    }
    s
}

/// The primary key of a log row (`None` when the log has no value for it).
fn key_of(info: &TableInfo, row: &BinlogRow) -> Result<Option<i128>> {
    let column = &info.columns[info.key];
    match row.as_ref(info.key) {
        Some(BinlogValue::Value(Value::Int(v))) => Ok(Some(match column.unsigned_bits {
            Some(bits) => i128::from(unsigned(*v, bits)),
            None => i128::from(*v),
        })),
        Some(BinlogValue::Value(Value::UInt(v))) => Ok(Some(i128::from(*v))),
        _ => Ok(None),
    }
}

/// A signed log value of an unsigned column of `bits` bits, as the unsigned value.
fn unsigned(v: i64, bits: u32) -> u64 {
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    (v as u64) & mask
}

/// Builders of one changelog batch.
struct ChangeBatch {
    columns: Vec<ColumnBuilder>,
    change: ChangeColumns,
    rows: usize,
}

impl ChangeBatch {
    fn new(info: &TableInfo) -> Self {
        Self {
            columns: info.columns.iter().map(|c| ColumnBuilder::new(c.kind)).collect(),
            change: ChangeColumns::default(),
            rows: 0,
        }
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn push(
        &mut self,
        info: &TableInfo,
        row: &BinlogRow,
        kind: ChangeKind,
        (tx_start, n): (&str, u64),
        ts_ms: i64,
        origin: &str,
    ) -> Result<()> {
        if row.len() != info.columns.len() {
            return Err(Error::config(
                TABLE_KEY,
                format!(
                    "a change of {} at {tx_start}:{n} has {} of its {} columns: the server's binlog_row_image must be FULL",
                    info.quoted(),
                    row.len(),
                    info.columns.len()
                ),
            ));
        }
        for (i, (column, builder)) in info.columns.iter().zip(self.columns.iter_mut()).enumerate() {
            append(column, builder, row.as_ref(i)).map_err(|message| {
                Error::bad_record(
                    format!("{origin} {} change {tx_start}:{n}", info.quoted()),
                    format!("column `{}`: {message}", column.name),
                )
            })?;
        }
        self.change.append(kind, &info.database, &info.table, format_args!("{tx_start}:{n}"), Some(ts_ms));
        self.rows += 1;
        Ok(())
    }

    fn take(&mut self, info: &TableInfo) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        columns.extend(self.change.finish());
        self.rows = 0;
        RecordBatch::try_new(info.schema.clone(), columns).map_err(|e| Error::arrow("building a batch of changes", e))
    }
}

/// Appends one log value as the database source would read the column.
pub(crate) fn append(
    column: &TableColumn,
    builder: &mut ColumnBuilder,
    value: Option<&BinlogValue<'_>>,
) -> std::result::Result<(), String> {
    let value = match value {
        None | Some(BinlogValue::Value(Value::NULL)) => {
            builder.append_null();
            return Ok(());
        }
        Some(BinlogValue::Value(v)) => v,
        Some(BinlogValue::Jsonb(j)) => {
            let json = serde_json::Value::try_from(j.clone()).map_err(|e| format!("unreadable JSON: {e}"))?;
            return match builder {
                ColumnBuilder::Text(b) => {
                    b.append_value(json.to_string());
                    Ok(())
                }
                _ => Err("a JSON value in a column that is not text".into()),
            };
        }
        Some(BinlogValue::JsonDiff(_)) => {
            return Err("a partial JSON update (binlog_row_value_options=PARTIAL_JSON is not supported)".into());
        }
    };
    let int = || -> std::result::Result<i128, String> {
        match value {
            Value::Int(v) => Ok(match column.unsigned_bits {
                Some(bits) => i128::from(unsigned(*v, bits)),
                None => i128::from(*v),
            }),
            Value::UInt(v) => Ok(i128::from(*v)),
            // YEAR arrives as its digits.
            Value::Bytes(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| wrong(value)),
            other => Err(wrong(other)),
        }
    };
    macro_rules! integer {
        ($b:expr, $t:ty) => {{
            let v = int()?;
            $b.append_value(<$t>::try_from(v).map_err(|_| format!("{v} does not fit {}", stringify!($t)))?)
        }};
    }
    match builder {
        ColumnBuilder::Bool(b) => b.append_value(int()? != 0),
        ColumnBuilder::I8(b) => integer!(b, i8),
        ColumnBuilder::I16(b) => integer!(b, i16),
        ColumnBuilder::I32(b) => integer!(b, i32),
        ColumnBuilder::I64(b) => integer!(b, i64),
        ColumnBuilder::U8(b) => integer!(b, u8),
        ColumnBuilder::U16(b) => integer!(b, u16),
        ColumnBuilder::U32(b) => integer!(b, u32),
        ColumnBuilder::U64(b) => integer!(b, u64),
        ColumnBuilder::F32(b) => match value {
            Value::Float(f) => b.append_value(*f),
            Value::Double(f) => b.append_value(*f as f32),
            other => return Err(wrong(other)),
        },
        ColumnBuilder::F64(b) => match value {
            Value::Double(f) => b.append_value(*f),
            Value::Float(f) => b.append_value(f64::from(*f)),
            // DECIMAL arrives as its text.
            Value::Bytes(t) => b.append_value(
                std::str::from_utf8(t).ok().and_then(|s| s.parse::<f64>().ok()).ok_or_else(|| wrong(value))?,
            ),
            other => return Err(wrong(other)),
        },
        ColumnBuilder::Text(b) => match (column.kind, value) {
            (ColumnKind::Time, Value::Time(negative, d, h, m, s, us)) => {
                if *negative || *d > 0 {
                    return Err(format!("TIME {} is outside a day", time_text(*negative, *d, *h, *m, *s, *us)));
                }
                let t = NaiveTime::from_hms_micro_opt(u32::from(*h), u32::from(*m), u32::from(*s), *us)
                    .ok_or_else(|| wrong(value))?;
                b.append_value(t.to_string())
            }
            (_, Value::Int(i)) if column.members.is_some() && !column.is_set => {
                // ENUM: the member's number, from 1 (0 is the empty error value).
                let members = column.members.as_deref().unwrap_or_default();
                let text = match usize::try_from(*i) {
                    Ok(0) => "",
                    Ok(n) => {
                        members.get(n - 1).map(String::as_str).ok_or_else(|| format!("ENUM member {n} unknown"))?
                    }
                    Err(_) => return Err(format!("ENUM member {i} unknown")),
                };
                b.append_value(text)
            }
            (_, Value::Bytes(mask)) if column.is_set => {
                // SET: a little-endian bit mask of members.
                let members = column.members.as_deref().unwrap_or_default();
                let mut chosen = Vec::new();
                for (byte, bits) in mask.iter().enumerate() {
                    for bit in 0..8 {
                        if bits & (1 << bit) != 0 {
                            let n = byte * 8 + bit;
                            chosen.push(
                                members.get(n).map(String::as_str).ok_or_else(|| format!("SET member {n} unknown"))?,
                            );
                        }
                    }
                }
                b.append_value(chosen.join(","))
            }
            (_, Value::Bytes(t)) => b.append_value(std::str::from_utf8(t).map_err(|e| format!("not UTF-8 text: {e}"))?),
            (_, other) => return Err(wrong(other)),
        },
        ColumnBuilder::Bytes(b) => match value {
            Value::Bytes(t) => b.append_value(t),
            other => return Err(wrong(other)),
        },
        ColumnBuilder::Date(b) => match value {
            Value::Date(y, m, d, ..) => b.append_value(days(date(*y, *m, *d).ok_or_else(|| wrong(value))?)),
            other => return Err(wrong(other)),
        },
        ColumnBuilder::Ts(b) => match value {
            // DATETIME: a wall-clock time, read as UTC as the database source does.
            Value::Date(y, mo, d, h, mi, s, us) => {
                let t = date(*y, *mo, *d)
                    .and_then(|d| d.and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us))
                    .ok_or_else(|| wrong(value))?;
                b.append_value(t.and_utc().timestamp_micros())
            }
            // TIMESTAMP: seconds since 1970 as text, with six digits of fraction when not whole.
            Value::Bytes(t) => b.append_value(epoch_micros(t).ok_or_else(|| wrong(value))?),
            Value::Int(secs) => b.append_value(secs.checked_mul(1_000_000).ok_or_else(|| wrong(value))?),
            other => return Err(wrong(other)),
        },
    }
    Ok(())
}

fn date(y: u16, m: u8, d: u8) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
}

/// `secs` or `secs.ffffff` as microseconds.
fn epoch_micros(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn time_text(negative: bool, d: u32, h: u8, m: u8, s: u8, us: u32) -> String {
    let sign = if negative { "-" } else { "" };
    format!("{sign}{}:{m:02}:{s:02}.{us:06}", u64::from(d) * 24 + u64::from(h))
}

fn wrong(value: &Value) -> String {
    format!("unexpected value {value:?} in the binlog")
}
