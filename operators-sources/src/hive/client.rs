//! A HiveServer2 session: connect with a `jdbc:hive2://` URL, run a statement, fetch its
//! result as Arrow batches. Blocking (a socket per session): the source runs it on a
//! thread of its own.

use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use operators_core::{Error, Result};

use super::columns;
use super::protocol::{CallError, Client, ColumnDesc, Handle, OperationHandle, OperationState, Status};
use super::transport::{Auth, ConnectError, Transport};
use crate::error::SourceError;

/// The setting that holds the URL, named by errors about it.
const URL_KEY: &str = "source.db.url";

/// HiveServer2's port when the URL names none.
pub const DEFAULT_PORT: u16 = 10000;

/// How long a connect or a read may take before the connection counts as dead
/// (`socketTimeout` in the URL, ms).
pub const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and how to connect: a parsed `jdbc:hive2://host:port/db;k=v?hiveconf#hivevar`
/// URL with its user and password.
#[derive(Clone)]
pub struct HiveConfig {
    host: String,
    port: u16,
    database: String,
    auth: Auth,
    /// OpenSession's configuration: `use:database`, `set:hiveconf:k`, `set:hivevar:k`.
    session: Vec<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for HiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl HiveConfig {
    /// Parses a HiveServer2 JDBC URL, `jdbc:hive2://host[:port][/database][;k=v…][?k=v…][#k=v…]`,
    /// as the toolkit's users wrote it (the `jdbc:` prefix may be left out):
    /// - `;` session settings: `user`, `password` (the arguments override them),
    ///   `auth=noSasl` for a `NOSASL` server, `socketTimeout` (ms); `transportMode=http`,
    ///   `ssl=true`, `principal` (Kerberos) and ZooKeeper discovery are refused, as this
    ///   client speaks the binary transport in plain text only; other session settings are
    ///   accepted and ignored with a warning, as Hive's own driver ignores unknown ones;
    /// - `?` Hive configuration (`hive.exec.parallel=true`) and `#` Hive variables, both
    ///   sent when the session opens.
    ///
    /// Errors name `key` (`source.db.url`).
    pub fn parse(
        key: &str,
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> std::result::Result<Self, SourceError> {
        let bad = |message: String| SourceError::config(key, message);
        let trimmed = url.trim();
        let rest = trimmed.strip_prefix("jdbc:").unwrap_or(trimmed);
        let rest = rest.strip_prefix("hive2://").ok_or_else(|| {
            bad(format!("`{}` is not a HiveServer2 URL (jdbc:hive2://host:port/database)", redact(trimmed)))
        })?;
        let (rest, vars) = rest.split_once('#').unwrap_or((rest, ""));
        let (rest, confs) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parts = rest.split(';');
        let authority_and_db = parts.next().unwrap_or_default();
        let (authority, database) = authority_and_db.split_once('/').unwrap_or((authority_and_db, ""));
        if authority.contains('@') {
            // Not echoed: it may hold a password.
            return Err(bad("the URL's host part holds credentials (user:password@host); give them as \
                 source.db.username and source.db.password"
                .into()));
        }
        if authority.contains(',') {
            return Err(bad(
                "several hosts (ZooKeeper service discovery) are not supported: name one HiveServer2".into()
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(format!("port `{p}` is not a number from 1 to 65535")))?,
            ),
            None => (authority, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the URL names no host (jdbc:hive2://host:port/database)".into()));
        }
        let database = if database.is_empty() { "default" } else { database };
        let mut url_user = None;
        let mut url_password = None;
        let mut nosasl = false;
        let mut timeout = DEFAULT_SOCKET_TIMEOUT;
        for setting in parts.filter(|p| !p.trim().is_empty()) {
            let (k, v) = setting.split_once('=').ok_or_else(|| {
                bad(format!("session setting `{}` has no value (;key=value)", redact_setting(setting)))
            })?;
            match k.trim() {
                "user" => url_user = Some(v.to_string()),
                "password" => url_password = Some(v.to_string()),
                "auth" if v.eq_ignore_ascii_case("noSasl") => nosasl = true,
                "auth" => {
                    return Err(bad(format!("auth={v}: only noSasl is a choice here (the default is SASL PLAIN)")));
                }
                "socketTimeout" => {
                    let ms = v
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| bad(format!("socketTimeout={v} is not a positive number of ms")))?;
                    timeout = Duration::from_millis(ms);
                }
                "transportMode" if v.eq_ignore_ascii_case("binary") => {}
                "transportMode" => {
                    return Err(bad(format!("transportMode={v}: only the binary transport is supported")));
                }
                "ssl" if v.eq_ignore_ascii_case("false") => {}
                "ssl" => return Err(bad("ssl=true: TLS to HiveServer2 is not supported".into())),
                "principal" | "kerberosAuthType" | "saslQop" => {
                    return Err(bad(format!("{k}: Kerberos (GSSAPI) is not supported; use a user and password")));
                }
                "serviceDiscoveryMode" | "zooKeeperNamespace" => {
                    return Err(bad(format!("{k}: ZooKeeper service discovery is not supported")));
                }
                other => {
                    tracing::warn!(setting = other, "HiveServer2 URL: session setting ignored");
                }
            }
        }
        let mut session = vec![("use:database".to_string(), database.to_string())];
        for (list, prefix) in [(confs, "set:hiveconf:"), (vars, "set:hivevar:")] {
            for setting in list.split(';').filter(|p| !p.trim().is_empty()) {
                let (k, v) =
                    setting.split_once('=').ok_or_else(|| bad(format!("`{setting}` has no value (key=value)")))?;
                session.push((format!("{prefix}{}", k.trim()), v.to_string()));
            }
        }
        // Plain column names (`id`, not `lyh.id`, HiveServer2's default for `select *`):
        // they become JSON keys and SQL names downstream. A URL may turn it back on.
        let unique_names = "set:hiveconf:hive.resultset.use.unique.column.names";
        if !session.iter().any(|(k, _)| k == unique_names) {
            session.push((unique_names.to_string(), "false".to_string()));
        }
        let user = user.map(str::to_string).or(url_user);
        let password = password.map(str::to_string).or(url_password);
        let auth = if nosasl {
            Auth::NoSasl
        } else {
            // Hive's driver logs in as `anonymous` when no user is given; a NONE server
            // takes any user and password.
            Auth::Plain {
                user: user.unwrap_or_else(|| "anonymous".into()),
                password: password.unwrap_or_else(|| "anonymous".into()),
            }
        };
        Ok(HiveConfig { host: host.to_string(), port, database: database.to_string(), auth, session, timeout })
    }

    /// `host:port/database`, for messages (never the password).
    pub fn display(&self) -> String {
        format!("jdbc:hive2://{}:{}/{}", self.host, self.port, self.database)
    }

    /// The database sessions start in.
    pub fn database(&self) -> &str {
        &self.database
    }
}

/// `url` with any `password=…` setting hidden.
fn redact(url: &str) -> String {
    url.split(';').map(redact_setting).collect::<Vec<_>>().join(";")
}

fn redact_setting(setting: &str) -> String {
    match setting.split_once('=') {
        Some((k, _)) if k.trim().eq_ignore_ascii_case("password") => format!("{k}=***"),
        _ => setting.to_string(),
    }
}

/// An error HiveServer2 answered with: its message, SQLSTATE and code, kept as the source
/// of the job's error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}{}", sql_state.as_ref().map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
pub struct ServerError {
    /// The server's message.
    pub message: String,
    /// The SQLSTATE (`42000` for a syntax error, `42S02` for an unknown table, …).
    pub sql_state: Option<String>,
    /// Hive's error code (`10001` table not found, …).
    pub error_code: Option<i32>,
}

impl ServerError {
    fn from_status(s: &Status, what: &str) -> Self {
        ServerError {
            message: s.message.clone().unwrap_or_else(|| format!("{what} failed with status {}", s.code)),
            sql_state: s.sql_state.clone(),
            error_code: s.error_code,
        }
    }
}

/// An open session.
pub struct HiveSession {
    client: Client,
    handle: Handle,
    addr: String,
    /// The protocol version the server answered with.
    protocol: i32,
}

/// A statement that ran and has a result to fetch.
pub struct HiveQuery {
    op: OperationHandle,
    columns: Vec<ColumnDesc>,
    schema: SchemaRef,
    statement: String,
}

impl HiveQuery {
    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl HiveSession {
    /// Connects and opens a session in the URL's database.
    pub fn open(config: &HiveConfig) -> Result<Self> {
        let addr = config.display();
        let transport =
            Transport::connect(&config.host, config.port, &config.auth, config.timeout).map_err(|e| match e {
                ConnectError::Refused { .. } => Error::config("source.db.password", e.to_string()),
                ConnectError::Io { .. } => Error::external(format!("connecting to {addr}"), true, e),
                ConnectError::Sasl { .. } => Error::external(format!("connecting to {addr}"), false, e),
            })?;
        let mut client = Client::new(transport);
        let (user, password) = match &config.auth {
            Auth::Plain { user, password } => (Some(user.as_str()), Some(password.as_str())),
            Auth::NoSasl => (None, None),
        };
        let (status, handle, protocol) = client
            .open_session(user, password, &config.session)
            .map_err(|e| call_error(&addr, "opening a session", e))?;
        if !status.is_ok() {
            let e = ServerError::from_status(&status, "OpenSession");
            // A database that does not exist is the user's to fix.
            let retryable = false;
            return Err(Error::external(format!("opening a session on {addr}"), retryable, e));
        }
        let handle =
            handle.ok_or_else(|| Error::Internal(format!("{addr} opened a session without a session handle")))?;
        // Columnar row sets came with V6 (Hive 0.13).
        if protocol < 5 {
            let _ = client.close_session(&handle);
            client.shutdown();
            return Err(Error::config(
                URL_KEY,
                format!(
                    "{addr} speaks HiveServer2 protocol V{}; columnar results need V6 (Hive 0.13) or later",
                    protocol + 1
                ),
            ));
        }
        Ok(HiveSession { client, handle, addr, protocol })
    }

    /// The protocol version the server uses (0 is V1).
    pub fn protocol_version(&self) -> i32 {
        self.protocol
    }

    /// Runs `statement` and waits until its result can be fetched (or, for a statement
    /// without one, until it is done). A failed statement's error carries the server's
    /// message and SQLSTATE.
    pub fn execute(&mut self, statement: &str) -> Result<Option<HiveQuery>> {
        self.execute_unless(statement, &|| false)
    }

    /// [`Self::execute`], giving up (and canceling the statement on the server) as soon
    /// as `stop()` says so while the statement runs: a canceled job must not leave a long
    /// query running on the cluster.
    pub fn execute_unless(&mut self, statement: &str, stop: &dyn Fn() -> bool) -> Result<Option<HiveQuery>> {
        let what = format!("running `{statement}` on {}", self.addr);
        let (status, op) =
            self.client.execute(&self.handle, statement).map_err(|e| call_error(&self.addr, &what, e))?;
        if !status.is_ok() {
            return Err(Error::external(what, false, ServerError::from_status(&status, "ExecuteStatement")));
        }
        let op = op.ok_or_else(|| Error::Internal(format!("{what}: the server returned no operation handle")))?;
        let mut wait = Duration::from_millis(2);
        let started = Instant::now();
        loop {
            let (status, state, error) =
                self.client.operation_status(&op).map_err(|e| call_error(&self.addr, &what, e))?;
            if !status.is_ok() {
                return Err(Error::external(what, false, ServerError::from_status(&status, "GetOperationStatus")));
            }
            match state {
                OperationState::Finished => break,
                OperationState::Initialized | OperationState::Running | OperationState::Pending => {
                    if stop() {
                        let _ = self.client.cancel_operation(&op);
                        let _ = self.client.close_operation(&op);
                        return Err(Error::Canceled);
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                OperationState::Error => {
                    let _ = self.client.close_operation(&op);
                    return Err(Error::external(what, false, ServerError::from_status(&error, "the statement")));
                }
                other => {
                    // Canceled, closed or timed out on the server (hive.query.timeout.seconds
                    // would time out again): not worth a restart.
                    let _ = self.client.close_operation(&op);
                    return Err(Error::external(
                        what,
                        false,
                        ServerError {
                            message: format!("the operation ended {other:?} after {:?}", started.elapsed()),
                            sql_state: None,
                            error_code: None,
                        },
                    ));
                }
            }
        }
        if !op.has_result_set {
            let _ = self.client.close_operation(&op);
            return Ok(None);
        }
        let (status, columns) = self.client.result_metadata(&op).map_err(|e| call_error(&self.addr, &what, e))?;
        if !status.is_ok() {
            let _ = self.client.close_operation(&op);
            return Err(Error::external(what, false, ServerError::from_status(&status, "GetResultSetMetadata")));
        }
        let schema = match columns::schema(&columns) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.client.close_operation(&op);
                return Err(e);
            }
        };
        Ok(Some(HiveQuery { op, columns, schema, statement: statement.to_string() }))
    }

    /// Fetches up to `max_rows` rows of `query`; `None` once the result is exhausted (a
    /// row set of no rows).
    pub fn fetch(&mut self, query: &HiveQuery, max_rows: usize) -> Result<Option<RecordBatch>> {
        let what = || format!("fetching the rows of `{}` from {}", query.statement, self.addr);
        let (status, raw) = self.client.fetch(&query.op, max_rows).map_err(|e| call_error(&self.addr, &what(), e))?;
        if !status.is_ok() {
            return Err(Error::external(what(), false, ServerError::from_status(&status, "FetchResults")));
        }
        // The end is a row set whose columns hold no rows; a reply without the columns
        // is not an end, and is refused rather than taken for one.
        let raw = match raw {
            Some(raw) if raw.len() == query.columns.len() => raw,
            other => {
                return Err(Error::external(
                    what(),
                    false,
                    ServerError {
                        message: format!(
                            "the server answered with {} columns for a result of {}",
                            other.map_or(0, |r| r.len()),
                            query.columns.len()
                        ),
                        sql_state: None,
                        error_code: None,
                    },
                ));
            }
        };
        if raw.first().is_none_or(|c| c.values.len() == 0) {
            return Ok(None);
        }
        columns::batch(&query.schema, &query.columns, raw).map(Some)
    }

    /// Frees the statement's resources on the server.
    pub fn close_query(&mut self, query: HiveQuery) -> Result<()> {
        let status =
            self.client.close_operation(&query.op).map_err(|e| call_error(&self.addr, "closing a query", e))?;
        if !status.is_ok() {
            return Err(Error::external("closing a query", false, ServerError::from_status(&status, "CloseOperation")));
        }
        Ok(())
    }

    /// Cancels a running or finished statement (best effort).
    pub fn cancel(&mut self, query: &HiveQuery) {
        let _ = self.client.cancel_operation(&query.op);
    }

    /// Closes the session and the connection.
    pub fn close(mut self) {
        let _ = self.client.close_session(&self.handle);
        self.client.shutdown();
    }

    /// Drops the connection without a word to the server: after a broken connection,
    /// where a `CloseSession` would wait for the socket timeout.
    pub fn abandon(mut self) {
        self.client.shutdown();
    }
}

/// A failed call: the connection (retryable: the server may be back) or the protocol.
fn call_error(addr: &str, what: &str, e: CallError) -> Error {
    let retryable = matches!(&e, CallError::Thrift(thrift::Error::Transport(_)));
    Error::external(format!("{what} ({addr})"), retryable, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolkit_urls_parse_and_bad_ones_are_refused_by_name() {
        let c = HiveConfig::parse(URL_KEY, "jdbc:hive2://10.0.0.5:10000/ods", Some("etl"), Some("pw")).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.database()), ("10.0.0.5", 10000, "ods"));
        assert_eq!(c.auth, Auth::Plain { user: "etl".into(), password: "pw".into() });
        assert_eq!(c.session[0], ("use:database".to_string(), "ods".to_string()));
        assert_eq!(c.session[1], ("set:hiveconf:hive.resultset.use.unique.column.names".into(), "false".into()));
        assert_eq!(c.display(), "jdbc:hive2://10.0.0.5:10000/ods");

        let c = HiveConfig::parse(
            URL_KEY,
            "jdbc:hive2://h/db;user=u;password=p;socketTimeout=5000?hive.exec.parallel=true#day=2024-01-01",
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.auth, Auth::Plain { user: "u".into(), password: "p".into() });
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert!(c.session.contains(&("set:hiveconf:hive.exec.parallel".into(), "true".into())));
        assert!(c.session.contains(&("set:hivevar:day".into(), "2024-01-01".into())));
        let secret = HiveConfig::parse(URL_KEY, "jdbc:hive2://h/db;password=hunter2", Some("u"), None).unwrap();
        assert!(!format!("{secret:?}").contains("hunter2") && !secret.display().contains("hunter2"));

        let c = HiveConfig::parse(URL_KEY, "hive2://h:1/;auth=noSasl", None, None).unwrap();
        assert_eq!((c.auth.clone(), c.database()), (Auth::NoSasl, "default"));

        for (url, needle) in [
            ("jdbc:mysql://h/db", "not a HiveServer2 URL"),
            ("jdbc:hive2://h:0/db", "port `0`"),
            ("jdbc:hive2://h:99999/db", "port `99999`"),
            ("jdbc:hive2://a:1,b:2/db", "ZooKeeper"),
            ("jdbc:hive2://h/db;transportMode=http", "binary"),
            ("jdbc:hive2://h/db;ssl=true", "TLS"),
            ("jdbc:hive2://h/db;principal=hive/_HOST@X", "Kerberos"),
            ("jdbc:hive2:///db", "no host"),
            ("jdbc:hive2://h/db;socketTimeout=0", "socketTimeout"),
            ("jdbc:hive2://u:hunter2@h:10000/db", "credentials"),
            ("jdbc:hive2://u:hunter2@h/db", "credentials"),
        ] {
            let e = HiveConfig::parse(URL_KEY, url, None, None).unwrap_err().to_string();
            assert!(e.contains(URL_KEY) && e.contains(needle), "{url}: {e}");
        }
        for url in
            ["jdbc:mysql://h/db;password=hunter2", "jdbc:hive2://u:hunter2@h:1/db", "jdbc:hive2://u:hunter2@h/db"]
        {
            let e = HiveConfig::parse(URL_KEY, url, None, None).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
