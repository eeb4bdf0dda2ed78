//! The settings: sync mode, backoff, and where the cluster is and how to reach it.

use std::time::Duration;

use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use operators_core::secret::Secret;
use operators_core::{Error, Result};

use super::service::Node;

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

    pub(super) fn writes_version(self) -> bool {
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

    pub(super) fn max_retries(&self) -> u32 {
        if self.enabled { self.retries } else { 0 }
    }

    /// Whether retry number `attempt` (1-based) is one too many: the last one allowed is
    /// number [`Backoff::max_retries`]; the next fails the request or the flush.
    pub(super) fn exhausted(&self, attempt: u32) -> bool {
        attempt > self.max_retries()
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
    pub(super) key: String,
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
            // Credentials leave the URL, whether a user, a password or both are given:
            // `https://:pw@host` must not keep its password in the servers' URLs.
            if !url.username().is_empty() || url.password().is_some() {
                let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                let user = decode(url.username());
                let password = decode(url.password().unwrap_or_default());
                if let Some(Auth::Basic { user: u, password: p }) = &auth
                    && (*u != user || p.expose() != password)
                {
                    return Err(Error::config(
                        key,
                        "the servers' URLs give different credentials; one user applies to every server \
                         (sink.es.username and sink.es.password)",
                    ));
                }
                auth = Some(Auth::Basic { user, password: Secret::new(password) });
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

    /// User and password of basic authentication, for tests.
    #[cfg(test)]
    pub(super) fn basic_auth(&self) -> Option<(&str, &str)> {
        match &self.auth {
            Some(Auth::Basic { user, password }) => Some((user, password.expose())),
            _ => None,
        }
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
    pub(super) fn clients(&self) -> Result<Vec<Node>> {
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
pub(super) fn redact(text: &str) -> String {
    operators_core::secret::redact_url(text)
}
