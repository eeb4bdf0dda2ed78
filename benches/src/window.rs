//! `window-count`: a keyed 1-second event-time tumbling count through the pipeline
//! (source of pre-generated batches → bounded-out-of-orderness watermarks → `key_by` →
//! `Windows::tumbling_event_time(..).aggregate([Agg::count()])` → a counting sink),
//! against a bare single-threaded `HashMap<(key, window_start), u64>` loop over the same
//! batches that fires and emits the windows the same watermark closes.
//!
//! Events carry an `Int64` key (uniform over `keys` distinct values) and a
//! `Timestamp(Millisecond)` event time advancing `events_per_s` events per simulated
//! second, each moved back by up to `disorder` ms (bounded disorder). The watermark delay
//! equals the disorder, so no row is late and both sides see every row in its window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use operators_core::operator::{OperatorContext, Sink, SinkFactory, Source, SourceContext, SourcePoll, TaskInfo};
use operators_core::state::StateBackendKind;
use operators_core::window::{Agg, WatermarkGenerator, Windows};
use operators_core::{JobConfig, Pipeline};

use crate::{Run, measure};

type BoxError = Box<dyn std::error::Error>;

/// Window length of the bench, ms.
pub const WINDOW_MS: i64 = 1000;

/// The shape of the generated events.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    /// Events in total.
    pub rows: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Events per simulated second of event time.
    pub events_per_s: u64,
    /// Greatest amount an event's time lags the in-order time, ms (also the watermark delay).
    pub disorder_ms: i64,
    /// Rows per batch.
    pub batch_size: usize,
}

/// The events' schema: `key` Int64, `ts` Timestamp(Millisecond).
pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

/// Generates the events (deterministic: a fixed-seed xorshift), before any timing.
pub fn generate(spec: &EventSpec) -> Result<Vec<RecordBatch>, BoxError> {
    if spec.keys == 0 || spec.events_per_s == 0 || spec.batch_size == 0 || spec.disorder_ms < 0 {
        return Err("keys, events per second and batch size must be positive, disorder not negative".into());
    }
    let schema = schema();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Start a little after the epoch so that no disordered time is negative.
    let base = 1_700_000_000_000_i64;
    let mut batches = Vec::with_capacity((spec.rows as usize).div_ceil(spec.batch_size));
    let mut i = 0u64;
    while i < spec.rows {
        let n = (spec.rows - i).min(spec.batch_size as u64) as usize;
        let mut keys = Vec::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push((next() % spec.keys) as i64);
            let in_order = base + (i as u128 * 1000 / spec.events_per_s as u128) as i64;
            let lag = if spec.disorder_ms == 0 { 0 } else { (next() % (spec.disorder_ms as u64 + 1)) as i64 };
            ts.push(in_order - lag);
            i += 1;
        }
        batches.push(RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(keys)), Arc::new(TimestampMillisecondArray::from(ts))],
        )?);
    }
    Ok(batches)
}

/// Windows emitted and the sum of their counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Window results (rows).
    pub windows: u64,
    /// Sum of the `count` column: the events counted.
    pub count: u64,
}

/// Emits the pre-generated batches in order, then finishes.
struct Batches {
    batches: Arc<Vec<RecordBatch>>,
    next: usize,
}

#[async_trait]
impl Source for Batches {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> operators_core::Result<SourcePoll> {
        let Some(b) = self.batches.get(self.next) else { return Ok(SourcePoll::Finished) };
        self.next += 1;
        Ok(SourcePoll::Batch(b.clone()))
    }
}

/// Counts window results and sums their `count` column; clones share the totals.
#[derive(Debug, Clone, Default)]
struct CountingSink {
    windows: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
}

impl CountingSink {
    fn totals(&self) -> Totals {
        Totals { windows: self.windows.load(Ordering::Relaxed), count: self.count.load(Ordering::Relaxed) }
    }
}

#[async_trait]
impl Sink for CountingSink {
    async fn write_batch(&mut self, batch: RecordBatch, _ctx: &mut OperatorContext) -> operators_core::Result<()> {
        let Some(counts) = batch.column_by_name("count").and_then(|c| c.as_primitive_opt::<Int64Type>()) else {
            return Err(operators_core::Error::config(
                "window output",
                format!("no Int64 `count` column in {:?}", batch.schema()),
            ));
        };
        let sum: i64 = counts.values().iter().sum();
        self.windows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.count.fetch_add(sum as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl SinkFactory for CountingSink {
    fn create(&self, _info: &TaskInfo) -> operators_core::Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

/// One run of the pipeline (parallelism 1) over `batches`: the measured run and what
/// the sink received.
pub async fn pipeline(
    batches: Arc<Vec<RecordBatch>>,
    disorder_ms: i64,
    backend: StateBackendKind,
) -> Result<(Run, Totals), BoxError> {
    let sink = CountingSink::default();
    let p = Pipeline::new();
    let source_batches = batches.clone();
    p.source("events", move |_: &TaskInfo| Ok(Batches { batches: source_batches.clone(), next: 0 }))
        .assign_watermarks(
            "watermarks",
            WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(disorder_ms.max(0) as u64)),
        )
        .key_by(["key"])
        .window(
            "count-per-second",
            Windows::tumbling_event_time("ts", Duration::from_millis(WINDOW_MS as u64)).aggregate([Agg::count()]),
        )
        .sink("count", sink.clone());
    let scratch = tempfile::tempdir()?;
    let config = JobConfig::new("window-count")
        .with_parallelism(1)
        .with_state_backend(backend)
        .with_local_state_dir(scratch.path())
        .with_restart(operators_core::restart::RestartStrategy::None);
    let job = p.start(config)?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut failure = None;
    let run = measure(|| async {
        if let Err(e) = job.wait().await {
            failure = Some(e.to_string());
        }
        rows
    })
    .await;
    if let Some(e) = failure {
        return Err(format!("the window job failed: {e}").into());
    }
    Ok((run, sink.totals()))
}

/// The bare loop: per batch, count each row into `HashMap<(key, window_start), u64>`,
/// advance the watermark (`max ts − disorder − 1`, as the generator does), and emit
/// every window it closes as an Arrow batch (key, window_start, window_end, count) that
/// is counted like the pipeline's sink counts; at the end every open window fires.
pub fn baseline(batches: &[RecordBatch], disorder_ms: i64) -> Result<(Run, Totals), BoxError> {
    let cpu0 = crate::cpu_time();
    let started = std::time::Instant::now();
    let out_schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("window_start", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("window_end", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("count", DataType::Int64, false),
    ]));
    let mut counts: HashMap<(i64, i64), u64> = HashMap::new();
    // Window start → the keys with a count in it, so firing touches only closed windows.
    let mut open: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut max_ts = i64::MIN;
    let mut totals = Totals::default();
    let mut rows = 0u64;
    let emit = |fired: Vec<(i64, Vec<i64>)>,
                counts: &mut HashMap<(i64, i64), u64>,
                totals: &mut Totals|
     -> Result<(), BoxError> {
        let n: usize = fired.iter().map(|(_, k)| k.len()).sum();
        if n == 0 {
            return Ok(());
        }
        let (mut k, mut s, mut e, mut c) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for (start, keys) in fired {
            for key in keys {
                let count = counts.remove(&(key, start)).unwrap_or(0);
                k.push(key);
                s.push(start);
                e.push(start + WINDOW_MS);
                c.push(count as i64);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(k)),
            Arc::new(TimestampMillisecondArray::from(s)),
            Arc::new(TimestampMillisecondArray::from(e)),
            Arc::new(Int64Array::from(c)),
        ];
        let out = RecordBatch::try_new(out_schema.clone(), columns)?;
        let sum: i64 = out.column(3).as_primitive::<Int64Type>().values().iter().sum();
        totals.windows += out.num_rows() as u64;
        totals.count += sum as u64;
        Ok(())
    };
    for batch in batches {
        let keys = batch.column_by_name("key").and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or("no key")?;
        let ts =
            batch.column_by_name("ts").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()).ok_or("no ts")?;
        for (&key, &t) in keys.values().iter().zip(ts.values().iter()) {
            let start = t - t.rem_euclid(WINDOW_MS);
            let slot = counts.entry((key, start)).or_insert_with(|| {
                open.entry(start).or_default().push(key);
                0
            });
            *slot += 1;
            max_ts = max_ts.max(t);
        }
        rows += keys.len() as u64;
        let watermark = max_ts.saturating_sub(disorder_ms).saturating_sub(1);
        let mut fired = Vec::new();
        while let Some(entry) = open.first_entry() {
            if *entry.key() + WINDOW_MS - 1 > watermark {
                break;
            }
            fired.push(entry.remove_entry());
        }
        emit(fired, &mut counts, &mut totals)?;
    }
    let rest: Vec<(i64, Vec<i64>)> = std::mem::take(&mut open).into_iter().collect();
    emit(rest, &mut counts, &mut totals)?;
    if !counts.is_empty() {
        return Err(format!("the baseline left {} counts unfired", counts.len()).into());
    }
    Ok((Run { rows, wall: started.elapsed(), cpu: crate::cpu_time().saturating_sub(cpu0) }, totals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_counts_every_event_once_per_window() {
        let spec = EventSpec { rows: 50_000, keys: 100, events_per_s: 10_000, disorder_ms: 50, batch_size: 1000 };
        let batches = generate(&spec).unwrap();
        let (run, totals) = baseline(&batches, spec.disorder_ms).unwrap();
        assert_eq!(run.rows, 50_000);
        assert_eq!(totals.count, 50_000);
        // 5 simulated seconds (plus a partial one from the disorder) × 100 keys.
        assert!((500..=600).contains(&totals.windows), "{totals:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipeline_agrees_with_the_baseline() {
        let spec = EventSpec { rows: 50_000, keys: 100, events_per_s: 10_000, disorder_ms: 50, batch_size: 1000 };
        let batches = Arc::new(generate(&spec).unwrap());
        let (_, expected) = baseline(&batches, spec.disorder_ms).unwrap();
        let (_, got) = pipeline(batches, spec.disorder_ms, StateBackendKind::Memory).await.unwrap();
        assert_eq!(got, expected);
    }
}
