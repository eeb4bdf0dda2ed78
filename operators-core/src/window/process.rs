//! A keyed process operator: user code per batch with keyed state and per-key timers in
//! event time (fired by the watermark) and processing time (fired by the job clock).
//!
//! Timers are kept in keyed state, so they are checkpointed, restored after a failure
//! and move with their key group when the parallelism changes. Which timer is due next
//! is an in-memory ordered index rebuilt from that state when a subtask starts (the
//! same arrangement as the window operator's).

use std::collections::BTreeSet;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::{BatchKeys, KeyRef};
use crate::message::{CheckpointId, Watermark};
use crate::operator::{OperatorContext, RestoredState, TaskInfo, Transform, TransformFactory};
use crate::state::{KeyedStateStore, MapState};

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when the job clock reaches the timer's time.
    ProcessingTime,
}

impl TimeDomain {
    fn tag(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }
}

/// User logic of a [`KeyedProcessTransform`]: Flink's `KeyedProcessFunction`.
///
/// Only [`KeyedProcessFunction::process_batch`] is required. Register keyed state in
/// [`KeyedProcessFunction::open`]; set timers with
/// [`ProcessContext::register_timer`]; a timer fires once, with the key it was set for.
/// At end of input the maximum watermark fires every event-time timer; processing-time
/// timers still pending then do not fire (as in Flink).
///
/// ```
/// use arrow::record_batch::RecordBatch;
/// use operators_core::window::{KeyedProcessFunction, ProcessContext, TimeDomain};
/// use operators_core::key::KeyRef;
/// use operators_core::Result;
///
/// /// Passes rows on, and a minute after a key's first row emits nothing but logs it.
/// #[derive(Clone)]
/// struct Reminder;
///
/// impl KeyedProcessFunction for Reminder {
///     fn process_batch(&mut self, batch: RecordBatch, ctx: &mut ProcessContext<'_>) -> Result<()> {
///         for row in 0..batch.num_rows() {
///             let key = ctx.key(row)?;
///             let at = ctx.now_ms() + 60_000;
///             ctx.register_timer(key, TimeDomain::ProcessingTime, at)?;
///         }
///         ctx.emit(batch);
///         Ok(())
///     }
///
///     fn on_timer(&mut self, _key: KeyRef<'_>, time: i64, _domain: TimeDomain, _ctx: &mut ProcessContext<'_>) -> Result<()> {
///         tracing::info!(time, "a key's minute is up");
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction: Send + 'static {
    /// Processes one batch; the key of row `i` is [`ProcessContext::key`]`(i)`.
    fn process_batch(&mut self, batch: RecordBatch, ctx: &mut ProcessContext<'_>) -> Result<()>;

    /// A timer set for `key` at `time` fired.
    fn on_timer(
        &mut self,
        _key: KeyRef<'_>,
        _time: i64,
        _domain: TimeDomain,
        _ctx: &mut ProcessContext<'_>,
    ) -> Result<()> {
        Ok(())
    }

    /// Registers keyed state (called once per subtask start, after a restore).
    fn open(&mut self, _state: &mut KeyedStateStore) -> Result<()> {
        Ok(())
    }
}

/// `(time, key group, key bytes)`.
type TimerEntry = (i64, u16, Vec<u8>);

/// The timers of one subtask: in keyed state (`key → {(domain, time)}`) and indexed by
/// time in memory, one index per domain (by [`TimeDomain::tag`]).
struct Timers {
    state: MapState<(u8, i64), ()>,
    index: [BTreeSet<TimerEntry>; 2],
}

/// What a [`KeyedProcessFunction`] can do while it runs.
pub struct ProcessContext<'a> {
    op: &'a mut OperatorContext,
    timers: &'a mut Timers,
    keys: Option<&'a BatchKeys>,
    watermark: Watermark,
}

impl std::fmt::Debug for ProcessContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessContext").field("watermark", &self.watermark).finish()
    }
}

impl<'a> ProcessContext<'a> {
    /// The key of row `row` of the batch being processed. It borrows the batch's keys,
    /// not the context, so it can be passed to [`ProcessContext::register_timer`].
    pub fn key(&self, row: usize) -> Result<KeyRef<'a>> {
        match self.keys {
            Some(keys) if row < keys.len() => Ok(keys.key(row)),
            Some(keys) => Err(Error::Internal(format!("row {row} of a batch of {} rows", keys.len()))),
            None => Err(Error::Internal("ProcessContext::key outside process_batch".into())),
        }
    }

    /// Emits a batch downstream.
    pub fn emit(&mut self, batch: RecordBatch) {
        self.op.emit(batch);
    }

    /// Sends rows to the late-records output (see [`OperatorContext::emit_late`]).
    pub fn emit_late(&mut self, batch: RecordBatch) {
        self.op.emit_late(batch);
    }

    /// The subtask's keyed state.
    pub fn keyed_state(&mut self) -> Result<&mut KeyedStateStore> {
        self.op.keyed_state()
    }

    /// The current event time (`i64::MIN` before the first watermark).
    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    /// The job clock.
    pub fn now_ms(&self) -> i64 {
        self.op.clock().now_ms()
    }

    /// Sets a timer for `key` at `time` (one per key, domain and time: setting it again
    /// is a no-op). An event-time timer at or before the current watermark fires with the
    /// next watermark.
    pub fn register_timer(&mut self, key: KeyRef<'_>, domain: TimeDomain, time: i64) -> Result<()> {
        let entry = (time, key.key_group, key.bytes.to_vec());
        if self.timers.index[usize::from(domain.tag())].insert(entry) {
            let store = self.op.keyed_state()?;
            self.timers.state.put(store, key, &(domain.tag(), time), &())?;
            if domain == TimeDomain::ProcessingTime {
                self.op.request_timer(time);
            }
        }
        Ok(())
    }

    /// Removes a timer set for `key` (no error if there is none).
    pub fn delete_timer(&mut self, key: KeyRef<'_>, domain: TimeDomain, time: i64) -> Result<()> {
        let entry = (time, key.key_group, key.bytes.to_vec());
        if self.timers.index[usize::from(domain.tag())].remove(&entry) {
            let store = self.op.keyed_state()?;
            self.timers.state.remove(store, key, &(domain.tag(), time))?;
        }
        Ok(())
    }
}

/// A keyed operator running a [`KeyedProcessFunction`] with timers; see
/// [`Stream::process`](crate::pipeline::Stream::process). Each subtask gets a clone of
/// the function. Event time is checkpointed with the operator, timers with the keys.
#[derive(Debug, Clone)]
pub struct KeyedProcessTransform<F> {
    function: F,
}

impl<F> KeyedProcessTransform<F> {
    /// Runs `function` (cloned per subtask).
    pub fn new(function: F) -> Self {
        Self { function }
    }
}

impl<F: KeyedProcessFunction + Clone + Sync> TransformFactory for KeyedProcessTransform<F> {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Transform>> {
        Ok(Box::new(ProcessTask {
            function: self.function.clone(),
            operator: info.operator_id.to_string(),
            timers: None,
            watermark: Watermark::MIN,
        }))
    }
}

struct ProcessTask<F> {
    function: F,
    operator: String,
    timers: Option<Timers>,
    watermark: Watermark,
}

impl<F: KeyedProcessFunction> ProcessTask<F> {
    fn timers(&mut self) -> Result<&mut Timers> {
        let op = &self.operator;
        self.timers.as_mut().ok_or_else(|| Error::Internal(format!("process `{op}`: used before open")))
    }

    /// Fires the timers of `domain` due at `time`, earliest first. Timers the function
    /// sets while firing, if due, fire in the same call.
    fn fire(&mut self, domain: TimeDomain, time: i64, ctx: &mut OperatorContext) -> Result<()> {
        let tag = domain.tag();
        loop {
            let timers = self.timers()?;
            let index = &mut timers.index[usize::from(tag)];
            if index.first().is_none_or(|e| e.0 > time) {
                break;
            }
            let Some((t, kg, bytes)) = index.pop_first() else { break };
            let key = KeyRef { key_group: kg, bytes: &bytes };
            timers.state.remove(ctx.keyed_state()?, key, &(tag, t))?;
            let watermark = self.watermark;
            let Some(timers) = self.timers.as_mut() else { break };
            let mut pctx = ProcessContext { op: ctx, timers, keys: None, watermark };
            self.function.on_timer(key, t, domain, &mut pctx)?;
        }
        Ok(())
    }

    fn request_next_processing_timer(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let timers = self.timers()?;
        if let Some(next) = timers.index[usize::from(TimeDomain::ProcessingTime.tag())].first() {
            ctx.request_timer(next.0);
        }
        Ok(())
    }
}

#[async_trait]
impl<F: KeyedProcessFunction> Transform for ProcessTask<F> {
    async fn restore(&mut self, state: RestoredState) -> Result<()> {
        let decode = |b: &[u8]| -> Result<i64> {
            postcard::from_bytes(b).map_err(|e| Error::State {
                operator: self.operator.clone(),
                message: format!("cannot read the process operator's checkpointed watermark: {e}"),
            })
        };
        let marks = match state.own() {
            Some(own) => vec![decode(own)?],
            None => state.snapshots.iter().map(|(_, s)| decode(s)).collect::<Result<Vec<_>>>()?,
        };
        if let Some(w) = marks.into_iter().min() {
            self.watermark = w;
        }
        Ok(())
    }

    async fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if ctx.key_selector().is_none() {
            return Err(Error::config(
                "process",
                format!("process `{}` needs its input keyed (use key_by(...) before process)", self.operator),
            ));
        }
        let store = ctx.keyed_state()?;
        let state: MapState<(u8, i64), ()> = store.map_state("process.timers", None)?;
        let mut index = [BTreeSet::new(), BTreeSet::new()];
        for (kg, key, (tag, time), ()) in state.scan_all(store)? {
            if let Some(i) = index.get_mut(usize::from(tag)) {
                i.insert((time, kg, key));
            }
        }
        self.function.open(store)?;
        self.timers = Some(Timers { state, index });
        self.request_next_processing_timer(ctx)
    }

    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        let keys = ctx.keys(&batch)?;
        let watermark = self.watermark;
        let op = &self.operator;
        let timers =
            self.timers.as_mut().ok_or_else(|| Error::Internal(format!("process `{op}`: used before open")))?;
        let mut pctx = ProcessContext { op: ctx, timers, keys: Some(&keys), watermark };
        self.function.process_batch(batch, &mut pctx)
    }

    async fn on_watermark(&mut self, watermark: Watermark, ctx: &mut OperatorContext) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
        }
        self.fire(TimeDomain::EventTime, self.watermark, ctx)
    }

    async fn on_timer(&mut self, now_ms: i64, ctx: &mut OperatorContext) -> Result<()> {
        self.fire(TimeDomain::ProcessingTime, now_ms, ctx)?;
        self.request_next_processing_timer(ctx)
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId, _ctx: &mut OperatorContext) -> Result<Option<Vec<u8>>> {
        postcard::to_allocvec(&self.watermark).map(Some).map_err(|e| Error::State {
            operator: self.operator.clone(),
            message: format!("cannot write the process operator's watermark: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::clock::ManualClock;
    use crate::key::{KeyGroupRange, KeySelector};

    /// `(key bytes, time, domain)` of a fired timer.
    type Fired = (Vec<u8>, i64, TimeDomain);

    /// Sets an event-time timer 10 ms after each row's `ts` and, for each row, a
    /// processing-time timer 100 ms after now; records what fires.
    #[derive(Clone, Default)]
    struct Recorder {
        fired: Arc<Mutex<Vec<Fired>>>,
    }

    impl KeyedProcessFunction for Recorder {
        fn process_batch(&mut self, batch: RecordBatch, ctx: &mut ProcessContext<'_>) -> Result<()> {
            let ts = batch.column(1).as_primitive::<Int64Type>().clone();
            for row in 0..batch.num_rows() {
                let key = ctx.key(row)?;
                ctx.register_timer(key, TimeDomain::EventTime, ts.value(row) + 10)?;
                let at = ctx.now_ms() + 100;
                ctx.register_timer(key, TimeDomain::ProcessingTime, at)?;
            }
            Ok(())
        }

        fn on_timer(
            &mut self,
            key: KeyRef<'_>,
            time: i64,
            domain: TimeDomain,
            ctx: &mut ProcessContext<'_>,
        ) -> Result<()> {
            self.fired.lock().unwrap().push((key.bytes.to_vec(), time, domain));
            if domain == TimeDomain::EventTime && time == 11 {
                // A timer set while firing, already due: fires in the same round.
                ctx.register_timer(key, TimeDomain::EventTime, 5)?;
            }
            Ok(())
        }
    }

    fn info() -> TaskInfo {
        TaskInfo {
            job_name: "j".into(),
            job_id: "0".repeat(32).into(),
            run_id: "1".repeat(32).into(),
            operator_id: "proc".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
        }
    }

    fn context(clock: &ManualClock, store: Option<KeyedStateStore>) -> OperatorContext {
        let clock: crate::clock::SharedClock = Arc::new(clock.clone());
        let store = store.unwrap_or_else(|| {
            KeyedStateStore::new("proc", None, KeyGroupRange { start: 0, end: 128 }, clock.clone(), true)
        });
        OperatorContext::new(Arc::new(info()), clock, Some(store), Some(KeySelector::new(["k"])))
    }

    fn batch(rows: &[(&str, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn times(f: &Recorder) -> Vec<(i64, TimeDomain)> {
        f.fired.lock().unwrap().drain(..).map(|(_, t, d)| (t, d)).collect()
    }

    #[tokio::test]
    async fn timers_fire_by_watermark_and_clock_and_survive_a_restore() {
        let clock = ManualClock::new(1_000);
        let mut ctx = context(&clock, None);
        let f = Recorder::default();
        let factory = KeyedProcessTransform::new(f.clone());
        let mut t = factory.create(&info()).unwrap();
        t.open(&mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 1), ("b", 1), ("a", 30)]), &mut ctx).await.unwrap();
        assert_eq!(ctx.timer.take(), Some(1_100));
        t.on_watermark(11, &mut ctx).await.unwrap();
        // Both keys' timer at 11; the one each sets while firing (at 5, the earliest
        // pending) fires right after it.
        assert_eq!(
            times(&f),
            vec![
                (11, TimeDomain::EventTime),
                (5, TimeDomain::EventTime),
                (11, TimeDomain::EventTime),
                (5, TimeDomain::EventTime)
            ]
        );
        let snap = t.snapshot(1, &mut ctx).unwrap().unwrap();

        // Restored over the same keyed state: the pending timers (a@40, both at 1 100)
        // are back, and the watermark too.
        let store = ctx.keyed.take();
        let mut ctx2 = context(&clock, store);
        let mut t2 = factory.create(&info()).unwrap();
        t2.restore(RestoredState::new(1, 1, vec![(0, snap)], 0, 1)).await.unwrap();
        t2.open(&mut ctx2).await.unwrap();
        assert_eq!(ctx2.timer.take(), Some(1_100));
        clock.set_ms(1_100);
        t2.on_timer(1_100, &mut ctx2).await.unwrap();
        assert_eq!(times(&f), vec![(1_100, TimeDomain::ProcessingTime), (1_100, TimeDomain::ProcessingTime)]);
        t2.on_watermark(i64::MAX, &mut ctx2).await.unwrap();
        assert_eq!(times(&f), vec![(40, TimeDomain::EventTime)]);
    }

    #[tokio::test]
    async fn deleted_timers_do_not_fire_and_unkeyed_input_is_refused() {
        #[derive(Clone, Default)]
        struct SetAndDelete(Recorder);
        impl KeyedProcessFunction for SetAndDelete {
            fn process_batch(&mut self, batch: RecordBatch, ctx: &mut ProcessContext<'_>) -> Result<()> {
                for row in 0..batch.num_rows() {
                    let key = ctx.key(row)?;
                    ctx.register_timer(key, TimeDomain::EventTime, 7)?;
                    ctx.delete_timer(key, TimeDomain::EventTime, 7)?;
                }
                Ok(())
            }
            fn on_timer(
                &mut self,
                key: KeyRef<'_>,
                time: i64,
                domain: TimeDomain,
                ctx: &mut ProcessContext<'_>,
            ) -> Result<()> {
                self.0.on_timer(key, time, domain, ctx)
            }
        }
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let f = SetAndDelete::default();
        let mut t = KeyedProcessTransform::new(f.clone()).create(&info()).unwrap();
        t.open(&mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 1)]), &mut ctx).await.unwrap();
        t.on_watermark(i64::MAX, &mut ctx).await.unwrap();
        assert!(times(&f.0).is_empty());

        let mut unkeyed = OperatorContext::standalone(info());
        let err = KeyedProcessTransform::new(f).create(&info()).unwrap().open(&mut unkeyed).await.unwrap_err();
        assert!(err.to_string().contains("key_by"), "{err}");
    }
}
