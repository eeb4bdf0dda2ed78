//! The answers of the cluster: what each bulk item's status means, and when to resend.

use std::time::Instant;

use elasticsearch::http::Method;
use operators_core::operator::DeadLetter;
use operators_core::{Error, Result};
use serde::Deserialize;

use super::config::SyncMode;
use super::request_builder::Item;
use super::service::{Writer, error_text};
use super::sink::EsStats;

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

pub(super) fn reason_of(error: &Option<serde_json::Value>) -> (String, String) {
    match error {
        Some(serde_json::Value::Object(o)) => (
            o.get("type").and_then(|t| t.as_str()).unwrap_or("error").to_string(),
            o.get("reason").and_then(|t| t.as_str()).unwrap_or("").to_string(),
        ),
        Some(other) => ("error".into(), other.to_string()),
        None => ("error".into(), String::new()),
    }
}

/// What one bulk item's answer means: the table "Per item" of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// 2xx: counted `written`.
    Written,
    /// 404 in finite mode: counted `skipped_missing`.
    SkippedMissing,
    /// 409 in full mode with external versioning: counted `skipped_stale`.
    SkippedStale,
    /// 409 on an update with conflict retries left: resent at once, counted `retried`.
    RetryConflict,
    /// 429 or 5xx: resent after the backoff delay, counted `retried` (the flush fails once
    /// an item's attempts exceed the retries: `Backoff::exhausted`).
    RetryBusy,
    /// Anything else: dead letter, counted `dead_lettered`.
    DeadLetter,
}

/// The `Decision` for a bulk item answered `status`, whose action was already resent
/// `conflicts` times for version conflicts.
pub(super) fn classify(
    status: u16,
    mode: SyncMode,
    external_versioning: bool,
    conflicts: u32,
    retry_on_conflict: u32,
) -> Decision {
    match status {
        200..=299 => Decision::Written,
        404 if mode == SyncMode::Finite => Decision::SkippedMissing,
        409 if mode == SyncMode::Full && external_versioning => Decision::SkippedStale,
        409 if mode != SyncMode::Full && conflicts < retry_on_conflict => Decision::RetryConflict,
        429 | 500..=599 => Decision::RetryBusy,
        _ => Decision::DeadLetter,
    }
}

pub(super) enum Answer {
    /// A 2xx answer's body.
    Ok(Vec<u8>),
    /// 429 or 5xx for the whole request: resend it all.
    Busy(String),
}

impl Writer {
    /// Sends everything buffered and waits until every item is settled.
    pub(super) async fn flush(&mut self) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        // Retries of whole requests (unanswered or busy), one budget for the flush; items
        // rejected one by one count their own attempts.
        let mut attempt = 0u32;
        while !self.items.is_empty() {
            let body = std::mem::take(&mut self.buf);
            let sent = self.send(Method::Post, "_bulk", Some(&body), "application/x-ndjson", &mut attempt).await;
            self.buf = body;
            let answer: BulkResponse = match sent? {
                Answer::Busy(why) => {
                    attempt += 1;
                    self.wait_or_fail(attempt, &why).await?;
                    EsStats::add(&self.settings.stats.request_retries, 1);
                    continue;
                }
                Answer::Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    Error::external(
                        "Elasticsearch bulk",
                        true,
                        std::io::Error::other(format!("unreadable answer: {e}: {}", error_text(&bytes))),
                    )
                })?,
            };
            EsStats::add(&self.settings.stats.bulk_requests, 1);
            if !answer.errors && answer.items.len() == self.items.len() {
                EsStats::add(&self.settings.stats.written, self.items.len() as u64);
                self.buf.clear();
                self.items.clear();
                break;
            }
            if answer.items.len() != self.items.len() {
                return Err(Error::external(
                    "Elasticsearch bulk",
                    true,
                    std::io::Error::other(format!(
                        "the server answered {} items for {} actions",
                        answer.items.len(),
                        self.items.len()
                    )),
                ));
            }
            // Each item of an answer holds one result, under its action's name. One without
            // (a proxy or a faulty server) says nothing of its document: the whole answer
            // is unreadable, the actions stay buffered and the task's restart resends them
            // (each is idempotent by `_id`), rather than counting the row as nothing.
            let mut results = Vec::with_capacity(answer.items.len());
            for (i, result) in answer.items.into_iter().enumerate() {
                let found = result.len();
                match result.into_values().next() {
                    Some(r) if found == 1 => results.push(r),
                    _ => {
                        return Err(Error::external(
                            "Elasticsearch bulk",
                            true,
                            std::io::Error::other(format!(
                                "unreadable answer: item {i} holds {found} results where one was expected"
                            )),
                        ));
                    }
                }
            }
            let mut retry: Vec<Item> = Vec::new();
            let mut first_reason = String::new();
            let mut max_attempt = 0;
            let items = std::mem::take(&mut self.items);
            for (mut item, r) in items.into_iter().zip(results) {
                let stats = &self.settings.stats;
                let s = &self.settings;
                // A delete of a document that is not there leaves the index as asked.
                let decision = if item.delete && r.status == 404 {
                    Decision::Written
                } else {
                    classify(r.status, s.mode, s.external_versioning, item.conflicts, s.retry_on_conflict)
                };
                match decision {
                    Decision::Written => EsStats::add(&stats.written, 1),
                    Decision::SkippedMissing => EsStats::add(&stats.skipped_missing, 1),
                    Decision::SkippedStale => EsStats::add(&stats.skipped_stale, 1),
                    Decision::RetryConflict => {
                        item.conflicts += 1;
                        EsStats::add(&stats.retried, 1);
                        retry.push(item);
                    }
                    Decision::RetryBusy => {
                        item.attempts += 1;
                        max_attempt = max_attempt.max(item.attempts);
                        if first_reason.is_empty() {
                            let (kind, reason) = reason_of(&r.error);
                            let id = self.id_of(&item);
                            first_reason = format!("HTTP {} {kind}: {reason} (document `{id}`)", r.status);
                        }
                        EsStats::add(&stats.retried, 1);
                        retry.push(item);
                    }
                    Decision::DeadLetter => {
                        let status = r.status;
                        let (kind, reason) = reason_of(&r.error);
                        let id = self.id_of(&item);
                        self.dead.push(DeadLetter {
                            origin: format!("{}/{id}", self.settings.index),
                            line: None,
                            offset: None,
                            reason: format!("Elasticsearch rejected document `{id}`: HTTP {status} {kind}: {reason}"),
                            record: self.doc_of(&item),
                        });
                        EsStats::add(&stats.dead_lettered, 1);
                    }
                }
            }
            if retry.is_empty() {
                self.buf.clear();
                break;
            }
            // Rebuild the body from the items to send again.
            let mut buf = Vec::with_capacity(retry.iter().map(|i| i.lines.len()).sum());
            for item in &mut retry {
                // `id` and `doc` are relative to `lines`: only `lines` moves.
                let start = buf.len();
                buf.extend_from_slice(&self.buf[item.lines.clone()]);
                item.lines = start..buf.len();
            }
            self.buf = buf;
            self.items = retry;
            if max_attempt > 0 {
                let retries = self.settings.backoff.max_retries();
                if self.settings.backoff.exhausted(max_attempt) {
                    return Err(Error::external(
                        "Elasticsearch bulk",
                        true,
                        std::io::Error::other(format!(
                            "{} documents still rejected after {retries} retries; first: {first_reason}",
                            self.items.len()
                        )),
                    ));
                }
                tokio::time::sleep(self.settings.backoff.delay_for(max_attempt)).await;
            }
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    pub(super) async fn wait_or_fail(&self, attempt: u32, why: &str) -> Result<()> {
        let retries = self.settings.backoff.max_retries();
        if self.settings.backoff.exhausted(attempt) {
            return Err(Error::external(
                "Elasticsearch",
                true,
                std::io::Error::other(format!("giving up after {retries} retries: {why}")),
            ));
        }
        tracing::warn!(attempt, retries, reason = %why, "Elasticsearch request failed; retrying after backoff");
        tokio::time::sleep(self.settings.backoff.delay_for(attempt)).await;
        Ok(())
    }
}
