//! The source: a Hive table or query, read once, exactly once across restarts.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::operator::{RestoredState, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo};
use operators_core::{CheckpointId, Error, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::client::{HiveConfig, HiveSession};
use crate::error::SourceError;

/// Rows per `FetchResults` call unless set: HiveServer2's largest fetch by default
/// (`hive.server2.thrift.resultset.max.fetch.size`, 10 000; a larger request gets that
/// many). The toolkit's 50 costs a round trip per 50 rows: `pipeline-bench hive-source`
/// measures the difference.
pub const DEFAULT_FETCH_SIZE: usize = 10_000;

/// Reads a Hive table or the result of a query.
///
/// The statement runs once per job run; its result streams through a channel of two
/// batches of `fetch.size` rows, so memory stays flat however large the result. The
/// checkpoint holds the number of rows emitted, and a restored job runs the statement
/// again and skips them: exactly once when the statement returns its rows in the same
/// order each time — a query with an `ORDER BY`, or a table (or query) whose data does
/// not change during the import. A query without `ORDER BY` is read with a warning.
/// Only subtask 0 reads.
///
/// ```no_run
/// use operators_sources::hive::{HiveConfig, HiveSource};
/// let hive = HiveConfig::parse("source.db.url", "jdbc:hive2://127.0.0.1:10000/default", Some("etl"), Some("secret"))?;
/// let source = HiveSource::new(hive).with_sql("select * from lyh order by id").with_fetch_size(10_000)?;
/// # Ok::<(), operators_sources::SourceError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HiveSource {
    config: HiveConfig,
    table: Option<String>,
    sql: Option<String>,
    fetch_size: usize,
}

/// Where a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum HivePosition {
    /// This many rows of the statement were emitted.
    Rows(u64),
    /// Everything was read.
    Done,
}

impl HiveSource {
    /// A source on `config`'s server; set a table or a query.
    pub fn new(config: HiveConfig) -> Self {
        HiveSource { config, table: None, sql: None, fetch_size: DEFAULT_FETCH_SIZE }
    }

    /// Reads `select * from <table>` (`db.table` names another database).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Reads the result of `sql` (it wins over a table).
    pub fn with_sql(mut self, sql: impl Into<String>) -> Self {
        self.sql = Some(sql.into());
        self
    }

    /// Rows per fetch (default [`DEFAULT_FETCH_SIZE`]); 0 is refused.
    pub fn with_fetch_size(mut self, rows: usize) -> std::result::Result<Self, SourceError> {
        if rows == 0 {
            return Err(SourceError::config("source.db.fetch.size", "must be at least 1"));
        }
        self.fetch_size = rows;
        Ok(self)
    }

    /// The statement the source runs.
    pub fn statement(&self) -> std::result::Result<String, SourceError> {
        if let Some(sql) = self.sql.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            return Ok(sql.trim_end_matches(';').to_string());
        }
        let table = self
            .table
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SourceError::config("source.db.table", "give a table (or source.db.sql)"))?;
        let quoted: Vec<String> = table.split('.').map(|part| format!("`{}`", part.replace('`', "``"))).collect();
        Ok(format!("select * from {}", quoted.join(".")))
    }
}

impl SourceFactory for HiveSource {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        let statement = self.statement()?;
        Ok(Box::new(HiveReader {
            cfg: self.clone(),
            statement,
            active: info.subtask == 0,
            position: HivePosition::Rows(0),
            rows: None,
            schema: Arc::new(Schema::empty()),
        }))
    }
}

/// What the fetch thread sends: the result's empty batch first (its schema), then its
/// rows, then `None` at the end. A channel that closes without the end is a failure, not
/// the end of the result.
type Fetched = Result<Option<RecordBatch>>;

struct HiveReader {
    cfg: HiveSource,
    statement: String,
    active: bool,
    position: HivePosition,
    rows: Option<mpsc::Receiver<Fetched>>,
    schema: SchemaRef,
}

impl HiveReader {
    fn emitted(&self) -> u64 {
        match self.position {
            HivePosition::Rows(n) => n,
            HivePosition::Done => 0,
        }
    }
}

/// The part of `batch` after the first `skip` rows still to be skipped (restored rows
/// already emitted by an earlier run), `None` when all of it was emitted; `skip` goes
/// down by the rows passed over.
fn after_skip(batch: RecordBatch, skip: &mut u64) -> Option<RecordBatch> {
    let n = batch.num_rows() as u64;
    if *skip >= n {
        *skip -= n;
        return None;
    }
    // `skip < n`, and `n` counts the rows of one batch in memory: both fit usize.
    let (from, rest) = (*skip as usize, (n - *skip) as usize);
    *skip = 0;
    Some(if from == 0 { batch } else { batch.slice(from, rest) })
}

/// Runs the statement and sends what [`Fetched`] says, less the first `skip` rows, until
/// the result ends or the receiver is gone (the job stopped).
fn fetch_all(config: HiveConfig, statement: String, fetch_size: usize, skip: u64, tx: mpsc::Sender<Fetched>) {
    let mut session = match HiveSession::open(&config) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let stopped = || tx.is_closed();
    let result = (|| -> Result<()> {
        let Some(query) = session.execute_unless(&statement, &stopped)? else {
            return Err(Error::config(
                "source.db.sql",
                format!("`{statement}` returns no rows to read (it is not a query)"),
            ));
        };
        if tx.blocking_send(Ok(Some(RecordBatch::new_empty(query.schema())))).is_err() {
            session.cancel(&query);
            return Ok(());
        }
        let wanted = skip;
        let mut skip = skip;
        while let Some(batch) = session.fetch(&query, fetch_size)? {
            let Some(batch) = after_skip(batch, &mut skip) else { continue };
            if tx.blocking_send(Ok(Some(batch))).is_err() {
                session.cancel(&query);
                return Ok(());
            }
        }
        if skip > 0 {
            return Err(Error::Restore {
                path: std::path::PathBuf::from(config.display()),
                message: format!(
                    "the checkpoint says {wanted} rows of `{statement}` were emitted, and it now returns only {}: \
                     the data changed since (a restored import needs the same rows in the same order)",
                    wanted - skip
                ),
            });
        }
        // Every row is out: a failure to free the statement on the server is not the
        // import's.
        if let Err(e) = session.close_query(query) {
            tracing::warn!(error = %e, "closing the Hive query after its last row");
        }
        let _ = tx.blocking_send(Ok(None));
        Ok(())
    })();
    match result {
        Ok(()) => session.close(),
        Err(e) => {
            // After a broken connection, a CloseSession would wait for the socket timeout.
            let broken = matches!(&e, Error::External { retryable: true, .. });
            let _ = tx.blocking_send(Err(e));
            if broken { session.abandon() } else { session.close() }
        }
    }
}

#[async_trait]
impl Source for HiveReader {
    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        if let Some((_, bytes)) = state.snapshots.iter().find(|(i, _)| *i == 0) {
            self.position = postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: "hive source".into(),
                message: format!("cannot read the checkpointed position: {e}"),
            })?;
        }
        Ok(())
    }

    async fn open(&mut self, ctx: &mut SourceContext) -> Result<()> {
        if !self.active || self.position == HivePosition::Done {
            return Ok(());
        }
        let ordered = self.statement.to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        if self.cfg.sql.is_some() && !ordered.contains("order by") {
            tracing::warn!(
                statement = %self.statement,
                "the Hive query has no ORDER BY: a restored job re-runs it and skips the rows already emitted, \
                 which is exact only if it returns the same rows in the same order (a table that does not change \
                 during the import)"
            );
        }
        let skip = self.emitted();
        let (tx, mut rx) = mpsc::channel(2);
        let (config, statement, fetch) = (self.cfg.config.clone(), self.statement.clone(), self.cfg.fetch_size);
        std::thread::Builder::new()
            .name("hive-fetch".into())
            .spawn(move || {
                // A panic must reach the job as an error: the closed channel alone would
                // read as the end of the result.
                let panicked = tx.clone();
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    fetch_all(config, statement, fetch, skip, tx)
                })) {
                    let message =
                        p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
                    let _ = panicked.blocking_send(Err(Error::Internal(format!(
                        "the Hive fetch thread panicked: {}",
                        message.unwrap_or_default()
                    ))));
                }
            })
            .map_err(|e| Error::Internal(format!("starting the Hive fetch thread: {e}")))?;
        // The statement's schema, or its error, before any row.
        match rx.recv().await {
            Some(Ok(Some(empty))) => self.schema = empty.schema(),
            Some(Err(e)) => return Err(e),
            Some(Ok(None)) | None => {
                return Err(Error::Internal("the Hive fetch thread ended before the result's schema".into()));
            }
        }
        ctx.set_progress(skip, None);
        self.rows = Some(rx);
        Ok(())
    }

    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        if !self.active || self.position == HivePosition::Done {
            return Ok(SourcePoll::Finished);
        }
        let Some(rx) = self.rows.as_mut() else {
            return Ok(SourcePoll::Finished);
        };
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Err(_) => Ok(SourcePoll::Idle),
            Ok(None) => Err(Error::Internal("the Hive fetch thread stopped before the end of the result".into())),
            Ok(Some(Ok(None))) => {
                ctx.set_progress(self.emitted(), Some(self.emitted()));
                self.position = HivePosition::Done;
                self.rows = None;
                Ok(SourcePoll::Finished)
            }
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(Some(batch)))) => {
                let n = self.emitted() + batch.num_rows() as u64;
                self.position = HivePosition::Rows(n);
                ctx.set_progress(n, None);
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
            .map_err(|e| Error::Internal(format!("serializing the Hive position: {e}")))
    }

    async fn close(&mut self) -> Result<()> {
        // The fetch thread stops at its next send and closes the session.
        self.rows = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HiveConfig {
        HiveConfig::parse("source.db.url", "jdbc:hive2://127.0.0.1:10000/default", None, None).unwrap()
    }

    #[test]
    fn a_restored_read_skips_exactly_the_rows_emitted() {
        use arrow::array::{AsArray, Int64Array};
        let batch = |from: i64| {
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(from..from + 4)) as _)]).unwrap()
        };
        let ids = |b: &RecordBatch| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec();
        for (skip, first) in [(0u64, Some(vec![0, 1, 2, 3])), (3, Some(vec![3])), (1, Some(vec![1, 2, 3])), (4, None)] {
            let mut left = skip;
            assert_eq!(after_skip(batch(0), &mut left).map(|b| ids(&b)), first, "skip {skip}");
            assert_eq!(left, skip.saturating_sub(4), "skip {skip}");
        }
        // Past one batch: the rest of the skip carries into the next.
        let mut left = 6;
        assert!(after_skip(batch(0), &mut left).is_none());
        assert_eq!(after_skip(batch(4), &mut left).map(|b| ids(&b)), Some(vec![6, 7]));
        assert_eq!(left, 0);
    }

    #[test]
    fn the_statement_is_the_query_or_the_quoted_table() {
        let s = HiveSource::new(config());
        assert!(s.statement().unwrap_err().to_string().contains("source.db.table"));
        assert_eq!(s.clone().with_table("ods.lyh").statement().unwrap(), "select * from `ods`.`lyh`");
        assert_eq!(s.clone().with_table("we`ird").statement().unwrap(), "select * from `we``ird`");
        let q = s.clone().with_table("t").with_sql(" select * from lyh limit 3; ");
        assert_eq!(q.statement().unwrap(), "select * from lyh limit 3");
        assert!(s.with_fetch_size(0).unwrap_err().to_string().contains("source.db.fetch.size"));
    }
}
