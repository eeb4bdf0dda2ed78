//! The loop each operator subtask runs as a tokio task.
//!
//! A source task polls its source and injects barriers when the coordinator triggers a
//! checkpoint. A transform or sink task reads its inputs through the input gate, aligns
//! barriers, snapshots on the aligned barrier and forwards it. Snapshots have a short
//! synchronous part — the operator's own state, the O(1) swap of the keyed-state
//! changelog, a sink's pre-commit — and an asynchronous part that writes the files and
//! acknowledges the checkpoint while processing goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use tokio::sync::{mpsc, oneshot};

use crate::channel::{InputGate, OutputRouter};
use crate::checkpoint::storage::{CheckpointStorage, OperatorStateBlob, StateFile, SubtaskSnapshot, slug};
use crate::checkpoint::{AlignAction, AlignStep, BarrierAligner, CheckpointingMode};
use crate::clock::SharedClock;
use crate::control::{Ack, KeyedRestore, TaskControl, TaskEvent, TaskId, TaskRestore};
use crate::error::{Error, Result};
use crate::graph::Port;
use crate::key::{KeyGroupRange, KeySelector};
use crate::message::{Barrier, CheckpointId, MAX_WATERMARK, Message, Watermark};
use crate::metrics::TaskMetrics;
use crate::operator::{
    DeadLetter, OperatorContext, Sink, SinkFactory, Source, SourceContext, SourceFactory, SourcePoll, TaskInfo,
    Transform, TransformFactory, dead_letters_to_batch,
};
use crate::state::keyed::Changelog;
use crate::state::kvfile::{KvFileWriter, MergedChain};
use crate::state::{KeyedStateStore, StateBackend, StoreScope};

/// Spawns `future` on the current tokio runtime, inside the current tracing span.
///
/// The one way this workspace starts a task of its own (`clippy.toml` refuses a bare
/// `tokio::spawn`): a task spawned bare leaves the span it was started in, so what it
/// logs no longer names its job, and a job server, which keeps a log per job by that
/// span, files it under no job. A task the job must wait for or cancel with its
/// operators belongs in the job's `JoinSet` instead.
#[allow(clippy::disallowed_methods)]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_span())
}

/// A keyed-state chain longer than this is compacted into one base file.
const MAX_CHAIN: usize = 8;
/// How often expired keyed state is swept, at most.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
const EXPIRE_BATCH: usize = 100_000;

/// Checkpointing facilities of a task.
#[derive(Debug, Clone)]
pub(crate) struct TaskCheckpointing {
    pub(crate) storage: CheckpointStorage,
    pub(crate) mode: CheckpointingMode,
}

/// Keyed state setup of an operator subtask.
pub(crate) struct KeyedSetup {
    pub(crate) backend: Arc<dyn StateBackend>,
    pub(crate) key_groups: KeyGroupRange,
    pub(crate) selector: KeySelector,
}

/// What a task needs to run.
pub(crate) struct TaskEnv {
    pub(crate) id: TaskId,
    pub(crate) info: Arc<TaskInfo>,
    pub(crate) control: mpsc::UnboundedReceiver<TaskControl>,
    pub(crate) events: mpsc::UnboundedSender<TaskEvent>,
    pub(crate) inputs: InputGate,
    pub(crate) output: OutputRouter,
    pub(crate) metrics: Arc<TaskMetrics>,
    pub(crate) checkpointing: Option<TaskCheckpointing>,
    pub(crate) clock: SharedClock,
    pub(crate) restore: Option<TaskRestore>,
    pub(crate) keyed: Option<KeyedSetup>,
    pub(crate) idle_wait: Duration,
}

impl TaskEnv {
    fn wrap(&self) -> impl Fn(Error) -> Error + use<> {
        let op = self.info.operator_id.clone();
        let subtask = self.info.subtask;
        move |e| e.in_operator(&op, subtask)
    }

    fn decline(&self, checkpoint_id: CheckpointId, reason: String) {
        tracing::warn!(operator = %self.info.operator_id, subtask = self.info.subtask, checkpoint_id, %reason, "declining checkpoint");
        let _ = self.events.send(TaskEvent::Decline { task: self.id, checkpoint_id, reason });
    }

    /// Sends dead letters to the dead-letter port, or logs them when nothing is connected.
    async fn flush_dead_letters(&mut self, letters: &mut Vec<DeadLetter>) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        self.metrics.add_dead_letters(letters.len());
        if self.output.has_port(Port::DeadLetter) {
            let batch = dead_letters_to_batch(&self.info, self.clock.now_ms(), letters)?;
            letters.clear();
            self.output.send_batch(Port::DeadLetter, batch).await
        } else {
            for d in letters.drain(..) {
                tracing::warn!(
                    operator = %self.info.operator_id,
                    location = %d.location(),
                    reason = %d.reason,
                    "dead letter (no dead-letter output is connected; counted in metrics)"
                );
            }
            Ok(())
        }
    }

    /// Starts the asynchronous part of a snapshot; acks or declines when it is done.
    fn spawn_persist(
        &self,
        job: PersistJob,
        timing: (u64, u64),
        chain_tx: Option<oneshot::Sender<Option<Vec<StateFile>>>>,
    ) {
        let events = self.events.clone();
        let task = self.id;
        let checkpoint_id = job.checkpoint_id;
        spawn(
            async move {
                let result = tokio::task::spawn_blocking(move || persist(job)).await;
                let result = match result {
                    Ok(r) => r,
                    Err(e) => Err(Error::Internal(format!("snapshot writer panicked: {e}"))),
                };
                match result {
                    Ok((snapshot, written)) => {
                        if let Some(tx) = chain_tx {
                            let _ = tx.send(Some(snapshot.keyed_state.clone()));
                        }
                        let _ = events.send(TaskEvent::Ack(Box::new(Ack {
                            task,
                            checkpoint_id,
                            snapshot,
                            written,
                            sync_ms: timing.0,
                            align_ms: timing.1,
                        })));
                    }
                    Err(e) => {
                        if let Some(tx) = chain_tx {
                            let _ = tx.send(None);
                        }
                        let _ = events.send(TaskEvent::Decline {
                            task,
                            checkpoint_id,
                            reason: format!("writing the snapshot failed: {e}"),
                        });
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// The asynchronous part of one subtask's snapshot.
struct PersistJob {
    storage: CheckpointStorage,
    checkpoint_id: CheckpointId,
    operator_id: Arc<str>,
    subtask: usize,
    blob: OperatorStateBlob,
    changelog: Option<Arc<Changelog>>,
    /// The chain to extend: the last one written, then files written while the task
    /// waited.
    chain: Vec<StateFile>,
    /// Bytes of those files written for this snapshot.
    written_before: u64,
    key_groups: Option<KeyGroupRange>,
    finished: bool,
}

fn persist(job: PersistJob) -> Result<(SubtaskSnapshot, u64)> {
    let mut written = job.written_before;
    let operator_state = if job.blob.state.is_some() || !job.blob.committables.is_empty() {
        let path = job.storage.checkpoint_dir(job.checkpoint_id).join(format!(
            "{}-{}.opstate",
            slug(&job.operator_id),
            job.subtask
        ));
        let size = job.blob.write(&path)?;
        written += size;
        Some(StateFile { path, size })
    } else {
        None
    };
    let mut chain = job.chain;
    if let Some(log) = job.changelog.as_ref().filter(|l| !l.is_empty()) {
        let file = write_changelog(&job.storage, job.checkpoint_id, &job.operator_id, job.subtask, log)?;
        written += file.size;
        chain.push(file);
    }
    if chain.len() > MAX_CHAIN {
        let paths: Vec<PathBuf> = chain.iter().map(|f| f.path.clone()).collect();
        let path = job.storage.new_shared_file(job.checkpoint_id, &job.operator_id, job.subtask);
        let mut w = KvFileWriter::create(&path)?;
        for entry in MergedChain::open(&paths)? {
            let (k, v) = entry?;
            // The base is first in its chain: deletions need not be kept.
            if let Some(v) = v {
                w.append(&k, Some(&v))?;
            }
        }
        let size = w.finish()?;
        written += size;
        chain = vec![StateFile { path, size }];
    }
    Ok((
        SubtaskSnapshot {
            subtask: job.subtask,
            operator_state,
            keyed_state: chain,
            key_groups: job.key_groups,
            finished: job.finished,
        },
        written,
    ))
}

/// Writes a changelog, sorted, to a new shared keyed-state file of checkpoint `id`.
fn write_changelog(
    storage: &CheckpointStorage,
    id: CheckpointId,
    operator: &str,
    subtask: usize,
    log: &Changelog,
) -> Result<StateFile> {
    let path = storage.new_shared_file(id, operator, subtask);
    let mut w = KvFileWriter::create(&path)?;
    log.for_each_sorted(|k, v| w.append(k, v))?;
    let size = w.finish()?;
    Ok(StateFile { path, size })
}

/// Sleeps until a timer at `at` (job-clock ms) may be due. The sleep is capped at 100 ms
/// because the job clock need not be the wall clock (a manual clock in tests moves in
/// jumps): the task re-reads the clock at least that often while a timer is pending.
async fn timer_sleep(at: Option<i64>, clock: &SharedClock) {
    let Some(at) = at else { return std::future::pending().await };
    let wait = at.saturating_sub(clock.now_ms()).clamp(0, 100);
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Sources

pub(crate) async fn run_source_task(mut env: TaskEnv, factory: Arc<dyn SourceFactory>) -> Result<()> {
    let wrap = env.wrap();
    let mut source = factory.create(&env.info).map_err(&wrap)?;
    let mut ctx = SourceContext::new(env.info.clone(), env.clock.clone(), env.metrics.clone());
    if let Some(restore) = env.restore.take() {
        source.restore(&mut ctx, restore.operator_state).await.map_err(&wrap)?;
    }
    source.open(&mut ctx).await.map_err(&wrap)?;
    let mut finished = false;
    let mut terminal = None;
    // Whether the last status sent downstream is idle (`SourceContext::mark_idle`).
    let mut idle = false;
    loop {
        // Control messages first, so barriers are injected between two batches.
        loop {
            match env.control.try_recv() {
                Ok(ctrl) => {
                    if source_control(&mut env, source.as_mut(), ctrl, &mut finished, &mut terminal).await? {
                        return Ok(());
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(Error::Canceled),
            }
        }
        if finished {
            match env.control.recv().await {
                Some(ctrl) => {
                    if source_control(&mut env, source.as_mut(), ctrl, &mut finished, &mut terminal).await? {
                        return Ok(());
                    }
                }
                None => return Err(Error::Canceled),
            }
            continue;
        }
        let poll = source.poll_next(&mut ctx).await.map_err(&wrap)?;
        let mut dead = std::mem::take(&mut ctx.dead);
        env.flush_dead_letters(&mut dead).await?;
        // Idle goes out (once per quiet spell) before anything of this poll; a batch or
        // watermark that follows makes the channel active again downstream.
        if std::mem::take(&mut ctx.idle) && !idle {
            idle = true;
            env.output.broadcast(Message::Idle).await?;
        }
        match poll {
            SourcePoll::Batch(batch) => {
                idle &= batch.num_rows() == 0;
                env.output.send_batch(Port::Main, batch).await?;
                if let Some(w) = ctx.watermark.take() {
                    idle = false;
                    env.output.broadcast(Message::Watermark(w)).await?;
                }
            }
            SourcePoll::Idle => {
                if let Some(w) = ctx.watermark.take() {
                    idle = false;
                    env.output.broadcast(Message::Watermark(w)).await?;
                }
                tokio::select! {
                    ctrl = env.control.recv() => match ctrl {
                        Some(ctrl) => {
                            if source_control(&mut env, source.as_mut(), ctrl, &mut finished, &mut terminal).await? {
                                return Ok(());
                            }
                        }
                        None => return Err(Error::Canceled),
                    },
                    _ = tokio::time::sleep(env.idle_wait) => {}
                }
            }
            SourcePoll::Finished => {
                finished = true;
                env.output.broadcast(Message::EndOfStream).await?;
                if env.checkpointing.is_some() {
                    // Stay alive for the final checkpoint, which the coordinator triggers
                    // once every source has finished.
                    let _ = env.events.send(TaskEvent::SourceFinished(env.id));
                } else {
                    source.close().await.map_err(&wrap)?;
                    return Ok(());
                }
            }
        }
    }
}

/// Handles one control message; returns true when the source must stop.
async fn source_control(
    env: &mut TaskEnv,
    source: &mut dyn Source,
    ctrl: TaskControl,
    finished: &mut bool,
    terminal: &mut Option<CheckpointId>,
) -> Result<bool> {
    let wrap = env.wrap();
    match ctrl {
        TaskControl::Trigger { barrier, drain } => {
            if drain && !*finished {
                env.output.broadcast(Message::Watermark(MAX_WATERMARK)).await?;
                env.output.broadcast(Message::EndOfStream).await?;
                *finished = true;
            }
            let started = Instant::now();
            let state = source.snapshot(barrier.checkpoint_id);
            env.output.broadcast(Message::Barrier(barrier)).await?;
            let sync_ms = millis(started.elapsed());
            match (state, &env.checkpointing) {
                (Ok(state), Some(cp)) => env.spawn_persist(
                    PersistJob {
                        storage: cp.storage.clone(),
                        checkpoint_id: barrier.checkpoint_id,
                        operator_id: env.info.operator_id.clone(),
                        subtask: env.info.subtask,
                        blob: OperatorStateBlob { state, committables: Vec::new() },
                        changelog: None,
                        chain: Vec::new(),
                        written_before: 0,
                        key_groups: None,
                        finished: *finished,
                    },
                    (sync_ms, 0),
                    None,
                ),
                (Ok(_), None) => env.decline(barrier.checkpoint_id, "checkpointing is not configured".into()),
                (Err(e), _) => env.decline(barrier.checkpoint_id, format!("source snapshot failed: {}", wrap(e))),
            }
            if barrier.terminal {
                // Stay until the final checkpoint completes: a source may act on its
                // completion (a Kafka source commits its last offsets to the group).
                *terminal = Some(barrier.checkpoint_id);
            }
        }
        TaskControl::Complete(id) => {
            source.notify_checkpoint_complete(id).await.map_err(&wrap)?;
            if terminal.is_some_and(|t| id >= t) {
                source.close().await.map_err(&wrap)?;
                return Ok(true);
            }
        }
        TaskControl::Abort(id) => {
            if *terminal == Some(id) {
                return Err(wrap(Error::CheckpointFailed {
                    checkpoint_id: id,
                    reason: "the final checkpoint was aborted".into(),
                }));
            }
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------
// Transforms and sinks

pub(crate) enum OperatorImpl {
    Transform(Box<dyn Transform>),
    Sink(Box<dyn Sink>),
}

pub(crate) enum OperatorFactory {
    Transform(Arc<dyn TransformFactory>),
    Sink(Arc<dyn SinkFactory>),
}

/// The keyed-state chain a snapshot writer reports back (`None`: the write failed).
type ChainReport = oneshot::Receiver<Option<Vec<StateFile>>>;

/// Keyed-state checkpoint bookkeeping of a task.
#[derive(Default)]
struct KeyedChain {
    chain: Vec<StateFile>,
    /// Keyed-state files written while the task waited (state past its memory budget)
    /// that no snapshot has carried into the chain yet: they follow `chain`.
    pending: Vec<StateFile>,
    /// What the snapshot being written adds to the chain, kept until the write is known
    /// to have succeeded.
    in_flight: Option<InFlight>,
}

/// The keyed-state changes of a snapshot being written.
struct InFlight {
    /// Files already written (this snapshot's `pending`), in chain order.
    files: Vec<StateFile>,
    /// The changelog it writes after them.
    log: Option<Arc<Changelog>>,
    report: ChainReport,
}

/// Loads restored keyed state into `store`; returns the chain to continue from.
fn restore_keyed(
    store: &mut KeyedStateStore,
    restore: &KeyedRestore,
    storage: Option<&CheckpointStorage>,
    info: &TaskInfo,
) -> Result<Vec<StateFile>> {
    if let Some(chain) = &restore.reuse {
        let paths: Vec<PathBuf> = chain.iter().map(|f| f.path.clone()).collect();
        store.load_chain(&paths, |_| Ok(()))?;
        return Ok(chain.clone());
    }
    let Some(storage) = storage else {
        for chain in &restore.chains {
            store.load_chain(chain, |_| Ok(()))?;
        }
        return Ok(Vec::new());
    };
    // The key groups changed (or the files live elsewhere): write a new base holding
    // exactly this subtask's entries. Chains are in key-group order and keys start with
    // the key group, so the output is sorted.
    let path = storage.new_shared_file(restore.checkpoint_id + 1, &info.operator_id, info.subtask);
    let mut writer = KvFileWriter::create(&path)?;
    for chain in &restore.chains {
        store.load_chain(chain, |(k, v)| writer.append(k, v.as_deref()))?;
    }
    let size = writer.finish()?;
    Ok(vec![StateFile { path, size }])
}

struct OperatorTask {
    env: TaskEnv,
    op: OperatorImpl,
    ctx: OperatorContext,
    aligner: BarrierAligner,
    /// Input i may close: it delivered a terminal barrier, or end of stream when
    /// checkpointing is off.
    may_close: Vec<bool>,
    eos: Vec<bool>,
    eos_count: usize,
    watermarks: Vec<Watermark>,
    /// Inputs that declared themselves idle ([`Message::Idle`]); left out of the minimum.
    idle: Vec<bool>,
    /// Minimum over the active inputs, as last handed to the operator.
    current_watermark: Watermark,
    /// Highest watermark sent downstream: the output never goes backwards.
    output_watermark: Watermark,
    /// Whether the last status sent downstream is idle.
    output_idle: bool,
    align_started: Option<Instant>,
    terminal: Option<CheckpointId>,
    terminal_committed: bool,
    pending: Vec<(CheckpointId, Vec<u8>)>,
    keyed_chain: KeyedChain,
    last_expire: Instant,
}

pub(crate) async fn run_operator_task(mut env: TaskEnv, factory: OperatorFactory) -> Result<()> {
    let wrap = env.wrap();
    let info = env.info.clone();
    let mut op = match &factory {
        OperatorFactory::Transform(f) => OperatorImpl::Transform(f.create(&info).map_err(&wrap)?),
        OperatorFactory::Sink(f) => OperatorImpl::Sink(f.create(&info).map_err(&wrap)?),
    };
    let restore = env.restore.take();
    let mut chain = Vec::new();
    let (keyed_store, selector) = match env.keyed.take() {
        Some(setup) => {
            let spill = setup
                .backend
                .open_store(&StoreScope {
                    job_id: &info.job_id,
                    operator_id: &info.operator_id,
                    subtask: info.subtask,
                    attempt: info.attempt,
                })
                .map_err(&wrap)?;
            let mut keyed = KeyedStateStore::new(
                info.operator_id.to_string(),
                spill,
                setup.key_groups,
                env.clock.clone(),
                env.checkpointing.is_some(),
            );
            if let Some(budget) = setup.backend.memory_budget() {
                keyed = keyed.with_memory_budget(budget);
                keyed.reserve_budget_share(info.parallelism);
            }
            if let Some(kr) = restore.as_ref().and_then(|r| r.keyed.clone()) {
                let storage = env.checkpointing.as_ref().map(|c| c.storage.clone());
                let info2 = info.clone();
                let (keyed_back, result) = tokio::task::spawn_blocking(move || {
                    let r = restore_keyed(&mut keyed, &kr, storage.as_ref(), &info2);
                    (keyed, r)
                })
                .await
                .map_err(|e| Error::Internal(format!("restoring keyed state panicked: {e}")))?;
                keyed = keyed_back;
                chain = result.map_err(&wrap)?;
            }
            (Some(keyed), Some(setup.selector))
        }
        None => (None, None),
    };
    let mut ctx = OperatorContext::new(info.clone(), env.clock.clone(), keyed_store, selector);
    if let Some(restore) = restore {
        match &mut op {
            OperatorImpl::Transform(t) => t.restore(restore.operator_state).await.map_err(&wrap)?,
            OperatorImpl::Sink(s) => {
                s.restore(restore.operator_state).await.map_err(&wrap)?;
                s.recover(restore.committables, &mut ctx).await.map_err(&wrap)?;
            }
        }
    }
    match &mut op {
        OperatorImpl::Transform(t) => t.open(&mut ctx).await.map_err(&wrap)?,
        OperatorImpl::Sink(s) => s.open(&mut ctx).await.map_err(&wrap)?,
    }
    let n = env.inputs.len();
    let mode = env.checkpointing.as_ref().map_or(CheckpointingMode::ExactlyOnce, |c| c.mode);
    let mut task = OperatorTask {
        aligner: BarrierAligner::new(n, mode),
        may_close: vec![false; n],
        eos: vec![false; n],
        eos_count: 0,
        watermarks: vec![Watermark::MIN; n],
        idle: vec![false; n],
        current_watermark: Watermark::MIN,
        output_watermark: Watermark::MIN,
        output_idle: false,
        align_started: None,
        terminal: None,
        terminal_committed: false,
        pending: Vec::new(),
        keyed_chain: KeyedChain { chain, pending: Vec::new(), in_flight: None },
        last_expire: Instant::now(),
        env,
        op,
        ctx,
    };
    task.run().await
}

impl OperatorTask {
    fn is_sink(&self) -> bool {
        matches!(self.op, OperatorImpl::Sink(_))
    }

    async fn run(&mut self) -> Result<()> {
        let mut inputs_done = false;
        loop {
            tokio::select! {
                biased;
                ctrl = self.env.control.recv() => {
                    match ctrl {
                        None => return Err(Error::Canceled),
                        Some(ctrl) => {
                            if self.on_control(ctrl, inputs_done).await? {
                                return self.close().await;
                            }
                        }
                    }
                }
                // Before the inputs, so that a busy input cannot starve processing-time timers.
                _ = timer_sleep(self.ctx.timer, &self.env.clock), if self.timers_enabled() => {
                    self.fire_timer().await?;
                }
                ev = self.env.inputs.next(&self.aligner), if !inputs_done => {
                    match ev {
                        None => {
                            inputs_done = true;
                            if self.on_inputs_done().await? {
                                return self.close().await;
                            }
                        }
                        Some(crate::channel::GateEvent::Closed(i)) => {
                            if !self.may_close[i] {
                                return Err(Error::Internal(format!(
                                    "{} (operator `{}`): input {i} closed before its stream ended",
                                    crate::channel::DOWNSTREAM_CLOSED, self.env.info.operator_id
                                )));
                            }
                            let step = self.aligner.on_input_closed(i);
                            self.on_step(step).await?;
                        }
                        Some(crate::channel::GateEvent::Message(i, msg)) => self.on_message(i, msg).await?,
                    }
                }
            }
        }
    }

    /// Timers fire for transforms that asked for one, until every input has ended.
    fn timers_enabled(&self) -> bool {
        self.ctx.timer.is_some() && self.eos_count < self.eos.len() && !self.is_sink()
    }

    async fn fire_timer(&mut self) -> Result<()> {
        let now = self.env.clock.now_ms();
        match self.ctx.timer {
            Some(at) if at <= now => {
                self.ctx.timer = None;
                let wrap = self.env.wrap();
                if let OperatorImpl::Transform(t) = &mut self.op {
                    t.on_timer(now, &mut self.ctx).await.map_err(&wrap)?;
                }
                self.flush().await
            }
            // Not due yet by the job clock (the sleep is capped; see `timer_sleep`).
            _ => Ok(()),
        }
    }

    async fn close(&mut self) -> Result<()> {
        let wrap = self.env.wrap();
        match &mut self.op {
            OperatorImpl::Transform(t) => t.close().await.map_err(&wrap),
            OperatorImpl::Sink(s) => s.close().await.map_err(&wrap),
        }
    }

    /// All inputs closed. Returns true when the task can stop now.
    async fn on_inputs_done(&mut self) -> Result<bool> {
        let wrap = self.env.wrap();
        if self.env.checkpointing.is_none() {
            // No checkpoints: a sink's last transaction is committed right away.
            if let OperatorImpl::Sink(s) = &mut self.op
                && let Some(c) = s.pre_commit(0, &mut self.ctx).await.map_err(&wrap)?
            {
                s.commit(0, c).await.map_err(&wrap)?;
            }
            return Ok(true);
        }
        if self.terminal.is_none() {
            return Err(Error::Internal(format!(
                "{} (operator `{}`): inputs closed without a final checkpoint",
                crate::channel::DOWNSTREAM_CLOSED,
                self.env.info.operator_id
            )));
        }
        // A sink waits until the final checkpoint is complete and committed.
        Ok(!self.is_sink() || self.terminal_committed)
    }

    /// Returns true when the task can stop now.
    async fn on_control(&mut self, ctrl: TaskControl, inputs_done: bool) -> Result<bool> {
        let wrap = self.env.wrap();
        match ctrl {
            TaskControl::Complete(id) => {
                if let OperatorImpl::Sink(s) = &mut self.op {
                    while self.pending.first().is_some_and(|(cid, _)| *cid <= id) {
                        let (cid, data) = self.pending.remove(0);
                        s.commit(cid, data).await.map_err(&wrap)?;
                    }
                    s.notify_checkpoint_complete(id).await.map_err(&wrap)?;
                } else if let OperatorImpl::Transform(t) = &mut self.op {
                    t.notify_checkpoint_complete(id).await.map_err(&wrap)?;
                }
                if self.terminal.is_some_and(|t| id >= t) {
                    self.terminal_committed = true;
                    return Ok(inputs_done);
                }
            }
            TaskControl::Abort(id) => {
                if self.terminal == Some(id) {
                    return Err(Error::CheckpointFailed {
                        checkpoint_id: id,
                        reason: "the final checkpoint was aborted".into(),
                    });
                }
            }
            TaskControl::Trigger { .. } => {}
        }
        Ok(false)
    }

    async fn on_message(&mut self, input: usize, msg: Message) -> Result<()> {
        match msg {
            Message::Data(batch) => {
                self.idle[input] = false;
                self.env.metrics.add_in(batch.num_rows(), batch.get_array_memory_size());
                let wrap = self.env.wrap();
                match &mut self.op {
                    OperatorImpl::Transform(t) => t.process_batch(batch, &mut self.ctx).await.map_err(&wrap)?,
                    OperatorImpl::Sink(s) => s.write_batch(batch, &mut self.ctx).await.map_err(&wrap)?,
                }
                self.flush().await?;
                if self.last_expire.elapsed() >= EXPIRE_EVERY {
                    self.expire_state()?;
                }
            }
            Message::Barrier(barrier) => {
                if barrier.terminal {
                    self.may_close[input] = true;
                }
                if self.align_started.is_none() {
                    self.align_started = Some(Instant::now());
                }
                let step = self.aligner.on_barrier(input, barrier);
                self.on_step(step).await?;
            }
            Message::Watermark(w) => {
                self.idle[input] = false;
                self.watermarks[input] = self.watermarks[input].max(w);
                self.advance_watermark().await?;
            }
            Message::Idle => {
                self.idle[input] = true;
                self.advance_watermark().await?;
                // With every open input idle this task has nothing to say about event
                // time either: pass the status on so downstream does not wait for it.
                let all_idle = self.idle.iter().zip(&self.eos).all(|(idle, eos)| *idle || *eos);
                if all_idle && !self.output_idle {
                    self.output_idle = true;
                    self.env.output.broadcast(Message::Idle).await?;
                }
            }
            Message::EndOfStream => {
                if !self.eos[input] {
                    self.eos[input] = true;
                    self.eos_count += 1;
                    self.idle[input] = false;
                    self.watermarks[input] = MAX_WATERMARK;
                    if self.env.checkpointing.is_none() {
                        self.may_close[input] = true;
                    }
                    self.advance_watermark().await?;
                    if self.eos_count == self.eos.len() {
                        let wrap = self.env.wrap();
                        match &mut self.op {
                            OperatorImpl::Transform(t) => t.on_end_of_input(&mut self.ctx).await.map_err(&wrap)?,
                            OperatorImpl::Sink(s) => s.on_end_of_input(&mut self.ctx).await.map_err(&wrap)?,
                        }
                        self.flush().await?;
                        self.env.output.broadcast(Message::EndOfStream).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn expire_state(&mut self) -> Result<()> {
        self.last_expire = Instant::now();
        if let Some(keyed) = &mut self.ctx.keyed {
            keyed.expire(EXPIRE_BATCH).map_err(self.env.wrap())?;
        }
        Ok(())
    }

    /// The minimum over the inputs that are not idle moved forward: tell the operator,
    /// then forward it.
    ///
    /// When every input is idle, event time advances to the highest watermark of any
    /// input (as Flink's valve does): each input has promised nothing older than its own
    /// watermark, and none is expected to send soon. Without this, the order in which two
    /// inputs fall quiet would decide whether their last watermarks ever take effect.
    async fn advance_watermark(&mut self) -> Result<()> {
        let active = self.watermarks.iter().zip(&self.idle).filter(|(_, idle)| !**idle).map(|(w, _)| *w).min();
        let min = active.or_else(|| self.watermarks.iter().copied().max());
        if let Some(min) = min
            && min > self.current_watermark
        {
            self.current_watermark = min;
            let wrap = self.env.wrap();
            if let OperatorImpl::Transform(t) = &mut self.op {
                t.on_watermark(min, &mut self.ctx).await.map_err(&wrap)?;
                self.flush().await?;
            }
            self.forward_watermark(min).await?;
        }
        Ok(())
    }

    /// Sends `w` downstream if it is an advance.
    ///
    /// The output watermark is the running maximum of the inputs' minimum and of what the
    /// operator generated itself ([`OperatorContext::emit_watermark`]). An operator that
    /// generates none therefore forwards exactly the minimum of its inputs; a watermark
    /// assigner may run ahead of its inputs (they usually carry none) but its output still
    /// never goes backwards, and end of input (the maximum) always passes.
    async fn forward_watermark(&mut self, w: Watermark) -> Result<()> {
        if w > self.output_watermark {
            self.output_watermark = w;
            self.output_idle = false;
            self.env.output.broadcast(Message::Watermark(w)).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.ctx.out.is_empty() {
            if self.is_sink() {
                self.ctx.out.clear();
                return Err(Error::Graph {
                    operator: self.env.info.operator_id.to_string(),
                    message: "a sink emitted records, but sinks have no output".into(),
                });
            }
            for batch in std::mem::take(&mut self.ctx.out) {
                self.output_idle = false;
                self.env.output.send_batch(Port::Main, batch).await?;
            }
        }
        let mut dead = std::mem::take(&mut self.ctx.dead);
        self.env.flush_dead_letters(&mut dead).await?;
        for batch in std::mem::take(&mut self.ctx.late) {
            self.env.metrics.add_late_records(batch.num_rows());
            if self.env.output.has_port(Port::Late) {
                self.env.output.send_batch(Port::Late, batch).await?;
            } else {
                tracing::warn!(
                    operator = %self.env.info.operator_id,
                    rows = batch.num_rows(),
                    "late records dropped (no late-records output is connected; counted in metrics)"
                );
            }
        }
        if let Some(w) = self.ctx.watermark.take() {
            self.forward_watermark(w).await?;
        }
        if std::mem::take(&mut self.ctx.idle) && !self.output_idle {
            self.output_idle = true;
            self.env.output.broadcast(Message::Idle).await?;
        }
        Ok(())
    }

    async fn on_step(&mut self, step: AlignStep) -> Result<()> {
        if let Some(old) = step.superseded {
            tracing::debug!(operator = %self.env.info.operator_id, checkpoint_id = old, "alignment superseded by a newer barrier");
        }
        if let AlignAction::Trigger(barrier) = step.action {
            let align_ms = self.align_started.take().map_or(0, |t| millis(t.elapsed()));
            self.snapshot(barrier, align_ms).await?;
        } else if self.aligner.aligning().is_none() {
            self.align_started = None;
        }
        Ok(())
    }

    /// Writes this checkpoint's keyed-state changes to files now, while the task waits
    /// (state past its memory budget: a changelog could not be held in memory), and adds
    /// them to the files the snapshot carries into the chain. Returns the bytes written.
    fn write_keyed_changes(&mut self, storage: &CheckpointStorage, id: CheckpointId) -> Result<u64> {
        let wrap = self.env.wrap();
        let Some(keyed) = self.ctx.keyed.as_mut() else { return Ok(0) };
        let mut written = 0;
        let operator = &self.env.info.operator_id;
        let subtask = self.env.info.subtask;
        // A changelog whose write failed earlier is older than anything in the store.
        if let Some(older) = keyed.take_older().filter(|l| !l.is_empty()) {
            let file = write_changelog(storage, id, operator, subtask, &older).map_err(&wrap)?;
            written += file.size;
            self.keyed_chain.pending.push(file);
        }
        let path = storage.new_shared_file(id, operator, subtask);
        let mut w = KvFileWriter::create(&path).map_err(&wrap)?;
        keyed.write_changes(&mut w).map_err(&wrap)?;
        if w.entries() == 0 {
            drop(w);
            crate::fs::for_path(&path)
                .and_then(|fs| fs.remove_file(&path).map_err(|e| Error::io(&path, e)))
                .map_err(&wrap)?;
            return Ok(written);
        }
        let size = w.finish().map_err(&wrap)?;
        self.keyed_chain.pending.push(StateFile { path, size });
        Ok(written + size)
    }

    async fn snapshot(&mut self, barrier: Barrier, align_ms: u64) -> Result<()> {
        let wrap = self.env.wrap();
        let id = barrier.checkpoint_id;
        let started = Instant::now();
        let state = match &mut self.op {
            OperatorImpl::Transform(t) => {
                // Downstream can start aligning while this task snapshots.
                self.env.output.broadcast(Message::Barrier(barrier)).await?;
                t.snapshot(id, &mut self.ctx)
            }
            OperatorImpl::Sink(s) => {
                // A failed flush loses nothing only if the task fails and replays.
                if let Some(c) = s.pre_commit(id, &mut self.ctx).await.map_err(&wrap)? {
                    self.pending.push((id, c));
                }
                let state = s.snapshot(id);
                // The dead letters of the flush belong before the barrier: the records
                // they stand for are not replayed from this checkpoint.
                let mut dead = std::mem::take(&mut self.ctx.dead);
                self.env.flush_dead_letters(&mut dead).await?;
                self.env.output.broadcast(Message::Barrier(barrier)).await?;
                state
            }
        };
        if barrier.terminal {
            self.terminal = Some(id);
        }
        let Some(cp) = self.env.checkpointing.clone() else {
            self.env.decline(id, "checkpointing is not configured".into());
            return Ok(());
        };
        // The previous keyed-state write must be settled before the chain grows.
        let mut changelog = None;
        let mut chain_tx = None;
        let mut written_before = 0;
        if self.ctx.keyed.is_some() {
            self.expire_state()?;
            if let Some(in_flight) = self.keyed_chain.in_flight.take() {
                match in_flight.report.await {
                    Ok(Some(chain)) => self.keyed_chain.chain = chain,
                    _ => {
                        // Not written: its files and changes go into this snapshot, first.
                        self.keyed_chain.pending.splice(0..0, in_flight.files);
                        if let (Some(keyed), Some(log)) = (&mut self.ctx.keyed, in_flight.log) {
                            keyed.restore_changelog(Arc::unwrap_or_clone(log)).map_err(self.env.wrap())?;
                        }
                    }
                }
            }
            let log = match self.ctx.keyed.as_mut() {
                Some(k) if k.writes_changes_in_place() => {
                    // Disk reads and writes of up to the whole state: other tasks of a
                    // multi-threaded runtime move to another worker meanwhile.
                    let multi_thread = tokio::runtime::Handle::try_current()
                        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
                    written_before = if multi_thread {
                        tokio::task::block_in_place(|| self.write_keyed_changes(&cp.storage, id))?
                    } else {
                        self.write_keyed_changes(&cp.storage, id)?
                    };
                    None
                }
                Some(k) => k.take_changelog().map_err(self.env.wrap())?.map(Arc::new),
                None => None,
            };
            let (tx, rx) = oneshot::channel();
            let files = std::mem::take(&mut self.keyed_chain.pending);
            self.keyed_chain.in_flight = Some(InFlight { files, log: log.clone(), report: rx });
            changelog = log;
            chain_tx = Some(tx);
        }
        match state {
            Ok(state) => {
                let sync_ms = millis(started.elapsed());
                self.env.spawn_persist(
                    PersistJob {
                        storage: cp.storage.clone(),
                        checkpoint_id: id,
                        operator_id: self.env.info.operator_id.clone(),
                        subtask: self.env.info.subtask,
                        blob: OperatorStateBlob { state, committables: self.pending.clone() },
                        changelog,
                        chain: self
                            .keyed_chain
                            .chain
                            .iter()
                            .chain(self.keyed_chain.in_flight.iter().flat_map(|f| &f.files))
                            .cloned()
                            .collect(),
                        written_before,
                        key_groups: self.ctx.keyed.as_ref().map(|k| k.key_groups()),
                        finished: false,
                    },
                    (sync_ms, align_ms),
                    chain_tx,
                );
            }
            Err(e) => {
                if let Some(tx) = chain_tx {
                    let _ = tx.send(None);
                }
                self.env.decline(id, format!("snapshot failed: {}", wrap(e)));
            }
        }
        Ok(())
    }
}
