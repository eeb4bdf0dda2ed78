//! Exactly once: a transaction per checkpoint, its committable and state, and recovery of a previous run's.

use std::collections::BTreeMap;
use std::sync::Arc;

use operators_clients::kafka::KafkaConfig;
use operators_core::{Error, Result};
use rdkafka::producer::Producer;
use serde::{Deserialize, Serialize};

use super::recovery::RecoveryClient;
use super::service::{KafkaProducer, create_producer, kafka_error, recovery_error};

/// One transactional producer and the transaction it holds.
pub(super) struct Txn {
    pub(super) tid: String,
    pub(super) seq: u64,
    pub(super) producer: Arc<KafkaProducer>,
    /// A transaction has begun (something was written since the last barrier).
    pub(super) open: bool,
}

/// The exactly-once sink's committable.
#[derive(Serialize, Deserialize)]
pub(super) struct TxnCommittable {
    pub(super) transactional_id: String,
}

/// The exactly-once sink's state: the first transactional id that may hold rows written
/// after the checkpoint.
#[derive(Serialize, Deserialize)]
pub(super) struct TxnState {
    pub(super) prefix: String,
    pub(super) first_after: u64,
}

pub(super) struct Transactions {
    pub(super) prefix: String,
    pub(super) subtask: usize,
    pub(super) parallelism: usize,
    pub(super) timeout_ms: i32,
    pub(super) client: RecoveryClient,
    /// Next sequence number to give a producer.
    pub(super) next_seq: u64,
    pub(super) current: Option<Txn>,
    pub(super) spare: Option<tokio::task::JoinHandle<Result<Txn>>>,
    /// Sequence number of `current` or `spare`: the first that may hold rows written
    /// after the latest barrier.
    pub(super) live_seq: u64,
    pub(super) precommitted: BTreeMap<String, Txn>,
    /// `(old subtask, first_after)` of the restored snapshots this subtask recovers.
    pub(super) restored: Option<Vec<(usize, TxnState)>>,
}

impl Transactions {
    pub(super) fn tid(&self, subtask: usize, seq: u64) -> String {
        format!("{}-{}-{}", self.prefix, subtask, seq)
    }

    /// Starts creating the producer for the next transaction.
    pub(super) fn prepare_spare(&mut self, config: &KafkaConfig) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live_seq = seq;
        let tid = self.tid(self.subtask, seq);
        let config = config.clone();
        let timeout_ms = self.timeout_ms;
        self.spare = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let producer = create_producer(&config, Some((&tid, timeout_ms)))?;
            tracing::debug!(transactional_id = %tid, ms = started.elapsed().as_millis() as u64, "transactional producer ready");
            Ok(Txn { tid, seq, producer: Arc::new(producer), open: false })
        }));
    }

    /// The producer for new rows, with its transaction begun.
    pub(super) async fn writer(&mut self, config: &KafkaConfig) -> Result<Arc<KafkaProducer>> {
        if self.current.is_none() {
            if self.spare.is_none() {
                self.prepare_spare(config);
            }
            if let Some(spare) = self.spare.take() {
                let waited = std::time::Instant::now();
                let txn = spare
                    .await
                    .map_err(|e| Error::Internal(format!("Kafka sink: creating a producer panicked: {e}")))??;
                tracing::debug!(transactional_id = %txn.tid, waited_ms = waited.elapsed().as_millis() as u64, "writing into a new transaction");
                self.current = Some(txn);
                // The next checkpoint's producer starts now, so that it is ready when the
                // barrier comes: librdkafka's InitProducerId takes 50 ms, and 500 ms when
                // its first broker connection loses a race with the request timer.
                self.prepare_spare(config);
            }
        }
        let Some(txn) = self.current.as_mut() else {
            return Err(Error::Internal("Kafka sink: no producer".into()));
        };
        if !txn.open {
            txn.producer
                .begin_transaction()
                .map_err(|e| kafka_error(format!("beginning a transaction of `{}`", txn.tid), e))?;
            txn.open = true;
        }
        Ok(txn.producer.clone())
    }

    /// Finishes the transaction of `tid` from a previous run (see the module docs).
    pub(super) async fn recover_one(&self, tid: &str) -> Result<()> {
        match self.client.describe(tid).await.map_err(recovery_error)? {
            None => {
                tracing::warn!(
                    transactional_id = tid,
                    "the broker no longer knows this pre-committed transaction; it was committed and its \
                     transactional id expired"
                );
                Ok(())
            }
            Some(d) => match d.state.as_str() {
                "Ongoing" => {
                    tracing::info!(transactional_id = tid, "committing a transaction pre-committed by a previous run");
                    match self.client.commit(tid, d.producer_id, d.epoch).await {
                        Ok(()) => Ok(()),
                        // The failed attempt's own commit may have reached the coordinator
                        // first: then the transaction is committed, which is all we want.
                        Err(e) => match self.client.describe(tid).await.map_err(recovery_error)? {
                            Some(now) if matches!(now.state.as_str(), "PrepareCommit" | "CompleteCommit") => Ok(()),
                            _ => Err(recovery_error(e)),
                        },
                    }
                }
                "PrepareCommit" | "CompleteCommit" => Ok(()),
                "Empty" => {
                    tracing::warn!(
                        transactional_id = tid,
                        "pre-committed transaction found with no transaction; assuming it committed"
                    );
                    Ok(())
                }
                other => Err(Error::external(
                    "Kafka sink recovery",
                    false,
                    format!(
                        "the transaction `{tid}` of a completed checkpoint is in state {other}: Kafka aborted it \
                         and its rows are lost. Transactions are aborted when older than transaction.timeout.ms \
                         ({} ms here); raise it (up to the broker's transaction.max.timeout.ms) so that \
                         recovery happens in time",
                        self.timeout_ms
                    ),
                )),
            },
        }
    }

    async fn exists(&self, subtask: usize, seq: u64) -> Result<bool> {
        Ok(self.client.describe(&self.tid(subtask, seq)).await.map_err(recovery_error)?.is_some())
    }

    /// Aborts the transactions of `subtask` from `from` on (written after the restored
    /// checkpoint) and returns the first sequence number never used.
    pub(super) async fn abort_after(&self, subtask: usize, from: u64) -> Result<u64> {
        // Ids are created in order: find the first unused one by galloping then bisecting.
        if !self.exists(subtask, from).await? {
            return Ok(from);
        }
        let mut known = from; // exists
        let mut step = 1u64;
        let missing = loop {
            let probe = known.saturating_add(step);
            if self.exists(subtask, probe).await? {
                known = probe;
                step = step.saturating_mul(2);
            } else {
                break probe;
            }
        };
        let (mut lo, mut hi) = (known, missing);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.exists(subtask, mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        // Newest first; everything before a committed one was finished by its run.
        for seq in (from..hi).rev() {
            let tid = self.tid(subtask, seq);
            let state = self.client.describe(&tid).await.map_err(recovery_error)?.map(|d| d.state);
            match state.as_deref() {
                Some("CompleteCommit" | "PrepareCommit") => break,
                Some("CompleteAbort" | "PrepareAbort") | None => {}
                Some(_) => {
                    tracing::info!(transactional_id = %tid, "aborting a transaction written after the restored checkpoint");
                    self.client.fence(&tid, self.timeout_ms).await.map_err(recovery_error)?;
                }
            }
        }
        Ok(hi)
    }
}
