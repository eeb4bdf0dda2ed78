//! Event-time windows end to end: every window kind through a real job, results against
//! a reference group-by (property tests), late rows to the side output, idle inputs, and
//! a job failed and restarted from checkpoints giving the undisturbed run's results.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, FaultInjector, TwoPhaseMemorySink};
use operators_core::checkpoint::CheckpointConfig;
use operators_core::key::KeyRef;
use operators_core::operator::{
    OperatorContext, RestoredState, Sink, Source, SourceContext, SourcePoll, TaskInfo, cloned,
};
use operators_core::restart::RestartStrategy;
use operators_core::state::StateBackendKind;
use operators_core::window::{Agg, KeyedProcessFunction, ProcessContext, TimeDomain, WatermarkGenerator, Windows};
use operators_core::{CheckpointId, JobConfig, JobStatus, Pipeline, Result};
use proptest::prelude::*;

/// One input row: `(id, user, ts ms, amount)`.
type Event = (i64, i64, i64, i64);

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

fn to_batches(events: &[Event], batch_size: usize) -> Vec<RecordBatch> {
    events
        .chunks(batch_size.max(1))
        .map(|c| {
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from_iter_values(c.iter().map(|e| e.0))),
                    Arc::new(Int64Array::from_iter_values(c.iter().map(|e| e.1))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(c.iter().map(|e| e.2))),
                    Arc::new(Int64Array::from_iter_values(c.iter().map(|e| e.3))),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Replays prepared batches; subtask `i` of `n` gets batches `i, i + n, ...`. The position
/// is checkpointed, so a restored job continues where the checkpoint was taken.
#[derive(Clone)]
struct Events {
    batches: Arc<Vec<RecordBatch>>,
    pause: Duration,
    /// Subtasks with nothing (left) to read stay open and idle instead of finishing.
    never_finish: bool,
    faults: FaultInjector,
}

impl Events {
    fn new(batches: Vec<RecordBatch>) -> Self {
        Self { batches: Arc::new(batches), pause: Duration::ZERO, never_finish: false, faults: FaultInjector::new() }
    }

    fn factory(self) -> impl Fn(&TaskInfo) -> Result<EventsTask> + Send + Sync + 'static {
        move |info: &TaskInfo| Ok(EventsTask { spec: self.clone(), next: info.subtask, step: info.parallelism })
    }
}

struct EventsTask {
    spec: Events,
    next: usize,
    step: usize,
}

#[async_trait]
impl Source for EventsTask {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        self.spec.faults.check("events.poll")?;
        match self.spec.batches.get(self.next) {
            Some(b) => {
                if !self.spec.pause.is_zero() {
                    tokio::time::sleep(self.spec.pause).await;
                }
                self.next += self.step;
                Ok(SourcePoll::Batch(b.clone()))
            }
            None if self.spec.never_finish => Ok(SourcePoll::Idle),
            None => Ok(SourcePoll::Finished),
        }
    }

    async fn restore(&mut self, _ctx: &mut SourceContext, state: RestoredState) -> Result<()> {
        if let Some(own) = state.own() {
            self.next = usize::from_le_bytes(own.try_into().expect("8 bytes"));
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId) -> Result<Option<Vec<u8>>> {
        Ok(Some(self.next.to_le_bytes().to_vec()))
    }
}

/// Records what it receives as it arrives (no checkpoints needed), shared by clones.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<RecordBatch>>>);

impl Recorder {
    fn batches(&self) -> Vec<RecordBatch> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sink for Recorder {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

/// A result row: `(user, window_start, window_end, count, sum_amount, is_update)`.
type Res = (i64, i64, i64, i64, i64, bool);

fn results(batches: &[RecordBatch]) -> Vec<Res> {
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("column {n}")).clone();
        let (user, start, end, count, sum, upd) =
            (col("user"), col("window_start"), col("window_end"), col("count"), col("sum_amount"), col("is_update"));
        let (user, start, end) = (
            user.as_primitive::<Int64Type>(),
            start.as_primitive::<TimestampMillisecondType>(),
            end.as_primitive::<TimestampMillisecondType>(),
        );
        let (count, sum, upd) = (count.as_primitive::<Int64Type>(), sum.as_primitive::<Int64Type>(), upd.as_boolean());
        for r in 0..b.num_rows() {
            out.push((user.value(r), start.value(r), end.value(r), count.value(r), sum.value(r), upd.value(r)));
        }
    }
    out
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches.iter().flat_map(|b| b.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec()).collect()
}

fn memory_config(name: &str) -> JobConfig {
    JobConfig::new(name).with_state_backend(StateBackendKind::Memory)
}

/// Runs `events` through watermarks (delay `delay` ms) and a keyed window; returns the
/// results and the late rows.
async fn run_windows(
    events: &[Event],
    batch_size: usize,
    delay: u64,
    spec: Windows,
    parallelism: usize,
) -> (Vec<Res>, Vec<RecordBatch>) {
    let out = Recorder::default();
    let late = Recorder::default();
    let pipeline = Pipeline::new();
    let windows = pipeline
        .source("events", Events::new(to_batches(events, batch_size)).factory())
        .parallelism(parallelism)
        .assign_watermarks(
            "watermarks",
            WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(delay)),
        )
        .key_by(["user"])
        .window("windows", spec.aggregate([Agg::count(), Agg::sum("amount")]))
        .parallelism(parallelism);
    windows.late_records().sink("late", cloned(late.clone()));
    windows.sink("out", cloned(out.clone())).parallelism(1);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        pipeline.run(memory_config("windows").with_parallelism(parallelism)),
    )
    .await
    .expect("in time")
    .expect("job succeeds");
    assert_eq!(outcome.status, JobStatus::Finished);
    (results(&out.batches()), late.batches())
}

/// The reference: a group-by over `(user, window)` of `events`.
fn reference(events: &[Event], windows_of: impl Fn(i64) -> Vec<(i64, i64)>) -> BTreeMap<(i64, i64, i64), (i64, i64)> {
    let mut m: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
    for &(_, user, ts, amount) in events {
        for (s, e) in windows_of(ts) {
            let r = m.entry((user, s, e)).or_default();
            r.0 += 1;
            r.1 += amount;
        }
    }
    m
}

/// The last result of every window (updates replace earlier results).
fn final_results(results: &[Res]) -> BTreeMap<(i64, i64, i64), (i64, i64)> {
    results.iter().map(|r| ((r.0, r.1, r.2), (r.3, r.4))).collect()
}

/// `n` events over `users` users, ts rising by `step` with a deterministic disorder below
/// `disorder` ms.
fn ordered_events(n: i64, users: i64, step: i64, disorder: i64) -> Vec<Event> {
    (0..n).map(|i| (i, i % users, i * step + (i * 7919) % disorder.max(1), i % 10)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_event_time_matches_the_reference() {
    let events = ordered_events(5_000, 7, 3, 40);
    let (res, late) =
        run_windows(&events, 97, 40, Windows::tumbling_event_time("ts", Duration::from_millis(100)), 2).await;
    assert!(late.is_empty());
    assert!(res.iter().all(|r| !r.5), "no updates without lateness");
    assert_eq!(res.len(), final_results(&res).len(), "every window once");
    assert_eq!(final_results(&res), reference(&events, |t| vec![(t - t % 100, t - t % 100 + 100)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_event_time_matches_the_reference() {
    let events = ordered_events(3_000, 5, 2, 30);
    let spec = Windows::sliding_event_time("ts", Duration::from_millis(100), Duration::from_millis(25));
    let (res, late) = run_windows(&events, 64, 30, spec, 2).await;
    assert!(late.is_empty());
    let windows_of = |t: i64| {
        let last = t - t % 25;
        (0..4).map(|i| (last - i * 25, last - i * 25 + 100)).collect::<Vec<_>>()
    };
    assert_eq!(res.len(), final_results(&res).len());
    assert_eq!(final_results(&res), reference(&events, windows_of));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_split_on_gaps() {
    // Per user: bursts of 10 rows 5 ms apart, bursts 1 000 ms apart; gap 100 ms.
    let mut events = Vec::new();
    let mut id = 0;
    for burst in 0..20i64 {
        for user in 0..3i64 {
            for j in 0..10i64 {
                events.push((id, user, burst * 1_000 + user * 10 + j * 5, 1));
                id += 1;
            }
        }
    }
    let (res, late) =
        run_windows(&events, 50, 20, Windows::session_event_time("ts", Duration::from_millis(100)), 2).await;
    assert!(late.is_empty());
    let expected: BTreeMap<(i64, i64, i64), (i64, i64)> = (0..20i64)
        .flat_map(|b| (0..3i64).map(move |u| ((u, b * 1_000 + u * 10, b * 1_000 + u * 10 + 45 + 100), (10, 10))))
        .collect();
    assert_eq!(final_results(&res), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_windows_fire_every_n_rows_per_key() {
    let events = ordered_events(1_000, 3, 1, 1);
    let (res, _) = run_windows(&events, 33, 0, Windows::tumbling_count(10), 2).await;
    // 334 / 333 / 333 rows per user: 33 full windows each plus one of 4 for user 0 and
    // of 3 for the others at end of input.
    let mut per_user: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in &res {
        per_user.entry(r.0).or_default().push(r.3);
    }
    for (user, counts) in per_user {
        let full = counts.iter().filter(|c| **c == 10).count();
        assert_eq!(full, 33, "user {user}: {counts:?}");
        assert_eq!(counts.iter().sum::<i64>(), if user == 0 { 334 } else { 333 });
    }
    let total: i64 = res.iter().map(|r| r.4).sum();
    assert_eq!(total, events.iter().map(|e| e.3).sum::<i64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_time_windows_count_every_row_once() {
    let events = ordered_events(2_000, 4, 1, 1);
    let out = Recorder::default();
    let pipeline = Pipeline::new();
    let mut source = Events::new(to_batches(&events, 100));
    source.pause = Duration::from_millis(5);
    pipeline
        .source("events", source.factory())
        .parallelism(1)
        .key_by(["user"])
        .window(
            "windows",
            Windows::sliding_processing_time(Duration::from_millis(40), Duration::from_millis(20))
                .aggregate([Agg::count(), Agg::sum("amount")]),
        )
        .sink("out", cloned(out.clone()));
    pipeline.run(memory_config("processing-time").with_parallelism(1)).await.unwrap();
    let res = results(&out.batches());
    assert!(res.iter().all(|r| r.2 - r.1 == 40 && r.1 % 20 == 0), "aligned 40 ms windows");
    // Each row is in exactly two sliding windows.
    assert_eq!(res.iter().map(|r| r.3).sum::<i64>(), 2 * events.len() as i64);
    assert!(res.len() > 8, "windows fired as time went by: {}", res.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_go_to_the_side_output_and_updates_are_marked() {
    // In order, then one row inside the lateness of a fired window and one past it.
    let mut events: Vec<Event> = (0..20).map(|i| (i, 1, i * 10, 1)).collect();
    // The watermark is 189: [0, 100) fired at 99 and is kept until 99 + 500.
    events.push((20, 1, 5, 100));
    events.extend((21..221).map(|i| (i, 1, (i - 1) * 10, 1)));
    // The watermark is 2 189: [0, 100) is gone.
    events.push((221, 1, 15, 1_000));
    let spec =
        Windows::tumbling_event_time("ts", Duration::from_millis(100)).allowed_lateness(Duration::from_millis(500));
    let (res, late) = run_windows(&events, 1, 0, spec, 1).await;
    assert_eq!(ids(&late), vec![221]);
    assert_eq!(late[0].schema(), schema(), "late rows keep the input schema");
    let first: Vec<&Res> = res.iter().filter(|r| r.1 == 0).collect();
    assert_eq!(first, vec![&(1, 0, 100, 10, 10, false), &(1, 0, 100, 11, 110, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subtask_does_not_hold_event_time_back() {
    // Two source subtasks; only subtask 0 has rows and neither ever finishes. Without
    // idleness the window operator's minimum would wait for subtask 1 forever.
    let events = ordered_events(200, 2, 5, 1);
    let mut source = Events::new(to_batches(&events, 1_000));
    source.never_finish = true;
    let out = Recorder::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("events", source.factory())
        .parallelism(2)
        .assign_watermarks(
            "watermarks",
            WatermarkGenerator::bounded_out_of_orderness("ts", Duration::ZERO)
                .with_idle_timeout(Duration::from_millis(100)),
        )
        .key_by(["user"])
        .window("windows", Windows::tumbling_event_time("ts", Duration::from_millis(100)).aggregate([Agg::count()]))
        .parallelism(1)
        .sink("out", cloned(out.clone()));
    let job = pipeline.start(memory_config("idle").with_parallelism(2)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Rows span [0, 1000): windows up to [800, 900) can fire (watermark 994).
    while out.batches().iter().map(RecordBatch::num_rows).sum::<usize>() < 18 {
        assert!(tokio::time::Instant::now() < deadline, "windows did not fire: event time is stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job.cancel();
    let _ = job.wait().await;
    let batches = out.batches();
    let counts: i64 = batches
        .iter()
        .map(|b| b.column_by_name("count").unwrap().as_primitive::<Int64Type>().iter().flatten().sum::<i64>())
        .sum();
    assert_eq!(counts, 180, "windows [0, 900) of both users");
}

fn restart_pipeline(events: &[Event], faults: FaultInjector, output: CommittedOutput, windows: usize) -> Pipeline {
    let mut source = Events::new(to_batches(events, 40));
    source.pause = Duration::from_millis(2);
    source.faults = faults;
    let pipeline = Pipeline::new();
    pipeline
        .source("events", source.factory())
        .parallelism(2)
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(50)))
        .key_by(["user"])
        .window(
            "windows",
            Windows::tumbling_event_time("ts", Duration::from_millis(200))
                .allowed_lateness(Duration::from_millis(100))
                .aggregate([Agg::count(), Agg::sum("amount"), Agg::max("id").alias("max_id")]),
        )
        .parallelism(windows)
        .sink("sink", TwoPhaseMemorySink::new(output));
    pipeline
}

async fn run_with_restarts(events: &[Event], faults: FaultInjector, backend: StateBackendKind) -> (Vec<Res>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let config = JobConfig::new("window-restarts")
        .with_parallelism(2)
        .with_state_backend(backend)
        .with_local_state_dir(dir.path().join("local"))
        .with_restart(RestartStrategy::fixed_delay(20, Duration::from_millis(10)))
        .with_checkpointing(
            CheckpointConfig::new(dir.path().join("checkpoints")).with_interval(Duration::from_millis(40)),
        );
    let job = restart_pipeline(events, faults, output.clone(), 2).start(config).unwrap();
    let outcome =
        tokio::time::timeout(Duration::from_secs(120), job.wait()).await.expect("in time").expect("job succeeds");
    assert_eq!(outcome.status, JobStatus::Finished);
    let mut res = results(&output.batches());
    res.sort_unstable();
    (res, outcome.restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_and_restored_job_gives_the_undisturbed_results() {
    let events = ordered_events(12_000, 13, 1, 50);
    let (clean, restarts) = run_with_restarts(&events, FaultInjector::new(), StateBackendKind::Memory).await;
    assert_eq!(restarts, 0);
    assert_eq!(clean.len(), final_results(&clean).len(), "no updates, no duplicates");
    assert_eq!(final_results(&clean), reference(&events, |t| vec![(t - t % 200, t - t % 200 + 200)]));
    // Fail the sources three times, spread over the run (≈ 300 polls in all).
    let faults = FaultInjector::new().fail_at("events.poll", [60, 150, 240]);
    let (restored, restarts) = run_with_restarts(&events, faults.clone(), StateBackendKind::Disk).await;
    assert_eq!(faults.fired().len(), 3, "the faults fired");
    assert!(restarts >= 3, "the job restarted: {restarts}");
    assert_eq!(restored, clean);
}

fn disordered(max_disorder: i64) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0..4i64, 0..=max_disorder, 0..5i64, 1..100i64), 1..400).prop_map(move |raw| {
        let mut t = 0;
        raw.into_iter()
            .enumerate()
            .map(|(i, (user, jitter, step, amount))| {
                t += step;
                // At most `max_disorder` behind the highest time so far.
                (i as i64, user, (t - jitter).max(0), amount)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Bounded disorder within the watermark delay: no row is late, and the results are
    /// exactly the group-by.
    #[test]
    fn windows_equal_a_group_by(events in disordered(30), size in 5..60i64, batch in 1..50usize) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let spec = Windows::tumbling_event_time("ts", Duration::from_millis(size as u64));
        let (res, late) = rt.block_on(run_windows(&events, batch, 30, spec, 1));
        prop_assert!(late.is_empty());
        prop_assert_eq!(res.len(), final_results(&res).len());
        let expected = reference(&events, |t| vec![(t - t % size, t - t % size + size)]);
        prop_assert_eq!(final_results(&res), expected);
    }

    /// The same with sliding windows, two source subtasks and two window subtasks (hash
    /// exchange, watermarks merged over inputs).
    #[test]
    fn sliding_windows_equal_a_group_by(events in disordered(30), slide in 3..20i64, slides in 1..4i64, batch in 1..50usize) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let size = slide * slides;
        let spec = Windows::sliding_event_time("ts", Duration::from_millis(size as u64), Duration::from_millis(slide as u64));
        let (res, late) = rt.block_on(run_windows(&events, batch, 30, spec, 2));
        prop_assert!(late.is_empty());
        prop_assert_eq!(res.len(), final_results(&res).len());
        let windows_of = |t: i64| {
            let last = t - t % slide;
            (0..slides).map(|i| (last - i * slide, last - i * slide + size)).collect::<Vec<_>>()
        };
        prop_assert_eq!(final_results(&res), reference(&events, windows_of));
    }

    /// Disorder beyond the delay makes rows late: the final results count exactly the
    /// rows that were not late, and with the side output every input row is accounted
    /// for once.
    #[test]
    fn late_rows_and_results_account_for_every_row(events in disordered(80), size in 5..40i64, lateness in 0..30u64, batch in 1..20usize) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let spec = Windows::tumbling_event_time("ts", Duration::from_millis(size as u64))
            .allowed_lateness(Duration::from_millis(lateness));
        let (res, late) = rt.block_on(run_windows(&events, batch, 10, spec, 1));
        let late_ids: BTreeSet<i64> = ids(&late).into_iter().collect();
        prop_assert_eq!(late_ids.len(), ids(&late).len(), "a late row once");
        let on_time: Vec<Event> = events.iter().copied().filter(|e| !late_ids.contains(&e.0)).collect();
        let expected = reference(&on_time, |t| vec![(t - t % size, t - t % size + size)]);
        let finals = final_results(&res);
        prop_assert_eq!(&finals, &expected);
        let counted: i64 = finals.values().map(|v| v.0).sum();
        prop_assert_eq!(counted as usize + late_ids.len(), events.len());
    }
}

#[test]
fn timestamps_of_other_units_and_int64_millis_are_event_time() {
    // The same rows with ts as Int64 ms and as Timestamp(Second) windows alike.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seconds_schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Second, Some("UTC".into())), false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        seconds_schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 1])),
            Arc::new(arrow::array::TimestampSecondArray::from(vec![0, 59, 60]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    let out = Recorder::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("events", Events::new(vec![batch]).factory())
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::ZERO))
        .key_by(["user"])
        .window(
            "windows",
            Windows::tumbling_event_time("ts", Duration::from_secs(60)).aggregate([
                Agg::count(),
                Agg::sum("amount"),
                Agg::last("ts"),
            ]),
        )
        .sink("out", cloned(out.clone()));
    rt.block_on(pipeline.run(memory_config("units").with_parallelism(1))).unwrap();
    let batches = out.batches();
    assert_eq!(results(&batches), vec![(1, 0, 60_000, 2, 3, false), (1, 60_000, 120_000, 1, 3, false)]);
    let last = batches[0].column_by_name("last_ts").unwrap();
    assert_eq!(last.data_type(), &DataType::Timestamp(TimeUnit::Second, Some("UTC".into())), "last keeps the type");
    assert_eq!(last.as_primitive::<arrow::datatypes::TimestampSecondType>().value(0), 59);
    assert!(last.is_valid(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_savepoint_at_2_resume_windows_at_3() {
    let events = ordered_events(16_000, 13, 1, 50);
    let expected = reference(&events, |t| vec![(t - t % 200, t - t % 200 + 200)]);
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        JobConfig::new("window-rescale")
            .with_parallelism(2)
            .with_state_backend(StateBackendKind::Disk)
            .with_local_state_dir(dir.path().join("local"))
            .with_restart(RestartStrategy::None)
            .with_checkpointing(
                CheckpointConfig::new(dir.path().join("checkpoints")).with_interval(Duration::from_millis(40)),
            )
            .with_savepoint_dir(dir.path().join("savepoints"))
    };
    let output = CommittedOutput::default();
    let job = restart_pipeline(&events, FaultInjector::new(), output.clone(), 2).start(config()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while output.num_rows() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("windows committed in time");
    let savepoint = job.stop_with_savepoint(None, false).await.unwrap();
    assert_eq!(job.wait().await.unwrap().status, JobStatus::Finished);
    let before = output.num_rows();
    assert!(before > 0 && before < expected.len(), "stopped midway: {before} of {}", expected.len());

    // The window operator at parallelism 3: its keyed state moves by key group.
    let resumed = restart_pipeline(&events, FaultInjector::new(), output.clone(), 3)
        .start(config().with_restore(&savepoint, false))
        .unwrap();
    assert_eq!(resumed.wait().await.unwrap().status, JobStatus::Finished);
    let res = results(&output.batches());
    assert_eq!(res.len(), expected.len(), "every window once");
    assert_eq!(final_results(&res), expected);
}

/// Emits one row per poll and after it the next of its scripted watermarks.
struct WatermarkScript {
    marks: Vec<i64>,
    next: usize,
    pause: Duration,
}

#[async_trait]
impl Source for WatermarkScript {
    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        let Some(&w) = self.marks.get(self.next) else { return Ok(SourcePoll::Finished) };
        self.next += 1;
        ctx.emit_watermark(w);
        tokio::time::sleep(self.pause).await;
        Ok(SourcePoll::Batch(to_batches(&[(0, 0, w, 0)], 1).remove(0)))
    }
}

/// Records the watermarks it is given.
#[derive(Clone, Default)]
struct WatermarkLog(Arc<Mutex<Vec<i64>>>);

#[async_trait]
impl operators_core::Transform for WatermarkLog {
    async fn process_batch(&mut self, _batch: RecordBatch, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    async fn on_watermark(&mut self, w: i64, _ctx: &mut OperatorContext) -> Result<()> {
        self.0.lock().unwrap().push(w);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_merge_as_the_minimum_and_never_go_back() {
    // Subtask 0 goes 10, 20, 30 quickly and ends; subtask 1 slowly goes 5, 25 and then
    // back to 15.
    let scripts = [(vec![10, 20, 30], 1), (vec![5, 25, 15], 30)];
    let log = WatermarkLog::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("marks", move |info: &TaskInfo| {
            let (marks, pause) = scripts[info.subtask].clone();
            Ok(WatermarkScript { marks, next: 0, pause: Duration::from_millis(pause) })
        })
        .parallelism(2)
        .rebalance()
        .transform("log", cloned(log.clone()))
        .parallelism(1)
        .sink("discard", operators_core::builtins::DiscardSink::default());
    pipeline.run(memory_config("watermarks").with_parallelism(2)).await.unwrap();
    let seen = log.0.lock().unwrap().clone();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "strictly rising: {seen:?}");
    assert_eq!(seen.last(), Some(&i64::MAX), "end of input is the maximum");
    let before_end = &seen[..seen.len() - 1];
    assert!(before_end.iter().all(|w| *w <= 25), "never above the smaller input's highest: {seen:?}");
    assert!(before_end.contains(&25), "25 = min(30, 25) is reached: {seen:?}");
}

/// Rows `ts = 0, 10, ..` with a watermark after each, then quiet forever; optionally
/// declaring itself idle once quiet.
struct QuietSource {
    rows: i64,
    next: i64,
    declare_idle: bool,
}

#[async_trait]
impl Source for QuietSource {
    async fn poll_next(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.next >= self.rows {
            if self.declare_idle {
                ctx.mark_idle();
            }
            return Ok(SourcePoll::Idle);
        }
        let ts = self.next * 10;
        self.next += 1;
        ctx.emit_watermark(ts);
        Ok(SourcePoll::Batch(to_batches(&[(self.next, 1, ts, 1)], 1).remove(0)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_declares_itself_idle_does_not_hold_event_time_back() {
    let out = Recorder::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("quiet", |info: &TaskInfo| {
            // Subtask 1 has nothing to read (no partition assigned, say).
            let rows = if info.subtask == 0 { 50 } else { 0 };
            Ok(QuietSource { rows, next: 0, declare_idle: info.subtask == 1 })
        })
        .parallelism(2)
        .key_by(["user"])
        .window("windows", Windows::tumbling_event_time("ts", Duration::from_millis(100)).aggregate([Agg::count()]))
        .parallelism(1)
        .sink("out", cloned(out.clone()));
    let job = pipeline.start(memory_config("idle-source").with_parallelism(2)).unwrap();
    // Rows span [0, 500) and the watermark reaches 490: [0, 100) .. [300, 400) fire.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.batches().iter().map(RecordBatch::num_rows).sum::<usize>() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "windows did not fire: event time is stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job.cancel();
    let _ = job.wait().await;
    let counts: Vec<i64> = out
        .batches()
        .iter()
        .flat_map(|b| b.column_by_name("count").unwrap().as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(counts, vec![10, 10, 10, 10]);
}

/// Sets an event-time timer at `ts + 100` for every row and, when one fires, emits
/// `(user, time)`; the user id comes from keyed state, as a process function would keep it.
#[derive(Clone, Default)]
struct Alarms {
    user: Option<operators_core::state::ValueState<i64>>,
}

fn alarm_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("user", DataType::Int64, false), Field::new("time", DataType::Int64, false)]))
}

impl KeyedProcessFunction for Alarms {
    fn open(&mut self, state: &mut operators_core::state::KeyedStateStore) -> Result<()> {
        self.user = Some(state.value_state("alarms.user", None)?);
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, ctx: &mut ProcessContext<'_>) -> Result<()> {
        let users = batch.column_by_name("user").unwrap().as_primitive::<Int64Type>().clone();
        let ts = batch.column_by_name("ts").unwrap().as_primitive::<TimestampMillisecondType>().clone();
        let user_state = self.user.clone().unwrap();
        for row in 0..batch.num_rows() {
            let key = ctx.key(row)?;
            user_state.put(ctx.keyed_state()?, key, &users.value(row))?;
            ctx.register_timer(key, TimeDomain::EventTime, ts.value(row) + 100)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: KeyRef<'_>,
        time: i64,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
    ) -> Result<()> {
        let user_state = self.user.clone().unwrap();
        let user = user_state.get(ctx.keyed_state()?, key)?.unwrap();
        let batch = RecordBatch::try_new(
            alarm_schema(),
            vec![Arc::new(Int64Array::from(vec![user])), Arc::new(Int64Array::from(vec![time]))],
        )?;
        ctx.emit(batch);
        Ok(())
    }
}

async fn run_alarms(events: &[Event], faults: FaultInjector) -> (Vec<(i64, i64)>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let output = CommittedOutput::default();
    let mut source = Events::new(to_batches(events, 40));
    source.pause = Duration::from_millis(2);
    source.faults = faults;
    let pipeline = Pipeline::new();
    pipeline
        .source("events", source.factory())
        .parallelism(2)
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(50)))
        .key_by(["user"])
        .process("alarms", Alarms::default())
        .parallelism(2)
        .sink("sink", TwoPhaseMemorySink::new(output.clone()));
    let config = JobConfig::new("alarms")
        .with_parallelism(2)
        .with_state_backend(StateBackendKind::Disk)
        .with_local_state_dir(dir.path().join("local"))
        .with_restart(RestartStrategy::fixed_delay(20, Duration::from_millis(10)))
        .with_checkpointing(
            CheckpointConfig::new(dir.path().join("checkpoints")).with_interval(Duration::from_millis(40)),
        );
    let outcome = tokio::time::timeout(Duration::from_secs(120), pipeline.run(config)).await.expect("in time").unwrap();
    let mut alarms: Vec<(i64, i64)> = output
        .batches()
        .iter()
        .flat_map(|b| {
            let u = b.column(0).as_primitive::<Int64Type>().clone();
            let t = b.column(1).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |r| (u.value(r), t.value(r))).collect::<Vec<_>>()
        })
        .collect();
    alarms.sort_unstable();
    (alarms, outcome.restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_timers_fire_once_each_across_failures() {
    let events = ordered_events(8_000, 11, 3, 50);
    let expected: Vec<(i64, i64)> =
        events.iter().map(|e| (e.1, e.2 + 100)).collect::<BTreeSet<_>>().into_iter().collect();
    let (clean, restarts) = run_alarms(&events, FaultInjector::new()).await;
    assert_eq!(restarts, 0);
    assert_eq!(clean, expected, "one alarm per user and distinct time");
    let faults = FaultInjector::new().fail_at("events.poll", [40, 110, 170]);
    let (restored, restarts) = run_alarms(&events, faults.clone()).await;
    assert_eq!(faults.fired().len(), 3);
    assert!(restarts >= 3, "{restarts}");
    assert_eq!(restored, expected);
}
