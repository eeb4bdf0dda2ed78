//! A REST API over running jobs in the shape of Flink's (feature `rest`).
//!
//! Field names follow Flink's JSON, so tools written against Flink's REST API read it:
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /jobs` | `{"jobs":[{"id","status"}]}` |
//! | `GET /jobs/overview` | `{"jobs":[{"jid","name","state","start-time","end-time","duration","last-modification","tasks"}]}` |
//! | `GET /jobs/:id` | job details with `vertices[].metrics.read-records` etc. and the `plan` |
//! | `GET /jobs/:id/exceptions` | `root-exception`, `timestamp`, `exceptionHistory.entries[]` |
//! | `GET /jobs/:id/checkpoints` | `counts`, `summary`, `latest`, `history` |
//! | `GET /jobs/:id/checkpoints/config` | `mode`, `interval`, `timeout`, `min_pause`, `externalization`... |
//! | `POST /jobs/:id/savepoints` | `{"target-directory","cancel-job"}` → `{"request-id"}` |
//! | `GET /jobs/:id/savepoints/:request` | `{"status":{"id"},"operation":{"location"}}` |
//! | `POST /jobs/:id/stop` | `{"drain","targetDirectory"}` → `{"request-id"}` (stop with savepoint) |
//! | `PATCH /jobs/:id` | cancels the job |
//!
//! A savepoint's target directory is a local path or a `file://` URL; another scheme
//! (`hdfs://`, `s3://`, ...) is answered `400` with Flink's `{"errors": [...]}`, naming
//! the field and the value.
//!
//! ```no_run
//! # async fn serve(job: operators_core::Job) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use operators_core::rest::{JobRegistry, router};
//! let jobs = JobRegistry::default();
//! jobs.add(Arc::new(job));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! axum::serve(listener, router(jobs, None)).await
//! # }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::job::{Job, JobStatus, SavepointStatus};
use crate::secret::Secret;

/// The jobs a REST API serves.
#[derive(Clone, Default)]
pub struct JobRegistry {
    jobs: Arc<RwLock<Vec<Arc<Job>>>>,
}

impl std::fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRegistry").field("jobs", &self.all().len()).finish()
    }
}

impl JobRegistry {
    /// Adds a job.
    pub fn add(&self, job: Arc<Job>) {
        self.jobs.write().unwrap_or_else(|p| p.into_inner()).push(job);
    }

    /// Every job, oldest first.
    pub fn all(&self) -> Vec<Arc<Job>> {
        self.jobs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The job with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.all().into_iter().find(|j| j.id() == id)
    }
}

#[derive(Clone)]
struct AppState {
    jobs: JobRegistry,
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({"errors": ["Job could not be found."]}))).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [message]}))).into_response()
}

fn status_name(s: JobStatus) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The router; with `token`, every request needs `Authorization: Bearer <token>`.
pub fn router(jobs: JobRegistry, token: Option<Secret>) -> Router {
    require_token(routes(jobs), token)
}

/// The routes of the table above without authentication, for an application that adds
/// routes of its own (a job server's `/jars`) and then wraps the whole in
/// [`require_token`].
pub fn routes(jobs: JobRegistry) -> Router {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/overview", get(overview))
        .route("/jobs/{id}", get(details).patch(cancel))
        .route("/jobs/{id}/exceptions", get(exceptions))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/jobs/{id}/checkpoints/config", get(checkpoint_config))
        .route("/jobs/{id}/savepoints", post(trigger_savepoint))
        .route("/jobs/{id}/savepoints/{request}", get(savepoint_status))
        .route("/jobs/{id}/stop", post(stop))
        .with_state(AppState { jobs })
}

/// With `token`, every route of `router` answers 401 unless the request carries
/// `Authorization: Bearer <token>`; without, `router` unchanged. Routes added to the
/// result afterwards are not covered.
pub fn require_token(router: Router, token: Option<Secret>) -> Router {
    match token {
        None => router,
        Some(token) => router.layer(middleware::from_fn_with_state(Arc::<str>::from(token.expose()), authorize)),
    }
}

async fn authorize(State(token): State<Arc<str>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared in constant time: the answer's timing must not tell how much of a guess
    // was right.
    let matches = given.is_some_and(|g| {
        g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !matches {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"errors": ["Missing or wrong bearer token."]})))
            .into_response();
    }
    next.run(request).await
}

async fn list(State(s): State<AppState>) -> Response {
    let jobs: Vec<Value> =
        s.jobs.all().iter().map(|j| json!({"id": j.id(), "status": status_name(j.status())})).collect();
    axum::Json(json!({ "jobs": jobs })).into_response()
}

fn task_counts(job: &Job) -> Value {
    let total: usize = job.vertices().iter().map(|v| v.parallelism).sum();
    let state = job.status();
    let (running, finished, canceled, failed) = match state {
        JobStatus::Running | JobStatus::Restarting | JobStatus::Created => (total, 0, 0, 0),
        JobStatus::Finished => (0, total, 0, 0),
        JobStatus::Canceled => (0, 0, total, 0),
        JobStatus::Failed => (0, 0, 0, total),
    };
    json!({
        "total": total, "created": 0, "scheduled": 0, "deploying": 0, "running": running,
        "finished": finished, "canceling": 0, "canceled": canceled, "failed": failed,
        "reconciling": 0, "initializing": 0
    })
}

async fn overview(State(s): State<AppState>) -> Response {
    let jobs: Vec<Value> = s
        .jobs
        .all()
        .iter()
        .map(|j| {
            let mut o = serde_json::to_value(j.overview()).unwrap_or(Value::Null);
            o["tasks"] = task_counts(j);
            o
        })
        .collect();
    axum::Json(json!({ "jobs": jobs })).into_response()
}

async fn details(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    let overview = job.overview();
    let metrics = job.metrics();
    let vertex_status = match job.status() {
        JobStatus::Restarting => "RUNNING",
        JobStatus::Created => "CREATED",
        JobStatus::Running => "RUNNING",
        JobStatus::Finished => "FINISHED",
        JobStatus::Failed => "FAILED",
        JobStatus::Canceled => "CANCELED",
    };
    let vertices: Vec<Value> = job
        .vertices()
        .iter()
        .zip(&metrics)
        .map(|(v, m)| {
            json!({
                "id": v.id,
                "name": m.description,
                "maxParallelism": 128,
                "parallelism": v.parallelism,
                "status": vertex_status,
                "start-time": overview.start_time,
                "end-time": overview.end_time,
                "duration": overview.duration,
                "tasks": { vertex_status: v.parallelism },
                "metrics": {
                    "read-bytes": m.total.bytes_in,
                    "read-bytes-complete": true,
                    "write-bytes": m.total.bytes_out,
                    "write-bytes-complete": true,
                    "read-records": m.total.records_in,
                    "read-records-complete": true,
                    "write-records": m.total.records_out,
                    "write-records-complete": true,
                    "dead-letter-records": m.total.dead_letters,
                    "backpressured-time-ms": m.total.backpressure_ms,
                },
            })
        })
        .collect();
    let nodes: Vec<Value> = job
        .vertices()
        .iter()
        .map(|v| {
            let inputs: Vec<Value> = v
                .inputs
                .iter()
                .enumerate()
                .map(|(num, (from, port, exchange))| {
                    json!({"num": num, "id": from, "port": port, "ship_strategy": exchange, "exchange": "pipelined_bounded"})
                })
                .collect();
            json!({"id": v.id, "parallelism": v.parallelism, "operator": v.kind, "description": v.id, "inputs": inputs})
        })
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let mut timestamps = serde_json::Map::new();
    for (status, ts) in &overview.timestamps {
        if let Value::String(name) = status_name(*status) {
            timestamps.insert(name, json!(ts));
        }
    }
    axum::Json(json!({
        "jid": overview.jid,
        "name": overview.name,
        "isStoppable": true,
        "state": overview.state,
        "start-time": overview.start_time,
        "end-time": overview.end_time,
        "duration": overview.duration,
        "now": now,
        "timestamps": timestamps,
        "vertices": vertices,
        "status-counts": { vertex_status: job.vertices().len() },
        "failure": overview.failure,
        "restarts": overview.restarts,
        "plan": { "jid": overview.jid, "name": overview.name, "type": "STREAMING", "nodes": nodes },
    }))
    .into_response()
}

async fn exceptions(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    let all = job.exceptions();
    let entries: Vec<Value> = all
        .iter()
        .rev()
        .map(|e| {
            json!({
                "exceptionName": "JobFailure",
                "stacktrace": e.message,
                "timestamp": e.timestamp,
                "taskName": null,
                "location": null,
                "concurrentExceptions": [],
            })
        })
        .collect();
    let newest = all.last();
    // Flink's older fields (`root-exception`, `all-exceptions`) beside its newer history.
    axum::Json(json!({
        "root-exception": newest.map(|e| e.message.clone()),
        "timestamp": newest.map(|e| e.timestamp),
        "all-exceptions": [],
        "truncated": false,
        "exceptionHistory": { "entries": entries, "truncated": false },
    }))
    .into_response()
}

async fn checkpoints(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    axum::Json(job.checkpoint_stats()).into_response()
}

async fn checkpoint_config(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    match job.checkpoint_config() {
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"errors": ["Checkpointing is not enabled for this job."]})))
            .into_response(),
        Some(c) => axum::Json(json!({
            "mode": c.mode,
            "interval": c.interval,
            "timeout": c.timeout,
            "min_pause": c.min_pause,
            "max_concurrent": c.max_concurrent,
            "externalization": { "enabled": true, "delete_on_cancellation": !c.retain_on_cancellation },
            "state_backend": c.state_backend,
            "checkpoint_storage": c.checkpoint_storage,
            "unaligned_checkpoints": false,
            "tolerable_failed_checkpoints": c.tolerable_failed_checkpoints,
            "retained": c.retained,
        }))
        .into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct SavepointRequestBody {
    #[serde(rename = "target-directory")]
    target_directory: Option<PathBuf>,
    #[serde(rename = "cancel-job", default)]
    cancel_job: bool,
}

#[derive(Debug, Default, Deserialize)]
struct StopRequestBody {
    #[serde(default)]
    drain: bool,
    #[serde(rename = "targetDirectory")]
    target_directory: Option<PathBuf>,
}

/// Parses an optional JSON body; an empty body means all defaults.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("Malformed request body: {e}"))
}

/// The target directory of a savepoint request, resolved by [`crate::path::store_dir`]'s
/// rule: a local path, a `file://` URL or a URL of a registered store (`hdfs://`). Another
/// scheme is a bad request naming `field`, before anything is written (taken as it is,
/// `hdfs:///x` would be `./hdfs:/x`).
fn target_directory(field: &str, dir: Option<PathBuf>) -> Result<Option<PathBuf>, String> {
    dir.map(|d| crate::path::store_path(field, &d)).transpose().map_err(|e| e.to_string())
}

async fn trigger_savepoint(State(s): State<AppState>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    let req: SavepointRequestBody = match parse_body(&body) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let target = match target_directory("target-directory", req.target_directory) {
        Ok(t) => t,
        Err(message) => return bad_request(message),
    };
    let requested = if req.cancel_job {
        job.request_cancel_with_savepoint(target)
    } else {
        job.request_savepoint(target, false, false)
    };
    match requested {
        Ok(request_id) => (StatusCode::ACCEPTED, axum::Json(json!({ "request-id": request_id }))).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn stop(State(s): State<AppState>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    let req: StopRequestBody = match parse_body(&body) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let target = match target_directory("targetDirectory", req.target_directory) {
        Ok(t) => t,
        Err(message) => return bad_request(message),
    };
    match job.request_savepoint(target, true, req.drain) {
        Ok(request_id) => (StatusCode::ACCEPTED, axum::Json(json!({ "request-id": request_id }))).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn savepoint_status(State(s): State<AppState>, Path((id, request)): Path<(String, String)>) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    match job.savepoint_status(&request) {
        None => {
            (StatusCode::NOT_FOUND, axum::Json(json!({"errors": ["Unknown savepoint request id."]}))).into_response()
        }
        Some(SavepointStatus::InProgress) => axum::Json(json!({"status": {"id": "IN_PROGRESS"}})).into_response(),
        Some(SavepointStatus::Completed { location }) => axum::Json(json!({
            "status": {"id": "COMPLETED"},
            "operation": {"location": location.display().to_string()}
        }))
        .into_response(),
        // Flink reports a failed savepoint as a completed operation with a failure cause.
        Some(SavepointStatus::Failed { reason }) => axum::Json(json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failure-cause": {"class": "SavepointFailed", "stack-trace": reason}}
        }))
        .into_response(),
    }
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(job) = s.jobs.get(&id) else { return not_found() };
    job.cancel();
    (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_targets_with_a_scheme_are_refused_naming_the_field() {
        let e = target_directory("targetDirectory", Some(PathBuf::from("hdfs:///tmp/sp"))).unwrap_err();
        assert!(e.contains("`targetDirectory`") && e.contains("`hdfs:///tmp/sp`") && e.contains("file://"), "{e}");
        assert_eq!(
            target_directory("target-directory", Some(PathBuf::from("file:///tmp/sp"))).unwrap(),
            Some(PathBuf::from("/tmp/sp"))
        );
        assert_eq!(target_directory("target-directory", None).unwrap(), None);
    }
}
