//! The HTTP side: the servers, the buffered writer, and its requests with failover.

use std::time::Instant;

use elasticsearch::Elasticsearch;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::{Method, StatusCode};
use operators_core::operator::DeadLetter;
use operators_core::{Error, Result};

use super::config::redact;
use super::request_builder::Item;
use super::retry::Answer;
use super::sink::{EsSink, EsStats};

pub(super) struct Node {
    pub(super) url: String,
    pub(super) client: Elasticsearch,
}

pub(super) struct Writer {
    pub(super) settings: EsSink,
    pub(super) nodes: Vec<Node>,
    pub(super) current: usize,
    pub(super) typed: bool,
    /// `"<version column>":<version>`, appended to documents where the mode writes it.
    pub(super) version_json: Option<String>,
    /// The action line up to the id, the same for every row (built once, not per row).
    pub(super) action_prefix: Vec<u8>,
    /// The delete line up to the id.
    pub(super) delete_prefix: Vec<u8>,
    pub(super) buf: Vec<u8>,
    pub(super) items: Vec<Item>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) last_flush: Instant,
    /// An error of a background (interval) flush, reported by the next call.
    pub(super) failure: Option<Error>,
}

impl Writer {
    /// Sends one request, failing over between servers while none answers.
    ///
    /// `attempt` is the caller's count of retries of this request, unanswered and busy
    /// alike: one budget of `retries`, so a cluster alternating between the two cannot
    /// stretch it (each call starting its own count allowed `(retries + 1)²` waits).
    pub(super) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        content_type: &'static str,
        attempt: &mut u32,
    ) -> Result<Answer> {
        let mut tried = 0usize;
        loop {
            let node = &self.nodes[self.current];
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            let sent = node.client.send(method, path, headers, None::<&()>, body, None).await;
            let outcome = match sent {
                Ok(response) => {
                    let status = response.status_code();
                    match response.bytes().await {
                        Ok(bytes) => Ok((status, bytes)),
                        Err(e) => Err(format!("reading the answer of {}: {}", node.url, redact(&e.to_string()))),
                    }
                }
                Err(e) => Err(format!("{}: {}", node.url, redact(&e.to_string()))),
            };
            match outcome {
                Ok((status, bytes)) => match classify_status(status) {
                    StatusClass::Refused => {
                        return Err(Error::config(
                            &self.settings.config.key,
                            format!(
                                "{} refused the credentials (HTTP {}): {}",
                                node.url,
                                status.as_u16(),
                                error_text(&bytes)
                            ),
                        ));
                    }
                    StatusClass::Busy => {
                        return Ok(Answer::Busy(format!(
                            "{} answered HTTP {}: {}",
                            node.url,
                            status.as_u16(),
                            error_text(&bytes)
                        )));
                    }
                    StatusClass::Rejected => {
                        return Err(Error::external(
                            "Elasticsearch",
                            false,
                            std::io::Error::other(format!(
                                "{} {path} answered HTTP {}: {}",
                                node.url,
                                status.as_u16(),
                                error_text(&bytes)
                            )),
                        ));
                    }
                    StatusClass::Success => return Ok(Answer::Ok(bytes.to_vec())),
                },
                Err(why) => {
                    tracing::warn!(server = %self.nodes[self.current].url, reason = %why, "no answer from Elasticsearch");
                    tried += 1;
                    if self.nodes.len() > 1 {
                        self.current = (self.current + 1) % self.nodes.len();
                        EsStats::add(&self.settings.stats.failovers, 1);
                    }
                    if tried.is_multiple_of(self.nodes.len()) {
                        *attempt += 1;
                        self.wait_or_fail(*attempt, &why).await?;
                        EsStats::add(&self.settings.stats.request_retries, 1);
                    }
                }
            }
        }
    }
}

/// What the HTTP status of a whole request means (an unanswered request goes to the next
/// server instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusClass {
    /// 401 or 403: the credentials are refused; the job fails without retrying.
    Refused,
    /// 429 or 5xx: resend it all after the backoff delay.
    Busy,
    /// Any other status that is not 2xx: the request fails, not retryable.
    Rejected,
    /// 2xx: the answer's body is read.
    Success,
}

/// The `StatusClass` of a request answered `status`.
pub(super) fn classify_status(status: StatusCode) -> StatusClass {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        StatusClass::Refused
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        StatusClass::Busy
    } else if !status.is_success() {
        StatusClass::Rejected
    } else {
        StatusClass::Success
    }
}

pub(super) fn error_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut cut: String = text.chars().take(500).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    redact(&cut)
}

/// Whether the server of this `GET /` answer takes typeless actions.
pub(super) fn typeless(info: &serde_json::Value) -> bool {
    let number = info["version"]["number"].as_str().unwrap_or("");
    let major: u32 = number.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    match info["version"]["distribution"].as_str() {
        Some("opensearch") => true,
        _ => major >= 7,
    }
}

impl Writer {
    /// A request other than `_bulk`, resent while the cluster is busy.
    async fn request(&mut self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            match self.send(method, path, body, "application/json", &mut attempt).await? {
                Answer::Ok(bytes) => return Ok(bytes),
                Answer::Busy(why) => {
                    attempt += 1;
                    self.wait_or_fail(attempt, &why).await?;
                    EsStats::add(&self.settings.stats.request_retries, 1);
                }
            }
        }
    }

    /// Learns the server's API: Elasticsearch 6 needs document types; Elasticsearch 7
    /// and 8 and every OpenSearch (forked from 7.10) are typeless.
    pub(super) async fn probe(&mut self) -> Result<()> {
        let bytes = self.request(Method::Get, "", None).await?;
        let info: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if self.settings.doc_type.is_some() && typeless(&info) {
            let number = info["version"]["number"].as_str().unwrap_or("");
            let distribution = info["version"]["distribution"].as_str().unwrap_or("elasticsearch");
            tracing::info!(version = number, distribution, "the cluster is typeless: sink.es.type is not sent");
            self.typed = false;
            self.action_prefix = self.build_action_prefix();
            self.delete_prefix = self.build_delete_prefix();
        }
        Ok(())
    }

    /// Deletes the documents of versions below this run's.
    pub(super) async fn cleanup(&mut self) -> Result<u64> {
        let (Some(version), column) = (self.settings.version_number(), self.settings.version_column.clone()) else {
            return Ok(0);
        };
        let index = self.settings.index.clone();
        // Make every acknowledged write searchable, so the query sees current versions.
        self.request(Method::Post, &format!("{index}/_refresh"), None).await?;
        let query = serde_json::json!({ "query": { "range": { column: { "lt": version } } } }).to_string();
        let bytes = self
            .request(
                Method::Post,
                &format!("{index}/_delete_by_query?conflicts=proceed&refresh=true"),
                Some(query.as_bytes()),
            )
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let deleted = answer["deleted"].as_u64().unwrap_or(0);
        EsStats::add(&self.settings.stats.deleted_stale, deleted);
        Ok(deleted)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        EsStats::add(&self.settings.stats.abandoned, self.items.len() as u64);
    }
}
