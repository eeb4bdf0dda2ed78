//! The toolkit's parameters: names, defaults, types, and where a value came from.
//!
//! Values are resolved with the toolkit's precedence: environment > command line >
//! properties file (`--config FILE`, or `application.properties` in the working
//! directory) > default. On the command line a key is `--key value` or `--key=value`.
//! In the environment a key is either its exact name (`env 'source.type=csv'`) or
//! `OPERATOR_` followed by the key in upper case with dots as underscores
//! (`OPERATOR_SOURCE_TYPE=csv`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use operators_core::secret::{MASK, redact_url};
use thiserror::Error;

/// What kind of value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// `true` or `false` (case-insensitive).
    Bool,
    /// A whole number in `min..=max`; a value outside is refused, never clamped.
    Int {
        /// The smallest value taken.
        min: u64,
        /// The largest value taken.
        max: u64,
    },
    /// A size in bytes: a whole number with an optional unit (`k`, `m`, `g`, `t`, binary:
    /// `128m` is 128 MiB).
    Bytes,
    /// One of the listed values (case-insensitive).
    Enum(&'static [&'static str]),
}

/// Any non-negative whole number (a duration in ms, a count that may be 0).
const INT: Kind = Kind::Int { min: 0, max: u64::MAX };
/// At least 1: sizes of batches and pools, parallelism.
const COUNT: Kind = Kind::Int { min: 1, max: u64::MAX };
/// A count kept as 32 bits by the library (retries, tolerated failures).
const U32: Kind = Kind::Int { min: 0, max: u32::MAX as u64 };
/// Megabytes, as bytes in 64 bits.
const MEGABYTES: Kind = Kind::Int { min: 1, max: u64::MAX >> 20 };

/// A parameter's default, stated once: help, `--dry-run` and planning all read it here.
#[derive(Debug, Clone, Copy)]
pub enum ParamDefault {
    /// Optional, with no default.
    None,
    /// This value, in the parameter's own syntax.
    Value(&'static str),
    /// Computed from other parameters (`value`); `describe` says how, for `--help`.
    Computed {
        /// The rule, as `--help` shows it.
        describe: &'static str,
        /// The value for the given parameters; `None` leaves it to the connector.
        value: fn(&Params) -> Option<String>,
    },
    /// The connector's own default, which its documentation states; `--help` shows this
    /// description of it.
    Connector(&'static str),
}

impl ParamDefault {
    /// How `--help` shows it.
    pub fn describe(&self) -> Option<&'static str> {
        match self {
            ParamDefault::None => None,
            ParamDefault::Value(v) | ParamDefault::Connector(v) | ParamDefault::Computed { describe: v, .. } => Some(v),
        }
    }
}

/// One parameter of the runner.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// The key, case-sensitive as written.
    pub key: &'static str,
    /// The default.
    pub default: ParamDefault,
    /// The kind of value.
    pub kind: Kind,
    /// One line of help.
    pub help: &'static str,
    /// Added by this library (not in the original toolkit).
    pub extension: bool,
    /// Other keys that name this parameter. A value given under one is the parameter's
    /// value; giving two of its names different values in the same place is refused.
    pub aliases: &'static [&'static str],
    /// Holds a credential: its value is masked wherever parameters are shown (help, dry
    /// run, errors, the job server). Agrees with [`is_secret_key`], the rule the library
    /// applies to keys outside this table (a test checks both).
    pub secret: bool,
}

impl ParamSpec {
    /// The same parameter with a default computed from other parameters.
    const fn computed(self, describe: &'static str, value: fn(&Params) -> Option<String>) -> Self {
        ParamSpec { default: ParamDefault::Computed { describe, value }, ..self }
    }

    /// The same parameter, its default left to the connector (described for `--help`).
    const fn by_connector(self, describe: &'static str) -> Self {
        ParamSpec { default: ParamDefault::Connector(describe), ..self }
    }

    /// The same parameter, also named by `aliases`.
    const fn alias(self, aliases: &'static [&'static str]) -> Self {
        ParamSpec { aliases, ..self }
    }

    /// The same parameter, holding a credential.
    const fn secret(self) -> Self {
        ParamSpec { secret: true, ..self }
    }

    /// Whether `key` names this parameter, as its key or an alias.
    pub fn is_named(&self, key: &str) -> bool {
        self.key == key || self.aliases.contains(&key)
    }
}

const fn default_of(default: Option<&'static str>) -> ParamDefault {
    match default {
        Some(v) => ParamDefault::Value(v),
        None => ParamDefault::None,
    }
}

const fn p(key: &'static str, default: Option<&'static str>, kind: Kind, help: &'static str) -> ParamSpec {
    ParamSpec { key, default: default_of(default), kind, help, extension: false, aliases: &[], secret: false }
}

const fn ext(key: &'static str, default: Option<&'static str>, kind: Kind, help: &'static str) -> ParamSpec {
    ParamSpec { key, default: default_of(default), kind, help, extension: true, aliases: &[], secret: false }
}

/// Source types.
pub const SOURCE_TYPES: &[&str] =
    &["parquet", "orc", "csv", "tsv", "txt", "jdbc", "kafka", "kafka_deduplication", "mysql-cdc", "postgres-cdc"];
/// Sink types.
pub const SINK_TYPES: &[&str] = &["kafka", "es", "file", "jdbc", "stdout"];

/// Every parameter the runner knows, in the order `--help` prints them.
pub const PARAMS: &[ParamSpec] = &[
    p("job.name", Some("CSP StreamJob"), Kind::Text, "job name; also names the checkpoint directory"),
    p(
        "source.type",
        None,
        Kind::Enum(SOURCE_TYPES),
        "source: parquet, orc, csv, tsv, txt, jdbc, kafka (SQL), kafka_deduplication, mysql-cdc, postgres-cdc (required)",
    ),
    p("source.path", None, Kind::Text, "file sources: one directory of same-schema files (local path or file:// URL)"),
    p(
        "source.watch.type",
        Some("PROCESS_CONTINUOUSLY"),
        Kind::Enum(&["PROCESS_CONTINUOUSLY", "PROCESS_ONCE"]),
        "file sources: watch for new files, or read the files present at start and finish",
    ),
    p("source.watch.interval", Some("60000"), INT, "file sources: directory scan interval, ms"),
    ext(
        "source.watch.settle",
        Some("1000"),
        INT,
        "file sources: a file is read once its size and time stayed the same this long, ms",
    ),
    p("source.firstLine.schema", Some("false"), Kind::Bool, "text sources: the first line holds the column names"),
    p(
        "source.line.delimiter",
        Some("\\n"),
        Kind::Text,
        "text sources: line delimiter; a character, an escape (\\t, \\u0001) or an ASCII code (10, 0x0A)",
    ),
    p(
        "source.field.delimiter",
        None,
        Kind::Text,
        "text sources: field delimiter; a character, an escape or an ASCII code",
    )
    .by_connector(", (tsv: \\t)"),
    p(
        "source.charset",
        Some("UTF-8"),
        Kind::Text,
        "text sources: charset (UTF-8, GBK, GB18030, UTF-16, ISO-8859-1, ...)",
    ),
    ext("source.quote", None, Kind::Text, "text sources: quote character, or `none`")
        .by_connector("\" (tsv, txt: none)"),
    ext(
        "source.field.max.bytes",
        Some("16777216"),
        COUNT,
        "text sources: bytes a quoted field may span; a quote still open past them, or at the end of the file, is a bad record",
    ),
    ext(
        "source.concurrent.files",
        None,
        COUNT,
        "file sources: files read at once; rows of a file keep their order, files interleave (1: name order)",
    )
    .computed("1 with unique.keys, else the number of cores, at most 4", |p| p.has("unique.keys").then(|| "1".into())),
    ext(
        "source.batch.size",
        Some("8192"),
        COUNT,
        "file sources: rows per batch (smaller batches mean less data in flight)",
    ),
    ext(
        "source.bad.records",
        Some("fail"),
        Kind::Enum(&["fail", "dead-letter"]),
        "what to do with records that cannot be read: fail the job, or write them to dead.letter.path",
    ),
    ext(
        "dead.letter.path",
        None,
        Kind::Text,
        "directory where dead letters (with file, line, offset, reason) are written as JSON lines",
    ),
    p(
        "source.db.type",
        None,
        Kind::Enum(&["postgresql", "mysql", "mariadb", "sqlite", "hive"]),
        "database source: type (by default the URL's: jdbc:hive2:// is hive)",
    ),
    p(
        "source.db.url",
        None,
        Kind::Text,
        "database and CDC sources: URL (jdbc:hive2://, postgres://, mysql://, sqlite:, jdbc:postgresql://, \
         jdbc:mysql://)",
    ),
    p("source.db.username", None, Kind::Text, "database and CDC sources: user"),
    p("source.db.password", None, Kind::Text, "database and CDC sources: password").secret(),
    p(
        "source.db.driverClassName",
        None,
        Kind::Text,
        "database source: accepted for compatibility; drivers are built in",
    ),
    p("source.db.table", None, Kind::Text, "database and CDC sources: table (CDC: table or database.table)"),
    p("source.db.sql", None, Kind::Text, "database source: query").by_connector("select * from <table>"),
    p("source.db.fetch.size", None, COUNT, "database source: rows fetched per round trip (and per batch)").computed(
        "50 (hive: 10000, HiveServer2's largest fetch)",
        |p| {
            // 50 is the toolkit's default; for Hive it costs a round trip per 50 rows
            // (`pipeline-bench hive-source` measures it), so Hive's default is the
            // server's largest fetch.
            let hive = p.get("source.db.type") == Some("hive") || p.get("source.db.url").is_some_and(is_hive_url);
            Some(if hive { "10000" } else { "50" }.into())
        },
    ),
    ext(
        "source.db.key.column",
        None,
        Kind::Text,
        "database source: read the table in the order of this unique column, resumable after a crash",
    ),
    ext(
        "source.cdc.startup.mode",
        Some("initial"),
        Kind::Enum(&["initial", "latest-offset", "earliest-offset", "timestamp", "specific-offset"]),
        "CDC source: where a new job starts: the table's rows then its changes (initial), or changes from the \
         log's end, its start, a time, or a position (Flink CDC's scan.startup.mode)",
    ),
    ext(
        "source.cdc.startup.timestamp-millis",
        None,
        Kind::Int { min: 0, max: i64::MAX as u64 },
        "CDC source: startup mode timestamp: changes of statements from this time on (ms since 1970)",
    ),
    ext(
        "source.cdc.startup.specific-offset",
        None,
        Kind::Text,
        "CDC source: startup mode specific-offset: binlog file:pos of a transaction's start",
    ),
    ext(
        "source.cdc.server.id",
        None,
        Kind::Int { min: 1, max: u32::MAX as u64 },
        "CDC source: replica id, unique among the server's replicas",
    )
    .by_connector("5400-6399, from the table's name"),
    ext(
        "source.cdc.slot.name",
        None,
        Kind::Text,
        "PostgreSQL CDC source: replication slot (created on the first start)",
    )
    .by_connector("operators_<schema>_<table>"),
    ext(
        "source.cdc.publication",
        None,
        Kind::Text,
        "PostgreSQL CDC source: publication (created FOR TABLE unless it exists)",
    )
    .by_connector("the slot's name"),
    ext(
        "source.cdc.snapshot.chunk.size",
        Some("8096"),
        COUNT,
        "CDC source: rows per snapshot chunk (Flink CDC's scan.incremental.snapshot.chunk.size)",
    ),
    p(
        "source.kafka.version",
        Some("0.11"),
        Kind::Text,
        "Kafka source: accepted for compatibility (the client negotiates the protocol)",
    ),
    p("source.kafka.brokers", None, Kind::Text, "Kafka source: bootstrap servers"),
    p("source.kafka.topic", None, Kind::Text, "Kafka source: topic(s), comma separated"),
    p(
        "auto.offset.reset",
        Some("earliest"),
        Kind::Enum(&["earliest", "latest"]),
        "Kafka source: where to start without a committed offset",
    ),
    p("group.id", None, Kind::Text, "Kafka source: consumer group"),
    p(
        "stream.sql.enable",
        Some("false"),
        Kind::Bool,
        "run stream.sql on every record (always on for the kafka source)",
    ),
    p("stream.sql.table", Some("t1"), Kind::Text, "the table name the SQL reads"),
    p(
        "stream.sql",
        Some("select * from t1"),
        Kind::Text,
        "the SQL: SELECT ... FROM <table> [WHERE ...] [GROUP BY keys, tumble(ts, INTERVAL '1' SECOND) | hop(ts, slide, size)]",
    ),
    ext(
        "stream.sql.watermark",
        None,
        Kind::Text,
        "windowed stream.sql: event-time column and out-of-orderness, <column>,<delay> (ts,200ms; ms/s/m/h) or ts - INTERVAL '5' SECOND",
    ),
    ext(
        "stream.sql.late.path",
        None,
        Kind::Text,
        "windowed stream.sql: directory where rows later than their window are written as JSON lines (else they are only counted in late_records)",
    ),
    ext(
        "stream.sql.watermark.idle.timeout",
        None,
        COUNT,
        "windowed stream.sql: ms without rows after which a source subtask stops holding back event time (default: never)",
    ),
    p("stream.sql.schema", None, Kind::Text, "input schema: struct<_col0:BigInt,_col1:String>"),
    p(
        "stream.sql.schema.json",
        None,
        Kind::Text,
        "input schema as ordered JSON {\"id\":\"BigInt\",...}; wins over stream.sql.schema; also the text-file schema",
    ),
    p("unique.keys", None, Kind::Text, "deduplication: key columns, comma separated"),
    p(
        "unique.data.ttl.in.minute",
        Some("60"),
        Kind::Int { min: 1, max: u64::MAX / 60 },
        "deduplication: how long a key is remembered, minutes",
    ),
    p("sink.type", Some("kafka"), Kind::Enum(SINK_TYPES), "sink: kafka, es, and this library's file, jdbc, stdout"),
    p("sink.kafka.version", Some("0.11"), Kind::Text, "Kafka sink: accepted for compatibility"),
    p("sink.kafka.brokers", None, Kind::Text, "Kafka sink: bootstrap servers"),
    p("sink.kafka.topic", None, Kind::Text, "Kafka sink: topic"),
    ext("sink.key.columns", None, Kind::Text, "Kafka sink: columns whose values form the message key, comma separated"),
    p("sink.es.server", None, Kind::Text, "Elasticsearch sink: host:port[,host:port...]"),
    p("sink.es.index", None, Kind::Text, "Elasticsearch sink: index"),
    p("sink.es.type", None, Kind::Text, "Elasticsearch sink: document type (Elasticsearch 6)"),
    p(
        "sink.es.sync.type",
        None,
        Kind::Enum(&["incremental", "finite", "full"]),
        "Elasticsearch sink: incremental (upsert), finite (update existing only), full (overwrite)",
    ),
    p("sink.es.unique.column", None, Kind::Text, "Elasticsearch sink: column holding the document id"),
    p(
        "sink.es.version.column",
        Some("version"),
        Kind::Text,
        "Elasticsearch sink: field that receives sink.es.version (must not be a data column)",
    ),
    p("sink.es.version", None, Kind::Text, "Elasticsearch sink: version written in full and incremental modes"),
    ext(
        "sink.es.version.type",
        Some("internal"),
        Kind::Enum(&["internal", "external_gte"]),
        "Elasticsearch sink, full mode: external_gte keeps newer documents from being overwritten by an older run",
    ),
    ext(
        "sink.es.cleanup",
        Some("false"),
        Kind::Bool,
        "Elasticsearch sink, full mode: after a completed run, delete documents of older versions",
    ),
    ext("sink.es.username", None, Kind::Text, "Elasticsearch sink: basic-auth user"),
    ext("sink.es.password", None, Kind::Text, "Elasticsearch sink: basic-auth password").secret(),
    ext("sink.es.api.key", None, Kind::Text, "Elasticsearch sink: API key").secret(),
    p(
        "sink.es.update.retry.on.conflict",
        Some("5"),
        U32,
        "Elasticsearch sink: retries of an update on a version conflict",
    ),
    p("sink.es.bulk.flush.max.actions", Some("1000"), COUNT, "Elasticsearch sink: actions per bulk request"),
    p("sink.es.bulk.flush.max.size.mb", Some("5"), MEGABYTES, "Elasticsearch sink: bulk request size, MB"),
    p("sink.es.bulk.flush.interval.ms", Some("60000"), INT, "Elasticsearch sink: flush at least this often, ms"),
    p(
        "sink.es.bulk.flush.backoff.enable",
        Some("true"),
        Kind::Bool,
        "Elasticsearch sink: retry rejected items with backoff",
    ),
    p(
        "sink.es.bulk.flush.backoff.type",
        Some("CONSTANT"),
        Kind::Enum(&["CONSTANT", "EXPONENTIAL"]),
        "Elasticsearch sink: backoff kind",
    ),
    p(
        "sink.es.bulk.flush.backoff.delay",
        Some("60000"),
        INT,
        "Elasticsearch sink: backoff delay (initial delay for EXPONENTIAL), ms",
    ),
    p("bulk.flush.backoff.retries", Some("5"), U32, "Elasticsearch sink: backoff retries")
        .alias(&["sink.es.bulk.flush.backoff.retries"]),
    p(
        "sink.merge.enable",
        Some("false"),
        Kind::Bool,
        "nest all fields but sink.merge.exclude.fields into sink.merge.nested.field",
    ),
    p("sink.merge.nested.field", Some("feas"), Kind::Text, "the nested field's name"),
    p("sink.merge.exclude.fields", Some("id"), Kind::Text, "fields kept at the top level, comma separated"),
    ext("sink.path", None, Kind::Text, "file sink: output directory"),
    ext(
        "sink.format",
        Some("json"),
        Kind::Enum(&["json", "csv", "parquet", "debezium-json"]),
        "file sink: json (lines), csv or parquet; Kafka sink: json, or debezium-json (a CDC source's changes as \
         Debezium events keyed by primary key)",
    ),
    ext(
        "sink.debezium.tombstones",
        Some("true"),
        Kind::Bool,
        "Kafka sink, debezium-json: follow each delete with a tombstone (key, no value) for log compaction",
    ),
    ext("sink.file.roll.size.mb", Some("128"), MEGABYTES, "file sink: close a part at this size, MB"),
    ext(
        "sink.file.roll.interval.ms",
        None,
        COUNT,
        "file sink: close a part at this age, ms (checkpoints close parts too)",
    ),
    ext("sink.db.url", None, Kind::Text, "database sink: URL"),
    ext("sink.db.username", None, Kind::Text, "database sink: user"),
    ext("sink.db.password", None, Kind::Text, "database sink: password").secret(),
    ext("sink.db.table", None, Kind::Text, "database sink: table"),
    ext(
        "sink.db.mode",
        None,
        Kind::Enum(&["insert", "upsert"]),
        "database sink: insert, or upsert by sink.db.key.columns or a CDC source's primary key (which applies its \
         updates and deletes)",
    )
    .computed("insert (a CDC source's changes: upsert)", |p| {
        // A changelog inserted as rows would need the change columns in the table: a CDC
        // source's changes are applied by key unless insert is asked for.
        let cdc = p.get("source.type").is_some_and(|t| t.ends_with("-cdc"));
        Some(if cdc { "upsert" } else { "insert" }.into())
    }),
    ext(
        "sink.db.key.columns",
        None,
        Kind::Text,
        "database sink: key columns for upsert, comma separated (a CDC source's primary key by default)",
    ),
    ext("sink.db.batch.size", Some("1000"), COUNT, "database sink: rows per insert statement"),
    p("stream.parallelism", Some("1"), COUNT, "parallelism of the source and transforms"),
    p("stream.sink.parallelism", Some("1"), COUNT, "parallelism of the sink"),
    ext("stream.rate.limit", None, COUNT, "at most this many rows per second from the source"),
    p("stream.checkpoint.enable", Some("true"), Kind::Bool, "take checkpoints"),
    p(
        "stream.checkpoint.dir",
        Some("checkpoints"),
        Kind::Text,
        "checkpoint directory (relative to the working directory)",
    ),
    p(
        "stream.checkpoint.type",
        Some("rocksdb"),
        Kind::Enum(&["memory", "fs", "rocksdb", "disk", "sled"]),
        "state backend: memory/fs keep keyed state in memory; rocksdb (also disk, sled) in memory up to \
         stream.state.memory.budget and past it on disk (an embedded LSM store)",
    ),
    p("stream.checkpoint.interval", None, INT, "checkpoint interval, ms").computed(
        "60000 (EXACTLY_ONCE: 30000)",
        |p| {
            let exactly_once = p.choice("stream.checkpoint.mode").ok().flatten().as_deref() == Some("exactly_once");
            Some(if exactly_once { "30000" } else { "60000" }.into())
        },
    ),
    p("stream.checkpoint.timeout", Some("60000"), INT, "checkpoint timeout, ms"),
    p("stream.checkpoint.tolerable.failure.num", Some("10"), U32, "consecutive checkpoint failures tolerated"),
    p("stream.checkpoint.min.pause", Some("1000"), INT, "minimum pause between checkpoints, ms"),
    p(
        "stream.checkpoint.mode",
        Some("AT_LEAST_ONCE"),
        Kind::Enum(&["AT_LEAST_ONCE", "EXACTLY_ONCE"]),
        "checkpoint mode; EXACTLY_ONCE also makes the sinks transactional",
    ),
    ext("stream.checkpoint.retained", Some("1"), COUNT, "completed checkpoints kept"),
    ext("stream.checkpoint.retain.on.cancel", Some("true"), Kind::Bool, "keep checkpoints when the job is canceled"),
    ext("stream.state.dir", None, Kind::Text, "directory of on-disk working state (default: <temp>/operators-state)"),
    ext(
        "stream.state.memory.budget",
        Some("512m"),
        Kind::Bytes,
        "memory for keyed state (dedup, windows); past it rocksdb keeps entries not used recently on disk \
         (k, m, g: KiB, MiB, GiB)",
    ),
    p("job.retry.maxNumberRestartAttempts", Some("4"), U32, "restarts before the job fails"),
    p("job.retry.backoffTimeMS", Some("60000"), INT, "wait before a restart, ms"),
    ext(
        "job.retry.strategy",
        Some("fixed-delay"),
        Kind::Enum(&["fixed-delay", "exponential-backoff", "failure-rate", "none"]),
        "restart strategy",
    ),
    ext("job.retry.maxBackoffTimeMS", Some("300000"), INT, "exponential-backoff: largest wait, ms"),
    ext(
        "job.retry.failureRateIntervalMS",
        Some("60000"),
        INT,
        "failure-rate: at most maxNumberRestartAttempts failures in this window, ms",
    ),
    ext("savepoint.dir", None, Kind::Text, "where savepoints go by default")
        .by_connector("<stream.checkpoint.dir>/savepoints"),
    ext("savepoint", None, Kind::Text, "start from this savepoint or checkpoint (also --savepoint PATH)"),
    ext(
        "allow-non-restored-state",
        Some("false"),
        Kind::Bool,
        "start from a savepoint with state of operators the job no longer has",
    ),
    ext(
        "rest.port",
        None,
        Kind::Int { min: 0, max: 65535 },
        "serve the Flink-shaped REST API on this port (0: any free port)",
    ),
    ext("rest.address", Some("127.0.0.1"), Kind::Text, "address of the REST API"),
    ext("rest.token", None, Kind::Text, "bearer token the REST API requires").secret(),
    ext(
        "rest.linger.ms",
        Some("3000"),
        INT,
        "keep the REST API up this long after the job ends, so clients can read its final state, ms",
    ),
    ext(
        "progress",
        Some("auto"),
        Kind::Enum(&["auto", "bar", "log", "off"]),
        "progress of bounded jobs: a bar on a terminal, else log lines",
    ),
    ext(
        "log.format",
        Some("text"),
        Kind::Enum(&["text", "json"]),
        "log lines on stderr: text (coloured only on a terminal, never with NO_COLOR set), or one JSON object per line",
    ),
    p(
        "hadoop.home.dir",
        None,
        Kind::Text,
        "HADOOP_HOME for the HDFS client: without HADOOP_CONF_DIR, its configuration is <dir>/etc/hadoop (the runner starts itself again with HADOOP_HOME set)",
    ),
    p(
        "hadoop.user.name",
        None,
        Kind::Text,
        "the HDFS user (the runner starts itself again with HADOOP_USER_NAME set to it); default HADOOP_USER_NAME, else the process's user",
    ),
];

/// Keys under these prefixes are passed to the Kafka client as they are.
pub const PASSTHROUGH: &[&str] = &["source.kafka.", "sink.kafka."];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A properties file.
    File(PathBuf),
    /// The command line.
    CommandLine,
    /// An environment variable.
    Environment(String),
}

impl Origin {
    /// Whether two values came from places of the same precedence (any two environment
    /// variables are one place), where neither overrides the other.
    fn same_place(&self, other: &Origin) -> bool {
        match (self, other) {
            (Origin::Environment(_), Origin::Environment(_)) => true,
            _ => self == other,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::CommandLine => f.write_str("command line"),
            Origin::Environment(v) => write!(f, "environment {v}"),
        }
    }
}

/// A problem with the parameters, naming the key.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ParamError {
    /// A key no parameter has.
    #[error("unknown parameter `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    Unknown {
        /// The key as given.
        key: String,
        /// The closest known key.
        suggestion: Option<String>,
    },
    /// A required parameter is missing.
    #[error("missing parameter `{key}`: {why}")]
    Missing {
        /// The key.
        key: String,
        /// Why it is needed.
        why: String,
    },
    /// A value of the wrong type or out of range.
    #[error("bad value for `{key}` (`{value}` from {origin}): {why}")]
    Invalid {
        /// The key.
        key: String,
        /// The value (masked for secrets).
        value: String,
        /// Where it came from.
        origin: String,
        /// What would be accepted.
        why: String,
    },
    /// Parameters that cannot work together.
    #[error("`{key}`: {why}")]
    Conflict {
        /// The key to change.
        key: String,
        /// Why.
        why: String,
    },
    /// The command line itself is malformed.
    #[error("{0}")]
    Usage(String),
    /// A properties file could not be read.
    #[error("cannot read properties file `{}`: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A `jdbc:hive2://` URL: the database source reads it from HiveServer2.
pub(crate) fn is_hive_url(url: &str) -> bool {
    url.trim_start().starts_with("jdbc:hive2:")
}

/// A parameter read as if it had a default that the table does not give it.
fn no_default(key: &str) -> ParamError {
    ParamError::Missing { key: key.to_string(), why: "no value was given and the parameter has no default".into() }
}

/// Looks up a parameter's spec by its key or one of its aliases.
pub fn spec(key: &str) -> Option<&'static ParamSpec> {
    PARAMS.iter().find(|s| s.is_named(key))
}

/// The key a value given under `key` is kept under: the parameter's own key for an alias,
/// else `key` itself.
fn canonical(key: &str) -> &str {
    spec(key).map_or(key, |s| s.key)
}

/// Whether a key's value must be masked: the table's column for its parameters, the
/// library's rule for the Kafka client's pass-through properties.
pub fn is_secret(key: &str) -> bool {
    spec(key).map_or_else(|| is_secret_key(key), |s| s.secret)
}

/// Parses a byte size: digits, then optionally `k`, `m`, `g` or `t` (binary units, with an
/// optional `b`/`ib`: `64k`, `128MiB`, `1g`). Refuses what overflows rather than clamping.
fn parse_bytes(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits);
    let n: u64 = number.parse().map_err(|_| "expected a size such as 134217728, 128m or 1g".to_string())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit `{other}`; expected k, m, g or t")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| "the size does not fit in 64 bits".to_string())
}

fn is_passthrough(key: &str) -> bool {
    PASSTHROUGH.iter().any(|p| key.starts_with(p) && key.len() > p.len() && spec(key).is_none())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest(key: &str) -> Option<String> {
    PARAMS
        .iter()
        .map(|s| (edit_distance(&key.to_ascii_lowercase(), &s.key.to_ascii_lowercase()), s.key))
        .filter(|(d, k)| *d <= 3.max(k.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// A value as given.
#[derive(Debug, Clone)]
struct Given {
    value: String,
    origin: Origin,
    /// The name it was given under: the parameter's key or one of its aliases.
    name: String,
}

/// The resolved parameters.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// By the parameter's own key; a value given under an alias is kept here too.
    values: BTreeMap<String, Given>,
    /// The first time two names of one parameter were given different values in the
    /// same place; [`validate`](Self::validate) refuses it.
    clash: Option<ParamError>,
}

impl Params {
    /// Sets `key` (a parameter's key or alias) from `origin`, replacing a value of lower
    /// precedence.
    pub fn set(&mut self, key: &str, value: &str, origin: Origin) {
        let canonical = canonical(key).to_string();
        if let Some(before) = self.values.get(&canonical)
            && before.origin.same_place(&origin)
            && before.name != key
            && before.value.trim() != value.trim()
            && !value.trim().is_empty()
        {
            // Neither wins by precedence, and picking one would drop the other unseen.
            self.clash.get_or_insert(ParamError::Conflict {
                key: canonical.clone(),
                why: format!(
                    "given as `{}` and as `{key}` with different values in the same place ({origin}); \
                     they name one parameter",
                    before.name
                ),
            });
        }
        self.values.insert(canonical, Given { value: value.to_string(), origin, name: key.to_string() });
    }

    /// The value given for `key` (not defaults).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(canonical(key)).map(|g| g.value.as_str()).filter(|v| !v.trim().is_empty())
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.values.get(canonical(key)).map_or(Origin::Default, |g| g.origin.clone())
    }

    /// The name `key`'s value was given under (an alias, perhaps), for messages.
    fn given_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.values.get(canonical(key)).map_or(key, |g| g.name.as_str())
    }

    /// Whether `key` was given.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every key given (from the environment, the command line or a file), in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.iter().filter(|(_, g)| !g.value.trim().is_empty()).map(|(k, _)| k.as_str())
    }

    /// Keys given under `prefix` with their values, prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && spec(k).is_none())
            .map(|(k, g)| (k[prefix.len()..].to_string(), g.value.clone()))
            .collect()
    }

    fn invalid(&self, key: &str, value: &str, why: impl Into<String>) -> ParamError {
        let masked = if is_secret(key) { MASK.to_string() } else { redact_url(value) };
        ParamError::Invalid {
            key: self.given_name(key).to_string(),
            value: masked,
            origin: self.origin(key).to_string(),
            why: why.into(),
        }
    }

    /// The default of `key` for these parameters: its value, or what its rule computes
    /// ([`ParamDefault`]); `None` where there is none or the connector decides.
    pub fn default_of(&self, key: &str) -> Option<String> {
        match spec(key)?.default {
            ParamDefault::Value(v) => Some(v.to_string()),
            ParamDefault::Computed { value, .. } => value(self),
            ParamDefault::None | ParamDefault::Connector(_) => None,
        }
    }

    /// Every parameter not given that has a default, with the default's value for these
    /// parameters, in the table's order.
    pub fn defaults(&self) -> Vec<(&'static str, String)> {
        PARAMS.iter().filter(|s| !self.has(s.key)).filter_map(|s| Some((s.key, self.default_of(s.key)?))).collect()
    }

    /// Text value of `key`, or its default.
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string).or_else(|| self.default_of(key))
    }

    /// Text value of `key` or its default, for a parameter that has one.
    pub fn text_or_default(&self, key: &str) -> Result<String, ParamError> {
        self.text(key).ok_or_else(|| no_default(key))
    }

    /// A required text value.
    pub fn required(&self, key: &str, why: &str) -> Result<String, ParamError> {
        self.text(key).ok_or_else(|| ParamError::Missing { key: key.to_string(), why: why.to_string() })
    }

    /// Boolean value of `key`, or its default.
    pub fn bool(&self, key: &str) -> Result<bool, ParamError> {
        match self.text(key) {
            None => Ok(false),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.invalid(key, &v, "expected true or false")),
            },
        }
    }

    /// Integer value of `key`, or its default, in the parameter's range: a value outside
    /// is refused naming the key, the value and the range.
    pub fn int(&self, key: &str) -> Result<Option<u64>, ParamError> {
        let Some(v) = self.text(key) else { return Ok(None) };
        let (min, max) = match spec(key).map(|s| s.kind) {
            Some(Kind::Int { min, max }) => (min, max),
            _ => (0, u64::MAX),
        };
        let range = || if max == u64::MAX { format!("at least {min}") } else { format!("{min} to {max}") };
        let n = v
            .trim()
            .parse::<u64>()
            .map_err(|_| self.invalid(key, &v, format!("expected a whole number, {}", range())))?;
        if n < min || n > max {
            return Err(self.invalid(key, &v, format!("out of range: expected {}", range())));
        }
        Ok(Some(n))
    }

    /// Integer value of `key` (or its default) as a `T`; one that does not fit is refused,
    /// never clamped.
    pub fn num<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>, ParamError> {
        let Some(n) = self.int(key)? else { return Ok(None) };
        T::try_from(n).map(Some).map_err(|_| {
            self.invalid(
                key,
                &n.to_string(),
                format!("out of range for this platform's {}", std::any::type_name::<T>()),
            )
        })
    }

    /// Like [`Params::num`], for a parameter that has a default: its value or the default.
    pub fn num_or_default<T: TryFrom<u64>>(&self, key: &str) -> Result<T, ParamError> {
        self.num(key)?.ok_or_else(|| no_default(key))
    }

    /// A duration given in milliseconds, or its default.
    pub fn millis(&self, key: &str) -> Result<Option<std::time::Duration>, ParamError> {
        Ok(self.int(key)?.map(std::time::Duration::from_millis))
    }

    /// Like [`Params::millis`], for a parameter that has a default.
    pub fn millis_or_default(&self, key: &str) -> Result<std::time::Duration, ParamError> {
        self.num_or_default(key).map(std::time::Duration::from_millis)
    }

    /// Byte-size value of `key` (see [`Kind::Bytes`]), or its default.
    pub fn bytes(&self, key: &str) -> Result<Option<u64>, ParamError> {
        let Some(v) = self.text(key) else { return Ok(None) };
        parse_bytes(&v).map(Some).map_err(|why| self.invalid(key, &v, why))
    }

    /// Enum value of `key` in lower case, or its default.
    pub fn choice(&self, key: &str) -> Result<Option<String>, ParamError> {
        let Some(v) = self.text(key) else { return Ok(None) };
        let Some(ParamSpec { kind: Kind::Enum(options), .. }) = spec(key) else {
            return Ok(Some(v));
        };
        options
            .iter()
            .find(|o| o.eq_ignore_ascii_case(v.trim()))
            .map(|o| Some(o.to_ascii_lowercase()))
            .ok_or_else(|| self.invalid(key, &v, format!("expected one of {}", options.join(", "))))
    }

    /// Enum value of `key` in lower case or its default, for a parameter that has one.
    pub fn choice_or_default(&self, key: &str) -> Result<String, ParamError> {
        self.choice(key)?.ok_or_else(|| no_default(key))
    }

    /// Checks every given key exists and every value has the right type.
    pub fn validate(&self) -> Result<(), ParamError> {
        if let Some(clash) = &self.clash {
            return Err(clash.clone());
        }
        for key in self.values.keys() {
            if spec(key).is_none() && !is_passthrough(key) {
                return Err(ParamError::Unknown { key: key.clone(), suggestion: suggest(key) });
            }
        }
        for s in PARAMS {
            if !self.has(s.key) {
                continue;
            }
            match s.kind {
                Kind::Bool => {
                    self.bool(s.key)?;
                }
                Kind::Int { .. } => {
                    self.int(s.key)?;
                }
                Kind::Bytes => {
                    self.bytes(s.key)?;
                }
                Kind::Enum(_) => {
                    self.choice(s.key)?;
                }
                Kind::Text => {}
            }
        }
        Ok(())
    }

    /// Every given key with its value (secrets masked) and origin.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        self.values
            .values()
            .map(|g| {
                // A password can also sit inside a URL (`source.db.url`, `sink.es.server`).
                let shown = if is_secret(&g.name) { MASK.to_string() } else { redact_url(&g.value) };
                (g.name.clone(), shown, g.origin.to_string())
            })
            .collect()
    }
}

/// Whether a key holds a credential: the library's one rule, for parameters and the Kafka
/// client's pass-through properties alike.
pub use operators_core::secret::is_secret_key;

/// What the command line asked for besides parameters.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The resolved parameters.
    pub params: Params,
    /// `--help`.
    pub help: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--version` (or `-V`).
    pub version: bool,
}

/// Reads a Java properties file.
pub fn read_properties(path: &Path) -> Result<Vec<(String, String)>, ParamError> {
    let file =
        std::fs::File::open(path).map_err(|e| ParamError::File { path: path.to_path_buf(), message: e.to_string() })?;
    let map = java_properties::read(std::io::BufReader::new(file))
        .map_err(|e| ParamError::File { path: path.to_path_buf(), message: e.to_string() })?;
    let mut pairs: Vec<(String, String)> = map.into_iter().collect();
    pairs.sort();
    Ok(pairs)
}

fn env_name(key: &str) -> String {
    format!("OPERATOR_{}", key.to_ascii_uppercase().replace(['.', '-'], "_"))
}

/// Whether an argument is the next `--key` rather than the value of the one before: `--`
/// followed by a letter, as every parameter and flag is. Anything else is a value, so a
/// PEM key (`-----BEGIN PRIVATE KEY-----…`) or a negative number can follow its key.
pub fn is_flag(arg: &str) -> bool {
    arg.strip_prefix("--").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Resolves the invocation from arguments, the environment and the working directory.
pub fn resolve(
    args: impl IntoIterator<Item = String>,
    env: impl IntoIterator<Item = (String, String)>,
    cwd: &Path,
) -> Result<Invocation, ParamError> {
    let mut inv = Invocation::default();
    let mut cli: Vec<(String, String)> = Vec::new();
    let mut config_file: Option<PathBuf> = None;
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--") else {
            if arg == "-h" {
                inv.help = true;
                continue;
            }
            if arg == "-V" {
                inv.version = true;
                continue;
            }
            return Err(ParamError::Usage(format!("unexpected argument `{arg}`: parameters are `--key value`")));
        };
        let (key, inline) = match body.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        match key.as_str() {
            "help" => inv.help = true,
            "version" => inv.version = true,
            "dry-run" => inv.dry_run = true,
            "allow-non-restored-state" if inline.is_none() => cli.push((key, "true".into())),
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => match args.peek() {
                        Some(next) if !is_flag(next) => args.next().unwrap_or_default(),
                        _ => return Err(ParamError::Usage(format!("`--{key}` needs a value"))),
                    },
                };
                if key == "config" {
                    config_file = Some(PathBuf::from(value));
                } else {
                    cli.push((key, value));
                }
            }
        }
    }
    // Lowest precedence first: file, then command line, then environment.
    let file = match config_file {
        Some(f) => Some(if f.is_absolute() { f } else { cwd.join(f) }),
        None => Some(cwd.join("application.properties")).filter(|p| p.is_file()),
    };
    if let Some(path) = file {
        for (k, v) in read_properties(&path)? {
            inv.params.set(&k, &v, Origin::File(path.clone()));
        }
    }
    for (k, v) in cli {
        inv.params.set(&k, &v, Origin::CommandLine);
    }
    let env: Vec<(String, String)> = env.into_iter().collect();
    for (name, value) in &env {
        if spec(name).is_some() || is_passthrough(name) {
            inv.params.set(name, value, Origin::Environment(name.clone()));
        }
    }
    for s in PARAMS {
        for key in std::iter::once(s.key).chain(s.aliases.iter().copied()) {
            let name = env_name(key);
            if let Some((_, v)) = env.iter().find(|(n, _)| *n == name) {
                inv.params.set(key, v, Origin::Environment(name));
            }
        }
    }
    for (name, value) in &env {
        for prefix in PASSTHROUGH {
            let env_prefix = env_name(prefix.trim_end_matches('.')) + "_";
            if let Some(rest) = name.strip_prefix(&env_prefix) {
                // Kafka client properties are lower case with dots.
                let key = format!("{prefix}{}", rest.to_ascii_lowercase().replace('_', "."));
                if spec(&key).is_none() {
                    inv.params.set(&key, value, Origin::Environment(name.clone()));
                }
            }
        }
    }
    Ok(inv)
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::from(
        "operator: run an ingestion job with the original toolkit's parameters\n\n\
         usage: operator --source.type TYPE [--key value ...] [--config FILE] [--savepoint PATH]\n\
         \x20                [--allow-non-restored-state] [--dry-run] [--help] [--version]\n\n\
         Precedence: environment > command line > properties file (--config FILE, or\n\
         application.properties in the working directory) > default. Environment names are\n\
         the key itself or OPERATOR_<KEY> (upper case, dots as underscores).\n\
         source.kafka.<any> and sink.kafka.<any> are passed to the Kafka client.\n\
         Keys marked + are this library's own.\n\nparameters (default in brackets):\n",
    );
    for s in PARAMS {
        let default = s.default.describe().map(|d| format!(" [{d}]")).unwrap_or_default();
        let range = match s.kind {
            Kind::Int { min: 0, max: u64::MAX } => String::new(),
            Kind::Int { min, max: u64::MAX } => format!(" (at least {min})"),
            Kind::Int { min, max } => format!(" ({min} to {max})"),
            _ => String::new(),
        };
        let mark = if s.extension { "+" } else { " " };
        let aliases = if s.aliases.is_empty() { String::new() } else { format!(" (also {})", s.aliases.join(", ")) };
        let secret = if s.secret { " (secret: never shown)" } else { "" };
        out.push_str(&format!("  {mark} {}{default}{range}\n        {}{aliases}{secret}\n", s.key, s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_bytes("134217728"), Ok(128 << 20));
        assert_eq!(parse_bytes("128m"), Ok(128 << 20));
        assert_eq!(parse_bytes(" 1G "), Ok(1 << 30));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert!(parse_bytes("12x").unwrap_err().contains("`x`"));
        assert!(parse_bytes("m").is_err());
        assert!(parse_bytes("-1m").is_err());
        assert!(parse_bytes("99999999999t").unwrap_err().contains("64 bits"));
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_is_env_then_cli_then_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("application.properties"),
            "job.name = from file\nsource.type=csv\nsource.path : /data\n# comment\nstream.parallelism 3\n",
        )
        .unwrap();
        let inv = resolve(
            args(&["--job.name", "from cli", "--source.path=/cli"]),
            vec![("OPERATOR_JOB_NAME".to_string(), "from env".to_string())],
            dir.path(),
        )
        .unwrap();
        let p = &inv.params;
        assert_eq!(p.get("job.name"), Some("from env"));
        assert_eq!(p.get("source.path"), Some("/cli"));
        assert_eq!(p.get("source.type"), Some("csv"));
        assert_eq!(p.int("stream.parallelism").unwrap(), Some(3));
        assert!(matches!(p.origin("source.type"), Origin::File(_)));
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let inv = resolve(args(&["--source.tpye", "csv"]), vec![], Path::new("/")).unwrap();
        let e = inv.params.validate().unwrap_err();
        assert_eq!(e.to_string(), "unknown parameter `source.tpye` (did you mean `source.type`?)");
    }

    #[test]
    fn wrong_types_name_key_value_and_origin() {
        let inv = resolve(
            args(&["--stream.parallelism", "two", "--stream.checkpoint.enable", "yes"]),
            vec![],
            Path::new("/"),
        )
        .unwrap();
        let e = inv.params.validate().unwrap_err().to_string();
        assert!(e.contains("`stream.parallelism`") && e.contains("`two`") && e.contains("command line"), "{e}");
        let inv = resolve(args(&["--source.type", "xml"]), vec![], Path::new("/")).unwrap();
        let e = inv.params.validate().unwrap_err().to_string();
        assert!(e.contains("expected one of parquet, orc"), "{e}");
    }

    #[test]
    fn passthrough_kafka_keys_and_env_forms() {
        let inv = resolve(
            args(&["--sink.kafka.batch.size", "65536"]),
            vec![
                ("OPERATOR_SINK_KAFKA_LINGER_MS".to_string(), "5".to_string()),
                ("source.kafka.client.id".to_string(), "x".to_string()),
            ],
            Path::new("/"),
        )
        .unwrap();
        inv.params.validate().unwrap();
        let sink: Vec<(String, String)> = inv.params.with_prefix("sink.kafka.");
        assert!(sink.contains(&("batch.size".into(), "65536".into())));
        assert!(sink.contains(&("linger.ms".into(), "5".into())));
        assert_eq!(inv.params.with_prefix("source.kafka."), vec![("client.id".into(), "x".into())]);
    }

    #[test]
    fn secrets_are_masked() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIBsecret\n-----END PRIVATE KEY-----";
        let inv = resolve(
            args(&[
                "--source.db.password",
                "hunter2",
                "--sink.kafka.sasl.password",
                "s3cr",
                "--sink.kafka.ssl.key.pem",
                pem,
                "--sink.es.api.key",
                "id:apikey1",
                "--rest.token",
                "tok3n",
                "--source.db.url",
                "postgres://u:urlpw1@h:99999/db",
                "--sink.es.server",
                "http://u:urlpw2@h:9200",
            ]),
            vec![("OPERATOR_SOURCE_KAFKA_SSL_KEYSTORE_PASSWORD".into(), "envpw1".into())],
            Path::new("/"),
        )
        .unwrap();
        let d = format!("{:?}", inv.params.describe());
        for secret in ["hunter2", "s3cr", "MIIBsecret", "apikey1", "tok3n", "urlpw1", "urlpw2", "envpw1"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(d.contains("postgres://u:****@h:99999/db"), "{d}");
        // The table's secret column and the library's one rule (which masks the same keys
        // in logs and in the Kafka client's properties) agree on every name.
        for s in PARAMS {
            for key in std::iter::once(s.key).chain(s.aliases.iter().copied()) {
                assert_eq!(s.secret, is_secret_key(key), "{key}");
                assert_eq!(is_secret(key), s.secret, "{key}");
            }
        }
        for key in ["source.db.password", "sink.db.password", "sink.es.password", "sink.es.api.key", "rest.token"] {
            assert!(spec(key).is_some_and(|s| s.secret), "{key}");
            let h = help();
            let entry: String = h[h.find(&format!(" {key}")).unwrap()..].lines().take(2).collect();
            assert!(entry.contains("(secret: never shown)"), "{entry}");
        }
        // A bad value of a secret is not echoed in the error.
        let err = inv.params.invalid("sink.es.password", "hunter2", "why").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// An alias is the same parameter: its value is read under the parameter's key, the
    /// environment knows it, errors name the alias as given, help lists it, and two names
    /// with different values in one place are refused rather than one silently dropped.
    #[test]
    fn aliases_name_the_same_parameter() {
        let (key, alias) = ("bulk.flush.backoff.retries", "sink.es.bulk.flush.backoff.retries");
        let inv = resolve(args(&["--sink.es.bulk.flush.backoff.retries", "7"]), vec![], Path::new("/")).unwrap();
        inv.params.validate().unwrap();
        assert_eq!(inv.params.num_or_default::<u32>(key).unwrap(), 7);
        assert!(inv.params.keys().any(|k| k == key));
        assert!(!inv.params.defaults().iter().any(|(k, _)| *k == key));

        // Precedence still holds across places: the environment's alias over the command line.
        let env = vec![("OPERATOR_SINK_ES_BULK_FLUSH_BACKOFF_RETRIES".to_string(), "9".to_string())];
        let inv = resolve(args(&["--bulk.flush.backoff.retries", "7"]), env, Path::new("/")).unwrap();
        inv.params.validate().unwrap();
        assert_eq!(inv.params.num_or_default::<u32>(key).unwrap(), 9);

        // The same value under both names is no conflict; different values are.
        let same = resolve(
            args(&["--bulk.flush.backoff.retries", "7", "--sink.es.bulk.flush.backoff.retries", "7"]),
            vec![],
            Path::new("/"),
        )
        .unwrap();
        same.params.validate().unwrap();
        let clash = resolve(
            args(&["--bulk.flush.backoff.retries", "7", "--sink.es.bulk.flush.backoff.retries", "8"]),
            vec![],
            Path::new("/"),
        )
        .unwrap();
        let e = clash.params.validate().unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(alias) && e.contains("command line"), "{e}");

        let bad = resolve(args(&["--sink.es.bulk.flush.backoff.retries", "-2"]), vec![], Path::new("/")).unwrap();
        let e = bad.params.validate().unwrap_err().to_string();
        assert!(e.contains(&format!("`{alias}`")) && e.contains("-2"), "{e}");
        assert!(help().contains(&format!("(also {alias})")));
        assert_eq!(spec(alias).map(|s| s.key), Some(key));
    }

    #[test]
    fn flags_and_usage_errors() {
        let inv =
            resolve(args(&["--dry-run", "--allow-non-restored-state", "--help"]), vec![], Path::new("/")).unwrap();
        assert!(inv.dry_run && inv.help);
        assert_eq!(inv.params.get("allow-non-restored-state"), Some("true"));
        assert!(matches!(resolve(args(&["--source.type"]), vec![], Path::new("/")), Err(ParamError::Usage(_))));
        assert!(matches!(resolve(args(&["csv"]), vec![], Path::new("/")), Err(ParamError::Usage(_))));
        let missing = resolve(args(&["--config", "/no/such.properties"]), vec![], Path::new("/")).unwrap_err();
        assert!(missing.to_string().contains("/no/such.properties"));
    }

    #[test]
    fn a_value_may_start_with_dashes() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----";
        for form in [vec!["--sink.kafka.ssl.key.pem", pem], vec![&format!("--sink.kafka.ssl.key.pem={pem}")]] {
            let mut a = form.clone();
            a.extend(["--stream.parallelism", "-1", "--dry-run"]);
            let inv = resolve(args(&a), vec![], Path::new("/")).unwrap();
            assert_eq!(inv.params.get("sink.kafka.ssl.key.pem"), Some(pem), "{form:?}");
            assert_eq!(inv.params.get("stream.parallelism"), Some("-1"));
            assert!(inv.dry_run);
        }
        // The next `--key` is still a key, not a value.
        let err = resolve(args(&["--source.type", "--dry-run"]), vec![], Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("`--source.type` needs a value"), "{err}");
    }

    /// A default that its own parameter would refuse is a mistake of the table: each is
    /// read back through the accessor of its kind, with no value given.
    #[test]
    fn every_default_is_valid_for_its_parameter() {
        for mode in ["AT_LEAST_ONCE", "EXACTLY_ONCE"] {
            let mut params = Params::default();
            params.set("stream.checkpoint.mode", mode, Origin::CommandLine);
            params.set("unique.keys", "id", Origin::CommandLine);
            for s in PARAMS {
                let checked = match s.kind {
                    Kind::Int { .. } => params.int(s.key).map(|_| ()),
                    Kind::Bool => params.bool(s.key).map(|_| ()),
                    Kind::Bytes => params.bytes(s.key).map(|_| ()),
                    Kind::Enum(_) => params.choice(s.key).map(|_| ()),
                    Kind::Text => Ok(()),
                };
                assert!(checked.is_ok(), "{}: {checked:?}", s.key);
            }
        }
    }

    /// The budget's default is the state backend's own, which the runner leaves to it.
    #[test]
    fn the_documented_budget_is_the_backends_default() {
        let ParamDefault::Value(text) = spec("stream.state.memory.budget").unwrap().default else {
            panic!("the budget's default is a value");
        };
        assert_eq!(parse_bytes(text), Ok(operators_core::state::DEFAULT_MEMORY_BUDGET));
    }

    #[test]
    fn defaults_that_depend_on_other_parameters_follow_them() {
        let mut params = Params::default();
        assert_eq!(params.int("stream.checkpoint.interval").unwrap(), Some(60_000));
        assert_eq!(params.int("source.concurrent.files").unwrap(), None);
        params.set("stream.checkpoint.mode", "exactly_once", Origin::CommandLine);
        params.set("unique.keys", "id", Origin::CommandLine);
        assert_eq!(params.int("stream.checkpoint.interval").unwrap(), Some(30_000));
        assert_eq!(params.int("source.concurrent.files").unwrap(), Some(1));
        // A connector's own default is described, not guessed.
        assert_eq!(params.text("savepoint.dir"), None);
        assert_eq!(spec("savepoint.dir").unwrap().default.describe(), Some("<stream.checkpoint.dir>/savepoints"));
    }

    #[test]
    fn values_out_of_range_are_refused_never_clamped() {
        let mut params = Params::default();
        for (key, value, says) in [
            ("stream.parallelism", "0", "expected at least 1"),
            ("rest.port", "65536", "expected 0 to 65535"),
            ("stream.checkpoint.tolerable.failure.num", "4294967296", "expected 0 to 4294967295"),
            ("job.retry.maxNumberRestartAttempts", "99999999999", "expected 0 to 4294967295"),
            ("sink.file.roll.size.mb", "17592186044416", "expected 1 to 17592186044415"),
            ("unique.data.ttl.in.minute", "0", "expected 1 to"),
            ("stream.parallelism", "-1", "expected a whole number, at least 1"),
        ] {
            params.set(key, value, Origin::CommandLine);
            let e = params.int(key).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value) && e.contains(says), "{e}");
            assert!(params.validate().is_err(), "{key}={value}");
            params.set(key, "", Origin::CommandLine);
        }
        params.set("rest.port", "8081", Origin::CommandLine);
        assert_eq!(params.num::<u16>("rest.port").unwrap(), Some(8081));
        params.set("stream.checkpoint.tolerable.failure.num", "4294967295", Origin::CommandLine);
        assert_eq!(params.num_or_default::<u32>("stream.checkpoint.tolerable.failure.num").unwrap(), u32::MAX);
        assert_eq!(params.num_or_default::<u32>("job.retry.maxNumberRestartAttempts").unwrap(), 4);
    }

    #[test]
    fn help_lists_every_parameter_with_its_default() {
        let h = help();
        for s in PARAMS {
            assert!(h.contains(s.key), "{}", s.key);
            if let Some(d) = s.default.describe() {
                assert!(h.contains(&format!("[{d}]")), "{}", s.key);
            }
        }
    }
}
