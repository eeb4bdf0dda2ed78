//! An HTTP server speaking the subset of Elasticsearch's REST API the sink uses, with
//! Elasticsearch's documented semantics, shared by several "nodes" (listeners), with
//! authentication and injectable faults.

// A test server, not job code: its tasks belong to no job, so `operators_core::spawn`'s
// span-keeping has nothing to keep (and this crate does not depend on the core).
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// Settings of a [`EsServer`].
#[derive(Debug, Clone)]
pub struct EsServerConfig {
    /// Major version to behave as: 6 needs `_type` in bulk actions, 8 refuses it, 7
    /// accepts both.
    pub major: u32,
    /// Accepted basic-auth user and password; with neither this nor `api_key`, no
    /// authentication is asked.
    pub basic: Option<(String, String)>,
    /// Accepted API key, as `id:secret`.
    pub api_key: Option<String>,
    /// Number of nodes (listeners on their own ports) sharing the data.
    pub nodes: usize,
}

impl Default for EsServerConfig {
    fn default() -> Self {
        EsServerConfig { major: 8, basic: None, api_key: None, nodes: 1 }
    }
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsFault {
    /// The next `count` bulk items are answered with `status` and error `kind` (e.g. 429
    /// `es_rejected_execution_exception`, 409 `version_conflict_engine_exception`)
    /// without being applied.
    Items {
        /// HTTP status of the item.
        status: u16,
        /// Elasticsearch's error type.
        kind: String,
        /// How many items.
        count: usize,
    },
    /// The next `count` bulk items are answered with an empty object (no result under an
    /// action's name, as a broken proxy may send) without being applied.
    EmptyItems {
        /// How many items.
        count: usize,
    },
    /// The next request is answered with HTTP 503 as a whole, nothing applied.
    Unavailable,
    /// The next `_bulk` request is applied, then the connection is closed without an
    /// answer (the client cannot know it was applied).
    DropConnection,
    /// The next request waits this long before being handled.
    Slow(Duration),
}

impl EsFault {
    /// `count` items rejected with 429, as a busy cluster does.
    pub fn too_many_requests(count: usize) -> Self {
        EsFault::Items { status: 429, kind: "es_rejected_execution_exception".into(), count }
    }

    /// `count` items failing with a version conflict, as a concurrent writer causes.
    pub fn conflicts(count: usize) -> Self {
        EsFault::Items { status: 409, kind: "version_conflict_engine_exception".into(), count }
    }
}

#[derive(Debug, Clone)]
struct Doc {
    source: Value,
    version: i64,
}

#[derive(Default)]
struct Store {
    indices: BTreeMap<String, BTreeMap<String, Doc>>,
    /// index → fields mapped as `long`: other values are refused, as ES refuses them.
    long_fields: BTreeMap<String, Vec<String>>,
    faults: VecDeque<EsFault>,
    bulk_requests: u64,
    requests: u64,
}

struct Shared {
    config: EsServerConfig,
    store: Mutex<Store>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct NodeHandle {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    up: bool,
}

/// The server: `config.nodes` listeners on loopback over one store. Stops on drop.
pub struct EsServer {
    shared: Arc<Shared>,
    nodes: Mutex<Vec<NodeHandle>>,
}

impl std::fmt::Debug for EsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsServer").field("urls", &self.urls()).finish()
    }
}

type Res<T> = Result<T, String>;

impl EsServer {
    /// Starts the nodes on loopback ports. Must be called inside a tokio runtime.
    pub async fn start(config: EsServerConfig) -> Res<Self> {
        let shared = Arc::new(Shared { config: config.clone(), store: Mutex::new(Store::default()) });
        let mut nodes = Vec::new();
        for _ in 0..config.nodes.max(1) {
            let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let tasks = Arc::new(Mutex::new(Vec::new()));
            let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), Arc::clone(&tasks)));
            tasks.lock().unwrap_or_else(PoisonError::into_inner).push(accept.abort_handle());
            nodes.push(NodeHandle { addr, tasks, up: true });
        }
        Ok(EsServer { shared, nodes: Mutex::new(nodes) })
    }

    fn nodes(&self) -> MutexGuard<'_, Vec<NodeHandle>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:port` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes().iter().map(|n| format!("http://{}", n.addr)).collect()
    }

    /// Takes node `i` down: its port refuses connections, open connections are cut.
    pub fn stop_node(&self, i: usize) {
        let mut nodes = self.nodes();
        if let Some(n) = nodes.get_mut(i) {
            for t in n.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
                t.abort();
            }
            n.up = false;
        }
    }

    /// Brings node `i` back on its port.
    pub async fn start_node(&self, i: usize) -> Res<()> {
        let Some(addr) = self.nodes().get(i).filter(|n| !n.up).map(|n| n.addr) else { return Ok(()) };
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("rebind {addr}: {e}"))?;
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&self.shared), Arc::clone(&tasks)));
        tasks.lock().unwrap_or_else(PoisonError::into_inner).push(accept.abort_handle());
        if let Some(n) = self.nodes().get_mut(i) {
            n.tasks = tasks;
            n.up = true;
        }
        Ok(())
    }

    /// Queues faults; they apply in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = EsFault>) {
        self.shared.store().faults.extend(faults);
    }

    /// Faults not yet used.
    pub fn pending_faults(&self) -> usize {
        self.shared.store().faults.len()
    }

    /// `_bulk` requests handled (applied), and all requests handled.
    pub fn request_counts(&self) -> (u64, u64) {
        let s = self.shared.store();
        (s.bulk_requests, s.requests)
    }

    /// The documents of `index`: id → (source, version).
    pub fn documents(&self, index: &str) -> BTreeMap<String, (Value, i64)> {
        self.shared
            .store()
            .indices
            .get(index)
            .map(|docs| docs.iter().map(|(id, d)| (id.clone(), (d.source.clone(), d.version))).collect())
            .unwrap_or_default()
    }
}

impl Drop for EsServer {
    fn drop(&mut self) {
        // Not in the loop header: the guard would live through the loop.
        let n = self.nodes().len();
        for i in 0..n {
            self.stop_node(i);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tasks: Arc<Mutex<Vec<AbortHandle>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = Arc::clone(&shared);
        let conn = tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { handle(shared, req).await }
            });
            // An error here is a dropped connection, on purpose or by the client.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        let mut t = tasks.lock().unwrap_or_else(PoisonError::into_inner);
        t.retain(|h| !h.is_finished());
        t.push(conn.abort_handle());
    }
}

/// Closing the connection without an answer is done by failing the service.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, kind: &str, reason: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": {"type": kind, "reason": reason}, "status": status.as_u16()}))
}

fn authorized(config: &EsServerConfig, req: &Request<Incoming>) -> bool {
    if config.basic.is_none() && config.api_key.is_none() {
        return true;
    }
    let Some(header) = req.headers().get(hyper::header::AUTHORIZATION).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let decode = |s: &str| {
        base64::engine::general_purpose::STANDARD.decode(s.trim()).ok().and_then(|b| String::from_utf8(b).ok())
    };
    if let (Some(b), Some((user, password))) = (header.strip_prefix("Basic "), &config.basic) {
        return decode(b).is_some_and(|s| s == format!("{user}:{password}"));
    }
    if let (Some(k), Some(key)) = (header.strip_prefix("ApiKey "), &config.api_key) {
        return decode(k).is_some_and(|s| &s == key);
    }
    false
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    if !authorized(&shared.config, &req) {
        let mut r =
            error(StatusCode::UNAUTHORIZED, "security_exception", "missing or wrong authentication credentials");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"security\""),
        );
        return Ok(r);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_bulk = segments.last() == Some(&"_bulk");
    // Request-level faults.
    let fault = {
        let mut store = shared.store();
        store.requests += 1;
        match store.faults.front() {
            Some(EsFault::Unavailable) | Some(EsFault::Slow(_)) => store.faults.pop_front(),
            Some(EsFault::DropConnection) if is_bulk => store.faults.pop_front(),
            _ => None,
        }
    };
    let mut drop_after = false;
    match fault {
        Some(EsFault::Unavailable) => {
            return Ok(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_shards_exception",
                "injected: node unavailable",
            ));
        }
        Some(EsFault::Slow(d)) => tokio::time::sleep(d).await,
        Some(EsFault::DropConnection) => drop_after = true,
        _ => {}
    }
    let response = route(&shared, &method, &segments, &body);
    if drop_after { Err(Dropped) } else { Ok(response) }
}

fn route(shared: &Shared, method: &Method, segments: &[&str], body: &[u8]) -> Response<Full<Bytes>> {
    let major = shared.config.major;
    match (method, segments) {
        (&Method::GET, []) | (&Method::HEAD, []) => reply(
            StatusCode::OK,
            json!({
                "name": "operators-test-es",
                "cluster_name": "operators-test",
                "version": {"number": format!("{major}.15.0"), "build_flavor": "default"},
                "tagline": "You Know, for Search"
            }),
        ),
        (&Method::POST, ["_bulk"]) | (&Method::PUT, ["_bulk"]) => bulk(shared, None, body),
        (&Method::POST, [index, "_bulk"]) | (&Method::PUT, [index, "_bulk"]) => bulk(shared, Some(index), body),
        (&Method::POST, [_index, "_refresh"]) | (&Method::GET, [_index, "_refresh"]) => {
            reply(StatusCode::OK, json!({"_shards": {"total": 1, "successful": 1, "failed": 0}}))
        }
        (&Method::GET, [index, "_count"]) | (&Method::POST, [index, "_count"]) => {
            let query = parse_query(body);
            let store = shared.store();
            let n = store.indices.get(*index).map_or(0, |d| d.values().filter(|d| matches(&query, &d.source)).count());
            reply(StatusCode::OK, json!({"count": n}))
        }
        (&Method::GET, [index, "_search"]) | (&Method::POST, [index, "_search"]) => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let size = request["size"].as_u64().unwrap_or(10) as usize;
            let query = parse_query(body);
            let store = shared.store();
            let Some(docs) = store.indices.get(*index) else {
                return error(StatusCode::NOT_FOUND, "index_not_found_exception", &format!("no such index [{index}]"));
            };
            let hits: Vec<Value> = docs
                .iter()
                .filter(|(_, d)| matches(&query, &d.source))
                .take(size)
                .map(|(id, d)| json!({"_index": index, "_id": id, "_version": d.version, "_source": d.source}))
                .collect();
            let total = docs.values().filter(|d| matches(&query, &d.source)).count();
            reply(StatusCode::OK, json!({"hits": {"total": {"value": total, "relation": "eq"}, "hits": hits}}))
        }
        (&Method::POST, [index, "_delete_by_query"]) => {
            let query = parse_query(body);
            if query.is_none() {
                return error(StatusCode::BAD_REQUEST, "parsing_exception", "only range queries are supported here");
            }
            let mut store = shared.store();
            let docs = store.indices.entry(index.to_string()).or_default();
            let before = docs.len();
            docs.retain(|_, d| !matches(&query, &d.source));
            let deleted = before - docs.len();
            reply(
                StatusCode::OK,
                json!({"took": 1, "total": deleted, "deleted": deleted, "version_conflicts": 0, "failures": []}),
            )
        }
        (&Method::GET, [index, "_doc", id]) => get_doc(shared, index, id),
        (&Method::GET, [index, _type, id]) if major < 7 && !id.starts_with('_') => get_doc(shared, index, id),
        (&Method::PUT, [index, "_doc", id]) | (&Method::POST, [index, "_doc", id]) => {
            let Ok(source) = serde_json::from_slice::<Value>(body) else {
                return error(StatusCode::BAD_REQUEST, "mapper_parsing_exception", "failed to parse");
            };
            let mut store = shared.store();
            let docs = store.indices.entry(index.to_string()).or_default();
            let version = docs.get(*id).map_or(1, |d| d.version + 1);
            let created = version == 1;
            docs.insert(id.to_string(), Doc { source, version });
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            reply(
                status,
                json!({"_index": index, "_id": id, "_version": version, "result": if created {"created"} else {"updated"}}),
            )
        }
        (&Method::PUT, [index]) => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let longs = request["mappings"]["properties"]
                .as_object()
                .map(|p| p.iter().filter(|(_, t)| t["type"] == "long").map(|(f, _)| f.clone()).collect::<Vec<_>>())
                .unwrap_or_default();
            let mut store = shared.store();
            if store.indices.contains_key(*index) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "resource_already_exists_exception",
                    &format!("index [{index}] already exists"),
                );
            }
            store.indices.insert(index.to_string(), BTreeMap::new());
            store.long_fields.insert(index.to_string(), longs);
            reply(StatusCode::OK, json!({"acknowledged": true, "index": index}))
        }
        (&Method::DELETE, [index]) => {
            let mut store = shared.store();
            store.long_fields.remove(*index);
            let existed = store.indices.remove(*index).is_some();
            if existed {
                reply(StatusCode::OK, json!({"acknowledged": true}))
            } else {
                error(StatusCode::NOT_FOUND, "index_not_found_exception", &format!("no such index [{index}]"))
            }
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!("the test server does not implement {method} /{}", segments.join("/")),
        ),
    }
}

fn get_doc(shared: &Shared, index: &str, id: &str) -> Response<Full<Bytes>> {
    let store = shared.store();
    match store.indices.get(index).and_then(|d| d.get(id)) {
        Some(d) => reply(
            StatusCode::OK,
            json!({"_index": index, "_id": id, "_version": d.version, "found": true, "_source": d.source}),
        ),
        None => reply(StatusCode::NOT_FOUND, json!({"_index": index, "_id": id, "found": false})),
    }
}

/// A range query `{"query":{"range":{field:{"lt":v,...}}}}`; `None` matches everything
/// (no query or `match_all`).
type RangeQuery = Option<(String, Vec<(String, f64)>)>;

fn parse_query(body: &[u8]) -> RangeQuery {
    let v: Value = serde_json::from_slice(body).ok()?;
    let range = v.get("query")?.get("range")?.as_object()?;
    let (field, bounds) = range.iter().next()?;
    let bounds = bounds
        .as_object()?
        .iter()
        .filter_map(|(op, b)| Some((op.clone(), b.as_f64().or_else(|| b.as_str()?.parse().ok())?)))
        .collect();
    Some((field.clone(), bounds))
}

fn matches(query: &RangeQuery, source: &Value) -> bool {
    let Some((field, bounds)) = query else { return true };
    let Some(value) = source.get(field).and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok())) else {
        return false;
    };
    bounds.iter().all(|(op, b)| match op.as_str() {
        "lt" => value < *b,
        "lte" => value <= *b,
        "gt" => value > *b,
        "gte" => value >= *b,
        _ => false,
    })
}

/// Merges `patch` into `target` as Elasticsearch's partial update does: objects merge
/// recursively, everything else is replaced. Returns whether anything changed.
fn merge(target: &mut Value, patch: &Value) -> bool {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            let mut changed = false;
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => changed |= merge(existing, v),
                    Some(existing) if existing == v => {}
                    _ => {
                        t.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
            }
            changed
        }
        (t, p) => {
            let changed = t != p;
            *t = p.clone();
            changed
        }
    }
}

fn bulk(shared: &Shared, path_index: Option<&str>, body: &[u8]) -> Response<Full<Bytes>> {
    let major = shared.config.major;
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).enumerate();
    let mut ops = Vec::new();
    while let Some((n, line)) = lines.next() {
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(line) else {
            return error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                &format!("line [{}]: malformed action", n + 1),
            );
        };
        let Some((op, meta)) = action.into_iter().next() else {
            return error(StatusCode::BAD_REQUEST, "illegal_argument_exception", "empty action");
        };
        if meta.get("_type").is_some() && major >= 8 {
            return error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &format!("Action/metadata line [{}] contains an unknown parameter [_type]", n + 1),
            );
        }
        if meta.get("_type").is_none() && major < 7 {
            return error(
                StatusCode::BAD_REQUEST,
                "action_request_validation_exception",
                "Validation Failed: 1: type is missing;",
            );
        }
        let source = if op == "delete" {
            Value::Null
        } else {
            match lines.next().map(|(_, l)| serde_json::from_str::<Value>(l)) {
                Some(Ok(v)) => v,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "x_content_parse_exception",
                        &format!("line [{}]: the source of the action is missing or malformed", n + 2),
                    );
                }
            }
        };
        ops.push((op, meta, source));
    }
    let mut store = shared.store();
    store.bulk_requests += 1;
    let mut items = Vec::with_capacity(ops.len());
    let mut errors = false;
    for (op, meta, source) in ops {
        let index = meta["_index"].as_str().or(path_index).unwrap_or("").to_string();
        let id = meta["_id"].as_str().map(str::to_string).unwrap_or_default();
        let injected = match store.faults.front_mut() {
            Some(EsFault::Items { status, kind, count }) => {
                let r = (*status, kind.clone());
                *count = count.saturating_sub(1);
                if *count == 0 {
                    store.faults.pop_front();
                }
                Some(r)
            }
            Some(EsFault::EmptyItems { count }) => {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    store.faults.pop_front();
                }
                errors = true;
                items.push(json!({}));
                continue;
            }
            _ => None,
        };
        let (status, result, version, err) = if let Some((status, kind)) = injected {
            (status, "", 0, Some(json!({"type": kind, "reason": "injected fault"})))
        } else {
            apply(&mut store, &op, &index, &id, &meta, source)
        };
        errors |= err.is_some();
        let mut item = json!({"_index": index, "_id": id, "status": status});
        if let Some(e) = err {
            item["error"] = e;
        } else {
            item["result"] = result.into();
            item["_version"] = version.into();
        }
        items.push(json!({ op: item }));
    }
    reply(StatusCode::OK, json!({"took": 1, "errors": errors, "items": items}))
}

type ItemResult = (u16, &'static str, i64, Option<Value>);

fn apply(store: &mut Store, op: &str, index: &str, id: &str, meta: &Value, source: Value) -> ItemResult {
    if index.is_empty() || id.is_empty() {
        return (
            400,
            "",
            0,
            Some(json!({"type": "action_request_validation_exception", "reason": "index or id is missing"})),
        );
    }
    let longs = store.long_fields.get(index).cloned().unwrap_or_default();
    let mapping_problem = |doc: &Value| mapping_problem(&longs, doc);
    let docs = store.indices.entry(index.to_string()).or_default();
    let conflict = |current: i64, given: i64| {
        Some(json!({
            "type": "version_conflict_engine_exception",
            "reason": format!("[{id}]: version conflict, current version [{current}] is higher than the version of this request [{given}]")
        }))
    };
    match op {
        "index" | "create" => {
            if !source.is_object() {
                return (
                    400,
                    "",
                    0,
                    Some(
                        json!({"type": "mapper_parsing_exception", "reason": "failed to parse: the document is not an object"}),
                    ),
                );
            }
            if let Some(reason) = mapping_problem(&source) {
                return (400, "", 0, Some(json!({"type": "mapper_parsing_exception", "reason": reason})));
            }
            let existing = docs.get(id).map(|d| d.version);
            if op == "create" && existing.is_some() {
                return (
                    409,
                    "",
                    0,
                    Some(
                        json!({"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}),
                    ),
                );
            }
            let version = match (meta["version_type"].as_str(), meta["version"].as_i64()) {
                (Some("external_gte"), Some(v)) => {
                    if let Some(cur) = existing
                        && cur > v
                    {
                        return (409, "", 0, conflict(cur, v));
                    }
                    v
                }
                (Some("external"), Some(v)) => {
                    if let Some(cur) = existing
                        && cur >= v
                    {
                        return (409, "", 0, conflict(cur, v));
                    }
                    v
                }
                _ => existing.map_or(1, |v| v + 1),
            };
            docs.insert(id.to_string(), Doc { source, version });
            match existing {
                None => (201, "created", version, None),
                Some(_) => (200, "updated", version, None),
            }
        }
        "update" => {
            let Some(patch) = source.get("doc").cloned() else {
                return (
                    400,
                    "",
                    0,
                    Some(json!({"type": "action_request_validation_exception", "reason": "script or doc is missing"})),
                );
            };
            if let Some(reason) = mapping_problem(&patch) {
                return (400, "", 0, Some(json!({"type": "mapper_parsing_exception", "reason": reason})));
            }
            match docs.get_mut(id) {
                Some(doc) => {
                    if merge(&mut doc.source, &patch) {
                        doc.version += 1;
                        (200, "updated", doc.version, None)
                    } else {
                        (200, "noop", doc.version, None)
                    }
                }
                None => {
                    let upsert = if source["doc_as_upsert"].as_bool() == Some(true) {
                        Some(patch)
                    } else {
                        source.get("upsert").cloned()
                    };
                    match upsert {
                        Some(u) => {
                            docs.insert(id.to_string(), Doc { source: u, version: 1 });
                            (201, "created", 1, None)
                        }
                        None => (
                            404,
                            "",
                            0,
                            Some(
                                json!({"type": "document_missing_exception", "reason": format!("[{id}]: document missing")}),
                            ),
                        ),
                    }
                }
            }
        }
        "delete" => match docs.remove(id) {
            Some(d) => (200, "deleted", d.version + 1, None),
            None => (404, "not_found", 0, None),
        },
        other => (
            400,
            "",
            0,
            Some(json!({"type": "illegal_argument_exception", "reason": format!("unknown action [{other}]")})),
        ),
    }
}

/// The mapping rule the server enforces: a field mapped `long` takes integers (or
/// strings of them) only, so tests can provoke a per-item 400 as a real index does.
fn mapping_problem(longs: &[String], doc: &Value) -> Option<String> {
    longs.iter().find_map(|f| {
        let v = doc.get(f)?;
        let ok = v.is_null() || v.is_i64() || v.is_u64() || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok());
        (!ok).then(|| format!("failed to parse field [{f}] of type [long] in document: `{v}`"))
    })
}
