//! Elasticsearch for tests: the cluster to run against, and helpers that read the index
//! over HTTP with the official client, the same way against a real cluster and the test
//! server.
//!
//! [`TestEs::start`] uses the real cluster in `ES_URL` (default the OpenSearch node of
//! `testing/services/opensearch.sh` on `http://127.0.0.1:9200`), with basic auth
//! `ES_USER`/`ES_PASSWORD` (default that node's `operators` / `operators-test-pw`; a
//! cluster without security ignores them) and the API key `ES_API_KEY`. A cluster that
//! does not answer fails the test with the command that starts it.
//!
//! [`TestEs::local`] starts an [`EsServer`] on loopback, for what a real server cannot be
//! made to do: answer 429 or 503 on chosen items, drop the connection after applying a
//! bulk, answer slowly, lose nodes of a three-node cluster, or speak Elasticsearch 6.

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

/// The cluster when `ES_URL` is not set: the project's OpenSearch node.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9200";
/// Basic-auth user when `ES_USER` is not set (the project's OpenSearch node).
pub const DEFAULT_USER: &str = "operators";
/// Password when `ES_PASSWORD` is not set.
pub const DEFAULT_PASSWORD: &str = "operators-test-pw";
/// API key (`id:secret`) when `ES_API_KEY` is not set.
pub const DEFAULT_API_KEY: &str = "operators-key:operators-key-secret";

fn env_or(variable: &str, default: &str) -> String {
    std::env::var(variable).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_string())
}

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
    /// The real cluster in `ES_URL` (default [`DEFAULT_URL`]), or an error naming the
    /// command that starts it when it does not answer.
    pub async fn start() -> Res<Self> {
        let url = env_or("ES_URL", DEFAULT_URL);
        let credentials = Some((env_or("ES_USER", DEFAULT_USER), env_or("ES_PASSWORD", DEFAULT_PASSWORD)));
        let first = url.split(',').next().unwrap_or_default().trim().to_string();
        let client = client(&first, credentials.as_ref())?;
        let es = TestEs { servers: url.clone(), credentials, server: None, client, prefix: unique_prefix() };
        match es.request(Method::Get, "", None).await {
            Ok((200, _)) => Ok(es),
            Ok((status, body)) => Err(format!(
                "the cluster at {url} (ES_URL) answers GET / with HTTP {status}: {body} (wrong ES_USER/ES_PASSWORD?)"
            )),
            // A missing service is a failed test, never a skipped one.
            Err(e) => Err(format!(
                "no Elasticsearch/OpenSearch answers at {url} (ES_URL): {e}. Start the project's node with \
                 `testing/services/opensearch.sh start` (or point ES_URL at a running cluster)"
            )),
        }
    }

    /// The API key (`id:secret`) the cluster of [`TestEs::start`] accepts: `ES_API_KEY`,
    /// default [`DEFAULT_API_KEY`].
    pub fn api_key(&self) -> String {
        env_or("ES_API_KEY", DEFAULT_API_KEY)
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
        self.server.as_ref().ok_or_else(|| "this test injects faults and needs the test server (TestEs::local)".into())
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

    /// Every document of `index`, id → source, after a refresh (read with a scroll, so
    /// any number).
    pub async fn documents(&self, index: &str) -> Res<BTreeMap<String, Value>> {
        self.request(Method::Post, &format!("{index}/_refresh"), None).await?;
        let (status, mut body) = self
            .request(
                Method::Post,
                &format!("{index}/_search?scroll=1m"),
                Some(json!({"size": 5000, "query": {"match_all": {}}, "sort": ["_doc"]})),
            )
            .await?;
        if status == 404 {
            return Ok(BTreeMap::new());
        }
        if status >= 300 {
            return Err(format!("searching {index}: HTTP {status}: {body}"));
        }
        let total = body["hits"]["total"]["value"].as_u64().unwrap_or(0);
        let mut out = BTreeMap::new();
        loop {
            let hits = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            for h in hits {
                if let Some(id) = h["_id"].as_str() {
                    out.insert(id.to_string(), h["_source"].clone());
                }
            }
            let Some(scroll) = body["_scroll_id"].as_str().map(str::to_string) else { break };
            let (status, next) = self
                .request(Method::Post, "_search/scroll", Some(json!({"scroll": "1m", "scroll_id": scroll})))
                .await?;
            if status >= 300 {
                return Err(format!("scrolling {index}: HTTP {status}: {next}"));
            }
            body = next;
        }
        if let Some(scroll) = body["_scroll_id"].as_str() {
            let _ = self.request(Method::Delete, "_search/scroll", Some(json!({"scroll_id": [scroll]}))).await;
        }
        if (out.len() as u64) < total {
            return Err(format!("{index}: read {} of {total} documents", out.len()));
        }
        Ok(out)
    }

    /// Number of documents in `index`, after a refresh.
    pub async fn count(&self, index: &str) -> Res<u64> {
        // An index the sink has just created answers 503 until its shard has started.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.request(Method::Post, &format!("{index}/_refresh"), None).await?;
            let (status, body) = self.request(Method::Post, &format!("{index}/_count"), None).await?;
            match status {
                200 => return Ok(body["count"].as_u64().unwrap_or(0)),
                404 => return Ok(0),
                503 if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => return Err(format!("counting {index}: HTTP {status}: {body}")),
            }
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
