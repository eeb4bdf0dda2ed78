//! Databases ("JDBC" in the toolkit): PostgreSQL, MySQL/MariaDB and SQLite over sqlx.
//!
//! [`DbConfig`] takes the URL forms users have (`postgres://`, `mysql://`, `sqlite:`, and
//! the toolkit's `jdbc:postgresql://…`, `jdbc:mysql://…`), keeps the password in a
//! [`Secret`] that never prints, and connects. [`ColumnKind`] maps the database's column
//! types to Arrow. The database source and sink both connect through it.

#[cfg(feature = "test-util")]
pub mod test_util;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use arrow::datatypes::{DataType, TimeUnit};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::ClientError;

/// A password: the library's one credential type, re-exported where database settings are.
pub use operators_core::secret::Secret;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

/// How to reach a database; `Debug` and error messages never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbConfig {
    kind: DbKind,
    /// The driver URL, without credentials.
    url: String,
    username: Option<String>,
    password: Option<Secret>,
    /// PostgreSQL `currentSchema` from a JDBC URL.
    search_path: Option<String>,
    max_connections: u32,
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// JDBC parameters the drivers here do not take (they are dropped, not passed on).
const JDBC_ONLY_PARAMS: &[&str] = &[
    "useSSL",
    "useUnicode",
    "characterEncoding",
    "serverTimezone",
    "autoReconnect",
    "zeroDateTimeBehavior",
    "rewriteBatchedStatements",
    "allowPublicKeyRetrieval",
    "useLegacyDatetimeCode",
    "tinyInt1isBit",
    "stringtype",
    "prepareThreshold",
];

impl DbConfig {
    /// Parses a database URL. `key` names the setting in errors (`source.db.url`).
    /// Credentials in the URL are moved out of it into the config; `username` and
    /// `password`, when given, win over them.
    pub fn parse(key: &str, url: &str, username: Option<&str>, password: Option<&str>) -> Result<Self, ClientError> {
        let raw = url.trim();
        let raw = raw.strip_prefix("jdbc:").unwrap_or(raw);
        let lower = raw.to_ascii_lowercase();
        if lower.starts_with("hive2:") || lower.starts_with("hive:") {
            return Err(ClientError::config(
                key,
                "Hive is not supported (no HiveServer2 client exists in Rust); supported: postgresql, mysql, mariadb, sqlite",
            ));
        }
        if let Some(path) = lower.strip_prefix("sqlite:").map(|_| &raw["sqlite:".len()..]) {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                return Err(ClientError::config(key, "a sqlite URL needs a file: sqlite:/path/to/db"));
            }
            return Ok(Self {
                kind: DbKind::Sqlite,
                url: format!("sqlite:{path}"),
                username: None,
                password: None,
                search_path: None,
                max_connections: 4,
            });
        }
        let mut parsed = url::Url::parse(raw)
            .map_err(|e| ClientError::config(key, format!("`{}` is not a database URL: {e}", redact(raw))))?;
        let kind = match parsed.scheme() {
            "postgres" | "postgresql" => DbKind::Postgres,
            "mysql" | "mariadb" => DbKind::MySql,
            other => {
                return Err(ClientError::config(
                    key,
                    format!("unsupported database `{other}`; supported: postgresql, mysql, mariadb, sqlite"),
                ));
            }
        };
        let mut user = (!parsed.username().is_empty()).then(|| percent_decode(parsed.username()));
        let mut pass = parsed.password().map(percent_decode);
        let mut search_path = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "user" => user = Some(v.into_owned()),
                "password" => pass = Some(v.into_owned()),
                "currentSchema" => search_path = Some(v.into_owned()),
                k if JDBC_ONLY_PARAMS.contains(&k) => {}
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        if kind == DbKind::MySql {
            let _ = parsed.set_scheme("mysql");
        }
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        Ok(Self {
            kind,
            url: parsed.to_string(),
            username: username.map(str::to_string).or(user),
            password: password.map(Secret::new).or(pass.map(Secret::new)),
            search_path,
            max_connections: 4,
        })
    }

    /// Which database this is.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The driver URL, without user or password (for a client of its own, as the
    /// change-data-capture source's binlog reader).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The user, from the URL or given apart.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, from the URL or given apart.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The URL with user but without password, for messages.
    pub fn display(&self) -> String {
        let shown = match (&self.username, self.kind) {
            (Some(u), DbKind::Postgres | DbKind::MySql) => self.url.replacen("://", &format!("://{u}@"), 1),
            _ => self.url.clone(),
        };
        // The password left the URL when it was parsed; a query parameter such as
        // `sslpassword` may still hold one.
        redact(&shown)
    }

    /// Sets the pool size (default 4).
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    fn connect_error(&self, key: &str, e: sqlx::Error) -> ClientError {
        ClientError::config(key, format!("cannot connect to {}: {}", self.display(), describe_sqlx(&e)))
    }

    /// Opens a connection pool; fails with a message naming the database (never the
    /// password) when the server is down, the credentials are wrong or the database
    /// does not exist.
    pub async fn connect(&self, key: &str) -> Result<DbPool, ClientError> {
        let acquire = Duration::from_secs(10);
        match self.kind {
            DbKind::Postgres => {
                let mut opts = PgConnectOptions::from_str(&self.url).map_err(|e| self.connect_error(key, e))?;
                if let Some(u) = &self.username {
                    opts = opts.username(u);
                }
                if let Some(p) = &self.password {
                    opts = opts.password(p.expose());
                }
                if let Some(sp) = &self.search_path {
                    opts = opts.options([("search_path", sp.as_str())]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(acquire)
                    .connect_with(opts)
                    .await
                    .map_err(|e| self.connect_error(key, e))?;
                Ok(DbPool::Postgres(pool))
            }
            DbKind::MySql => {
                let mut opts = MySqlConnectOptions::from_str(&self.url).map_err(|e| self.connect_error(key, e))?;
                if let Some(u) = &self.username {
                    opts = opts.username(u);
                }
                if let Some(p) = &self.password {
                    opts = opts.password(p.expose());
                }
                let pool = MySqlPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(acquire)
                    .connect_with(opts)
                    .await
                    .map_err(|e| self.connect_error(key, e))?;
                Ok(DbPool::MySql(pool))
            }
            DbKind::Sqlite => {
                let opts = SqliteConnectOptions::from_str(&self.url)
                    .map_err(|e| self.connect_error(key, e))?
                    .create_if_missing(false);
                let pool = SqlitePoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(acquire)
                    .connect_with(opts)
                    .await
                    .map_err(|e| self.connect_error(key, e))?;
                Ok(DbPool::Sqlite(pool))
            }
        }
    }
}

/// User and password of a URL as written: `%40` is `@`, and `+` stays `+` (it means a
/// space only in query strings).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A URL with any password replaced by `****`: in its user info or in a query parameter
/// (`?password=`), also when the URL does not parse (the error that says so must not show
/// the password either).
pub fn redact(url: &str) -> String {
    operators_core::secret::redact_url(url)
}

/// A driver error as text: the database's own message where there is one.
pub fn describe_sqlx(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// A driver error as the cause of the error that reports it: it reads as the database's
/// own message ([`describe_sqlx`]) and keeps sqlx's error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_sqlx(.0))]
pub struct DriverError(#[source] pub sqlx::Error);

impl DriverError {
    /// Whether retrying may succeed ([`is_transient`]).
    pub fn is_transient(&self) -> bool {
        is_transient(&self.0)
    }
}

/// Whether retrying the operation may succeed (lost connections, deadlocks, timeouts).
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: serialization failure, deadlock, connection exceptions.
            // MySQL: deadlock (1213), lock wait timeout (1205), lost connection (2013).
            matches!(code.as_ref(), "40001" | "40P01" | "1213" | "1205" | "2013" | "2006") || code.starts_with("08")
        }
        _ => false,
    }
}

/// A connection pool of one of the supported databases.
#[derive(Debug, Clone)]
pub enum DbPool {
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL or MariaDB.
    MySql(MySqlPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

impl DbPool {
    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            DbPool::Postgres(p) => p.close().await,
            DbPool::MySql(p) => p.close().await,
            DbPool::Sqlite(p) => p.close().await,
        }
    }

    /// Quotes an identifier for this database (`"x"`, `` `x` ``).
    pub fn quote_ident(&self, ident: &str) -> String {
        quote_ident(self.kind(), ident)
    }

    /// Which database this is.
    pub fn kind(&self) -> DbKind {
        match self {
            DbPool::Postgres(_) => DbKind::Postgres,
            DbPool::MySql(_) => DbKind::MySql,
            DbPool::Sqlite(_) => DbKind::Sqlite,
        }
    }
}

/// Quotes an identifier, keeping `schema.table` as two parts.
pub fn quote_ident(kind: DbKind, ident: &str) -> String {
    let q = if kind == DbKind::MySql { '`' } else { '"' };
    ident
        .split('.')
        .map(|part| {
            let doubled = part.replace(q, &format!("{q}{q}"));
            format!("{q}{doubled}{q}")
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// How a database column is read and which Arrow type it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Boolean.
    Bool,
    /// 8-bit integer (MySQL TINYINT).
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// Unsigned 8-bit (MySQL).
    U8,
    /// Unsigned 16-bit (MySQL).
    U16,
    /// Unsigned 32-bit (MySQL).
    U32,
    /// Unsigned 64-bit (MySQL).
    U64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Exact decimal, read as Float64 as the toolkit did (Decimal → Double).
    Decimal,
    /// Text.
    Text,
    /// JSON, as its text.
    Json,
    /// UUID, as its text.
    Uuid,
    /// Bytes.
    Bytes,
    /// Date.
    Date,
    /// Time of day, as `HH:MM:SS[.ffffff]` text.
    Time,
    /// Timestamp without time zone.
    Timestamp,
    /// Timestamp with time zone (as UTC).
    TimestampTz,
    /// SQLite value without a declared type: read as text.
    Dynamic,
}

impl ColumnKind {
    /// Maps a driver's type name; `None` for types the source cannot read.
    pub fn from_type_name(kind: DbKind, name: &str) -> Option<Self> {
        let n = name.to_ascii_uppercase();
        Some(match kind {
            DbKind::Postgres => match n.as_str() {
                "BOOL" => ColumnKind::Bool,
                "INT2" | "SMALLINT" => ColumnKind::I16,
                "INT4" | "INT" | "INTEGER" => ColumnKind::I32,
                "INT8" | "BIGINT" => ColumnKind::I64,
                "FLOAT4" | "REAL" => ColumnKind::F32,
                "FLOAT8" | "DOUBLE PRECISION" => ColumnKind::F64,
                "NUMERIC" => ColumnKind::Decimal,
                "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" | "CITEXT" => ColumnKind::Text,
                "JSON" | "JSONB" => ColumnKind::Json,
                "UUID" => ColumnKind::Uuid,
                "BYTEA" => ColumnKind::Bytes,
                "DATE" => ColumnKind::Date,
                "TIME" => ColumnKind::Time,
                "TIMESTAMP" => ColumnKind::Timestamp,
                "TIMESTAMPTZ" => ColumnKind::TimestampTz,
                _ => return None,
            },
            DbKind::MySql => match n.as_str() {
                "BOOLEAN" => ColumnKind::Bool,
                "TINYINT" => ColumnKind::I8,
                "SMALLINT" | "YEAR" => ColumnKind::I16,
                "INT" | "MEDIUMINT" => ColumnKind::I32,
                "BIGINT" => ColumnKind::I64,
                "TINYINT UNSIGNED" => ColumnKind::U8,
                "SMALLINT UNSIGNED" => ColumnKind::U16,
                "INT UNSIGNED" | "MEDIUMINT UNSIGNED" => ColumnKind::U32,
                "BIGINT UNSIGNED" => ColumnKind::U64,
                "FLOAT" => ColumnKind::F32,
                "DOUBLE" => ColumnKind::F64,
                "DECIMAL" => ColumnKind::Decimal,
                "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
                    ColumnKind::Text
                }
                "JSON" => ColumnKind::Json,
                "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => ColumnKind::Bytes,
                "DATE" => ColumnKind::Date,
                "TIME" => ColumnKind::Time,
                "DATETIME" => ColumnKind::Timestamp,
                "TIMESTAMP" => ColumnKind::TimestampTz,
                _ => return None,
            },
            DbKind::Sqlite => match n.as_str() {
                "BOOLEAN" => ColumnKind::Bool,
                "INTEGER" | "INT8" | "BIGINT" => ColumnKind::I64,
                "REAL" | "FLOAT" | "DOUBLE" => ColumnKind::F64,
                "NUMERIC" => ColumnKind::Decimal,
                "TEXT" => ColumnKind::Text,
                "BLOB" => ColumnKind::Bytes,
                "DATE" => ColumnKind::Date,
                "TIME" => ColumnKind::Time,
                "DATETIME" => ColumnKind::Timestamp,
                "NULL" => ColumnKind::Dynamic,
                _ => return None,
            },
        })
    }

    /// The Arrow type of the column.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Bool => DataType::Boolean,
            ColumnKind::I8 => DataType::Int8,
            ColumnKind::I16 => DataType::Int16,
            ColumnKind::I32 => DataType::Int32,
            ColumnKind::I64 => DataType::Int64,
            ColumnKind::U8 => DataType::UInt8,
            ColumnKind::U16 => DataType::UInt16,
            ColumnKind::U32 => DataType::UInt32,
            ColumnKind::U64 => DataType::UInt64,
            ColumnKind::F32 => DataType::Float32,
            ColumnKind::F64 | ColumnKind::Decimal => DataType::Float64,
            ColumnKind::Text | ColumnKind::Json | ColumnKind::Uuid | ColumnKind::Time | ColumnKind::Dynamic => {
                DataType::Utf8
            }
            ColumnKind::Bytes => DataType::Binary,
            ColumnKind::Date => DataType::Date32,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_and_credentials() {
        let c = DbConfig::parse(
            "source.db.url",
            "jdbc:postgresql://db.example:5432/sales?currentSchema=s1&user=u&password=p%40ss&sslmode=disable",
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.kind(), DbKind::Postgres);
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(c.search_path.as_deref(), Some("s1"));
        assert!(
            !c.url.contains("p@ss") && !c.url.contains("password") && c.url.contains("sslmode=disable"),
            "{}",
            c.url
        );
        let m = DbConfig::parse(
            "source.db.url",
            "jdbc:mysql://root:secret@127.0.0.1:3306/test?useSSL=false&serverTimezone=UTC",
            Some("other"),
            None,
        )
        .unwrap();
        assert_eq!(m.kind(), DbKind::MySql);
        assert_eq!(m.username.as_deref(), Some("other"));
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("secret"));
        assert_eq!(m.url, "mysql://127.0.0.1:3306/test");
        let s = DbConfig::parse("source.db.url", "sqlite:/tmp/x.db", None, None).unwrap();
        assert_eq!(s.kind(), DbKind::Sqlite);
        assert_eq!(DbConfig::parse("k", "jdbc:mariadb://h/db", None, None).unwrap().kind(), DbKind::MySql);
    }

    #[test]
    fn user_info_is_decoded_as_user_info() {
        let c = DbConfig::parse("source.db.url", "postgres://a%2Bb:p+q%40r@h/db", None, None).unwrap();
        assert_eq!(c.username.as_deref(), Some("a+b"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p+q@r"));
    }

    #[test]
    fn passwords_never_print() {
        let c = DbConfig::parse("source.db.url", "postgres://u:hunter2@h/db", None, Some("s3cret")).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("s3cret"), "{debug}");
        assert!(!c.display().contains("s3cret"));
        assert_eq!(redact("postgres://u:hunter2@h/db"), "postgres://u:****@h/db");
        let err = DbConfig::parse("source.db.url", "oracle://u:hunter2@h/db", None, None).unwrap_err().to_string();
        assert!(err.contains("oracle") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn hive_is_refused_with_the_supported_list() {
        let err = DbConfig::parse("source.db.url", "jdbc:hive2://h:10000/db", None, None).unwrap_err().to_string();
        assert!(err.contains("Hive is not supported") && err.contains("postgresql, mysql, mariadb, sqlite"), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(DbKind::Postgres, "s.t"), "\"s\".\"t\"");
        assert_eq!(quote_ident(DbKind::MySql, "we`ird"), "`we``ird`");
    }
}
