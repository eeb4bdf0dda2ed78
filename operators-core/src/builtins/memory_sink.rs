//! An in-memory exactly-once sink, for tests and examples.
//!
//! Batches written between two barriers are held in the subtask; on the barrier they are
//! serialized (Arrow IPC) into the committable, so they travel with the checkpoint. Only
//! [`Sink::commit`] makes them visible in the shared [`CommittedOutput`], once per
//! committable identity `(job run, subtask, checkpoint)` — a recovered committable that
//! was already committed before a crash is not applied twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::FaultInjector;
use crate::codec::ipc;
use crate::error::{Error, Result};
use crate::message::CheckpointId;
use crate::operator::{OperatorContext, Sink, SinkFactory, TaskInfo};

#[derive(Debug, Default)]
struct Committed {
    batches: Vec<RecordBatch>,
    applied: HashSet<(String, usize, CheckpointId)>,
    commits: u64,
}

/// What the sink has committed; shared by all subtasks and restarts.
#[derive(Debug, Clone, Default)]
pub struct CommittedOutput {
    inner: Arc<Mutex<Committed>>,
}

impl CommittedOutput {
    fn lock(&self) -> MutexGuard<'_, Committed> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Committed batches, in commit order.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.lock().batches.clone()
    }

    /// Number of committed rows.
    pub fn num_rows(&self) -> usize {
        self.lock().batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Number of committables applied.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }
}

/// The factory of in-memory two-phase sink instances.
#[derive(Debug, Clone, Default)]
pub struct TwoPhaseMemorySink {
    output: CommittedOutput,
    faults: FaultInjector,
}

impl TwoPhaseMemorySink {
    /// A sink committing into `output`.
    pub fn new(output: CommittedOutput) -> Self {
        Self { output, faults: FaultInjector::default() }
    }

    /// Fails calls as planned by `faults` (points `sink.write`, `sink.pre_commit`,
    /// `sink.commit`).
    pub fn with_faults(mut self, faults: FaultInjector) -> Self {
        self.faults = faults;
        self
    }

    /// The committed output.
    pub fn output(&self) -> CommittedOutput {
        self.output.clone()
    }
}

impl SinkFactory for TwoPhaseMemorySink {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>> {
        Ok(Box::new(MemorySinkInstance {
            output: self.output.clone(),
            faults: self.faults.clone(),
            job_id: info.job_id.to_string(),
            subtask: info.subtask,
            buffer: Vec::new(),
        }))
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    job_id: String,
    subtask: usize,
}

struct MemorySinkInstance {
    output: CommittedOutput,
    faults: FaultInjector,
    job_id: String,
    subtask: usize,
    buffer: Vec<RecordBatch>,
}

fn encode(header: &Header, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = postcard::to_allocvec(header).map_err(|e| Error::Internal(format!("committable header: {e}")))?;
    let len = out.len() as u32;
    out.splice(0..0, len.to_le_bytes());
    ipc::write_batches(&mut out, batches).map_err(|e| Error::arrow("encoding committable", e))?;
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<(Header, Vec<RecordBatch>)> {
    let bad = |m: String| Error::CorruptState { path: "in-memory committable".into(), reason: m };
    if bytes.len() < 4 {
        return Err(bad("too short".into()));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let header_end =
        4usize.checked_add(len).filter(|e| *e <= bytes.len()).ok_or_else(|| bad("bad header length".into()))?;
    let header: Header = postcard::from_bytes(&bytes[4..header_end]).map_err(|e| bad(e.to_string()))?;
    let batches = ipc::read_batches(&bytes[header_end..]).map_err(|e| bad(e.to_string()))?;
    Ok((header, batches))
}

#[async_trait]
impl Sink for MemorySinkInstance {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        self.faults.check("sink.write")?;
        self.buffer.push(batch);
        Ok(())
    }

    async fn pre_commit(
        &mut self,
        _checkpoint_id: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<Vec<u8>>> {
        self.faults.check("sink.pre_commit")?;
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let header = Header { job_id: self.job_id.clone(), subtask: self.subtask };
        let bytes = encode(&header, &self.buffer)?;
        self.buffer.clear();
        Ok(Some(bytes))
    }

    async fn commit(&mut self, checkpoint_id: CheckpointId, committable: Vec<u8>) -> Result<()> {
        self.faults.check("sink.commit")?;
        let (header, batches) = decode(&committable)?;
        let mut out = self.output.lock();
        if out.applied.insert((header.job_id, header.subtask, checkpoint_id)) {
            out.batches.extend(batches);
            out.commits += 1;
        }
        Ok(())
    }
}
