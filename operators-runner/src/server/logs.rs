//! The server's log, and one log per job, kept in memory for `GET /jobs/:id/log` and
//! `GET /jobmanager/log`.
//!
//! A tracing layer sorts each event by the `job` span it happened in (the core opens one
//! around every task of a job, with the job's id); events outside any job go to the
//! server's log only. Each log keeps its newest lines, so a job that logs a lot does not
//! grow the server without bound.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Lines kept per log.
const MAX_LINES: usize = 5000;

/// The logs of a server: its own and one per job.
#[derive(Clone, Default)]
pub struct Logs {
    inner: Arc<Mutex<LogsInner>>,
}

#[derive(Default)]
struct LogsInner {
    server: VecDeque<String>,
    jobs: HashMap<String, VecDeque<String>>,
}

fn push(log: &mut VecDeque<String>, line: String) {
    if log.len() == MAX_LINES {
        log.pop_front();
    }
    log.push_back(line);
}

impl Logs {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a line to a job's log (and the server's), for what the server itself says
    /// about a job (submitted, finished...).
    pub fn job_line(&self, job_id: &str, line: impl Into<String>) {
        let line = format!("{} INFO {}", now(), line.into());
        let mut inner = self.lock();
        push(&mut inner.server, format!("{line} (job {job_id})"));
        push(inner.jobs.entry(job_id.to_string()).or_default(), line);
    }

    /// The server's log, oldest line first.
    pub fn server(&self) -> String {
        join(&self.lock().server)
    }

    /// A job's log, if it has one.
    pub fn job(&self, job_id: &str) -> Option<String> {
        self.lock().jobs.get(job_id).map(join)
    }

    /// The tracing layer that fills these logs.
    pub fn layer(&self) -> LogLayer {
        LogLayer { logs: self.clone() }
    }
}

fn join(lines: &VecDeque<String>) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Feeds [`Logs`] from tracing events.
pub struct LogLayer {
    logs: Logs,
}

/// The job id of a `job` span, kept in the span's extensions.
struct JobId(String);

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    job_id: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "job_id" => self.job_id = Some(value.to_string()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "job_id" => self.job_id = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "job" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(job_id), Some(span)) = (fields.job_id, ctx.span(id)) {
            span.extensions_mut().insert(JobId(job_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = format!("{} {} {}: {}{}", now(), meta.level(), meta.target(), fields.message, fields.rest);
        let job_id = ctx
            .event_scope(event)
            .and_then(|scope| scope.from_root().find_map(|span| span.extensions().get::<JobId>().map(|j| j.0.clone())));
        let mut inner = self.logs.lock();
        match job_id {
            Some(id) => {
                push(&mut inner.server, format!("{line} (job {id})"));
                push(inner.jobs.entry(id).or_default(), line);
            }
            None => push(&mut inner.server, line),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn events_in_a_job_span_go_to_that_jobs_log() {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("server starts");
            let span = tracing::info_span!("job", job_id = %"a1", job_name = "x");
            span.in_scope(|| {
                let inner = tracing::info_span!("task", n = 3);
                inner.in_scope(|| tracing::warn!(rows = 5, "slow sink"));
            });
            tracing::info_span!("job", job_id = %"b2").in_scope(|| tracing::info!("other"));
        });
        let a = logs.job("a1").unwrap_or_default();
        assert!(a.contains("WARN") && a.contains("slow sink rows=5"), "{a}");
        assert!(!a.contains("other") && !a.contains("server starts"), "{a}");
        let server = logs.server();
        assert!(server.contains("server starts") && server.contains("slow sink") && server.contains("(job b2)"));
        assert!(logs.job("c3").is_none());
    }
}
