//! The operator API: [`Source`], [`Transform`] and [`Sink`].
//!
//! Each trait has one required method; checkpoint, commit, watermark and close hooks
//! have defaults, so a connector author writes no checkpoint plumbing unless the
//! connector keeps state. The runtime creates one instance per subtask through a
//! factory ([`SourceFactory`], ...), which is also how it re-creates operators after a
//! restart. A closure `Fn(&TaskInfo) -> Result<impl Source>` is a factory.
//!
//! ```
//! use arrow::record_batch::RecordBatch;
//! use operators_core::operator::{OperatorContext, Transform};
//! use operators_core::Result;
//!
//! /// Drops empty batches and passes the rest on.
//! struct DropEmpty;
//!
//! #[async_trait::async_trait]
//! impl Transform for DropEmpty {
//!     async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
//!         if batch.num_rows() > 0 {
//!             ctx.emit(batch);
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::sync::Arc;
use std::sync::LazyLock;

use arrow::array::{ArrayRef, Int64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::key::{BatchKeys, KeySelector};
use crate::message::{CheckpointId, Watermark};
use crate::metrics::TaskMetrics;
use crate::state::KeyedStateStore;

/// Identity of one running operator instance.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// Job name.
    pub job_name: Arc<str>,
    /// The job's id (32 lower-case hex). A job server keeps it across its own
    /// restarts, so it does not tell two runs apart: see `run_id`.
    pub job_id: Arc<str>,
    /// Unique to this start of the job (32 lower-case hex): what a sink puts in the
    /// names of what it writes so that no later run, even one of the same job id
    /// resumed after a crash, can collide with them.
    pub run_id: Arc<str>,
    /// Stable operator id.
    pub operator_id: Arc<str>,
    /// Index of this subtask, `0..parallelism`.
    pub subtask: usize,
    /// Number of subtasks of the operator.
    pub parallelism: usize,
    /// Number of key groups.
    pub max_parallelism: u16,
    /// Restart attempt, 0 for the first.
    pub attempt: u32,
}

/// Operator state handed back on restore.
///
/// Every subtask receives the snapshots of *all* subtasks of the previous run (Flink's
/// union redistribution) and keeps what belongs to it — a source, for example, keeps
/// the positions of the files or partitions it is now assigned. When the parallelism did
/// not change, [`RestoredState::own`] is the snapshot this subtask wrote itself.
#[derive(Debug, Clone, Default)]
pub struct RestoredState {
    /// Checkpoint the state comes from.
    pub checkpoint_id: CheckpointId,
    /// Parallelism of the previous run.
    pub previous_parallelism: usize,
    /// `(old subtask index, snapshot)` of every old subtask that wrote one.
    pub snapshots: Vec<(usize, Vec<u8>)>,
    own_index: Option<usize>,
}

impl RestoredState {
    pub(crate) fn new(
        checkpoint_id: CheckpointId,
        previous_parallelism: usize,
        snapshots: Vec<(usize, Vec<u8>)>,
        subtask: usize,
        parallelism: usize,
    ) -> Self {
        Self {
            checkpoint_id,
            previous_parallelism,
            snapshots,
            own_index: (previous_parallelism == parallelism).then_some(subtask),
        }
    }

    /// The snapshot this subtask wrote, when the parallelism is unchanged.
    pub fn own(&self) -> Option<&[u8]> {
        let idx = self.own_index?;
        self.snapshots.iter().find(|(i, _)| *i == idx).map(|(_, s)| s.as_slice())
    }

    /// Whether nothing was restored.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

/// A record that could not be processed, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where the record came from: a file path, `topic/partition`, a table...
    pub origin: String,
    /// Line number in the origin, 1-based, when it has lines.
    pub line: Option<u64>,
    /// Byte offset (files) or record offset (Kafka) in the origin.
    pub offset: Option<u64>,
    /// What is wrong with it.
    pub reason: String,
    /// The record as read (lossily decoded as UTF-8).
    pub record: String,
}

impl DeadLetter {
    /// `origin:line` or `origin@offset`, for error messages.
    pub fn location(&self) -> String {
        match (self.line, self.offset) {
            (Some(l), Some(o)) => format!("{}:{l} (byte {o})", self.origin),
            (Some(l), None) => format!("{}:{l}", self.origin),
            (None, Some(o)) => format!("{}@{o}", self.origin),
            (None, None) => self.origin.clone(),
        }
    }

    /// The error for this record when bad records fail the job.
    pub fn into_error(self) -> Error {
        Error::bad_record(self.location(), self.reason)
    }
}

/// What to do with a record that cannot be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRecordPolicy {
    /// Fail the job, naming the record. The default: nothing is lost silently.
    #[default]
    Fail,
    /// Send it to the operator's dead-letter output and carry on.
    DeadLetter,
}

impl std::str::FromStr for BadRecordPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "fail" => Ok(BadRecordPolicy::Fail),
            "dead-letter" | "deadletter" | "dlq" => Ok(BadRecordPolicy::DeadLetter),
            other => {
                Err(Error::config("bad-records", format!("unknown policy `{other}`; expected fail or dead-letter")))
            }
        }
    }
}

static DEAD_LETTER_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("operator", DataType::Utf8, false),
        Field::new("subtask", DataType::UInt32, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, true),
        Field::new("offset", DataType::UInt64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new("timestamp_ms", DataType::Int64, false),
    ]))
});

/// Schema of the dead-letter stream of every operator.
pub fn dead_letter_schema() -> SchemaRef {
    DEAD_LETTER_SCHEMA.clone()
}

pub(crate) fn dead_letters_to_batch(info: &TaskInfo, now_ms: i64, letters: &[DeadLetter]) -> Result<RecordBatch> {
    let n = letters.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![info.operator_id.as_ref(); n])),
        Arc::new(UInt32Array::from(vec![info.subtask as u32; n])),
        Arc::new(StringArray::from_iter_values(letters.iter().map(|d| d.origin.as_str()))),
        Arc::new(UInt64Array::from_iter(letters.iter().map(|d| d.line))),
        Arc::new(UInt64Array::from_iter(letters.iter().map(|d| d.offset))),
        Arc::new(StringArray::from_iter_values(letters.iter().map(|d| d.reason.as_str()))),
        Arc::new(StringArray::from_iter_values(letters.iter().map(|d| d.record.as_str()))),
        Arc::new(Int64Array::from(vec![now_ms; n])),
    ];
    RecordBatch::try_new(dead_letter_schema(), columns).map_err(|e| Error::arrow("building dead-letter batch", e))
}

/// What a source produced when polled.
#[derive(Debug)]
pub enum SourcePoll {
    /// A batch of records (may be empty).
    Batch(RecordBatch),
    /// Nothing available right now; the runtime polls again shortly.
    Idle,
    /// All input has been read (bounded sources).
    Finished,
}

/// Context of a source subtask.
#[derive(Debug)]
pub struct SourceContext {
    info: Arc<TaskInfo>,
    clock: SharedClock,
    metrics: Arc<TaskMetrics>,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) watermark: Option<Watermark>,
    pub(crate) idle: bool,
}

impl SourceContext {
    pub(crate) fn new(info: Arc<TaskInfo>, clock: SharedClock, metrics: Arc<TaskMetrics>) -> Self {
        Self { info, clock, metrics, dead: Vec::new(), watermark: None, idle: false }
    }

    /// Identity of this subtask.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// The job's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Sends a bad record to the dead-letter output.
    pub fn dead_letter(&mut self, letter: DeadLetter) {
        self.dead.push(letter);
    }

    /// Emits a watermark after the current batch.
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        self.idle = false;
    }

    /// Declares this subtask idle (no partition assigned, or all quiet): downstream
    /// operators leave it out of their watermark minimum until it emits a batch or a
    /// watermark again. Sent after the current poll.
    pub fn mark_idle(&mut self) {
        self.idle = true;
    }

    /// Reports progress of a bounded source (bytes, files or rows done of total).
    pub fn set_progress(&self, done: u64, total: Option<u64>) {
        self.metrics.set_progress(done, total);
    }
}

/// Context of a transform or sink subtask.
#[derive(Debug)]
pub struct OperatorContext {
    info: Arc<TaskInfo>,
    clock: SharedClock,
    pub(crate) out: Vec<RecordBatch>,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) late: Vec<RecordBatch>,
    pub(crate) watermark: Option<Watermark>,
    pub(crate) idle: bool,
    pub(crate) timer: Option<i64>,
    pub(crate) keyed: Option<KeyedStateStore>,
    key_selector: Option<KeySelector>,
}

impl OperatorContext {
    pub(crate) fn new(
        info: Arc<TaskInfo>,
        clock: SharedClock,
        keyed: Option<KeyedStateStore>,
        key_selector: Option<KeySelector>,
    ) -> Self {
        Self {
            info,
            clock,
            out: Vec::new(),
            dead: Vec::new(),
            late: Vec::new(),
            watermark: None,
            idle: false,
            timer: None,
            keyed,
            key_selector,
        }
    }

    /// A context for driving an operator outside a job — in tests of a connector, or in a
    /// tool that calls a sink directly. It has no keyed state; emitted batches and dead
    /// letters are kept and can be taken with [`OperatorContext::take_output`].
    pub fn standalone(info: TaskInfo) -> Self {
        Self::new(Arc::new(info), Arc::new(crate::clock::SystemClock), None, None)
    }

    /// Takes what the operator emitted and dead-lettered so far.
    pub fn take_output(&mut self) -> (Vec<RecordBatch>, Vec<DeadLetter>) {
        (std::mem::take(&mut self.out), std::mem::take(&mut self.dead))
    }

    /// Identity of this subtask.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// The job's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Emits a batch downstream (transforms only).
    pub fn emit(&mut self, batch: RecordBatch) {
        self.out.push(batch);
    }

    /// Sends a bad record to the dead-letter output.
    pub fn dead_letter(&mut self, letter: DeadLetter) {
        self.dead.push(letter);
    }

    /// Sends records that came too late for event-time processing (after a window's
    /// allowed lateness) to the late-records output ([`Stream::late_records`]), in the
    /// input's schema. With nothing connected they are counted in the metrics and dropped.
    ///
    /// [`Stream::late_records`]: crate::pipeline::Stream::late_records
    pub fn emit_late(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.late.push(batch);
        }
    }

    /// Emits a watermark generated by this operator, after the batches emitted so far.
    ///
    /// Only operators that *generate* event time call this (a watermark assigner). The
    /// task forwards the larger of what the operator generated and the minimum over its
    /// inputs, and never a watermark lower than one it already forwarded, so calling it
    /// with a value that is not an advance is harmless.
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        self.idle = false;
    }

    /// Declares this subtask's output idle: downstream operators leave it out of their
    /// watermark minimum until it emits a record or a watermark again.
    pub fn mark_idle(&mut self) {
        self.idle = true;
    }

    /// Asks for [`Transform::on_timer`] to be called once the job clock reaches `at_ms`.
    /// Only the earliest request is kept; the operator asks again from `on_timer` for the
    /// next one.
    pub fn request_timer(&mut self, at_ms: i64) {
        self.timer = Some(self.timer.map_or(at_ms, |t| t.min(at_ms)));
    }

    /// The key columns of the input, when the input is keyed (`key_by`).
    pub fn key_selector(&self) -> Option<&KeySelector> {
        self.key_selector.as_ref()
    }

    /// The key of every row of `batch`; fails when the input is not keyed.
    pub fn keys(&self, batch: &RecordBatch) -> Result<BatchKeys> {
        match &self.key_selector {
            Some(sel) => sel.extract(batch, self.info.max_parallelism),
            None => Err(self.not_keyed()),
        }
    }

    /// The keyed state of this subtask; fails when the input is not keyed.
    pub fn keyed_state(&mut self) -> Result<&mut KeyedStateStore> {
        let err = self.not_keyed();
        self.keyed.as_mut().ok_or(err)
    }

    fn not_keyed(&self) -> Error {
        Error::Graph {
            operator: self.info.operator_id.to_string(),
            message: "keyed state needs a keyed input; use `key_by(...)` before this operator".into(),
        }
    }
}

/// Reads records from outside the job.
///
/// `poll_next` is called in a loop. It must return within a short, bounded time — with
/// [`SourcePoll::Idle`] when nothing is available — because checkpoint barriers are
/// injected between calls.
#[async_trait]
pub trait Source: Send + 'static {
    /// Produces the next batch.
    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll>;

    /// Restores the position from a checkpoint; called before [`Source::open`].
    async fn restore(&mut self, _ctx: &mut SourceContext, _state: RestoredState) -> Result<()> {
        Ok(())
    }

    /// Prepares to read (connect, list files...).
    async fn open(&mut self, _ctx: &mut SourceContext) -> Result<()> {
        Ok(())
    }

    /// The position to store in checkpoint `checkpoint_id`, taken between two batches.
    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Checkpoint `checkpoint_id` is durable (e.g. commit offsets to a consumer group).
    async fn notify_checkpoint_complete(&mut self, _checkpoint_id: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Releases resources; called once when the source stops normally.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Turns batches into batches.
#[async_trait]
pub trait Transform: Send + 'static {
    /// Processes one batch; results go to [`OperatorContext::emit`].
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()>;

    /// Restores operator (non-keyed) state; keyed state is restored by the runtime.
    async fn restore(&mut self, _state: RestoredState) -> Result<()> {
        Ok(())
    }

    /// Prepares to process (register keyed state here); called after restore.
    async fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Event time advanced to `watermark` on every input.
    async fn on_watermark(&mut self, _watermark: Watermark, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Every input has ended; emit anything still buffered.
    async fn on_end_of_input(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// The job clock reached the time asked for with [`OperatorContext::request_timer`]
    /// (processing-time windows, idleness detection). `now_ms` is the clock's time.
    async fn on_timer(&mut self, _now_ms: i64, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Operator (non-keyed) state for checkpoint `checkpoint_id`.
    fn snapshot(&mut self, _checkpoint_id: CheckpointId, _ctx: &mut OperatorContext) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Checkpoint `checkpoint_id` is durable.
    async fn notify_checkpoint_complete(&mut self, _checkpoint_id: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Releases resources.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A sink's pending transaction found in restored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committable {
    /// The checkpoint whose pre-commit produced it.
    pub checkpoint_id: CheckpointId,
    /// What [`Sink::pre_commit`] returned.
    pub data: Vec<u8>,
}

/// Writes records out of the job, optionally in two phases.
///
/// A sink with exactly-once delivery pre-commits on every barrier (flush, close the
/// transaction for new writes) and returns a *committable* describing how to finish it.
/// The runtime stores committables in the checkpoint and calls [`Sink::commit`] once the
/// checkpoint is complete — or, after a crash, hands the ones found in the restored
/// checkpoint to [`Sink::recover`]. `commit` must therefore be idempotent.
#[async_trait]
pub trait Sink: Send + 'static {
    /// Writes (or buffers) one batch.
    async fn write_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()>;

    /// Restores operator state; called before [`Sink::recover`] and [`Sink::open`].
    async fn restore(&mut self, _state: RestoredState) -> Result<()> {
        Ok(())
    }

    /// Finishes the transactions of a restored checkpoint. The default commits each.
    ///
    /// A sink that can leave behind transactions that no checkpoint references (written
    /// after the restored checkpoint) should also clean those up here.
    async fn recover(&mut self, committables: Vec<Committable>, _ctx: &mut OperatorContext) -> Result<()> {
        for c in committables {
            self.commit(c.checkpoint_id, c.data).await?;
        }
        Ok(())
    }

    /// Prepares to write; called after restore and recover.
    async fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Flushes everything written before the barrier of `checkpoint_id` and returns the
    /// committable that finishes it, if the sink is transactional.
    async fn pre_commit(
        &mut self,
        _checkpoint_id: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Makes the writes of a pre-committed checkpoint visible. Must be idempotent.
    async fn commit(&mut self, _checkpoint_id: CheckpointId, _committable: Vec<u8>) -> Result<()> {
        Ok(())
    }

    /// Operator state for checkpoint `checkpoint_id` (besides committables).
    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Every input has ended.
    async fn on_end_of_input(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` is durable and its committables are committed.
    async fn notify_checkpoint_complete(&mut self, _checkpoint_id: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Releases resources.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Creates the source instance of each subtask.
pub trait SourceFactory: Send + Sync + 'static {
    /// A new instance for `info`.
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>>;

    /// The source's checks that need I/O; see [`SinkFactory::preflight`].
    fn preflight(&self) -> Result<()> {
        Ok(())
    }
}

/// Creates the transform instance of each subtask.
pub trait TransformFactory: Send + Sync + 'static {
    /// A new instance for `info`.
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Transform>>;

    /// The transform's checks that need I/O; see [`SinkFactory::preflight`].
    fn preflight(&self) -> Result<()> {
        Ok(())
    }
}

/// Creates the sink instance of each subtask.
pub trait SinkFactory: Send + Sync + 'static {
    /// A new instance for `info`.
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>>;

    /// Checks that need I/O (a directory that can be created and written, a service
    /// that answers), run once by [`Pipeline::start`](crate::Pipeline::start) before
    /// any subtask exists. A failure refuses the job as a bad setting would, instead of
    /// failing its first attempt. Validation of the settings themselves belongs in the
    /// factory's constructor or its own `validate`, which must touch nothing: a dry run
    /// plans the job and never calls this. The default checks nothing.
    fn preflight(&self) -> Result<()> {
        Ok(())
    }
}

impl<F, S> SourceFactory for F
where
    F: Fn(&TaskInfo) -> Result<S> + Send + Sync + 'static,
    S: Source,
{
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Source>> {
        Ok(Box::new(self(info)?))
    }
}

impl<F, T> TransformFactory for F
where
    F: Fn(&TaskInfo) -> Result<T> + Send + Sync + 'static,
    T: Transform,
{
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(self(info)?))
    }
}

impl<F, S> SinkFactory for F
where
    F: Fn(&TaskInfo) -> Result<S> + Send + Sync + 'static,
    S: Sink,
{
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self(info)?))
    }
}

/// A factory that clones `prototype` for every subtask.
pub fn cloned<T: Clone + Send + Sync + 'static>(
    prototype: T,
) -> impl Fn(&TaskInfo) -> Result<T> + Send + Sync + 'static {
    move |_| Ok(prototype.clone())
}

/// Runs a blocking call — a client library's synchronous API, file I/O — on tokio's
/// blocking threads, so that it does not hold up the async workers that move the job's
/// batches. `what` names the caller (`"Kafka sink"`) in the error reported when the call
/// panics.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> operators_core::Result<()> {
/// let n = operators_core::operator::blocking("example", || Ok::<_, operators_core::Error>(2 + 2)).await?;
/// assert_eq!(n, 4);
/// # Ok(()) }
/// ```
pub async fn blocking<T, E>(what: &str, f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static) -> Result<T>
where
    T: Send + 'static,
    E: Into<Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(Error::Internal(format!("{what}: a blocking call panicked: {e}"))),
    }
}
