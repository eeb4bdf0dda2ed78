//! The sink: its builder, its counters, and the task that takes rows in and flushes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::changelog::{CHANGE_COLUMNS, ChangeKind, KIND_COLUMN};
use operators_core::codec::json::JsonEncoder;
use operators_core::operator::{DeadLetter, OperatorContext, Sink, SinkFactory, TaskInfo};
use operators_core::{CheckpointId, Error, Result};
use tokio::sync::Mutex;

use super::config::{Backoff, EsConfig, SyncMode};
use super::service::{Node, Writer};

/// Counters of an [`EsSink`], summed over its subtasks (and over restarts of the job).
#[derive(Debug, Default)]
pub struct EsStats {
    /// Rows handed to the sink.
    pub rows: AtomicU64,
    /// Actions the server acknowledged.
    pub written: AtomicU64,
    /// Finite mode: updates of documents that do not exist.
    pub skipped_missing: AtomicU64,
    /// Full mode with external versioning: documents already at a newer version.
    pub skipped_stale: AtomicU64,
    /// Rows sent to the dead-letter output.
    pub dead_lettered: AtomicU64,
    /// Item retries (429, 5xx, update conflicts).
    pub retried: AtomicU64,
    /// Requests sent again after no answer or a 429/5xx for the whole request.
    pub request_retries: AtomicU64,
    /// Switches to another server.
    pub failovers: AtomicU64,
    /// `_bulk` requests answered.
    pub bulk_requests: AtomicU64,
    /// Documents of older versions deleted by the clean-up.
    pub deleted_stale: AtomicU64,
    /// Rows still buffered when a subtask stopped on a failure; the restore replays them.
    pub abandoned: AtomicU64,
}

impl EsStats {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The Elasticsearch sink. See the [module documentation](super).
#[derive(Debug, Clone)]
pub struct EsSink {
    pub(super) config: EsConfig,
    pub(super) index: String,
    pub(super) doc_type: Option<String>,
    pub(super) mode: SyncMode,
    id_column: String,
    pub(super) version_column: String,
    version: Option<String>,
    pub(super) external_versioning: bool,
    cleanup: bool,
    pub(super) retry_on_conflict: u32,
    pub(super) max_actions: usize,
    pub(super) max_bytes: usize,
    interval: Duration,
    pub(super) backoff: Backoff,
    pub(super) stats: Arc<EsStats>,
}

impl EsSink {
    /// Writes into `index`, document ids from `id_column`, in `mode`; the toolkit's
    /// defaults otherwise (version column `version`, 1000 actions / 5 MB / 60 s,
    /// constant 60 s backoff with 5 retries, 5 retries on conflict).
    pub fn new(config: EsConfig, index: &str, id_column: &str, mode: SyncMode) -> Self {
        EsSink {
            config,
            index: index.to_string(),
            doc_type: None,
            mode,
            id_column: id_column.to_string(),
            version_column: "version".into(),
            version: None,
            external_versioning: false,
            cleanup: false,
            retry_on_conflict: 5,
            max_actions: 1000,
            max_bytes: 5 << 20,
            interval: Duration::from_secs(60),
            backoff: Backoff::default(),
            stats: Arc::new(EsStats::default()),
        }
    }

    /// Document type for Elasticsearch 6 (`sink.es.type`); ignored by 7 and 8, which are
    /// typeless.
    pub fn with_doc_type(mut self, doc_type: &str) -> Self {
        self.doc_type = Some(doc_type.to_string()).filter(|t| !t.is_empty());
        self
    }

    /// The field receiving the version (default `version`).
    pub fn with_version_column(mut self, column: &str) -> Self {
        self.version_column = column.to_string();
        self
    }

    /// The version written into every document in full and incremental modes
    /// (`sink.es.version`, typically the export's timestamp). Written as a number when it
    /// is an integer.
    pub fn with_version(mut self, version: &str) -> Self {
        self.version = Some(version.to_string()).filter(|v| !v.is_empty());
        self
    }

    /// Full mode: index with `version_type=external_gte` and the run's version, so a
    /// document already at a newer version is left alone (counted `skipped_stale`).
    pub fn with_external_versioning(mut self, on: bool) -> Self {
        self.external_versioning = on;
        self
    }

    /// Full mode: after the run, delete the documents whose version is below this run's.
    pub fn with_cleanup(mut self, on: bool) -> Self {
        self.cleanup = on;
        self
    }

    /// Retries of an update on a version conflict (default 5).
    pub fn with_retry_on_conflict(mut self, n: u32) -> Self {
        self.retry_on_conflict = n;
        self
    }

    /// Bulk flush triggers: actions, bytes, interval.
    pub fn with_bulk(mut self, max_actions: usize, max_bytes: usize, interval: Duration) -> Self {
        self.max_actions = max_actions.max(1);
        self.max_bytes = max_bytes.max(1);
        self.interval = interval;
        self
    }

    /// Retry behaviour.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The sink's counters, shared by its subtasks.
    pub fn stats(&self) -> Arc<EsStats> {
        Arc::clone(&self.stats)
    }

    pub(super) fn version_number(&self) -> Option<i64> {
        self.version.as_deref().and_then(|v| v.trim().parse().ok())
    }

    /// Checks the settings that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        if self.index.is_empty() {
            return Err(Error::config("sink.es.index", "the index is empty"));
        }
        if self.id_column.is_empty() {
            return Err(Error::config("sink.es.unique.column", "the id column is empty"));
        }
        if self.version_column.is_empty() && self.version.is_some() && self.mode.writes_version() {
            return Err(Error::config("sink.es.version.column", "empty, but sink.es.version is set"));
        }
        for (on, key) in [(self.external_versioning, "sink.es.version.type"), (self.cleanup, "sink.es.cleanup")] {
            if !on {
                continue;
            }
            if self.mode != SyncMode::Full {
                return Err(Error::config(key, "works in full sync mode only (sink.es.sync.type=full)"));
            }
            if self.version_number().is_none() {
                return Err(Error::config(
                    key,
                    "needs sink.es.version to be an integer (for example the export's epoch timestamp)",
                ));
            }
        }
        Ok(())
    }

    /// Checks the settings against the schema of the rows to be written: the id column
    /// must exist, and the version column must not be a data column (its value would
    /// silently replace the data's).
    pub fn check_schema(&self, schema: &Schema) -> Result<()> {
        if schema.index_of(&self.id_column).is_err() {
            return Err(Error::config(
                "sink.es.unique.column",
                format!("no column `{}` in the rows written (columns: {})", self.id_column, columns(schema)),
            ));
        }
        if self.mode.writes_version() && self.version.is_some() && schema.index_of(&self.version_column).is_ok() {
            return Err(Error::config(
                "sink.es.version.column",
                format!(
                    "`{}` is also a column of the data; choose another name for the version field \
                     (the original toolkit dropped every record in this case)",
                    self.version_column
                ),
            ));
        }
        Ok(())
    }
}

fn columns(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

impl SinkFactory for EsSink {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate()?;
        let nodes = self.config.clients()?;
        let writer = Writer::new(self, nodes);
        Ok(Box::new(EsSinkTask {
            writer: Arc::new(Mutex::new(writer)),
            encoder: JsonEncoder::new(),
            rows: Vec::new(),
            row_ranges: Vec::new(),
            schema_checked: None,
            ticker: None,
            ended: false,
            final_checkpoint: None,
            cleaned: false,
            subtask: info.subtask,
            parallelism: info.parallelism,
            settings: self.clone(),
        }))
    }
}

impl Writer {
    /// A writer of `settings` to `nodes`, with nothing buffered.
    pub(super) fn new(settings: &EsSink, nodes: Vec<Node>) -> Self {
        let version_json = settings.version.as_ref().map(|v| {
            let value = match v.trim().parse::<i64>() {
                Ok(n) => n.to_string(),
                Err(_) => serde_json::Value::String(v.clone()).to_string(),
            };
            format!("{}:{value}", serde_json::Value::String(settings.version_column.clone()))
        });
        let mut writer = Writer {
            settings: settings.clone(),
            nodes,
            current: 0,
            typed: settings.doc_type.is_some(),
            version_json,
            action_prefix: Vec::new(),
            delete_prefix: Vec::new(),
            buf: Vec::new(),
            items: Vec::new(),
            dead: Vec::new(),
            last_flush: Instant::now(),
            failure: None,
        };
        writer.action_prefix = writer.build_action_prefix();
        writer.delete_prefix = writer.build_delete_prefix();
        writer
    }
}

struct EsSinkTask {
    writer: Arc<Mutex<Writer>>,
    encoder: JsonEncoder,
    rows: Vec<u8>,
    row_ranges: Vec<std::ops::Range<usize>>,
    /// The schema last checked by [`EsSink::check_schema`].
    schema_checked: Option<arrow::datatypes::SchemaRef>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    ended: bool,
    /// The first checkpoint whose barrier came after the end of input: its completion
    /// proves every subtask's writes are acknowledged (sources send such barriers only
    /// once all of them finished).
    final_checkpoint: Option<CheckpointId>,
    cleaned: bool,
    subtask: usize,
    parallelism: usize,
    settings: EsSink,
}

impl EsSinkTask {
    fn drain_dead(writer: &mut Writer, ctx: &mut OperatorContext) {
        for d in writer.dead.drain(..) {
            ctx.dead_letter(d);
        }
    }

    async fn cleanup(&mut self) -> Result<()> {
        if !self.settings.cleanup || self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        let deleted = self.writer.lock().await.cleanup().await?;
        tracing::info!(index = %self.settings.index, deleted, "full sync clean-up: deleted documents of older versions");
        Ok(())
    }
}

#[async_trait]
impl Sink for EsSinkTask {
    async fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        self.writer.lock().await.probe().await?;
        // Interval flushes happen even when no rows arrive.
        let writer = Arc::downgrade(&self.writer);
        let interval = self.settings.interval;
        self.ticker = Some(operators_core::spawn(async move {
            let tick = (interval / 4).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(tick).await;
                let Some(writer) = writer.upgrade() else { return };
                let mut w = writer.lock().await;
                if !w.items.is_empty()
                    && w.failure.is_none()
                    && w.last_flush.elapsed() >= interval
                    && let Err(e) = w.flush().await
                {
                    w.failure = Some(e);
                }
            }
        }));
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        // A changelog (a CDC source's rows): `-U`/`-D` rows delete their document, the
        // others index it; the change columns are not part of the document.
        let deletes = match batch.column_by_name(KIND_COLUMN) {
            Some(kinds) if matches!(kinds.data_type(), DataType::Utf8) => {
                let kinds = kinds.as_string::<i32>();
                let mut deletes = Vec::with_capacity(kinds.len());
                for (row, kind) in kinds.iter().enumerate() {
                    let kind = kind.and_then(ChangeKind::parse).ok_or_else(|| {
                        Error::bad_record(
                            format!("row {row} of a changelog batch"),
                            format!("`{KIND_COLUMN}` is not one of +I, -U, +U, -D"),
                        )
                    })?;
                    deletes.push(!kind.is_upsert());
                }
                Some(deletes)
            }
            _ => None,
        };
        let batch = if deletes.is_some() {
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|i| !CHANGE_COLUMNS.contains(&batch.schema().field(*i).name().as_str()))
                .collect();
            batch.project(&keep).map_err(|e| Error::arrow("Elasticsearch sink", e))?
        } else {
            batch
        };
        let schema = batch.schema();
        if self.schema_checked.as_ref() != Some(&schema) {
            self.settings.check_schema(&schema)?;
            self.schema_checked = Some(Arc::clone(&schema));
        }
        let id_idx = schema.index_of(&self.settings.id_column).map_err(|e| Error::arrow("Elasticsearch sink", e))?;
        let ids = arrow::compute::cast(batch.column(id_idx), &DataType::Utf8)
            .map_err(|e| Error::arrow("Elasticsearch sink document ids", e))?;
        let ids = ids.as_string::<i32>();
        self.rows.clear();
        self.row_ranges.clear();
        self.encoder.encode_rows(&batch, &mut self.rows, &mut self.row_ranges)?;
        let mut w = self.writer.lock().await;
        if let Some(e) = w.failure.take() {
            return Err(e);
        }
        // Rows are counted when taken into the buffer, before each flush (an await where
        // the task may be stopped) and at the end: the counts add up also then.
        let mut taken = 0u64;
        for (i, range) in self.row_ranges.iter().enumerate() {
            taken += 1;
            let doc = &self.rows[range.clone()];
            if ids.is_null(i) || ids.value(i).is_empty() {
                EsStats::add(&self.settings.stats.dead_lettered, 1);
                ctx.dead_letter(DeadLetter {
                    origin: self.settings.index.clone(),
                    line: None,
                    offset: None,
                    reason: format!("the document id column `{}` is null or empty", self.settings.id_column),
                    record: String::from_utf8_lossy(doc).into_owned(),
                });
                continue;
            }
            if deletes.as_ref().is_some_and(|d| d[i]) {
                w.add_delete(ids.value(i));
            } else {
                w.add(ids.value(i), doc);
            }
            if w.is_full() {
                EsStats::add(&self.settings.stats.rows, std::mem::take(&mut taken));
                w.flush().await?;
                Self::drain_dead(&mut w, ctx);
            }
        }
        EsStats::add(&self.settings.stats.rows, taken);
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint_id: CheckpointId, ctx: &mut OperatorContext) -> Result<Option<Vec<u8>>> {
        let mut w = self.writer.lock().await;
        w.flush().await?;
        Self::drain_dead(&mut w, ctx);
        if self.ended && self.final_checkpoint.is_none() {
            self.final_checkpoint = Some(checkpoint_id);
        }
        Ok(None)
    }

    async fn on_end_of_input(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        {
            let mut w = self.writer.lock().await;
            w.flush().await?;
            Self::drain_dead(&mut w, ctx);
        }
        self.ended = true;
        // The only subtask has every write acknowledged now; with several, subtask 0
        // waits for the final checkpoint, which proves the same for all of them.
        if self.parallelism == 1 {
            self.cleanup().await?;
        }
        Ok(())
    }

    async fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        if self.subtask == 0 && self.final_checkpoint.is_some_and(|f| checkpoint_id >= f) {
            self.cleanup().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if self.settings.cleanup && self.ended && !self.cleaned && self.subtask == 0 {
            tracing::warn!(
                "sink.es.cleanup did not run: with sink parallelism above 1 it runs when the final checkpoint completes; enable checkpointing"
            );
        }
        // No flush here: close also runs when the job fails or is cancelled, and rows
        // after the last checkpoint are replayed by the restore anyway.
        Ok(())
    }
}

impl Drop for EsSinkTask {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}
