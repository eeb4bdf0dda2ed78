//! Turns resolved parameters into a pipeline and a job configuration.
//!
//! Every check that can be made before anything runs is made here, naming the key:
//! unknown keys, missing keys, wrong types, and combinations that cannot work.
//! Planning touches nothing (a dry run plans and prints): no directory, file, topic,
//! index or table is created. Checks that need I/O (a writable directory) run when the
//! job starts, in `Pipeline::start`, and name the key in the same way.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use operators_core::builtins::{NestTransform, RateLimitTransform};
use operators_core::checkpoint::{CheckpointConfig, CheckpointingMode};
use operators_core::operator::BadRecordPolicy;
use operators_core::path::{local_dir, store_dir};
use operators_core::restart::RestartStrategy;
use operators_core::state::StateBackendKind;
use operators_core::window::WatermarkGenerator;
use operators_core::{JobConfig, Pipeline, Stream};
use operators_sinks::elasticsearch::{Backoff, BackoffKind, EsConfig, EsSink, SyncMode};
use operators_sinks::file::{FileFormat, FileSink};
use operators_sinks::jdbc::{JdbcSink, WriteMode};
use operators_sinks::kafka::{Delivery, Format, KafkaSink};
use operators_sinks::stdout::StdoutSink;
use operators_sources::cdc::mysql::{MySqlCdcSource, StartupMode};
use operators_sources::cdc::postgres::{PgStartupMode, PostgresCdcSource};
use operators_sources::file::orc::OrcFormat;
use operators_sources::file::parquet::ParquetFormat;
use operators_sources::file::text::{TextFormat, parse_charset, parse_delimiter};
use operators_sources::file::{DirectorySource, Location, WatchMode};
use operators_sources::hive::{HiveConfig, HiveSource};
use operators_sources::jdbc::{DbConfig, DbKind, JdbcSource};
use operators_sources::kafka::{KafkaConfig, KafkaSource};
use operators_sql::{SqlPlan, SqlTransformBuilder};
use thiserror::Error;

use super::params::{ParamError, Params};

/// Why a job cannot be planned.
#[derive(Debug, Error)]
pub enum PlanError {
    /// A parameter problem.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A library component refused its configuration.
    #[error("`{key}`: {message}")]
    Component {
        /// The toolkit key.
        key: String,
        /// The component's message.
        message: String,
    },
}

impl PlanError {
    /// The key the problem is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            PlanError::Param(ParamError::Unknown { key, .. })
            | PlanError::Param(ParamError::Missing { key, .. })
            | PlanError::Param(ParamError::Invalid { key, .. })
            | PlanError::Param(ParamError::Conflict { key, .. })
            | PlanError::Component { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The toolkit key for a library setting name.
fn toolkit_key(library_key: &str) -> &str {
    match library_key {
        "checkpoint.interval" => "stream.checkpoint.interval",
        "checkpoint.timeout" => "stream.checkpoint.timeout",
        "checkpoint.retained" => "stream.checkpoint.retained",
        "checkpoint.dir" => "stream.checkpoint.dir",
        "checkpoint.mode" => "stream.checkpoint.mode",
        "checkpoint.max-concurrent" => "stream.checkpoint.max.concurrent",
        "state.backend" => "stream.checkpoint.type",
        "state.local-dir" => "stream.state.dir",
        "parallelism" => "stream.parallelism",
        "sql" => "stream.sql",
        "sql.schema" => "stream.sql.schema",
        "nest.exclude" => "sink.merge.exclude.fields",
        "nest.nested-field" => "sink.merge.nested.field",
        "savepoint.dir" => "savepoint.dir",
        "savepoint.path" => "savepoint",
        "restart.exponential.initial" => "job.retry.backoffTimeMS",
        other => other,
    }
}

impl From<operators_core::Error> for PlanError {
    fn from(e: operators_core::Error) -> Self {
        match e {
            operators_core::Error::Config { key, message } => {
                PlanError::Component { key: toolkit_key(&key).to_string(), message }
            }
            other => PlanError::Component { key: "job".into(), message: other.to_string() },
        }
    }
}

impl From<operators_sources::SourceError> for PlanError {
    fn from(e: operators_sources::SourceError) -> Self {
        operators_core::Error::from(e).into()
    }
}

impl From<operators_clients::ClientError> for PlanError {
    fn from(e: operators_clients::ClientError) -> Self {
        operators_core::Error::from(e).into()
    }
}

impl From<operators_sinks::SinkError> for PlanError {
    fn from(e: operators_sinks::SinkError) -> Self {
        operators_core::Error::from(e).into()
    }
}

/// What progress a bounded job reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressUnit {
    /// Bytes of input files.
    Bytes,
    /// Rows of a database query.
    Rows,
}

/// A parameter that was given but has no effect in the planned pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The key as given.
    pub key: String,
    /// Why it has no effect here.
    pub why: String,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` has no effect: {}", self.key, self.why)
    }
}

/// What the planned pipeline is made of, for telling which parameters apply.
struct Shape<'a> {
    source: &'a str,
    sink: &'a str,
    sql: bool,
    /// The SQL groups by a window (tumble/hop).
    windowed: bool,
    merge: bool,
    checkpoints: bool,
    dedup: bool,
    dead_letters: bool,
    watch_once: bool,
    restart: &'a str,
    upsert: bool,
    /// `sink.format` is `debezium-json`.
    debezium: bool,
    rest: bool,
    savepoint: bool,
}

const FILE_SOURCES: &[&str] = &["csv", "tsv", "txt", "parquet", "orc"];
const TEXT_SOURCES: &[&str] = &["csv", "tsv", "txt"];
const KAFKA_SOURCES: &[&str] = &["kafka", "kafka_deduplication"];
/// The sources whose rows are a changelog (`changelog::KIND_COLUMN`).
const CDC_SOURCES: &[&str] = &["mysql-cdc", "postgres-cdc"];

impl Shape<'_> {
    /// `None` when `key` takes part in this pipeline, else why it does not.
    fn why_ignored(&self, key: &str) -> Option<String> {
        let source_is = |kinds: &[&str]| kinds.contains(&self.source);
        let source = |kinds: &[&str], what: &str| {
            (!source_is(kinds)).then(|| format!("{what}, and source.type is {}", self.source))
        };
        let sink =
            |kind: &str, what: &str| (self.sink != kind).then(|| format!("{what}, and sink.type is {}", self.sink));
        match key {
            "source.path" | "source.watch.type" | "source.watch.settle" | "source.concurrent.files" => {
                source(FILE_SOURCES, "it configures the file sources")
            }
            "source.watch.interval" => source(FILE_SOURCES, "it configures the file sources").or_else(|| {
                self.watch_once.then(|| "the source reads once (source.watch.type PROCESS_ONCE)".to_string())
            }),
            "source.firstLine.schema"
            | "source.line.delimiter"
            | "source.field.delimiter"
            | "source.charset"
            | "source.quote"
            | "source.field.max.bytes" => source(TEXT_SOURCES, "it configures the text sources (csv, tsv, txt)"),
            "source.batch.size" => (!source_is(FILE_SOURCES) && !source_is(KAFKA_SOURCES)).then(|| {
                format!(
                    "it sets the batch size of the file and Kafka sources (a database source batches by \
                         source.db.fetch.size), and source.type is {}",
                    self.source
                )
            }),
            "source.db.url" | "source.db.username" | "source.db.password" | "source.db.table" => {
                source(&["jdbc", "mysql-cdc", "postgres-cdc"], "it configures the database and CDC sources")
            }
            k if k.starts_with("source.db.") => source(&["jdbc"], "it configures the database source"),
            "source.cdc.server.id" | "source.cdc.startup.timestamp-millis" | "source.cdc.startup.specific-offset" => {
                source(&["mysql-cdc"], "it configures the MySQL CDC source")
            }
            "source.cdc.slot.name" | "source.cdc.publication" => {
                source(&["postgres-cdc"], "it configures the PostgreSQL CDC source")
            }
            k if k.starts_with("source.cdc.") => {
                source(&["mysql-cdc", "postgres-cdc"], "it configures the CDC sources")
            }
            k if k.starts_with("source.kafka.") || k == "group.id" || k == "auto.offset.reset" => {
                source(KAFKA_SOURCES, "it configures the Kafka source")
            }
            "stream.sql" | "stream.sql.table" => (!self.sql)
                .then(|| "SQL is off (stream.sql.enable is false; only the kafka source runs SQL always)".to_string()),
            "stream.sql.watermark" | "stream.sql.watermark.idle.timeout" | "stream.sql.late.path" => {
                if !self.sql {
                    Some("SQL is off (stream.sql.enable is false; only the kafka source runs SQL always)".to_string())
                } else {
                    (!self.windowed).then(|| {
                        "the stream.sql query groups by no window (tumble/hop), so nothing waits for watermarks"
                            .to_string()
                    })
                }
            }
            "stream.sql.schema" | "stream.sql.schema.json" => {
                (!self.sql && !source_is(TEXT_SOURCES) && !source_is(KAFKA_SOURCES)).then(|| {
                    format!(
                        "it is the SQL input schema (and the schema of text files and Kafka records); SQL is off \
                         and source.type is {}",
                        self.source
                    )
                })
            }
            "unique.data.ttl.in.minute" => (!self.dedup).then(|| "no unique.keys: nothing is deduplicated".into()),
            "sink.merge.nested.field" | "sink.merge.exclude.fields" => {
                (!self.merge).then(|| "sink.merge.enable is false".to_string())
            }
            k if k.starts_with("sink.kafka.") || k == "sink.key.columns" => {
                sink("kafka", "it configures the Kafka sink")
            }
            k if k.starts_with("sink.es.") || k == "bulk.flush.backoff.retries" => {
                sink("es", "it configures the Elasticsearch sink")
            }
            "sink.format" => (self.sink != "file" && self.sink != "kafka")
                .then(|| format!("it configures the file and Kafka sinks, and sink.type is {}", self.sink)),
            "sink.debezium.tombstones" => sink("kafka", "it configures the Kafka sink")
                .or_else(|| (!self.debezium).then(|| "sink.format is not debezium-json".to_string())),
            "sink.path" | "sink.file.roll.size.mb" | "sink.file.roll.interval.ms" => {
                sink("file", "it configures the file sink")
            }
            "sink.db.key.columns" => sink("jdbc", "it configures the database sink")
                .or_else(|| (!self.upsert).then(|| "sink.db.mode is insert; key columns are for upsert".to_string())),
            k if k.starts_with("sink.db.") => sink("jdbc", "it configures the database sink"),
            "dead.letter.path" => {
                (!self.dead_letters).then(|| "source.bad.records is fail: bad records stop the job".to_string())
            }
            k if k.starts_with("stream.checkpoint.")
                && k != "stream.checkpoint.enable"
                && k != "stream.checkpoint.type" =>
            {
                (!self.checkpoints).then(|| "stream.checkpoint.enable is false".to_string())
            }
            "job.retry.maxNumberRestartAttempts" | "job.retry.backoffTimeMS" => {
                (self.restart == "none").then(|| "job.retry.strategy is none".to_string())
            }
            "job.retry.maxBackoffTimeMS" => (self.restart != "exponential-backoff")
                .then(|| format!("it is for exponential-backoff, and job.retry.strategy is {}", self.restart)),
            "job.retry.failureRateIntervalMS" => (self.restart != "failure-rate")
                .then(|| format!("it is for failure-rate, and job.retry.strategy is {}", self.restart)),
            "allow-non-restored-state" => (!self.savepoint).then(|| "no savepoint to start from".to_string()),
            "rest.address" | "rest.token" | "rest.linger.ms" => {
                (!self.rest).then(|| "no rest.port: the REST API is off".to_string())
            }
            _ => None,
        }
    }
}

/// The parameters given that have no effect in the pipeline `params` plan.
fn ignored_parameters(params: &Params, shape: &Shape<'_>) -> Vec<Ignored> {
    params.keys().filter_map(|key| shape.why_ignored(key).map(|why| Ignored { key: key.to_string(), why })).collect()
}

/// A planned job.
pub struct Plan {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The job configuration.
    pub config: JobConfig,
    /// `Some` for jobs that finish by themselves (PROCESS_ONCE, databases).
    pub progress: Option<ProgressUnit>,
    /// The operator id of the source (for progress).
    pub source_id: &'static str,
    /// The operator id of the main sink (for the summary).
    pub sink_id: &'static str,
    /// Parameters given that have no effect in this pipeline (warned about at start).
    pub ignored: Vec<Ignored>,
    /// Parameters not given whose default (from the parameter table) this pipeline uses,
    /// with that default's value: what `--dry-run` shows next to the given ones.
    pub defaults: Vec<(String, String)>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("job", &self.config.name).finish()
    }
}

fn conflict(key: &str, why: impl Into<String>) -> PlanError {
    PlanError::Param(ParamError::Conflict { key: key.to_string(), why: why.into() })
}

fn missing(key: &str, why: &str) -> PlanError {
    PlanError::Param(ParamError::Missing { key: key.to_string(), why: why.to_string() })
}

fn list(value: &str) -> Vec<String> {
    value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// The SQL input schema: `stream.sql.schema.json` wins over `stream.sql.schema`.
fn sql_schema(params: &Params) -> Result<Option<SchemaRef>, PlanError> {
    for key in ["stream.sql.schema.json", "stream.sql.schema"] {
        if let Some(text) = params.get(key) {
            return operators_core::schema::parse_schema(text)
                .map(Some)
                .map_err(|e| PlanError::Component { key: key.into(), message: e.to_string() });
        }
    }
    Ok(None)
}

/// The watermarks a windowed `stream.sql` needs: `stream.sql.watermark` on a Timestamp
/// column of the SQL input schema.
fn sql_watermark(params: &Params, schema: &SchemaRef) -> Result<WatermarkGenerator, PlanError> {
    const KEY: &str = "stream.sql.watermark";
    let text = params.text(KEY).ok_or_else(|| {
        missing(
            KEY,
            "the stream.sql query groups by a window (tumble/hop), which fires as watermarks pass its end: give the \
             event-time column and its out-of-orderness, e.g. ts,200ms or ts - INTERVAL '5' SECOND",
        )
    })?;
    let mut generator = operators_sql::parse_watermark(&text).map_err(component(KEY))?;
    if let Some(idle) = params.millis("stream.sql.watermark.idle.timeout")? {
        generator = generator.with_idle_timeout(idle);
    }
    let column = generator.column();
    match schema.field_with_name(column).map(|f| f.data_type()) {
        Ok(DataType::Timestamp(_, _)) => Ok(generator),
        Ok(other) => Err(PlanError::Component {
            key: KEY.into(),
            message: format!(
                "column `{column}` is {} in the SQL input schema; the watermark column must be a Timestamp",
                operators_core::schema::type_name_of(other)
            ),
        }),
        Err(_) => {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(PlanError::Component {
                key: KEY.into(),
                message: format!("column `{column}` is not in the SQL input schema (columns: {})", names.join(", ")),
            })
        }
    }
}

/// The Kafka client settings under `prefix` (`source.kafka`, `sink.kafka`).
fn kafka_config(params: &Params, prefix: &str) -> Result<KafkaConfig, PlanError> {
    let brokers_key = format!("{prefix}.brokers");
    let brokers = params.required(&brokers_key, "the Kafka bootstrap servers")?;
    let mut kafka = KafkaConfig::new(prefix, &brokers).map_err(component(&brokers_key))?;
    let version_key = format!("{prefix}.version");
    if let Some(v) = params.get(&version_key) {
        kafka = kafka.with_version(v).map_err(component(&version_key))?;
    }
    for (key, value) in params.with_prefix(&format!("{prefix}.")) {
        kafka = kafka.with_property(&key, &value).map_err(component(&format!("{prefix}.{key}")))?;
    }
    Ok(kafka)
}

/// Maps a library error to the toolkit key it is about.
fn component<E: std::fmt::Display>(key: &str) -> impl Fn(E) -> PlanError + '_ {
    move |e| PlanError::Component { key: key.to_string(), message: e.to_string() }
}

fn bad_records(params: &Params) -> Result<BadRecordPolicy, PlanError> {
    Ok(match params.choice("source.bad.records")?.as_deref() {
        Some("dead-letter") => BadRecordPolicy::DeadLetter,
        _ => BadRecordPolicy::Fail,
    })
}

fn text_format(params: &Params, kind: &str) -> Result<TextFormat, PlanError> {
    let mut format = match kind {
        "csv" => TextFormat::csv(),
        "tsv" => TextFormat::tsv(),
        _ => TextFormat::txt(),
    };
    if let Some(d) = params.get("source.field.delimiter") {
        format = format.with_field_delimiter(parse_delimiter("source.field.delimiter", d)?);
    }
    if let Some(d) = params.get("source.line.delimiter") {
        format = format.with_line_delimiter(Some(parse_delimiter("source.line.delimiter", d)?));
    }
    if let Some(q) = params.get("source.quote") {
        format = format.with_quote(if q.eq_ignore_ascii_case("none") {
            None
        } else {
            Some(parse_delimiter("source.quote", q)?)
        });
    }
    if let Some(c) = params.get("source.charset") {
        format = format.with_charset(parse_charset("source.charset", c)?);
    }
    if let Some(bytes) = params.num::<usize>("source.field.max.bytes")? {
        let bytes = std::num::NonZeroUsize::new(bytes)
            .ok_or_else(|| conflict("source.field.max.bytes", "must be at least 1"))?;
        format = format.with_max_field_bytes(bytes);
    }
    // As in the toolkit, the SQL input schema is also the schema of text files: the
    // ordered JSON form or the struct form, both name the columns in order.
    if let Some(schema) = sql_schema(params)? {
        format = format.with_schema(schema);
    }
    Ok(format.with_header(params.bool("source.firstLine.schema")?).with_bad_records(bad_records(params)?))
}

fn checkpointing(params: &Params) -> Result<Option<CheckpointConfig>, PlanError> {
    if !params.bool("stream.checkpoint.enable")? {
        return Ok(None);
    }
    let mode = match params.choice("stream.checkpoint.mode")?.as_deref() {
        Some("exactly_once") => CheckpointingMode::ExactlyOnce,
        _ => CheckpointingMode::AtLeastOnce,
    };
    // A local path, a file:// URL or hdfs://; another URL is refused here, not written to
    // a relative path such as `./s3:/x`.
    let dir = store_dir("stream.checkpoint.dir", &params.text_or_default("stream.checkpoint.dir")?)?;
    let cfg = CheckpointConfig::new(dir)
        .with_mode(mode)
        // The interval's default depends on the mode (see its parameter).
        .with_interval(params.millis_or_default("stream.checkpoint.interval")?)
        .with_timeout(params.millis_or_default("stream.checkpoint.timeout")?)
        .with_min_pause(params.millis_or_default("stream.checkpoint.min.pause")?)
        .with_tolerable_failures(params.num_or_default("stream.checkpoint.tolerable.failure.num")?)
        .with_retained(params.num_or_default("stream.checkpoint.retained")?)
        .with_retain_on_cancel(params.bool("stream.checkpoint.retain.on.cancel")?);
    cfg.validate()?;
    Ok(Some(cfg))
}

fn restart(params: &Params) -> Result<RestartStrategy, PlanError> {
    let attempts: u32 = params.num_or_default("job.retry.maxNumberRestartAttempts")?;
    let delay = params.millis_or_default("job.retry.backoffTimeMS")?;
    let strategy = match params.choice("job.retry.strategy")?.as_deref() {
        Some("none") => RestartStrategy::None,
        Some("exponential-backoff") => RestartStrategy::ExponentialBackoff {
            initial: delay,
            max: params.millis_or_default("job.retry.maxBackoffTimeMS")?,
            multiplier: 2.0,
            reset_after: Duration::from_secs(3600),
            jitter: 0.1,
            max_attempts: Some(attempts),
        },
        Some("failure-rate") => {
            if attempts == 0 {
                return Err(conflict(
                    "job.retry.maxNumberRestartAttempts",
                    "failure-rate allows this many failures per job.retry.failureRateIntervalMS: at least 1 \
                     (or job.retry.strategy none)",
                ));
            }
            RestartStrategy::FailureRate {
                max_failures: attempts,
                interval: params.millis_or_default("job.retry.failureRateIntervalMS")?,
                delay,
            }
        }
        _ => RestartStrategy::fixed_delay(attempts, delay),
    };
    strategy.validate()?;
    Ok(strategy)
}

fn job_config(params: &Params) -> Result<JobConfig, PlanError> {
    let name = params.text_or_default("job.name")?;
    let parallelism: usize = params.num_or_default("stream.parallelism")?;
    // The toolkit's names (memory, fs, rocksdb…) are core's to map, once.
    let backend: StateBackendKind =
        params.choice_or_default("stream.checkpoint.type")?.parse().map_err(|e: operators_core::Error| {
            PlanError::Component { key: "stream.checkpoint.type".into(), message: e.to_string() }
        })?;
    let mut config = JobConfig::new(name)
        .with_parallelism(parallelism)
        .with_state_backend(backend.clone())
        .with_restart(restart(params)?);
    if let Some(cp) = checkpointing(params)? {
        config = config.with_checkpointing(cp);
    }
    if let Some(dir) = params.get("stream.state.dir") {
        config = config.with_local_state_dir(local_dir("stream.state.dir", dir)?);
    }
    // A budget is for the state kept on disk past it: given with memory state, it is
    // refused; with disk state, the given value or the table's default applies.
    const BUDGET: &str = "stream.state.memory.budget";
    if backend == StateBackendKind::Memory {
        if params.has(BUDGET) {
            return Err(conflict(
                BUDGET,
                "stream.checkpoint.type memory keeps all keyed state in memory; a budget needs rocksdb \
                 to keep what exceeds it on disk",
            ));
        }
    } else if let Some(bytes) = params.bytes(BUDGET)? {
        if bytes < 1 << 20 {
            return Err(conflict(BUDGET, "must be at least 1m"));
        }
        config = config.with_state_memory_budget(bytes);
    }
    if let Some(dir) = params.get("savepoint.dir") {
        config = config.with_savepoint_dir(store_dir("savepoint.dir", dir)?);
    }
    if let Some(sp) = params.get("savepoint") {
        config = config.with_restore(store_dir("savepoint", sp)?, params.bool("allow-non-restored-state")?);
    }
    // The HDFS client (hdfs-native 0.13) reads its user from HADOOP_USER_NAME and its
    // configuration from HADOOP_CONF_DIR, else HADOOP_HOME/etc/hadoop, as Hadoop's own
    // clients do; the `operator` binary sets both variables from hadoop.user.name and
    // hadoop.home.dir by starting itself again. What this process could not apply is said.
    if let Some(home) = params.text("hadoop.home.dir") {
        let applied = std::env::var("HADOOP_HOME").ok().as_deref() == Some(home.as_str());
        if !applied {
            tracing::warn!(
                key = "hadoop.home.dir",
                "not applied in this process: the HDFS client's configuration is HADOOP_CONF_DIR, else \
                 HADOOP_HOME/etc/hadoop from its environment (the operator runner applies it)"
            );
        } else if std::env::var_os("HADOOP_CONF_DIR").is_some() {
            tracing::info!(
                key = "hadoop.home.dir",
                "HADOOP_CONF_DIR names the HDFS client's configuration; {home}/etc/hadoop is not read"
            );
        } else {
            tracing::info!(key = "hadoop.home.dir", "the HDFS client's configuration is read from {home}/etc/hadoop");
        }
    }
    if let Some(user) = params.text("hadoop.user.name")
        && std::env::var("HADOOP_USER_NAME").ok().as_deref() != Some(user.as_str())
    {
        // A job server's job, or the runner embedded: the HDFS user is the process's.
        tracing::warn!(
            key = "hadoop.user.name",
            "not applied in this process: the HDFS user is HADOOP_USER_NAME from its environment, else its user \
             (the operator runner applies it; a job server runs every job as its own HDFS user)"
        );
    }
    Ok(config)
}

fn es_sink(params: &Params) -> Result<EsSink, PlanError> {
    let servers = params.required("sink.es.server", "the es sink needs host:port[,host:port...]")?;
    let mut config = EsConfig::parse("sink.es.server", &servers)?;
    match (params.get("sink.es.username"), params.get("sink.es.password"), params.get("sink.es.api.key")) {
        (Some(_), _, Some(_)) => {
            return Err(conflict("sink.es.api.key", "give either sink.es.username/password or an API key"));
        }
        (Some(user), password, None) => config = config.with_basic_auth(user, password.unwrap_or_default()),
        (None, Some(_), _) => return Err(missing("sink.es.username", "sink.es.password is set without a user")),
        (None, None, Some(key)) => config = config.with_api_key(key),
        (None, None, None) => {}
    }
    let index = params.required("sink.es.index", "the es sink writes one index")?;
    let id_column = params.required("sink.es.unique.column", "the column that holds document ids")?;
    let mode =
        SyncMode::parse("sink.es.sync.type", &params.required("sink.es.sync.type", "incremental, finite or full")?)?;
    let mut sink = EsSink::new(config, &index, &id_column, mode);
    if let Some(t) = params.text("sink.es.type") {
        sink = sink.with_doc_type(&t);
    }
    if let Some(c) = params.text("sink.es.version.column") {
        sink = sink.with_version_column(&c);
    }
    if let Some(v) = params.text("sink.es.version") {
        sink = sink.with_version(&v);
    }
    let external = params.choice("sink.es.version.type")?.is_some_and(|t| t == "external_gte");
    let retry_on_conflict: u32 = params.num_or_default("sink.es.update.retry.on.conflict")?;
    let max_actions: usize = params.num_or_default("sink.es.bulk.flush.max.actions")?;
    // The parameter's range keeps megabytes within 64 bits of bytes.
    let max_mb: u64 = params.num_or_default("sink.es.bulk.flush.max.size.mb")?;
    let max_bytes = usize::try_from(max_mb << 20)
        .map_err(|_| conflict("sink.es.bulk.flush.max.size.mb", format!("{max_mb} MB do not fit in memory")))?;
    let interval = params.millis_or_default("sink.es.bulk.flush.interval.ms")?;
    let kind = match params.choice("sink.es.bulk.flush.backoff.type")?.as_deref() {
        Some("exponential") => BackoffKind::Exponential,
        _ => BackoffKind::Constant,
    };
    let retries = params.num_or_default("bulk.flush.backoff.retries")?;
    let backoff = Backoff {
        enabled: params.bool("sink.es.bulk.flush.backoff.enable")?,
        kind,
        delay: params.millis_or_default("sink.es.bulk.flush.backoff.delay")?,
        retries,
    };
    let sink = sink
        .with_external_versioning(external)
        .with_cleanup(params.bool("sink.es.cleanup")?)
        .with_retry_on_conflict(retry_on_conflict)
        .with_bulk(max_actions, max_bytes, interval)
        .with_backoff(backoff);
    sink.validate()?;
    Ok(sink)
}

fn not_yet(key: &str, what: &str) -> PlanError {
    conflict(key, format!("{what} is not available in this build yet"))
}

/// What a source's builder gets besides the parameters.
struct SourceCtx<'a> {
    pipeline: &'a Pipeline,
    /// The `source.type` asked for.
    kind: &'a str,
    watch: WatchMode,
    settle: Duration,
    batch: usize,
    policy: BadRecordPolicy,
}

/// Builds a source into the pipeline: the stream of its rows and, for a source that
/// finishes by itself, the unit of its progress.
type SourceBuilder = fn(&Params, &SourceCtx<'_>) -> Result<(Stream, Option<ProgressUnit>), PlanError>;

/// The sources by `source.type`: adding a source is an entry here and its builder (and
/// its name in the parameter table's `source.type`).
const SOURCES: &[(&[&str], SourceBuilder)] = &[
    (FILE_SOURCES, file_source),
    (&["jdbc"], jdbc_source),
    (KAFKA_SOURCES, kafka_source),
    (&["mysql-cdc"], mysql_cdc_source),
    (&["postgres-cdc"], postgres_cdc_source),
];

fn file_source(params: &Params, ctx: &SourceCtx<'_>) -> Result<(Stream, Option<ProgressUnit>), PlanError> {
    let (pipeline, source_type, watch, settle, batch) = (ctx.pipeline, ctx.kind, ctx.watch, ctx.settle, ctx.batch);
    let path = params.required("source.path", "file sources read one directory")?;
    let location = Location::parse("source.path", &path)?;
    // Files at once: deduplication keeps "the first row of each key" in file name
    // order, so it reads one at a time unless told otherwise (the parameter's
    // default says so); else the source decides.
    let concurrent = params.num::<usize>("source.concurrent.files")?;
    let files = |s: DirectorySource| match concurrent {
        Some(n) => s.with_concurrent_files(n),
        None => s,
    };
    let stream = match source_type {
        "parquet" => pipeline.source(
            "source",
            files(
                DirectorySource::new(location, ParquetFormat::new().with_batch_size(batch)?)
                    .with_watch(watch)
                    .with_settle(settle),
            ),
        ),
        "orc" => pipeline.source(
            "source",
            files(
                DirectorySource::new(location, OrcFormat::new().with_batch_size(batch)?)
                    .with_watch(watch)
                    .with_settle(settle),
            ),
        ),
        kind => pipeline.source(
            "source",
            files(
                DirectorySource::new(location, text_format(params, kind)?.with_batch_size(batch)?)
                    .with_watch(watch)
                    .with_settle(settle),
            ),
        ),
    };
    Ok((stream, (watch == WatchMode::ProcessOnce).then_some(ProgressUnit::Bytes)))
}

fn jdbc_source(params: &Params, ctx: &SourceCtx<'_>) -> Result<(Stream, Option<ProgressUnit>), PlanError> {
    let pipeline = ctx.pipeline;
    let db_type = params.choice("source.db.type")?;
    let url = params.required("source.db.url", "the database source needs a URL")?;
    if params.has("source.db.driverClassName") {
        tracing::warn!("source.db.driverClassName is accepted for compatibility and ignored: drivers are built in");
    }
    let hive_url = super::params::is_hive_url(&url);
    if db_type.as_deref() == Some("hive") || hive_url {
        if !hive_url {
            return Err(conflict("source.db.type", "hive reads a jdbc:hive2://host:port/database URL"));
        }
        if let Some(t) = db_type.as_deref().filter(|t| *t != "hive") {
            return Err(conflict("source.db.type", format!("`{t}` does not match the URL's database (Hive)")));
        }
        if params.has("source.db.key.column") {
            return Err(conflict(
                "source.db.key.column",
                "the Hive source reads the statement once and resumes by row count; it has no key order",
            ));
        }
        return hive_source(params, ctx, &url);
    }
    let db =
        DbConfig::parse("source.db.url", &url, params.get("source.db.username"), params.get("source.db.password"))?;
    if let Some(t) = db_type {
        let expected = match db.kind() {
            DbKind::Postgres => &["postgresql"][..],
            DbKind::MySql => &["mysql", "mariadb"][..],
            DbKind::Sqlite => &["sqlite"][..],
        };
        if !expected.contains(&t.as_str()) {
            return Err(conflict(
                "source.db.type",
                format!("`{t}` does not match the URL's database ({:?})", db.kind()),
            ));
        }
    }
    let mut source = JdbcSource::new(db).with_fetch_size(params.num_or_default("source.db.fetch.size")?)?;
    match (params.get("source.db.table"), params.get("source.db.sql")) {
        (_, Some(sql)) => source = source.with_sql(unquote(sql)),
        (Some(table), None) => source = source.with_table(table),
        (None, None) => {
            return Err(missing("source.db.table", "the database source reads a table or source.db.sql"));
        }
    }
    if let Some(key) = params.get("source.db.key.column") {
        source = source.with_key_column(key);
    }
    Ok((pipeline.source("source", source).parallelism(1), Some(ProgressUnit::Rows)))
}

/// `source.db.sql` without the one pair of single quotes around it that the toolkit's
/// README puts there (`--source.db.sql 'select …'`); quotes inside the statement stay.
fn unquote(sql: &str) -> &str {
    let t = sql.trim();
    t.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).unwrap_or(t)
}

/// `source.db.type hive`: the toolkit's "Hive -> Kafka" source.
fn hive_source(params: &Params, ctx: &SourceCtx<'_>, url: &str) -> Result<(Stream, Option<ProgressUnit>), PlanError> {
    let config =
        HiveConfig::parse("source.db.url", url, params.get("source.db.username"), params.get("source.db.password"))?;
    let mut source = HiveSource::new(config).with_fetch_size(params.num_or_default("source.db.fetch.size")?)?;
    match (params.get("source.db.table"), params.get("source.db.sql")) {
        // The toolkit's README quotes the statement: `--source.db.sql 'select …'`.
        (_, Some(sql)) => source = source.with_sql(unquote(sql)),
        (Some(table), None) => source = source.with_table(table),
        (None, None) => {
            return Err(missing("source.db.table", "the Hive source reads a table or source.db.sql"));
        }
    }
    Ok((ctx.pipeline.source("source", source).parallelism(1), Some(ProgressUnit::Rows)))
}

fn mysql_cdc_source(params: &Params, ctx: &SourceCtx<'_>) -> Result<(Stream, Option<ProgressUnit>), PlanError> {
    let url = params.required("source.db.url", "the CDC source needs the server's URL")?;
    let db =
        DbConfig::parse("source.db.url", &url, params.get("source.db.username"), params.get("source.db.password"))?;
    let table = params.required("source.db.table", "the CDC source follows one table")?;
    // The parameter's range keeps it within i64.
    let timestamp = params.num::<i64>("source.cdc.startup.timestamp-millis")?;
    let mode = StartupMode::parse(
        &params.text_or_default("source.cdc.startup.mode")?,
        timestamp,
        params.get("source.cdc.startup.specific-offset"),
    )?;
    let mut source = MySqlCdcSource::new(db, &table)?
        .with_startup(mode)
        .with_chunk_size(params.num_or_default("source.cdc.snapshot.chunk.size")?)?;
    if let Some(id) = params.num::<u32>("source.cdc.server.id")? {
        source = source.with_server_id(id)?;
    }
    // One reader: the log is one sequence.
    Ok((ctx.pipeline.source("source", source).parallelism(1), None))
}

fn postgres_cdc_source(params: &Params, ctx: &SourceCtx<'_>) -> Result<(Stream, Option<ProgressUnit>), PlanError> {
    let url = params.required("source.db.url", "the CDC source needs the server's URL")?;
    let db =
        DbConfig::parse("source.db.url", &url, params.get("source.db.username"), params.get("source.db.password"))?;
    let table = params.required("source.db.table", "the CDC source follows one table")?;
    let mode = PgStartupMode::parse(&params.text_or_default("source.cdc.startup.mode")?)?;
    let mut source = PostgresCdcSource::new(db, &table)?
        .with_startup(mode)
        .with_chunk_size(params.num_or_default("source.cdc.snapshot.chunk.size")?)?;
    if let Some(slot) = params.get("source.cdc.slot.name") {
        source = source.with_slot(slot);
    }
    if let Some(publication) = params.get("source.cdc.publication") {
        source = source.with_publication(publication);
    }
    Ok((ctx.pipeline.source("source", source).parallelism(1), None))
}

fn kafka_source(params: &Params, ctx: &SourceCtx<'_>) -> Result<(Stream, Option<ProgressUnit>), PlanError> {
    let (pipeline, policy, batch) = (ctx.pipeline, ctx.policy, ctx.batch);
    let schema = sql_schema(params)?
        .ok_or_else(|| missing("stream.sql.schema", "the Kafka source decodes JSON records by this schema"))?;
    let topics = list(&params.required("source.kafka.topic", "the Kafka source reads these topics")?);
    let mut kafka = kafka_config(params, "source.kafka")?;
    if let Some(group) = params.get("group.id") {
        kafka = kafka.with_property("group.id", group).map_err(component("group.id"))?;
    }
    if let Some(reset) = params.text("auto.offset.reset") {
        kafka = kafka.with_property("auto.offset.reset", &reset).map_err(component("auto.offset.reset"))?;
    }
    let source = KafkaSource::new(kafka, topics, schema).with_bad_records(policy).with_batch_size(batch)?;
    source.validate().map_err(component("source.kafka.topic"))?;
    Ok((pipeline.source("source", source), None))
}

/// What a sink's builder gets besides the parameters and the stream it writes.
struct SinkCtx<'a> {
    config: &'a JobConfig,
    parallelism: usize,
    /// The rows' schema, where SQL produced them.
    known_schema: Option<&'a SchemaRef>,
}

/// Builds a sink on the stream; returns the stream of its dead letters, if it has any.
type SinkBuilder = fn(&Params, Stream, &SinkCtx<'_>) -> Result<Option<Stream>, PlanError>;

/// The sinks by `sink.type`: adding a sink is an entry here and its builder (and its name
/// in the parameter table's `sink.type`).
const SINKS: &[(&str, SinkBuilder)] =
    &[("file", file_sink), ("stdout", stdout_sink), ("jdbc", jdbc_sink), ("kafka", kafka_sink), ("es", es_sink_stage)];

fn file_sink(params: &Params, stream: Stream, ctx: &SinkCtx<'_>) -> Result<Option<Stream>, PlanError> {
    let sink_parallelism = ctx.parallelism;
    let path = params.required("sink.path", "the file sink writes into one directory")?;
    let format = match params.text_or_default("sink.format")?.as_str() {
        "debezium-json" => return Err(conflict("sink.format", "debezium-json is a Kafka sink format")),
        other => FileFormat::parse("sink.format", other)?,
    };
    // The parameter's range keeps megabytes within 64 bits of bytes.
    let roll_mb: u64 = params.num_or_default("sink.file.roll.size.mb")?;
    let sink = FileSink::new(store_dir("sink.path", &path)?, format)
        .with_roll_size(roll_mb << 20)
        .with_roll_interval(params.millis("sink.file.roll.interval.ms")?);
    sink.validate()?;
    stream.sink("sink", sink).parallelism(sink_parallelism);
    Ok(None)
}

fn stdout_sink(_: &Params, stream: Stream, ctx: &SinkCtx<'_>) -> Result<Option<Stream>, PlanError> {
    stream.sink("sink", StdoutSink).parallelism(ctx.parallelism);
    Ok(None)
}

fn jdbc_sink(params: &Params, stream: Stream, ctx: &SinkCtx<'_>) -> Result<Option<Stream>, PlanError> {
    let (config, sink_parallelism) = (ctx.config, ctx.parallelism);
    let url = params.required("sink.db.url", "the database sink needs a URL")?;
    let db = DbConfig::parse("sink.db.url", &url, params.get("sink.db.username"), params.get("sink.db.password"))?;
    let table = params.required("sink.db.table", "the database sink writes one table")?;
    let mode = match params.choice("sink.db.mode")?.as_deref() {
        Some("upsert") => match params.get("sink.db.key.columns") {
            Some(keys) => WriteMode::Upsert { keys: list(keys) },
            // A CDC source names the table's primary key in the stream, unless SQL or the
            // merge rebuilt the rows (and their schema) on the way.
            None if CDC_SOURCES.contains(&params.choice("source.type")?.unwrap_or_default().as_str())
                && ctx.known_schema.is_none()
                && !params.bool("sink.merge.enable")? =>
            {
                WriteMode::SourceKey
            }
            None => {
                return Err(missing(
                    "sink.db.key.columns",
                    "upsert needs the key columns (a CDC source names its primary key itself, unless stream.sql \
                     or sink.merge rebuilds its rows)",
                ));
            }
        },
        _ => WriteMode::Insert,
    };
    let exactly_once = config.checkpointing.as_ref().is_some_and(|c| c.mode == CheckpointingMode::ExactlyOnce);
    let sink = JdbcSink::new(db, table)
        .with_mode(mode)
        .with_batch_size(params.num_or_default("sink.db.batch.size")?)
        .exactly_once(exactly_once);
    sink.validate()?;
    stream.sink("sink", sink).parallelism(sink_parallelism);
    Ok(None)
}

fn kafka_sink(params: &Params, stream: Stream, ctx: &SinkCtx<'_>) -> Result<Option<Stream>, PlanError> {
    let (config, sink_parallelism) = (ctx.config, ctx.parallelism);
    let topic = params.required("sink.kafka.topic", "the Kafka sink writes one topic")?;
    let kafka = kafka_config(params, "sink.kafka")?;
    let exactly_once = config.checkpointing.as_ref().is_some_and(|c| c.mode == CheckpointingMode::ExactlyOnce);
    let mut sink = KafkaSink::new(kafka, &topic)
        .map_err(component("sink.kafka.topic"))?
        .with_delivery(if exactly_once { Delivery::ExactlyOnce } else { Delivery::AtLeastOnce });
    if let Some(keys) = params.get("sink.key.columns") {
        let keys = list(keys);
        if keys.is_empty() {
            return Err(conflict("sink.key.columns", "names no column"));
        }
        sink = sink.with_key_columns(keys);
    }
    sink = sink.with_format(match params.choice_or_default("sink.format")?.as_str() {
        "json" => Format::Json,
        "debezium-json" => {
            // Debezium events are a changelog's: refused at plan time for a source that
            // writes plain rows, not at the job's first batch.
            let source = params.choice("source.type")?.unwrap_or_default();
            if !CDC_SOURCES.contains(&source.as_str()) {
                return Err(conflict(
                    "sink.format",
                    format!(
                        "debezium-json writes the changes of a CDC source (source.type {}), and source.type is {source}",
                        CDC_SOURCES.join(" or ")
                    ),
                ));
            }
            Format::DebeziumJson { tombstones: params.bool("sink.debezium.tombstones")? }
        }
        other => {
            return Err(conflict("sink.format", format!("the Kafka sink writes json or debezium-json, not {other}")));
        }
    });
    stream.sink("sink", sink).parallelism(sink_parallelism);
    Ok(None)
}

fn es_sink_stage(params: &Params, stream: Stream, ctx: &SinkCtx<'_>) -> Result<Option<Stream>, PlanError> {
    let (known_schema, sink_parallelism) = (ctx.known_schema, ctx.parallelism);
    let sink = es_sink(params)?;
    // The rows' schema is known here when SQL produces them; otherwise the sink
    // checks the first batch and stops the job before writing anything.
    if let Some(schema) = &known_schema {
        sink.check_schema(schema)?;
    }
    let sink_stream = stream.sink("sink", sink).parallelism(sink_parallelism);
    Ok(Some(sink_stream.dead_letters()))
}

/// Plans the job the parameters describe.
pub fn plan(params: &Params) -> Result<Plan, PlanError> {
    // Before any directory setting is resolved: `hdfs://` is one of the stores they name.
    crate::register_file_systems()?;
    params.validate()?;
    let source_type = params
        .choice("source.type")?
        .ok_or_else(|| missing("source.type", &format!("choose one of {}", super::params::SOURCE_TYPES.join(", "))))?;
    let sink_type = params.choice_or_default("sink.type")?;
    let is_file = FILE_SOURCES.contains(&source_type.as_str());
    let watch = if is_file {
        WatchMode::parse(
            &params.text_or_default("source.watch.type")?,
            params.num_or_default("source.watch.interval")?,
        )?
    } else {
        WatchMode::ProcessOnce
    };

    // Combinations that cannot work, before anything is built.
    if sink_type == "es" {
        if !params.has("sink.es.unique.column") {
            return Err(missing("sink.es.unique.column", "the es sink needs the column that holds document ids"));
        }
        if is_file && watch != WatchMode::ProcessOnce {
            return Err(conflict(
                "source.watch.type",
                "the es sink needs PROCESS_ONCE: a job watching continuously never finishes, so its full sync never completes",
            ));
        }
    }
    if source_type == "kafka_deduplication" && !params.has("unique.keys") {
        return Err(missing("unique.keys", "kafka_deduplication needs the key columns to deduplicate on"));
    }
    let policy = bad_records(params)?;
    if policy == BadRecordPolicy::DeadLetter && !params.has("dead.letter.path") {
        return Err(missing(
            "dead.letter.path",
            "source.bad.records=dead-letter needs a directory for the dead letters",
        ));
    }

    // Two values that cannot both hold are refused, naming both.
    if !params.bool("stream.checkpoint.enable")?
        && params.choice("stream.checkpoint.mode")?.as_deref() == Some("exactly_once")
    {
        return Err(conflict(
            "stream.checkpoint.mode",
            "EXACTLY_ONCE needs checkpoints, and stream.checkpoint.enable is false",
        ));
    }
    let config = job_config(params)?;
    let sink_parallelism: usize = params.num_or_default("stream.sink.parallelism")?;

    let pipeline = Pipeline::new();
    let settle = params.millis_or_default("source.watch.settle")?;
    let batch: usize = params.num_or_default("source.batch.size")?;
    let ctx = SourceCtx { pipeline: &pipeline, kind: &source_type, watch, settle, batch, policy };
    let Some(build_source) = SOURCES.iter().find(|(kinds, _)| kinds.contains(&source_type.as_str())).map(|(_, b)| b)
    else {
        return Err(not_yet("source.type", &format!("the {source_type} source")));
    };
    let (source, progress) = build_source(params, &ctx)?;
    let mut dead_letters = vec![source.dead_letters()];
    let mut stream = source;
    if let Some(rate) = params.int("stream.rate.limit")? {
        stream = stream.transform("rate-limit", RateLimitTransform::new(rate)?);
    }
    // Deduplication applies to any source: over a bounded input "the first row of each
    // key within the TTL" is the same rule as over a stream. kafka_deduplication is the
    // toolkit's name for Kafka with it.
    if params.has("unique.keys") {
        let keys = list(&params.required("unique.keys", "the key columns to deduplicate on")?);
        if keys.is_empty() {
            return Err(conflict("unique.keys", "names no column"));
        }
        // The parameter's range keeps minutes within 64 bits of seconds.
        let minutes: u64 = params.num_or_default("unique.data.ttl.in.minute")?;
        let ttl = Duration::from_secs(minutes * 60);
        stream = stream.dedup("dedup", keys, ttl);
    }
    let sql_on = params.bool("stream.sql.enable")? || source_type == "kafka";
    let mut known_schema = None;
    let mut windowed = false;
    if sql_on {
        let schema = sql_schema(params)?.ok_or_else(|| {
            missing("stream.sql.schema", "the SQL needs the input schema (or stream.sql.schema.json)")
        })?;
        let sql = SqlTransformBuilder::new(params.text_or_default("stream.sql")?)
            .with_table(params.text_or_default("stream.sql.table")?)
            .with_schema(Arc::clone(&schema))
            .with_bad_records(policy)
            .build_plan()
            .map_err(|e| {
                let key = match e {
                    operators_sql::SqlError::Schema(_) | operators_sql::SqlError::Input(_) => "stream.sql.schema",
                    _ => "stream.sql",
                };
                PlanError::Component { key: key.into(), message: e.to_string() }
            })?;
        let sql = match sql {
            SqlPlan::Windowed(w) => {
                windowed = true;
                SqlPlan::from(
                    w.with_watermark(sql_watermark(params, &schema)?).map_err(component("stream.sql.watermark"))?,
                )
            }
            stateless => stateless,
        };
        known_schema = Some(sql.output_schema());
        let out = sql.apply(stream, "sql");
        stream = out.rows;
        dead_letters.extend(out.dead_letters);
        if let (Some(late), Some(path)) = (out.late_records, params.text("stream.sql.late.path")) {
            // Rows past their window's lateness, as the window's input saw them.
            let sink = FileSink::new(store_dir("stream.sql.late.path", &path)?, FileFormat::JsonLines)
                .with_prefix("late")
                .with_param("stream.sql.late.path");
            sink.validate()?;
            late.sink("late-records", sink);
        }
    }
    if params.bool("sink.merge.enable")? {
        let nest = NestTransform::new()
            .with_nested_field(params.text_or_default("sink.merge.nested.field")?)
            .with_exclude(list(&params.text_or_default("sink.merge.exclude.fields")?));
        nest.validate()?;
        stream = stream.transform("merge", nest);
        known_schema = None;
    }
    let Some(build_sink) = SINKS.iter().find(|(kind, _)| *kind == sink_type).map(|(_, b)| b) else {
        return Err(not_yet("sink.type", &format!("the {sink_type} sink")));
    };
    let ctx = SinkCtx { config: &config, parallelism: sink_parallelism, known_schema: known_schema.as_ref() };
    dead_letters.extend(build_sink(params, stream, &ctx)?);
    if policy == BadRecordPolicy::DeadLetter {
        let path = params.required("dead.letter.path", "dead letters need a directory")?;
        let sink = FileSink::new(store_dir("dead.letter.path", &path)?, FileFormat::JsonLines)
            .with_prefix("dead-letters")
            .with_param("dead.letter.path");
        sink.validate()?;
        let mut streams = dead_letters.into_iter();
        if let Some(first) = streams.next() {
            first.union(streams).sink("dead-letters", sink);
        }
    }
    // Check the settings and the graph now, so that a bad combination is reported before
    // the job starts (and by a dry run). Neither check does I/O.
    config.validate()?;
    pipeline.build(&config)?;
    let restart = params.choice_or_default("job.retry.strategy")?;
    let shape = Shape {
        source: &source_type,
        sink: &sink_type,
        sql: sql_on,
        windowed,
        merge: params.bool("sink.merge.enable")?,
        checkpoints: config.checkpointing.is_some(),
        dedup: params.has("unique.keys"),
        dead_letters: policy == BadRecordPolicy::DeadLetter,
        watch_once: watch == WatchMode::ProcessOnce,
        restart: &restart,
        upsert: params.choice("sink.db.mode")?.as_deref() == Some("upsert"),
        debezium: params.choice("sink.format")?.as_deref() == Some("debezium-json"),
        rest: params.has("rest.port"),
        savepoint: params.has("savepoint"),
    };
    let mut ignored = ignored_parameters(params, &shape);
    if source_type == "kafka" && params.has("stream.sql.enable") && !params.bool("stream.sql.enable")? {
        ignored.push(Ignored {
            key: "stream.sql.enable".into(),
            why: "the kafka source always runs stream.sql (default `select * from t1`)".into(),
        });
    }
    let defaults = params
        .defaults()
        .into_iter()
        .filter(|(key, _)| shape.why_ignored(key).is_none())
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    Ok(Plan { pipeline, config, progress, source_id: "source", sink_id: "sink", ignored, defaults })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::params::{Origin, SINK_TYPES, SOURCE_TYPES};

    #[test]
    fn the_readme_quotes_around_a_statement_go_and_quotes_inside_it_stay() {
        assert_eq!(unquote("'select * from lyh limit 3'"), "select * from lyh limit 3");
        assert_eq!(unquote("select * from t where name = 'a'"), "select * from t where name = 'a'");
        assert_eq!(unquote(" 'select * from t where name = 'a'' "), "select * from t where name = 'a'");
    }

    /// A CDC source's changes reach the database sink keyed by the primary key the source
    /// names, unless a step that rebuilds the rows drops it: then the job is refused when
    /// planned, naming the key setting, not at its first batch.
    #[test]
    fn cdc_upserts_take_the_source_key_unless_the_rows_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = dir.path().to_str().unwrap();
        let job = |extra: &[(&str, &str)]| {
            let mut p = Params::default();
            for (k, v) in [
                ("source.type", "mysql-cdc"),
                ("source.db.url", "mysql://127.0.0.1/db"),
                ("source.db.table", "t"),
                ("sink.type", "jdbc"),
                ("sink.db.url", "postgres://127.0.0.1/db"),
                ("sink.db.table", "t"),
                ("stream.checkpoint.dir", checkpoints),
            ]
            .iter()
            .chain(extra)
            {
                p.set(k, v, Origin::CommandLine);
            }
            plan(&p)
        };
        assert!(job(&[]).is_ok());
        assert!(job(&[("sink.db.key.columns", "id")]).is_ok());
        let Err(err) = job(&[("sink.merge.enable", "true")]) else { panic!("planned without a key") };
        assert!(err.to_string().contains("sink.db.key.columns"), "{err}");
        assert!(job(&[("sink.merge.enable", "true"), ("sink.db.key.columns", "id")]).is_ok());
    }

    #[test]
    fn hive_fetches_ten_thousand_rows_by_default_and_other_databases_fifty() {
        let fetch = |url: &str, kind: Option<&str>| {
            let mut p = Params::default();
            p.set("source.db.url", url, Origin::CommandLine);
            if let Some(k) = kind {
                p.set("source.db.type", k, Origin::CommandLine);
            }
            p.num_or_default::<usize>("source.db.fetch.size").unwrap()
        };
        assert_eq!(fetch("jdbc:hive2://h:10000/db", None), 10_000);
        assert_eq!(fetch("jdbc:hive2://h:10000/db", Some("hive")), 10_000);
        assert_eq!(fetch("postgres://h/db", None), 50);
        assert_eq!(fetch("jdbc:mysql://h/db", Some("mysql")), 50);
    }

    /// Every default is the table's: help shows it, the dry run lists it, and giving it
    /// explicitly plans the same job. Jobs of every source and sink type, restart
    /// strategy and option together use every parameter that has a default.
    #[test]
    fn help_dry_run_and_plan_agree_on_every_default() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).unwrap();
        let (out, checkpoints) = (dir.path().join("out"), dir.path().join("cp"));
        let (input, out, checkpoints) = (input.to_str().unwrap(), out.to_str().unwrap(), checkpoints.to_str().unwrap());
        // Each default is left out by at least one job (sink.type and the checkpoint
        // directory by the Kafka job).
        let common = [("stream.sql.schema", "struct<_col0:String>")];
        let jobs: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("source.type", "csv"),
                ("source.path", input),
                ("sink.type", "file"),
                ("sink.path", out),
                ("unique.keys", "_col0"),
                ("stream.sql.enable", "true"),
                ("sink.merge.enable", "true"),
                ("rest.port", "0"),
                ("savepoint", checkpoints),
                ("stream.checkpoint.dir", checkpoints),
            ],
            vec![
                ("source.type", "kafka"),
                ("source.kafka.brokers", "127.0.0.1:9092"),
                ("source.kafka.topic", "in"),
                ("sink.kafka.brokers", "127.0.0.1:9092"),
                ("sink.kafka.topic", "out"),
                ("job.retry.strategy", "exponential-backoff"),
            ],
            vec![
                ("source.type", "jdbc"),
                ("source.db.url", "postgres://127.0.0.1/db"),
                ("source.db.table", "t"),
                ("sink.type", "jdbc"),
                ("sink.db.url", "postgres://127.0.0.1/db"),
                ("sink.db.table", "t"),
                ("job.retry.strategy", "failure-rate"),
                ("stream.checkpoint.dir", checkpoints),
            ],
            vec![
                ("source.type", "mysql-cdc"),
                ("source.db.url", "mysql://127.0.0.1/db"),
                ("source.db.table", "t"),
                ("sink.type", "jdbc"),
                ("sink.db.url", "postgres://127.0.0.1/db"),
                ("sink.db.table", "t"),
                ("sink.db.key.columns", "id"),
                ("stream.checkpoint.dir", checkpoints),
            ],
            vec![
                ("source.type", "postgres-cdc"),
                ("source.db.url", "postgres://127.0.0.1/db"),
                ("source.db.table", "t"),
                ("sink.kafka.brokers", "127.0.0.1:9092"),
                ("sink.kafka.topic", "out"),
                ("sink.format", "debezium-json"),
                ("stream.checkpoint.dir", checkpoints),
            ],
            vec![
                ("source.type", "parquet"),
                ("source.path", input),
                ("source.watch.type", "PROCESS_ONCE"),
                ("sink.type", "es"),
                ("sink.es.server", "127.0.0.1:9200"),
                ("sink.es.index", "i"),
                ("sink.es.unique.column", "_col0"),
                ("sink.es.sync.type", "full"),
                ("stream.checkpoint.dir", checkpoints),
            ],
        ];
        let params = |job: &[(&str, &str)], extra: &[(&str, &str)]| {
            let mut p = Params::default();
            for (k, v) in common.iter().chain(job).chain(extra) {
                p.set(k, v, Origin::CommandLine);
            }
            p
        };
        let fingerprint = |plan: &Plan| {
            let graph = plan.pipeline.build(&plan.config).unwrap().describe();
            format!("{:?}\n{graph}", plan.config)
        };
        let help = crate::runner::params::help();
        let mut seen = std::collections::BTreeSet::new();
        for job in &jobs {
            let given = params(job, &[]);
            let planned = plan(&given).unwrap();
            let shown = crate::runner::dry_run(&planned, &given);
            for (key, value) in &planned.defaults {
                let described = crate::runner::params::spec(key).unwrap().default.describe().unwrap();
                assert!(help.contains(&format!("{key} [{described}]")), "help of {key}");
                assert!(shown.contains(&format!("  {key} = {value}    (default)")), "dry run of {key}: {shown}");
                let explicit = plan(&params(job, &[(key, value)])).unwrap();
                assert_eq!(fingerprint(&explicit), fingerprint(&planned), "{key} = {value}");
                assert!(!explicit.defaults.iter().any(|(k, _)| k == key), "{key}");
                seen.insert(key.clone());
            }
        }
        let with_default: Vec<&str> = crate::runner::params::PARAMS
            .iter()
            .filter(|s| {
                matches!(
                    s.default,
                    crate::runner::params::ParamDefault::Value(_)
                        | crate::runner::params::ParamDefault::Computed { .. }
                )
            })
            .map(|s| s.key)
            .collect();
        let missed: Vec<&&str> = with_default.iter().filter(|k| !seen.contains(**k)).collect();
        assert!(missed.is_empty(), "defaults no job used: {missed:?}");
    }

    /// The parameter table's `source.type` and `sink.type` name exactly the registered
    /// builders: a connector added to one and not the other is caught here.
    #[test]
    fn every_source_and_sink_type_has_one_builder() {
        for kind in SOURCE_TYPES {
            let builders = SOURCES.iter().filter(|(kinds, _)| kinds.contains(kind)).count();
            assert_eq!(builders, 1, "source.type {kind}");
        }
        let registered: Vec<&str> = SOURCES.iter().flat_map(|(kinds, _)| kinds.iter().copied()).collect();
        assert_eq!(registered.len(), SOURCE_TYPES.len(), "{registered:?}");
        let mut sinks: Vec<&str> = SINKS.iter().map(|(kind, _)| *kind).collect();
        sinks.sort_unstable();
        let mut table = SINK_TYPES.to_vec();
        table.sort_unstable();
        assert_eq!(sinks, table);
    }
}
