//! Elasticsearch for tests: a server to run against, and helpers that read the index
//! over HTTP with the official client, the same way against the test server and a real
//! cluster.
//!
//! [`TestEs::start`] uses the cluster in `ES_URL` when that variable is set (with
//! `ES_USER`/`ES_PASSWORD` when it needs them), and otherwise starts an [`EsServer`] on
//! loopback. Tests that inject faults or stop nodes use [`TestEs::local`], which always
//! starts the test server.

mod server;

use std::collections::BTreeMap;
use std::time::Duration;

use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use serde_json::{Value, json};
pub use server::{EsFault, EsServer, EsServerConfig};

type Res<T> = Result<T, String>;

/// A cluster for one test: the test server, or `ES_URL`.
pub struct TestEs {
    servers: String,
    credentials: Option<(String, String)>,
    server: Option<EsServer>,
    client: Elasticsearch,
    prefix: String,
}

impl std::fmt::Debug for TestEs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEs").field("servers", &self.servers).field("local", &self.server.is_some()).finish()
    }
}

fn client(url: &str, credentials: Option<&(String, String)>) -> Res<Elasticsearch> {
    let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let url = Url::parse(&with_scheme).map_err(|e| format!("`{url}`: {e}"))?;
    let mut builder =
        TransportBuilder::new(SingleNodeConnectionPool::new(url)).disable_proxy().timeout(Duration::from_secs(30));
    if let Some((u, p)) = credentials {
        builder = builder.auth(Credentials::Basic(u.clone(), p.clone()));
    }
    Ok(Elasticsearch::new(builder.build().map_err(|e| e.to_string())?))
}

impl TestEs {
    /// `ES_URL` when set, else the test server (Elasticsearch 8 behaviour, one node).
    pub async fn start() -> Res<Self> {
        match std::env::var("ES_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let credentials = match (std::env::var("ES_USER"), std::env::var("ES_PASSWORD")) {
                    (Ok(u), Ok(p)) => Some((u, p)),
                    _ => None,
                };
                let first = url.split(',').next().unwrap_or_default().trim().to_string();
                let client = client(&first, credentials.as_ref())?;
                let es = TestEs { servers: url.clone(), credentials, server: None, client, prefix: unique_prefix() };
                es.request(Method::Get, "", None)
                    .await
                    .map_err(|e| format!("ES_URL={url} is set but the cluster does not answer: {e}"))?;
                Ok(es)
            }
            _ => Self::local(EsServerConfig::default()).await,
        }
    }

    /// Always the test server, configured by `config`.
    pub async fn local(config: EsServerConfig) -> Res<Self> {
        let credentials = config.basic.clone();
        let api_key = config.api_key.clone();
        let server = EsServer::start(config).await?;
        let urls = server.urls();
        let first = urls.first().cloned().unwrap_or_default();
        let client = match (&credentials, api_key) {
            (None, Some(key)) => {
                let url = Url::parse(&first).map_err(|e| e.to_string())?;
                let (id, secret) = key.split_once(':').unwrap_or((key.as_str(), ""));
                let t = TransportBuilder::new(SingleNodeConnectionPool::new(url))
                    .disable_proxy()
                    .auth(Credentials::ApiKey(id.to_string(), secret.to_string()))
                    .build()
                    .map_err(|e| e.to_string())?;
                Elasticsearch::new(t)
            }
            _ => client(&first, credentials.as_ref())?,
        };
        Ok(TestEs { servers: urls.join(","), credentials, server: Some(server), client, prefix: unique_prefix() })
    }

    /// The servers as the sink's `sink.es.server` takes them.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// Basic-auth credentials the cluster wants, if any.
    pub fn credentials(&self) -> Option<&(String, String)> {
        self.credentials.as_ref()
    }

    /// The test server, when this is one (fault injection, stopping nodes).
    pub fn server(&self) -> Option<&EsServer> {
        self.server.as_ref()
    }

    /// The test server, or an error saying the test needs it.
    pub fn require_server(&self) -> Res<&EsServer> {
        self.server.as_ref().ok_or_else(|| "this test injects faults and needs the test server (unset ES_URL)".into())
    }

    /// A unique index name for `name`, so tests do not see each other's documents.
    pub fn index(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Res<(u16, Value)> {
        let body = body.map(|b| b.to_string());
        let response = self
            .client
            .send(method, path, HeaderMap::new(), None::<&()>, body.as_deref(), None)
            .await
            .map_err(|e| format!("{method:?} /{path}: {e}"))?;
        let status = response.status_code().as_u16();
        let text = response.text().await.map_err(|e| format!("{method:?} /{path}: {e}"))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Creates `index` with the fields of `long_fields` mapped as `long`.
    pub async fn create_index(&self, index: &str, long_fields: &[&str]) -> Res<()> {
        let properties: serde_json::Map<String, Value> =
            long_fields.iter().map(|f| (f.to_string(), json!({"type": "long"}))).collect();
        let (status, body) =
            self.request(Method::Put, index, Some(json!({"mappings": {"properties": properties}}))).await?;
        if status >= 300 {
            return Err(format!("creating index {index}: HTTP {status}: {body}"));
        }
        Ok(())
    }

    /// Writes one document (refreshing), to seed an index.
    pub async fn put(&self, index: &str, id: &str, doc: Value) -> Res<()> {
        let (status, body) = self.request(Method::Put, &format!("{index}/_doc/{id}?refresh=true"), Some(doc)).await?;
        if status >= 300 {
            return Err(format!("PUT {index}/_doc/{id}: HTTP {status}: {body}"));
        }
        Ok(())
    }

    /// One document's source, `None` when it does not exist.
    pub async fn get(&self, index: &str, id: &str) -> Res<Option<Value>> {
        let (status, body) = self.request(Method::Get, &format!("{index}/_doc/{id}"), None).await?;
        match status {
            200 => Ok(Some(body["_source"].clone())),
            404 => Ok(None),
            _ => Err(format!("GET {index}/_doc/{id}: HTTP {status}: {body}")),
        }
    }

    /// Every document of `index` (at most 10 000), id → source, after a refresh.
    pub async fn documents(&self, index: &str) -> Res<BTreeMap<String, Value>> {
        self.request(Method::Post, &format!("{index}/_refresh"), None).await?;
        let (status, body) = self
            .request(
                Method::Post,
                &format!("{index}/_search"),
                Some(json!({"size": 10000, "query": {"match_all": {}}})),
            )
            .await?;
        if status == 404 {
            return Ok(BTreeMap::new());
        }
        if status >= 300 {
            return Err(format!("searching {index}: HTTP {status}: {body}"));
        }
        let total = body["hits"]["total"]["value"].as_u64().unwrap_or(0);
        let hits = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if total as usize > hits.len() {
            return Err(format!("{index} holds {total} documents, more than this helper reads"));
        }
        Ok(hits.into_iter().filter_map(|h| Some((h["_id"].as_str()?.to_string(), h["_source"].clone()))).collect())
    }

    /// Number of documents in `index`, after a refresh.
    pub async fn count(&self, index: &str) -> Res<u64> {
        self.request(Method::Post, &format!("{index}/_refresh"), None).await?;
        let (status, body) = self.request(Method::Post, &format!("{index}/_count"), None).await?;
        match status {
            200 => Ok(body["count"].as_u64().unwrap_or(0)),
            404 => Ok(0),
            _ => Err(format!("counting {index}: HTTP {status}: {body}")),
        }
    }

    /// Deletes `index` (tests clean up after themselves on a real cluster).
    pub async fn delete_index(&self, index: &str) -> Res<()> {
        self.request(Method::Delete, index, None).await.map(|_| ())
    }
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("ops-test-{}-{nanos}", std::process::id())
}
