//! The snapshot: the table read in chunks of its primary key, each chunk in a
//! consistent-snapshot transaction whose place in the binary log the server reports.
//!
//! MariaDB reports, for `START TRANSACTION WITH CONSISTENT SNAPSHOT`, the binlog
//! position that matches the transaction's view exactly (`binlog_snapshot_file`,
//! `binlog_snapshot_position`: what `mysqldump --single-transaction --master-data` uses
//! without a global read lock). A chunk is therefore the state of its rows at a known
//! log position, and [`ChunkFilter`](super::ChunkFilter) joins it to the log.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use operators_core::{Error, Result};
use sqlx::{Executor, MySqlPool};

use super::position::BinlogPosition;
use super::schema::TableInfo;
use crate::cdc::{key_at, snapshot_batch};
use crate::jdbc::source::Batcher;
use crate::jdbc::{DriverError, is_transient};

/// One chunk read.
pub(crate) struct ChunkRead {
    /// The rows, with the change columns.
    pub batch: RecordBatch,
    /// The log position of the chunk's view.
    pub at: BinlogPosition,
    /// The highest key read when the chunk was full; `None` when it was the last.
    pub upper: Option<i128>,
}

fn db_err(what: String, e: sqlx::Error) -> Error {
    Error::external(what, is_transient(&e), DriverError(e))
}

/// Reads the rows with keys above `after` (all when `None`), at most `limit` of them.
pub(crate) async fn read_chunk(
    pool: &MySqlPool,
    info: &TableInfo,
    table_schema: &SchemaRef,
    after: Option<i128>,
    limit: usize,
    origin: &str,
) -> Result<ChunkRead> {
    let mut conn = pool.acquire().await.map_err(|e| db_err(format!("connecting to {origin}"), e))?;
    let read = read_in(&mut conn, info, table_schema, after, limit, origin).await;
    if read.is_err() {
        // The transaction may still be open: the connection is not given back.
        conn.detach();
    }
    read
}

async fn read_in(
    conn: &mut sqlx::MySqlConnection,
    info: &TableInfo,
    table_schema: &SchemaRef,
    after: Option<i128>,
    limit: usize,
    origin: &str,
) -> Result<ChunkRead> {
    conn.execute("set session transaction isolation level repeatable read")
        .await
        .map_err(|e| db_err(format!("starting a snapshot of {}", info.quoted()), e))?;
    conn.execute("start transaction with consistent snapshot")
        .await
        .map_err(|e| db_err(format!("starting a snapshot of {}", info.quoted()), e))?;
    let status: Vec<(String, String)> = sqlx::query_as("show status like 'binlog_snapshot_%'")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_err("reading the snapshot's binlog position".into(), e))?;
    let value = |name: &str| status.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let (Some(file), Some(pos)) = (value("Binlog_snapshot_file"), value("Binlog_snapshot_position")) else {
        return Err(Error::config(
            "source.cdc.startup.mode",
            format!(
                "{origin} does not report the binlog position of a consistent snapshot (binlog_snapshot_file: \
                 a MariaDB status); on MySQL start with `latest-offset` or `specific-offset` instead of `initial`"
            ),
        ));
    };
    let pos: u64 =
        pos.parse().map_err(|_| Error::Internal(format!("binlog_snapshot_position `{pos}` is not a number")))?;
    if file.is_empty() {
        return Err(Error::config(
            "source.cdc.startup.mode",
            format!("{origin} has no binary log (log_bin is off); change data capture reads it"),
        ));
    }
    let key = &info.columns[info.key].name;
    let key_q = format!("`{}`", key.replace('`', "``"));
    let columns =
        info.columns.iter().map(|c| format!("`{}`", c.name.replace('`', "``"))).collect::<Vec<_>>().join(", ");
    let filter = if after.is_some() { format!(" where {key_q} > ?") } else { String::new() };
    let sql = format!("select {columns} from {}{filter} order by {key_q} limit {limit}", info.quoted());
    let mut query = sqlx::query(&sql);
    if let Some(after) = after {
        query = match i64::try_from(after) {
            Ok(v) => query.bind(v),
            Err(_) => {
                query.bind(u64::try_from(after).map_err(|_| Error::Internal(format!("key {after} out of range")))?)
            }
        };
    }
    let rows = query.fetch_all(&mut *conn).await.map_err(|e| db_err(format!("reading `{sql}`"), e))?;
    conn.execute("commit").await.map_err(|e| db_err("ending a snapshot transaction".into(), e))?;
    let kinds = info.columns.iter().map(|c| c.kind).collect();
    let mut batcher = Batcher::new(table_schema.clone(), kinds, origin.to_string(), 0);
    for row in &rows {
        batcher.push(row)?;
    }
    let n = batcher.len();
    let table_batch = batcher.take()?;
    let at = BinlogPosition::new(file, pos);
    let upper = if n >= limit { key_at(table_batch.column(info.key), n - 1)? } else { None };
    let batch =
        snapshot_batch(info.schema.clone(), table_batch.columns(), n, (&info.database, &info.table), &at.to_string())?;
    Ok(ChunkRead { batch, at, upper })
}
