//! Channels between tasks: the input gate that reads a task's inputs fairly while
//! respecting barrier alignment, and the output router that partitions batches and
//! broadcasts control messages.
//!
//! Every channel is a bounded tokio mpsc queue of [`Message`]s. When it is full the sender
//! waits, which is how a slow sink slows its source; the wait is counted as backpressure.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use arrow::array::UInt32Array;
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::checkpoint::BarrierAligner;
use crate::error::{Error, Result};
use crate::graph::{Partitioning, Port};
use crate::key::{KeySelector, subtask_for_key_group};
use crate::message::Message;
use crate::metrics::TaskMetrics;

/// One event from a task's inputs.
#[derive(Debug)]
pub(crate) enum GateEvent {
    /// A message arrived on input `.0`.
    Message(usize, Message),
    /// Input `.0` closed (its sender finished or was dropped).
    Closed(usize),
}

/// Reads the inputs of one task.
pub(crate) struct InputGate {
    inputs: Vec<mpsc::Receiver<Message>>,
    closed: Vec<bool>,
    open: usize,
    next_start: usize,
}

impl InputGate {
    pub(crate) fn new(inputs: Vec<mpsc::Receiver<Message>>) -> Self {
        let n = inputs.len();
        Self { inputs, closed: vec![false; n], open: n, next_start: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.inputs.len()
    }

    /// The next event from an input that is neither closed nor blocked by `aligner`,
    /// starting after the input served last so that no input starves. `None` when all
    /// inputs are closed.
    pub(crate) async fn next(&mut self, aligner: &BarrierAligner) -> Option<GateEvent> {
        if self.open == 0 {
            return None;
        }
        poll_fn(|cx| {
            let n = self.inputs.len();
            for k in 0..n {
                let i = (self.next_start + k) % n;
                if self.closed[i] || aligner.is_blocked(i) {
                    continue;
                }
                match self.inputs[i].poll_recv(cx) {
                    Poll::Ready(Some(msg)) => {
                        self.next_start = (i + 1) % n;
                        return Poll::Ready(Some(GateEvent::Message(i, msg)));
                    }
                    Poll::Ready(None) => {
                        self.closed[i] = true;
                        self.open -= 1;
                        return Poll::Ready(Some(GateEvent::Closed(i)));
                    }
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The senders of one outgoing edge, indexed by downstream subtask (one for forward).
pub(crate) struct EdgeOutput {
    pub(crate) port: Port,
    pub(crate) partitioning: Partitioning,
    pub(crate) senders: Vec<mpsc::Sender<Message>>,
    pub(crate) next: usize,
}

/// Routes a task's output to its downstream channels.
pub(crate) struct OutputRouter {
    operator: Arc<str>,
    edges: Vec<EdgeOutput>,
    max_parallelism: u16,
    metrics: Arc<TaskMetrics>,
}

impl OutputRouter {
    pub(crate) fn new(
        operator: Arc<str>,
        edges: Vec<EdgeOutput>,
        max_parallelism: u16,
        metrics: Arc<TaskMetrics>,
    ) -> Self {
        Self { operator, edges, max_parallelism, metrics }
    }

    /// Whether anything is connected to `port`.
    pub(crate) fn has_port(&self, port: Port) -> bool {
        self.edges.iter().any(|e| e.port == port)
    }

    async fn send(&self, tx: &mpsc::Sender<Message>, msg: Message) -> Result<()> {
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                let start = Instant::now();
                let res = tx.send(msg).await;
                self.metrics.add_backpressure_ns(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
                res.map_err(|_| self.closed())
            }
            Err(TrySendError::Closed(_)) => Err(self.closed()),
        }
    }

    fn closed(&self) -> Error {
        Error::Internal(format!("{DOWNSTREAM_CLOSED} (operator `{}`): a downstream task stopped", self.operator))
    }

    /// Sends a batch on `port`, partitioned per edge.
    pub(crate) async fn send_batch(&mut self, port: Port, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if port == Port::Main {
            self.metrics.add_out(batch.num_rows(), batch.get_array_memory_size());
        }
        for e in 0..self.edges.len() {
            if self.edges[e].port != port {
                continue;
            }
            match &self.edges[e].partitioning {
                Partitioning::Forward => {
                    let tx = self.edges[e].senders[0].clone();
                    self.send(&tx, Message::Data(batch.clone())).await?;
                }
                Partitioning::Rebalance => {
                    let edge = &mut self.edges[e];
                    let tx = edge.senders[edge.next].clone();
                    edge.next = (edge.next + 1) % edge.senders.len();
                    self.send(&tx, Message::Data(batch.clone())).await?;
                }
                Partitioning::Hash(key) => {
                    let key = key.clone();
                    let parts = partition_by_key(&batch, &key, self.edges[e].senders.len(), self.max_parallelism)?;
                    for (target, part) in parts {
                        let tx = self.edges[e].senders[target].clone();
                        self.send(&tx, Message::Data(part)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a control message to every downstream channel of every port.
    pub(crate) async fn broadcast(&mut self, msg: Message) -> Result<()> {
        for e in 0..self.edges.len() {
            for s in 0..self.edges[e].senders.len() {
                let tx = self.edges[e].senders[s].clone();
                self.send(&tx, msg.clone()).await?;
            }
        }
        Ok(())
    }
}

/// Marker text of the error a task gets when a downstream task has gone away; such
/// errors are consequences, not causes, when the runtime picks a failure to report.
pub(crate) const DOWNSTREAM_CLOSED: &str = "downstream channel closed";

/// Splits `batch` by the subtask owning each row's key.
pub(crate) fn partition_by_key(
    batch: &RecordBatch,
    key: &KeySelector,
    parallelism: usize,
    max_parallelism: u16,
) -> Result<Vec<(usize, RecordBatch)>> {
    if parallelism == 1 {
        // One receiver: nothing to route, but a missing key column fails here as it would
        // at any parallelism.
        key.check(batch)?;
        return Ok(vec![(0, batch.clone())]);
    }
    let keys = key.extract(batch, max_parallelism)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); parallelism];
    for (row, kg) in keys.key_groups().iter().enumerate() {
        rows[subtask_for_key_group(*kg, parallelism, max_parallelism)].push(row as u32);
    }
    let mut out = Vec::new();
    for (target, idx) in rows.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        if idx.len() == batch.num_rows() {
            out.push((target, batch.clone()));
            continue;
        }
        let indices = UInt32Array::from(idx);
        let part = arrow::compute::take_record_batch(batch, &indices)
            .map_err(|e| Error::arrow("partitioning a batch by key", e))?;
        out.push((target, part));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointingMode;
    use crate::key::key_group_range;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    #[test]
    fn partition_by_key_sends_each_key_to_its_owner() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..1000))]).unwrap();
        let sel = KeySelector::new(["k"]);
        let parts = partition_by_key(&batch, &sel, 3, 128).unwrap();
        let total: usize = parts.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(total, 1000);
        for (target, part) in parts {
            let keys = sel.extract(&part, 128).unwrap();
            let range = key_group_range(target, 3, 128);
            assert!(keys.key_groups().iter().all(|kg| range.contains(*kg)));
            assert!(!part.column(0).as_primitive::<Int64Type>().is_empty());
        }
    }

    #[tokio::test]
    async fn gate_skips_blocked_and_reports_closed_inputs() {
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut gate = InputGate::new(vec![rx0, rx1]);
        let mut aligner = BarrierAligner::new(2, CheckpointingMode::ExactlyOnce);
        let barrier = crate::message::Barrier {
            checkpoint_id: 1,
            timestamp_ms: 0,
            kind: crate::message::CheckpointKind::Checkpoint,
            terminal: false,
        };
        aligner.on_barrier(0, barrier);
        tx0.send(Message::EndOfStream).await.unwrap();
        tx1.send(Message::Watermark(5)).await.unwrap();
        drop(tx1);
        // Input 0 is blocked: the gate serves input 1, then its closure.
        assert!(matches!(gate.next(&aligner).await, Some(GateEvent::Message(1, Message::Watermark(5)))));
        assert!(matches!(gate.next(&aligner).await, Some(GateEvent::Closed(1))));
        aligner.on_input_closed(1);
        assert!(matches!(gate.next(&aligner).await, Some(GateEvent::Message(0, Message::EndOfStream))));
        drop(tx0);
        assert!(matches!(gate.next(&aligner).await, Some(GateEvent::Closed(0))));
        assert!(gate.next(&aligner).await.is_none());
    }
}
