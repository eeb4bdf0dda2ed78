//! Writes rows as Elasticsearch documents with `_bulk` requests: the toolkit's three
//! sync modes, retries with backoff, dead letters for rejected documents.
//!
//! ```no_run
//! use operators_core::builtins::GeneratorSource;
//! use operators_core::checkpoint::CheckpointConfig;
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sinks::elasticsearch::{EsConfig, EsSink, SyncMode};
//!
//! # async fn run() -> operators_core::Result<()> {
//! let es = EsConfig::parse("sink.es.server", "127.0.0.1:9200,127.0.0.1:9201")?
//!     .with_basic_auth("elastic", "secret");
//! let sink = EsSink::new(es, "people", "id", SyncMode::Full).with_version("1586959594");
//! let pipeline = Pipeline::new();
//! pipeline.source("numbers", GeneratorSource::bounded(1_000)).sink("es", sink);
//! let config = JobConfig::new("to es").with_checkpointing(CheckpointConfig::new("/tmp/checkpoints"));
//! pipeline.run(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Delivery
//!
//! Every row becomes one bulk action whose `_id` is the row's `unique.column`. Buffered
//! actions are sent when `max_actions` or `max_bytes` is reached, every `interval`, and
//! at every checkpoint barrier; a checkpoint completes only when every action of the
//! rows before its barrier is acknowledged. A restore replays the rows after the last
//! checkpoint, and they rewrite the same documents under the same ids: at-least-once
//! delivery with effectively-once results.
//!
//! # Per item
//!
//! | answer | what happens | counted as |
//! |---|---|---|
//! | 2xx | done | `written` |
//! | 429, 5xx | resent after the backoff delay, up to `retries` times; then the task fails (and restarts) | `retried` |
//! | 409 on an update | resent up to `retry_on_conflict` times (the action also asks the server to retry), then dead-lettered | `retried` |
//! | 409 in full mode with `external_gte` | a newer version is in the index: left alone | `skipped_stale` |
//! | 404 in finite mode | no such document: skipped, as finite mode asks | `skipped_missing` |
//! | other 4xx | dead letter with the document id and the server's reason | `dead_lettered` |
//!
//! A row without id is also dead-lettered. `written + skipped_missing + skipped_stale +
//! dead_lettered + abandoned` equals the rows the sink received, where `abandoned` are
//! rows buffered by a subtask that failed (the restore replays them).
//!
//! A request that does not get an answer (connection refused or dropped, timeout) goes to
//! the next server of the list at once, and after a round over all of them waits the
//! backoff delay. HTTP 401/403 fails the job without retrying, naming the server but never
//! the credentials.
//!
//! # Going beyond the toolkit
//!
//! - The version column colliding with a data column is refused at start (the toolkit
//!   silently dropped every record).
//! - [`EsSink::with_external_versioning`] (full mode): documents are indexed with
//!   `version_type=external_gte` and the run's version, so an older export re-run can never
//!   overwrite a newer one.
//! - [`EsSink::with_cleanup`] (full mode): after the job's input ended and every subtask's
//!   writes are acknowledged (the final checkpoint completed, or the only subtask flushed),
//!   documents whose version column is below this run's version are deleted — a full sync
//!   that also removes what the source no longer has.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, StatusCode, Url};
use operators_core::codec::json::JsonEncoder;
use operators_core::operator::{DeadLetter, OperatorContext, Sink, SinkFactory, TaskInfo};
use operators_core::secret::Secret;
use operators_core::{CheckpointId, Error, Result};
use serde::Deserialize;
use tokio::sync::Mutex;

/// How rows change the index (`sink.es.sync.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Update with `doc_as_upsert`: merge into an existing document, insert a new one.
    Incremental,
    /// Update existing documents only; a missing document is counted and skipped.
    Finite,
    /// Index: overwrite the whole document.
    Full,
}

impl SyncMode {
    /// Parses `incremental`, `finite` or `full` (any case); errors name `key`.
    pub fn parse(key: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "incremental" => Ok(SyncMode::Incremental),
            "finite" => Ok(SyncMode::Finite),
            "full" => Ok(SyncMode::Full),
            other => {
                Err(Error::config(key, format!("unknown sync type `{other}`; expected incremental, finite or full")))
            }
        }
    }

    fn writes_version(self) -> bool {
        self != SyncMode::Finite
    }
}

/// Growth of the delay between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// The same delay every time.
    Constant,
    /// The delay doubles with every retry.
    Exponential,
}

/// Retries of rejected items and unanswered requests (`sink.es.bulk.flush.backoff.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Whether to retry at all; off, the first rejection fails the task.
    pub enabled: bool,
    /// Constant or exponential.
    pub kind: BackoffKind,
    /// The delay (the first one, when exponential).
    pub delay: Duration,
    /// How many times one item or request is retried.
    pub retries: u32,
}

impl Default for Backoff {
    /// The toolkit's defaults: constant, 60 s, 5 retries.
    fn default() -> Self {
        Backoff { enabled: true, kind: BackoffKind::Constant, delay: Duration::from_secs(60), retries: 5 }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based).
    pub fn delay_for(&self, attempt: u32) -> Duration {
        match self.kind {
            BackoffKind::Constant => self.delay,
            BackoffKind::Exponential => self.delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)),
        }
    }

    fn max_retries(&self) -> u32 {
        if self.enabled { self.retries } else { 0 }
    }
}

#[derive(Clone)]
enum Auth {
    Basic { user: String, password: Secret },
    ApiKey(Secret),
}

/// Where the cluster is and how to talk to it. `Debug` shows the servers and the kind of
/// authentication, never credentials.
#[derive(Clone)]
pub struct EsConfig {
    key: String,
    nodes: Vec<Url>,
    auth: Option<Auth>,
    validation: Option<TlsValidation>,
    timeout: Duration,
}

#[derive(Clone)]
enum TlsValidation {
    Ca(Vec<u8>),
    None,
}

impl std::fmt::Debug for EsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            None => "none",
            Some(Auth::Basic { .. }) => "basic",
            Some(Auth::ApiKey(_)) => "api key",
        };
        f.debug_struct("EsConfig")
            .field("nodes", &self.nodes.iter().map(Url::as_str).collect::<Vec<_>>())
            .field("auth", &auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EsConfig {
    /// Parses the toolkit's `host:port,host:port` (or `http(s)://host:port` entries).
    /// Credentials written into a URL (`https://user:pw@host`) are taken out of it and
    /// used as basic authentication. Errors name `key`.
    pub fn parse(key: &str, servers: &str) -> Result<Self> {
        let mut nodes = Vec::new();
        let mut auth = None;
        for entry in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let with_scheme = if entry.contains("://") { entry.to_string() } else { format!("http://{entry}") };
            let mut url = Url::parse(&with_scheme)
                .map_err(|e| Error::config(key, format!("`{}` is not host:port or a URL: {e}", redact(entry))))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::config(key, format!("`{}`: only http and https are supported", redact(entry))));
            }
            if url.host_str().is_none() {
                return Err(Error::config(key, format!("`{}` has no host", redact(entry))));
            }
            if !url.username().is_empty() {
                let user = url.username().to_string();
                let password = Secret::new(url.password().unwrap_or_default());
                auth = Some(Auth::Basic { user, password });
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
            nodes.push(url);
        }
        if nodes.is_empty() {
            return Err(Error::config(key, "no server given; expected host:port[,host:port...]"));
        }
        Ok(EsConfig { key: key.to_string(), nodes, auth, validation: None, timeout: Duration::from_secs(60) })
    }

    /// Basic authentication.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some(Auth::Basic { user: user.to_string(), password: Secret::new(password) });
        self
    }

    /// API-key authentication: `id:secret`, or the base64 form Elasticsearch returns as
    /// `encoded`.
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.auth = Some(Auth::ApiKey(Secret::new(key)));
        self
    }

    /// Trusts the PEM certificate authority `pem` for `https` servers (besides the
    /// system's roots).
    pub fn with_ca_certificate(mut self, pem: &[u8]) -> Self {
        self.validation = Some(TlsValidation::Ca(pem.to_vec()));
        self
    }

    /// Accepts any server certificate. Only for tests and closed networks.
    pub fn with_insecure_tls(mut self) -> Self {
        self.validation = Some(TlsValidation::None);
        self
    }

    /// Time limit of one request (default 60 s); a request over it counts as unanswered.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The servers, in order.
    pub fn nodes(&self) -> &[Url] {
        &self.nodes
    }

    /// One client per server: failing over is this sink's decision (the client's
    /// multi-node pool neither skips dead nodes nor retries).
    fn clients(&self) -> Result<Vec<Node>> {
        self.nodes
            .iter()
            .map(|url| {
                let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url.clone()))
                    .disable_proxy()
                    .timeout(self.timeout)
                    .enable_meta_header(false);
                builder = match &self.auth {
                    Some(Auth::Basic { user, password }) => {
                        builder.auth(Credentials::Basic(user.clone(), password.expose().to_string()))
                    }
                    Some(Auth::ApiKey(k)) => match k.expose().split_once(':') {
                        Some((id, secret)) => builder.auth(Credentials::ApiKey(id.to_string(), secret.to_string())),
                        None => builder.auth(Credentials::EncodedApiKey(k.expose().to_string())),
                    },
                    None => builder,
                };
                builder = match &self.validation {
                    Some(TlsValidation::Ca(pem)) => {
                        let cert = Certificate::from_pem(pem).map_err(|e| {
                            Error::config(&self.key, format!("the CA certificate is not valid PEM: {e}"))
                        })?;
                        builder.cert_validation(CertificateValidation::Full(cert))
                    }
                    Some(TlsValidation::None) => builder.cert_validation(CertificateValidation::None),
                    None => builder,
                };
                let transport = builder.build().map_err(|e| {
                    Error::config(&self.key, format!("cannot build a client for `{url}`: {}", redact(&e.to_string())))
                })?;
                Ok(Node { url: url.to_string(), client: Elasticsearch::new(transport) })
            })
            .collect()
    }
}

/// Error text never carries credentials: the library's one rule for passwords in URLs
/// and `name=value` text.
fn redact(text: &str) -> String {
    operators_core::secret::redact_url(text)
}

struct Node {
    url: String,
    client: Elasticsearch,
}

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
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The Elasticsearch sink. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct EsSink {
    config: EsConfig,
    index: String,
    doc_type: Option<String>,
    mode: SyncMode,
    id_column: String,
    version_column: String,
    version: Option<String>,
    external_versioning: bool,
    cleanup: bool,
    retry_on_conflict: u32,
    max_actions: usize,
    max_bytes: usize,
    interval: Duration,
    backoff: Backoff,
    stats: Arc<EsStats>,
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

    fn version_number(&self) -> Option<i64> {
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
        let version_json = self.version.as_ref().map(|v| {
            let value = match v.trim().parse::<i64>() {
                Ok(n) => n.to_string(),
                Err(_) => serde_json::Value::String(v.clone()).to_string(),
            };
            format!("{}:{value}", serde_json::Value::String(self.version_column.clone()))
        });
        let writer = Writer {
            settings: self.clone(),
            nodes,
            current: 0,
            typed: self.doc_type.is_some(),
            version_json,
            action_prefix: Vec::new(),
            buf: Vec::new(),
            items: Vec::new(),
            dead: Vec::new(),
            last_flush: Instant::now(),
            failure: None,
        };
        let mut writer = writer;
        writer.action_prefix = writer.build_action_prefix();
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

/// One buffered action: where its lines are in the body, and its retry history.
struct Item {
    lines: std::ops::Range<usize>,
    /// The id as a JSON string, relative to `lines.start`.
    id: std::ops::Range<usize>,
    /// The document, relative to `lines.start`.
    doc: std::ops::Range<usize>,
    attempts: u32,
    conflicts: u32,
}

struct Writer {
    settings: EsSink,
    nodes: Vec<Node>,
    current: usize,
    typed: bool,
    /// `"<version column>":<version>`, appended to documents where the mode writes it.
    version_json: Option<String>,
    /// The action line up to the id, the same for every row (built once, not per row).
    action_prefix: Vec<u8>,
    buf: Vec<u8>,
    items: Vec<Item>,
    dead: Vec<DeadLetter>,
    last_flush: Instant,
    /// An error of a background (interval) flush, reported by the next call.
    failure: Option<Error>,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn reason_of(error: &Option<serde_json::Value>) -> (String, String) {
    match error {
        Some(serde_json::Value::Object(o)) => (
            o.get("type").and_then(|t| t.as_str()).unwrap_or("error").to_string(),
            o.get("reason").and_then(|t| t.as_str()).unwrap_or("").to_string(),
        ),
        Some(other) => ("error".into(), other.to_string()),
        None => ("error".into(), String::new()),
    }
}

enum Answer {
    /// A 2xx answer's body.
    Ok(Vec<u8>),
    /// 429 or 5xx for the whole request: resend it all.
    Busy(String),
}

impl Writer {
    /// `{"<action>":{"_index":…,[…,]"_id":` for this sink's settings.
    fn build_action_prefix(&self) -> Vec<u8> {
        let s = &self.settings;
        let mut meta = serde_json::Map::new();
        meta.insert("_index".into(), s.index.clone().into());
        if self.typed
            && let Some(t) = &s.doc_type
        {
            meta.insert("_type".into(), t.clone().into());
        }
        let action = match s.mode {
            SyncMode::Full => {
                if s.external_versioning
                    && let Some(v) = s.version_number()
                {
                    meta.insert("version".into(), v.into());
                    meta.insert("version_type".into(), "external_gte".into());
                }
                "index"
            }
            SyncMode::Incremental | SyncMode::Finite => {
                meta.insert("retry_on_conflict".into(), s.retry_on_conflict.into());
                "update"
            }
        };
        let line = serde_json::json!({ action: meta }).to_string();
        // `{"index":{...}}` → `{"index":{...,"_id":`
        let mut prefix = line.as_bytes()[..line.len() - 2].to_vec();
        prefix.extend_from_slice(b",\"_id\":");
        prefix
    }

    fn add(&mut self, id: &str, doc: &[u8]) {
        let mode = self.settings.mode;
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.action_prefix);
        let id_start = self.buf.len() - start;
        // Writing a str into a Vec cannot fail; the id is JSON-escaped.
        let _ = serde_json::to_writer(&mut self.buf, id);
        let id_end = self.buf.len() - start;
        self.buf.extend_from_slice(b"}}\n");
        if mode != SyncMode::Full {
            self.buf.extend_from_slice(b"{\"doc\":");
        }
        let doc_start = self.buf.len() - start;
        self.push_doc(doc);
        let doc_end = self.buf.len() - start;
        match mode {
            SyncMode::Full => {}
            SyncMode::Incremental => self.buf.extend_from_slice(b",\"doc_as_upsert\":true}"),
            SyncMode::Finite => self.buf.push(b'}'),
        }
        self.buf.push(b'\n');
        self.items.push(Item {
            lines: start..self.buf.len(),
            id: id_start..id_end,
            doc: doc_start..doc_end,
            attempts: 0,
            conflicts: 0,
        });
    }

    /// The id of `item`, unescaped, for messages.
    fn id_of(&self, item: &Item) -> String {
        let raw = &self.buf[item.lines.start + item.id.start..item.lines.start + item.id.end];
        serde_json::from_slice(raw).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
    }

    /// The document of `item`, for dead letters.
    fn doc_of(&self, item: &Item) -> String {
        String::from_utf8_lossy(&self.buf[item.lines.start + item.doc.start..item.lines.start + item.doc.end])
            .into_owned()
    }

    /// The row's JSON object, with the version field added where the mode writes it.
    fn push_doc(&mut self, doc: &[u8]) {
        match (&self.version_json, self.settings.mode.writes_version()) {
            (Some(v), true) if doc.last() == Some(&b'}') => {
                let body = &doc[..doc.len() - 1];
                self.buf.extend_from_slice(body);
                if body.len() > 1 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(v.as_bytes());
                self.buf.push(b'}');
            }
            _ => self.buf.extend_from_slice(doc),
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.settings.max_actions || self.buf.len() >= self.settings.max_bytes
    }

    /// Sends everything buffered and waits until every item is settled.
    async fn flush(&mut self) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let mut attempt = 0u32;
        while !self.items.is_empty() {
            let body = std::mem::take(&mut self.buf);
            let sent = self.send(Method::Post, "_bulk", Some(&body), "application/x-ndjson").await;
            self.buf = body;
            let answer: BulkResponse = match sent? {
                Answer::Busy(why) => {
                    attempt += 1;
                    self.wait_or_fail(attempt, &why).await?;
                    EsStats::add(&self.settings.stats.request_retries, 1);
                    continue;
                }
                Answer::Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    Error::external(
                        "Elasticsearch bulk",
                        true,
                        std::io::Error::other(format!("unreadable answer: {e}: {}", error_text(&bytes))),
                    )
                })?,
            };
            EsStats::add(&self.settings.stats.bulk_requests, 1);
            if !answer.errors && answer.items.len() == self.items.len() {
                EsStats::add(&self.settings.stats.written, self.items.len() as u64);
                self.buf.clear();
                self.items.clear();
                break;
            }
            if answer.items.len() != self.items.len() {
                return Err(Error::external(
                    "Elasticsearch bulk",
                    true,
                    std::io::Error::other(format!(
                        "the server answered {} items for {} actions",
                        answer.items.len(),
                        self.items.len()
                    )),
                ));
            }
            let mut retry: Vec<Item> = Vec::new();
            let mut first_reason = String::new();
            let mut max_attempt = 0;
            let items = std::mem::take(&mut self.items);
            for (mut item, result) in items.into_iter().zip(answer.items) {
                let Some(r) = result.into_values().next() else { continue };
                let stats = &self.settings.stats;
                match r.status {
                    200..=299 => EsStats::add(&stats.written, 1),
                    404 if self.settings.mode == SyncMode::Finite => EsStats::add(&stats.skipped_missing, 1),
                    409 if self.settings.mode == SyncMode::Full && self.settings.external_versioning => {
                        EsStats::add(&stats.skipped_stale, 1)
                    }
                    409 if self.settings.mode != SyncMode::Full && item.conflicts < self.settings.retry_on_conflict => {
                        item.conflicts += 1;
                        EsStats::add(&stats.retried, 1);
                        retry.push(item);
                    }
                    429 | 500..=599 => {
                        item.attempts += 1;
                        max_attempt = max_attempt.max(item.attempts);
                        if first_reason.is_empty() {
                            let (kind, reason) = reason_of(&r.error);
                            let id = self.id_of(&item);
                            first_reason = format!("HTTP {} {kind}: {reason} (document `{id}`)", r.status);
                        }
                        EsStats::add(&stats.retried, 1);
                        retry.push(item);
                    }
                    status => {
                        let (kind, reason) = reason_of(&r.error);
                        let id = self.id_of(&item);
                        self.dead.push(DeadLetter {
                            origin: format!("{}/{id}", self.settings.index),
                            line: None,
                            offset: None,
                            reason: format!("Elasticsearch rejected document `{id}`: HTTP {status} {kind}: {reason}"),
                            record: self.doc_of(&item),
                        });
                        EsStats::add(&stats.dead_lettered, 1);
                    }
                }
            }
            if retry.is_empty() {
                self.buf.clear();
                break;
            }
            // Rebuild the body from the items to send again.
            let mut buf = Vec::with_capacity(retry.iter().map(|i| i.lines.len()).sum());
            for item in &mut retry {
                // `id` and `doc` are relative to `lines`: only `lines` moves.
                let start = buf.len();
                buf.extend_from_slice(&self.buf[item.lines.clone()]);
                item.lines = start..buf.len();
            }
            self.buf = buf;
            self.items = retry;
            if max_attempt > 0 {
                let retries = self.settings.backoff.max_retries();
                if max_attempt > retries {
                    return Err(Error::external(
                        "Elasticsearch bulk",
                        true,
                        std::io::Error::other(format!(
                            "{} documents still rejected after {retries} retries; first: {first_reason}",
                            self.items.len()
                        )),
                    ));
                }
                tokio::time::sleep(self.settings.backoff.delay_for(max_attempt)).await;
            }
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    async fn wait_or_fail(&self, attempt: u32, why: &str) -> Result<()> {
        let retries = self.settings.backoff.max_retries();
        if attempt > retries {
            return Err(Error::external(
                "Elasticsearch",
                true,
                std::io::Error::other(format!("giving up after {retries} retries: {why}")),
            ));
        }
        tracing::warn!(attempt, retries, reason = %why, "Elasticsearch request failed; retrying after backoff");
        tokio::time::sleep(self.settings.backoff.delay_for(attempt)).await;
        Ok(())
    }

    /// Sends one request, failing over between servers while none answers.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        content_type: &'static str,
    ) -> Result<Answer> {
        let mut round = 0u32;
        let mut tried = 0usize;
        loop {
            let node = &self.nodes[self.current];
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            let sent = node.client.send(method, path, headers, None::<&()>, body, None).await;
            let outcome = match sent {
                Ok(response) => {
                    let status = response.status_code();
                    match response.bytes().await {
                        Ok(bytes) => Ok((status, bytes)),
                        Err(e) => Err(format!("reading the answer of {}: {}", node.url, redact(&e.to_string()))),
                    }
                }
                Err(e) => Err(format!("{}: {}", node.url, redact(&e.to_string()))),
            };
            match outcome {
                Ok((status, bytes)) => {
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(Error::config(
                            &self.settings.config.key,
                            format!(
                                "{} refused the credentials (HTTP {}): {}",
                                node.url,
                                status.as_u16(),
                                error_text(&bytes)
                            ),
                        ));
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        return Ok(Answer::Busy(format!(
                            "{} answered HTTP {}: {}",
                            node.url,
                            status.as_u16(),
                            error_text(&bytes)
                        )));
                    }
                    if !status.is_success() {
                        return Err(Error::external(
                            "Elasticsearch",
                            false,
                            std::io::Error::other(format!(
                                "{} {path} answered HTTP {}: {}",
                                node.url,
                                status.as_u16(),
                                error_text(&bytes)
                            )),
                        ));
                    }
                    return Ok(Answer::Ok(bytes.to_vec()));
                }
                Err(why) => {
                    tracing::warn!(server = %self.nodes[self.current].url, reason = %why, "no answer from Elasticsearch");
                    tried += 1;
                    if self.nodes.len() > 1 {
                        self.current = (self.current + 1) % self.nodes.len();
                        EsStats::add(&self.settings.stats.failovers, 1);
                    }
                    if tried.is_multiple_of(self.nodes.len()) {
                        round += 1;
                        self.wait_or_fail(round, &why).await?;
                        EsStats::add(&self.settings.stats.request_retries, 1);
                    }
                }
            }
        }
    }
}

fn error_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut cut: String = text.chars().take(500).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    redact(&cut)
}

/// Whether the server of this `GET /` answer takes typeless actions.
fn typeless(info: &serde_json::Value) -> bool {
    let number = info["version"]["number"].as_str().unwrap_or("");
    let major: u32 = number.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    match info["version"]["distribution"].as_str() {
        Some("opensearch") => true,
        _ => major >= 7,
    }
}

impl Writer {
    /// A request other than `_bulk`, resent while the cluster is busy.
    async fn request(&mut self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            match self.send(method, path, body, "application/json").await? {
                Answer::Ok(bytes) => return Ok(bytes),
                Answer::Busy(why) => {
                    attempt += 1;
                    self.wait_or_fail(attempt, &why).await?;
                    EsStats::add(&self.settings.stats.request_retries, 1);
                }
            }
        }
    }

    /// Learns the server's API: Elasticsearch 6 needs document types; Elasticsearch 7
    /// and 8 and every OpenSearch (forked from 7.10) are typeless.
    async fn probe(&mut self) -> Result<()> {
        let bytes = self.request(Method::Get, "", None).await?;
        let info: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if self.settings.doc_type.is_some() && typeless(&info) {
            let number = info["version"]["number"].as_str().unwrap_or("");
            let distribution = info["version"]["distribution"].as_str().unwrap_or("elasticsearch");
            tracing::info!(version = number, distribution, "the cluster is typeless: sink.es.type is not sent");
            self.typed = false;
            self.action_prefix = self.build_action_prefix();
        }
        Ok(())
    }

    /// Deletes the documents of versions below this run's.
    async fn cleanup(&mut self) -> Result<u64> {
        let (Some(version), column) = (self.settings.version_number(), self.settings.version_column.clone()) else {
            return Ok(0);
        };
        let index = self.settings.index.clone();
        // Make every acknowledged write searchable, so the query sees current versions.
        self.request(Method::Post, &format!("{index}/_refresh"), None).await?;
        let query = serde_json::json!({ "query": { "range": { column: { "lt": version } } } }).to_string();
        let bytes = self
            .request(
                Method::Post,
                &format!("{index}/_delete_by_query?conflicts=proceed&refresh=true"),
                Some(query.as_bytes()),
            )
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let deleted = answer["deleted"].as_u64().unwrap_or(0);
        EsStats::add(&self.settings.stats.deleted_stale, deleted);
        Ok(deleted)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        EsStats::add(&self.settings.stats.abandoned, self.items.len() as u64);
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
            w.add(ids.value(i), doc);
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
