//! The server's REST routes beyond the core's `/jobs` ones: Flink's jar endpoints (one
//! built-in jar), a job's configuration and log, the server's log, and the status page;
//! and [`versioned`], which answers every API path also under Flink's `/v1`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::jobs::{Jobs, Submission, SubmitError, program_args_list, split_program_args};
use super::logs::Logs;

/// The id of the one built-in jar, stable across restarts, so a platform that stored it
/// keeps working.
pub const JAR_ID: &str = "operator.jar";
/// The toolkit's entry class, accepted wherever a jar id or entry class is.
pub const ENTRY_CLASS: &str = "com._4paradigm.csp.operator.Main";

#[derive(Clone)]
struct ServerState {
    jobs: Jobs,
    logs: Logs,
    address: String,
    started_ms: i64,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "errors": [message.into()] }))).into_response()
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// A JSON parser's message with the text it quotes from the body left out: that text may
/// be a program argument holding a password.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut quoted = true;
    for part in parts {
        out.push('"');
        out.push_str(if quoted { "…" } else { part });
        quoted = !quoted;
    }
    out
}

/// The server's routes; `address` is what `GET /jars` reports.
pub fn routes(jobs: Jobs, logs: Logs, address: String) -> Router {
    let state = ServerState { jobs, logs, address, started_ms: chrono::Utc::now().timestamp_millis() };
    Router::new()
        .route("/jars", get(list_jars))
        .route("/jars/upload", post(upload_jar))
        .route("/jars/{jar}", delete(delete_jar))
        .route("/jars/{jar}/run", post(run_jar))
        .route("/jobs/{id}/config", get(job_config))
        .route("/jobs/{id}/log", get(job_log))
        .route("/jobmanager/log", get(server_log))
        .route("/taskmanagers", get(taskmanagers))
        .route("/taskmanagers/{tm}/log", get(server_log))
        .route("/overview", get(cluster_overview))
        .route("/config", get(dashboard_config))
        .with_state(state)
}

/// The prefix of Flink's versioned REST paths.
pub const VERSION_PREFIX: &str = "/v1";

/// `api` answered at its own paths and again under [`VERSION_PREFIX`], with the same
/// handlers, so the same bodies and status codes. Flink's REST endpoint does the same,
/// and Flink's own clients (its command-line client, its Java `RestClusterClient`) call
/// only the versioned paths (`/v1/jobs/overview`, `/v1/jobs/:id/savepoints`, …), while
/// the toolkit's platforms and the status page call the bare ones.
///
/// Wrap the result in the token check, not each half, so that one check guards both.
pub fn versioned(api: Router) -> Router {
    // `nest` copies each route under the prefix (axum strips the prefix again before the
    // handler runs), so an unknown path under `/v1` meets the same 404 fallback.
    Router::new().nest(VERSION_PREFIX, api.clone()).merge(api)
}

/// The status page: served without the token (it holds no data; it asks for the token
/// and sends it with every call it makes).
pub fn page() -> Router {
    Router::new().route("/", get(|| async { Html(include_str!("page.html")) }))
}

fn known_jar(jar: &str) -> bool {
    jar == JAR_ID || jar == ENTRY_CLASS
}

async fn list_jars(State(s): State<ServerState>) -> Response {
    axum::Json(json!({
        "address": s.address,
        "files": [{
            "id": JAR_ID,
            "name": JAR_ID,
            "uploaded": s.started_ms,
            "entry": [{ "name": ENTRY_CLASS, "description": "the operator runner: the toolkit's parameters" }],
        }],
    }))
    .into_response()
}

/// An upload is answered as Flink answers one, naming the built-in jar: the server runs
/// only the jobs built into it, so the bytes are read and dropped, and a platform that
/// uploads before it runs goes on with the id it is given.
async fn upload_jar(_body: axum::body::Bytes) -> Response {
    axum::Json(json!({ "filename": format!("/jars/{JAR_ID}"), "status": "success" })).into_response()
}

/// The built-in jar cannot be removed; deleting it answers 200 as Flink does and it
/// stays listed. Other ids do not exist (400, Flink's answer).
async fn delete_jar(Path(jar): Path<String>) -> Response {
    if known_jar(&jar) {
        axum::Json(json!({})).into_response()
    } else {
        error(StatusCode::BAD_REQUEST, format!("File {jar} does not exist in /jars."))
    }
}

/// The body of `POST /jars/:jarid/run`, Flink's field names.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunBody {
    entry_class: Option<String>,
    program_args: Option<String>,
    program_args_list: Option<Vec<String>>,
    parallelism: Option<u64>,
    savepoint_path: Option<String>,
    allow_non_restored_state: Option<bool>,
}

async fn run_jar(State(s): State<ServerState>, Path(jar): Path<String>, body: axum::body::Bytes) -> Response {
    if !known_jar(&jar) {
        return error(StatusCode::BAD_REQUEST, format!("Jar file /jars/{jar} does not exist"));
    }
    let body: RunBody = if body.iter().all(u8::is_ascii_whitespace) {
        RunBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Request did not match expected format JarRunRequestBody: {}",
                        without_quoted(&e.to_string())
                    ),
                );
            }
        }
    };
    if let Some(entry) = &body.entry_class
        && entry != ENTRY_CLASS
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("entryClass: `{entry}` is not in this server; its one entry class is {ENTRY_CLASS}"),
        );
    }
    let args = match (body.program_args, body.program_args_list) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Confusing request: programArgs and programArgsList are specified, please, use only programArgsList",
            );
        }
        (Some(a), None) => match split_program_args(&a) {
            Ok(args) => args,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        },
        (None, Some(list)) => program_args_list(list),
        (None, None) => Vec::new(),
    };
    let submission = Submission {
        args,
        savepoint_path: body.savepoint_path.filter(|p| !p.trim().is_empty()),
        allow_non_restored_state: body.allow_non_restored_state.unwrap_or(false),
        parallelism: body.parallelism,
    };
    // Planning and starting a job do file I/O (state directories, a savepoint's
    // metadata): off the async workers, which serve every other job's calls.
    let jobs = s.jobs.clone();
    let submitted = match tokio::task::spawn_blocking(move || jobs.submit(submission)).await {
        Ok(r) => r,
        Err(e) => Err(SubmitError::Internal(format!("the submission failed: {e}"))),
    };
    match submitted {
        Ok(id) => axum::Json(json!({ "jobid": id })).into_response(),
        Err(SubmitError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(SubmitError::Internal(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

fn job_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Job could not be found.")
}

async fn job_config(State(s): State<ServerState>, Path(id): Path<String>) -> Response {
    let Some(entry) = s.jobs.get(&id) else { return job_not_found() };
    let user: serde_json::Map<String, Value> =
        entry.params.iter().map(|(k, v, _)| (k.clone(), Value::String(v.clone()))).collect();
    let parallelism = entry.job.vertices().iter().map(|v| v.parallelism).max().unwrap_or(1);
    axum::Json(json!({
        "jid": entry.job.id(),
        "name": entry.job.name(),
        "execution-config": {
            "execution-mode": "PIPELINED",
            "restart-strategy": format!("{:?}", entry.job.config().restart),
            "job-parallelism": parallelism,
            "object-reuse-mode": false,
            "user-config": user,
        },
    }))
    .into_response()
}

async fn job_log(State(s): State<ServerState>, Path(id): Path<String>) -> Response {
    if s.jobs.get(&id).is_none() {
        return job_not_found();
    }
    text(s.logs.job(&id).unwrap_or_default())
}

async fn server_log(State(s): State<ServerState>) -> Response {
    text(s.logs.server())
}

async fn taskmanagers(State(s): State<ServerState>) -> Response {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    axum::Json(json!({
        "taskmanagers": [{
            "id": "operator-server",
            "path": s.address,
            "dataPort": -1,
            "timeSinceLastHeartbeat": chrono::Utc::now().timestamp_millis(),
            "slotsNumber": cores,
            "freeSlots": cores,
            "hardware": { "cpuCores": cores },
        }],
    }))
    .into_response()
}

async fn cluster_overview(State(s): State<ServerState>) -> Response {
    let (mut running, mut finished, mut canceled, mut failed) = (0, 0, 0, 0);
    for j in s.jobs.all() {
        match j.job.status() {
            operators_core::JobStatus::Finished => finished += 1,
            operators_core::JobStatus::Canceled => canceled += 1,
            operators_core::JobStatus::Failed => failed += 1,
            _ => running += 1,
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    axum::Json(json!({
        "taskmanagers": 1,
        "slots-total": cores,
        "slots-available": cores,
        "jobs-running": running,
        "jobs-finished": finished,
        "jobs-cancelled": canceled,
        "jobs-failed": failed,
        "flink-version": concat!("operators ", env!("CARGO_PKG_VERSION")),
        "flink-commit": "",
    }))
    .into_response()
}

async fn dashboard_config() -> Response {
    axum::Json(json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": concat!("operators ", env!("CARGO_PKG_VERSION")),
        "flink-revision": "",
        "features": { "web-submit": true, "web-cancel": true, "web-history": false },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_error_does_not_quote_the_body() {
        let e = serde_json::from_str::<RunBody>(r#"{"programArgsList": "--sink.es.password hunter2"}"#).unwrap_err();
        let shown = without_quoted(&e.to_string());
        assert!(!shown.contains("hunter2") && shown.contains("expected a sequence"), "{shown}");
    }
}
