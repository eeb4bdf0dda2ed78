//! The window operator: assigns rows to windows, folds them into accumulators in keyed
//! state and emits a result row per window when it fires.
//!
//! Accumulators live in one keyed map state, `window → state`, per key, so the runtime
//! checkpoints, restores and re-partitions them like any keyed state. Firing needs the
//! opposite direction, time → (key, window), which keyed state does not index; the
//! operator keeps that index in memory and rebuilds it in `open` by scanning its own key
//! groups' entries. Rebuilding from state rather than checkpointing the index separately
//! means the index can never disagree with the state it points to, also after the key
//! groups moved to another subtask. The index costs one entry per key and open window,
//! the same bound as the state.
//!
//! Aligned windows (tumbling, sliding) share their bounds across keys, so their index is
//! a [`WindowTable`] of panes that also holds the decoded states between batches and
//! writes them to keyed state before each snapshot. Session and count windows, whose
//! bounds are per key, keep ordered sets of timers and read and write keyed state per
//! batch.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::aggregate::{Acc, BoundAgg, ColumnReader, Scalar, ScalarType, build_column};
use super::state::WindowState;
use super::table::{Mark, WindowTable};
use super::time::{event_times, sliding_windows, tumbling_start};
use super::{IS_UPDATE, WINDOW_END, WINDOW_START, WindowKind, Windows};
use crate::error::{Error, Result};
use crate::key::{BatchKeys, KeyRef, hash_key};
use crate::message::{CheckpointId, Watermark};
use crate::operator::{DeadLetter, OperatorContext, RestoredState, TaskInfo, Transform, TransformFactory};
use crate::state::MapState;

/// The window operator of [`Stream::window`](crate::pipeline::Stream::window), as a
/// transform factory for graphs built by hand. Its input must be keyed (`key_by`).
#[derive(Debug, Clone)]
pub struct WindowTransform {
    spec: Arc<Windows>,
}

impl WindowTransform {
    /// A window operator for `spec`; the specification is validated when the job starts.
    pub fn new(spec: Windows) -> Self {
        Self { spec: Arc::new(spec) }
    }

    /// The specification.
    pub fn spec(&self) -> &Windows {
        &self.spec
    }
}

impl TransformFactory for WindowTransform {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn Transform>> {
        self.spec.validate()?;
        Ok(Box::new(WindowTask::new(self.spec.clone(), &info.operator_id)))
    }
}

/// Window id in state: `(start, end)` in ms; count windows use `(0, 0)`.
type WindowId = (i64, i64);

/// `(time, key group, key bytes, window start, window end)`; ordered by time first.
type Timer = (i64, u16, Vec<u8>, i64, i64);

const COUNT_WINDOW: WindowId = (0, 0);

/// Most result rows in one emitted batch.
const MAX_RESULT_ROWS: usize = 8192;

/// Most window states kept decoded in memory (tumbling and sliding windows); beyond it
/// they are written to keyed state and dropped from memory (the disk backend spills them past its budget).
const CACHE_LIMIT: usize = 262_144;

/// Buffers reused across batches by the aligned-window path.
#[derive(Default)]
struct Scratch {
    /// Table entries the batch touches.
    touched: Vec<u32>,
    /// `(entry, row)` for every row and window it belongs to.
    pairs: Vec<(u32, u32)>,
    /// Rows ordered by entry.
    rows: Vec<u32>,
    windows: Vec<WindowId>,
}

/// The operator's own checkpointed state: where event time stood and the column types.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    watermark: Watermark,
    key_types: Option<Vec<ScalarType>>,
    agg_types: Option<Vec<Option<ScalarType>>>,
}

/// The specification bound to the stream's column types.
struct Bound {
    key_columns: Vec<String>,
    key_types: Vec<ScalarType>,
    aggs: Vec<BoundAgg>,
    schema: SchemaRef,
}

impl Bound {
    fn new(
        key_columns: Vec<String>,
        key_types: Vec<ScalarType>,
        spec: &Windows,
        agg_types: Vec<Option<ScalarType>>,
    ) -> Result<Self> {
        let aggs =
            spec.aggregates.iter().zip(agg_types).map(|(a, t)| BoundAgg::bind(a, t)).collect::<Result<Vec<_>>>()?;
        let mut fields = Vec::new();
        for (name, ty) in key_columns.iter().zip(&key_types) {
            fields.push(Field::new(name, ty.data_type(), true));
        }
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new(WINDOW_START, ts.clone(), false));
        fields.push(Field::new(WINDOW_END, ts, false));
        for a in &aggs {
            if key_columns.contains(&a.name) {
                return Err(Error::config(
                    a.name.as_str(),
                    format!("aggregation `{}` has the name of a key column; rename it with Agg::alias", a.name),
                ));
            }
            fields.push(Field::new(&a.name, a.output_type().data_type(), true));
        }
        fields.push(Field::new(IS_UPDATE, DataType::Boolean, false));
        Ok(Self { key_columns, key_types, aggs, schema: Arc::new(Schema::new(fields)) })
    }

    fn from_batch(batch: &RecordBatch, key_columns: Vec<String>, spec: &Windows, operator: &str) -> Result<Self> {
        let schema = batch.schema();
        let field_type = |name: &str| -> Result<ScalarType> {
            let field = schema.field_with_name(name).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::config(
                    name,
                    format!(
                        "window `{operator}`: column `{name}` is not in the stream (columns: {})",
                        names.join(", ")
                    ),
                )
            })?;
            ScalarType::of(field.data_type(), name)
        };
        let key_types = key_columns.iter().map(|c| field_type(c)).collect::<Result<Vec<_>>>()?;
        let agg_types =
            spec.aggregates.iter().map(|a| a.column().map(field_type).transpose()).collect::<Result<Vec<_>>>()?;
        Self::new(key_columns, key_types, spec, agg_types)
    }

    fn result_row(&self, state: &WindowState, w: WindowId, is_update: bool) -> OutRow {
        self.result_row_of(&state.key, &state.accs, w, is_update)
    }

    fn result_row_of(&self, key: &[Option<Scalar>], accs: &[Acc], w: WindowId, is_update: bool) -> OutRow {
        let results = self.aggs.iter().zip(accs).map(|(a, acc)| a.result(acc)).collect();
        OutRow { key: key.to_vec(), start: w.0, end: w.1, results, is_update }
    }

    fn new_state(&self, key: Vec<Option<Scalar>>, now_ms: i64) -> WindowState {
        WindowState {
            key,
            accs: self.aggs.iter().map(BoundAgg::new_acc).collect(),
            fired: false,
            rows: 0,
            first_ms: now_ms,
        }
    }
}

/// Names the operator in a state error from an aggregation.
fn state_context(operator: &str, e: Error) -> Error {
    match e {
        Error::State { message, .. } => Error::State { operator: operator.to_string(), message },
        other => other,
    }
}

fn unbound(operator: &str) -> Error {
    Error::Internal(format!("window `{operator}`: window state exists but the column types are unknown"))
}

/// One result row waiting to be emitted.
struct OutRow {
    key: Vec<Option<Scalar>>,
    start: i64,
    end: i64,
    results: Vec<Option<Scalar>>,
    is_update: bool,
}

struct WindowTask {
    spec: Arc<Windows>,
    operator: String,
    windows: Option<MapState<WindowId, WindowState>>,
    bound: Option<Bound>,
    /// Event time as last received (event-time windows).
    watermark: Watermark,
    /// When each pending window fires: the watermark (event time) or clock (processing
    /// time) at which it is due; `i64::MAX` for count windows, which fire on their count
    /// or at end of input.
    fires: BTreeSet<Timer>,
    /// When each fired event-time window is dropped (end − 1 + allowed lateness).
    cleanups: BTreeSet<Timer>,
    out: Vec<OutRow>,
    /// Tumbling and sliding windows: the index of open windows and a write-back copy of
    /// their states. The rows of a window arrive over many batches, and decoding and
    /// re-encoding its state for each would dominate the cost of a window count. Written
    /// to keyed state before every snapshot (so checkpoints see it) and whenever it holds
    /// more than `cache_limit` decoded states; a failure loses only changes after the
    /// last checkpoint, which are replayed.
    table: WindowTable,
    cache_limit: usize,
    /// Counts batches, to group rows per table entry (see `Entry::stamp`).
    generation: u32,
    scratch: Scratch,
    /// Column types from the checkpoint, bound in `open`.
    restored_types: Option<Snapshot>,
}

/// Readers of the key and aggregated columns of one batch.
struct BatchReaders {
    keys: Vec<ColumnReader>,
    aggs: Vec<Option<ColumnReader>>,
}

impl WindowTask {
    fn new(spec: Arc<Windows>, operator: &str) -> Self {
        Self {
            spec,
            operator: operator.to_string(),
            windows: None,
            bound: None,
            watermark: Watermark::MIN,
            fires: BTreeSet::new(),
            cleanups: BTreeSet::new(),
            out: Vec::new(),
            table: WindowTable::default(),
            cache_limit: CACHE_LIMIT,
            generation: 0,
            scratch: Scratch::default(),
            restored_types: None,
        }
    }

    fn state_handle(&self) -> Result<MapState<WindowId, WindowState>> {
        self.windows.clone().ok_or_else(|| Error::Internal(format!("window `{}`: process before open", self.operator)))
    }

    fn bound(&self) -> Result<&Bound> {
        self.bound.as_ref().ok_or_else(|| unbound(&self.operator))
    }

    fn lateness(&self) -> i64 {
        self.spec.allowed_lateness
    }

    /// Tumbling or sliding (their index is the window table).
    fn is_aligned(&self) -> bool {
        !matches!(self.spec.kind, WindowKind::TumblingCount { .. } | WindowKind::SessionEventTime { .. })
    }

    /// When window `(start, end)` fires: event time `end − 1` (its last millisecond), the
    /// clock reaching `end` for processing time (a row processed at `end − 1` still
    /// belongs to it), never by time for count windows.
    fn fire_time(&self, end: i64) -> i64 {
        match self.spec.kind {
            WindowKind::TumblingCount { .. } => i64::MAX,
            WindowKind::TumblingProcessingTime { .. } | WindowKind::SlidingProcessingTime { .. } => end,
            _ => end.saturating_sub(1),
        }
    }

    fn cleanup_time(&self, end: i64) -> i64 {
        end.saturating_sub(1).saturating_add(self.lateness())
    }

    fn timer(time: i64, key: KeyRef<'_>, w: WindowId) -> Timer {
        (time, key.key_group, key.bytes.to_vec(), w.0, w.1)
    }

    fn readers(&self, batch: &RecordBatch) -> Result<BatchReaders> {
        let bound = self.bound()?;
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                Error::config(name, format!("window `{}`: column `{name}` is not in the stream", self.operator))
            })
        };
        let mut keys = Vec::with_capacity(bound.key_columns.len());
        for (name, ty) in bound.key_columns.iter().zip(&bound.key_types) {
            keys.push(ColumnReader::new(column(name)?, ty, name)?);
        }
        let mut aggs = Vec::with_capacity(bound.aggs.len());
        for a in &bound.aggs {
            aggs.push(match (&a.column, &a.input) {
                (Some(name), Some(ty)) => Some(ColumnReader::new(column(name)?, ty, name)?),
                _ => None,
            });
        }
        Ok(BatchReaders { keys, aggs })
    }

    fn result_row(&self, state: &WindowState, w: WindowId, is_update: bool) -> Result<OutRow> {
        Ok(self.bound()?.result_row(state, w, is_update))
    }

    /// Emits the pending result rows as one batch.
    fn emit_out(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.out);
        let bound = self.bound()?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(bound.schema.fields().len());
        for (i, ty) in bound.key_types.iter().enumerate() {
            let values: Vec<Option<Scalar>> = rows.iter().map(|r| r.key.get(i).cloned().flatten()).collect();
            columns.push(build_column(ty, &values)?);
        }
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.start))));
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.end))));
        for (i, a) in bound.aggs.iter().enumerate() {
            let values: Vec<Option<Scalar>> = rows.iter().map(|r| r.results.get(i).cloned().flatten()).collect();
            columns.push(build_column(&a.output_type(), &values)?);
        }
        columns.push(Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.is_update)))));
        let batch = RecordBatch::try_new(bound.schema.clone(), columns)
            .map_err(|e| Error::arrow(format!("window `{}`: building results", self.operator), e))?;
        ctx.emit(batch);
        Ok(())
    }

    /// Fires every window whose fire time is at most `time` (`i64::MAX`: every pending
    /// window, at end of input), then drops fired windows whose lateness has passed.
    fn fire_due(&mut self, time: i64, ctx: &mut OperatorContext) -> Result<()> {
        if self.is_aligned() {
            return self.fire_panes(time, ctx);
        }
        let handle = self.state_handle()?;
        while let Some(first) = self.fires.first() {
            if first.0 > time {
                break;
            }
            let Some((_, kg, key, start, end)) = self.fires.pop_first() else { break };
            let key_ref = KeyRef { key_group: kg, bytes: &key };
            let w = (start, end);
            let Some(mut state) = handle.get(ctx.keyed_state()?, key_ref, &w)? else { continue };
            let bounds = match self.spec.kind {
                WindowKind::TumblingCount { .. } => self.count_bounds(&state, ctx),
                _ => w,
            };
            let row = self.result_row(&state, bounds, state.fired)?;
            self.out.push(row);
            if self.out.len() >= MAX_RESULT_ROWS {
                // End of input can fire every key's windows at once: keep batches bounded.
                self.emit_out(ctx)?;
            }
            let cleanup = self.cleanup_time(end);
            let store = ctx.keyed_state()?;
            if !self.spec.kind.is_event_time() || cleanup <= time {
                handle.remove(store, key_ref, &w)?;
            } else {
                state.fired = true;
                handle.put(store, key_ref, &w, &state)?;
                self.cleanups.insert((cleanup, kg, key, start, end));
            }
        }
        self.drop_expired(time, ctx)
    }

    /// Drops fired windows whose lateness has passed.
    fn drop_expired(&mut self, time: i64, ctx: &mut OperatorContext) -> Result<()> {
        let handle = self.state_handle()?;
        while self.cleanups.first().is_some_and(|t| t.0 <= time) {
            let Some((_, kg, key, start, end)) = self.cleanups.pop_first() else { break };
            handle.remove(ctx.keyed_state()?, KeyRef { key_group: kg, bytes: &key }, &(start, end))?;
        }
        Ok(())
    }

    /// Aligned windows: fires every pane due at `time` that has not fired, and drops the
    /// fired panes whose lateness has passed (processing-time panes at once).
    fn fire_panes(&mut self, time: i64, ctx: &mut OperatorContext) -> Result<()> {
        let handle = self.state_handle()?;
        let event_time = self.spec.kind.is_event_time();
        let due = {
            let fire_time = |end| self.fire_time(end);
            self.table.panes_while(|end| fire_time(end) <= time)
        };
        for (w, fired) in due {
            let drop = !event_time || self.cleanup_time(w.1) <= time;
            if fired && !drop {
                continue;
            }
            for e in self.table.pane_entries(w) {
                if !fired {
                    self.make_resident(e, &handle, ctx, None)?;
                    let bound = self.bound.as_ref().ok_or_else(|| unbound(&self.operator))?;
                    let Some((entry, accs, key)) = self.table.state_mut(e) else { continue };
                    entry.dirty = true;
                    let is_update = entry.fired;
                    entry.fired = true;
                    self.out.push(bound.result_row_of(key, accs, w, is_update));
                    if self.out.len() >= MAX_RESULT_ROWS {
                        // End of input can fire every key's windows at once: keep batches bounded.
                        self.emit_out(ctx)?;
                    }
                }
                if drop && self.table.get(e).in_store {
                    handle.remove(ctx.keyed_state()?, self.table.key(e), &w)?;
                }
            }
            if drop {
                self.table.remove_pane(w);
            } else {
                self.table.mark_fired(w);
            }
        }
        Ok(())
    }

    /// Gives table entry `e` its decoded state: from keyed state when it was evicted, else
    /// a new one with the key values of `new_key` (or of the stored copy).
    fn make_resident(
        &mut self,
        e: u32,
        handle: &MapState<WindowId, WindowState>,
        ctx: &mut OperatorContext,
        new_key: Option<(&BatchReaders, usize)>,
    ) -> Result<()> {
        let entry = self.table.get(e);
        if entry.resident() {
            return Ok(());
        }
        let w = entry.window();
        let stored = if entry.in_store { handle.get(ctx.keyed_state()?, self.table.key(e), &w)? } else { None };
        let state = match (stored, new_key) {
            (Some(s), _) => s,
            (None, Some((readers, row))) => {
                let now = ctx.clock().now_ms();
                self.bound()?.new_state(readers.keys.iter().map(|r| r.get(row)).collect(), now)
            }
            (None, None) => {
                return Err(Error::State {
                    operator: self.operator.clone(),
                    message: format!("window [{}, {}) of a key is indexed but not in keyed state", w.0, w.1),
                });
            }
        };
        self.table.set_state(e, state);
        Ok(())
    }

    fn count_bounds(&self, state: &WindowState, ctx: &OperatorContext) -> WindowId {
        (state.first_ms, ctx.clock().now_ms().max(state.first_ms))
    }

    fn dead_letter_null_times(&self, batch: &RecordBatch, times: &Int64Array, ctx: &mut OperatorContext) {
        let column = self.spec.time_column.as_deref().unwrap_or_default();
        let options = FormatOptions::default();
        let formatters: Vec<_> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
        let schema = batch.schema();
        for row in (0..times.len()).filter(|&r| times.is_null(r)) {
            let record = schema
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, fmt)| match fmt {
                    Some(fmt) => format!("{}={}", f.name(), fmt.value(row)),
                    None => format!("{}=?", f.name()),
                })
                .collect::<Vec<_>>()
                .join(", ");
            ctx.dead_letter(DeadLetter {
                origin: format!("window `{}`", self.operator),
                line: None,
                offset: None,
                reason: format!("null event time in column `{column}`"),
                record,
            });
        }
    }

    /// Writes the table's states changed since the last write-back to keyed state.
    fn write_back(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let handle = self.state_handle()?;
        let store = ctx.keyed_state()?;
        self.table.write_dirty(|key, w, state| handle.put(store, key, &w, state))
    }

    fn context(&self, e: Error) -> Error {
        state_context(&self.operator, e)
    }

    /// Tumbling and sliding windows (event or processing time).
    fn process_aligned(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        valid: &[bool],
        ctx: &mut OperatorContext,
    ) -> Result<Vec<bool>> {
        let readers = self.readers(batch)?;
        // Keyed on one Int64 column without nulls (the common case): rows find their key
        // by the integer; the general case encodes every row's key.
        let int_keys = match self.bound()?.key_columns.as_slice() {
            [column] => batch
                .column_by_name(column)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .filter(|a| a.null_count() == 0)
                .cloned(),
            _ => None,
        };
        let keys = match int_keys {
            Some(_) => None,
            None => Some(ctx.keys(batch)?),
        };
        let max_parallelism = ctx.info().max_parallelism;
        let handle = self.state_handle()?;
        let event_time = self.spec.kind.is_event_time();
        let (size, slide) = match self.spec.kind {
            WindowKind::TumblingEventTime { size } | WindowKind::TumblingProcessingTime { size } => (size, size),
            WindowKind::SlidingEventTime { size, slide } | WindowKind::SlidingProcessingTime { size, slide } => {
                (size, slide)
            }
            _ => return Err(Error::Internal("aligned windows of another kind".into())),
        };
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.table.reset_stamps();
            self.generation = 1;
        }
        let generation = self.generation;
        // A count needs how many rows each window gets, not which: no row lists.
        let counts_only = self.bound()?.aggs.iter().all(BoundAgg::counts_only);
        self.table.set_counts_only(counts_only);
        let mut scratch = std::mem::take(&mut self.scratch);
        // Entries the batch touches go to `touched[..touched]`; the vector keeps its length
        // from batch to batch, so the slot written is there already.
        let mut touched = 0usize;
        scratch.pairs.clear();
        let mut late = vec![false; batch.num_rows()];
        // Rows whose windows have all passed their lateness are late; a window is live
        // while its cleanup time is after the watermark.
        let live_after = if event_time { self.watermark.saturating_sub(self.lateness()) } else { i64::MIN };
        // Every time in one slide-long bucket has the same windows when the size is a
        // multiple of the slide (always for tumbling windows): rows mostly fall in the
        // bucket of the row before, and this saves the division per row.
        let same_per_bucket = size % slide == 0;
        let mut bucket = (i64::MAX, i64::MIN);
        for row in 0..batch.num_rows() {
            if !valid[row] {
                continue;
            }
            let t = times[row];
            if !(same_per_bucket && bucket.0 <= t && t < bucket.1) {
                if size == slide {
                    scratch.windows.clear();
                    let start = tumbling_start(t, size);
                    scratch.windows.push((start, start.saturating_add(size)));
                } else {
                    sliding_windows(t, size, slide, &mut scratch.windows);
                }
                let b = tumbling_start(t, slide);
                bucket = (b, b.saturating_add(slide));
            }
            let mut any = false;
            for &w in &scratch.windows {
                // cleanup_time(end) <= watermark, without the call per row.
                if event_time && w.1.saturating_sub(1) <= live_after {
                    continue;
                }
                any = true;
                let (e, _) = match (&int_keys, &keys) {
                    (Some(ints), _) => self.table.int_entry(ints.value(row), max_parallelism, w),
                    (None, Some(keys)) => {
                        let key = keys.key(row);
                        self.table.entry(keys.hashes()[row], key.key_group, key.bytes, w)
                    }
                    (None, None) => return Err(Error::Internal("window rows without keys".into())),
                };
                scratch.pairs.push((e, row as u32));
            }
            late[row] = !any;
        }
        // The marks in a loop of their own: each row's mark is a load from anywhere in the
        // array, and a tight loop keeps many of them in flight at once (inside the lookup
        // loop above, one or two were).
        let marks = self.table.marks();
        for &(e, row) in &scratch.pairs {
            // Without branches: whether the batch touched the entry before is random.
            let mark = &mut marks[e as usize];
            let fresh = mark.stamp != generation;
            *mark = Mark {
                stamp: generation,
                count: if fresh { 1 } else { mark.count + 1 },
                first_row: if fresh { row } else { mark.first_row },
            };
            match scratch.touched.get_mut(touched) {
                Some(slot) => *slot = e,
                None => scratch.touched.push(e),
            }
            touched += usize::from(fresh);
        }
        scratch.touched.truncate(touched);
        // Entries in id order: ids are handed out as windows open, so neighbouring ids are
        // neighbours in memory and folding in this order streams through the states.
        // Scanning the marks costs one pass over the table, worth it while the batch
        // touches a good part of it; otherwise sorting the touched ids is cheaper.
        if self.table.capacity() <= 4 * scratch.touched.len() {
            // Branch-free: about a quarter of the entries match, in no pattern.
            let marks = self.table.marks();
            scratch.touched.clear();
            scratch.touched.resize(marks.len(), 0);
            let mut n = 0;
            for (e, mark) in marks.iter().enumerate() {
                if let Some(slot) = scratch.touched.get_mut(n) {
                    *slot = e as u32;
                }
                n += usize::from(mark.stamp == generation);
            }
            scratch.touched.truncate(n);
        } else {
            scratch.touched.sort_unstable();
        }
        // Rows by entry (a counting sort): each entry's rows are folded in one call.
        if !counts_only {
            let mut next = 0u32;
            let marks = self.table.marks();
            for &e in &scratch.touched {
                let mark = &mut marks[e as usize];
                let count = mark.count;
                mark.count = next;
                next += count;
            }
            scratch.rows.clear();
            scratch.rows.resize(scratch.pairs.len(), 0);
            for &(e, row) in &scratch.pairs {
                let at = &mut marks[e as usize].count;
                scratch.rows[*at as usize] = row;
                *at += 1;
            }
        }
        let mut due = Vec::new();
        let mut begin = 0usize;
        for &e in &scratch.touched {
            let mark = self.table.marks()[e as usize];
            let end = mark.count as usize;
            let (rows, n) = if counts_only {
                // No scatter ran: `count` is still the entry's number of rows.
                (&[][..], mark.count)
            } else {
                (&scratch.rows[begin..end], (end - begin) as u32)
            };
            begin = end;
            self.make_resident(e, &handle, ctx, Some((&readers, mark.first_row as usize)))?;
            let w = self.table.get(e).window();
            let fire = self.fire_time(w.1);
            let bound = self.bound.as_ref().ok_or_else(|| unbound(&self.operator))?;
            if counts_only {
                // A count(*) equals the rows folded in: the table derives the accumulators
                // from `rows` when they are read, and their cache lines are not touched here.
                let entry = self.table.get_mut(e);
                entry.dirty = true;
                entry.rows += u64::from(n);
            } else {
                let Some((entry, accs, _)) = self.table.state_mut(e) else { continue };
                for ((agg, acc), reader) in bound.aggs.iter().zip(accs.iter_mut()).zip(&readers.aggs) {
                    agg.add_rows(acc, reader.as_ref(), rows, times).map_err(|e| state_context(&self.operator, e))?;
                }
                entry.dirty = true;
                entry.rows += u64::from(n);
            }
            if event_time && fire <= self.watermark {
                due.push((mark.first_row, w.0, e));
            }
        }
        // Windows due already (rows within the allowed lateness) emit now, as updates when
        // they were emitted before; in the order of their keys' first rows.
        due.sort_unstable();
        for (_, _, e) in due {
            let bound = self.bound.as_ref().ok_or_else(|| unbound(&self.operator))?;
            let Some((entry, accs, key)) = self.table.state_mut(e) else { continue };
            let w = entry.window();
            self.out.push(bound.result_row_of(key, accs, w, entry.fired));
            entry.fired = true;
            self.table.mark_fired(w);
        }
        self.scratch = scratch;
        if self.table.resident() > self.cache_limit {
            // Beyond the limit state lives in the backend only (the disk backend spills past its budget).
            self.write_back(ctx)?;
            self.table.evict();
        }
        Ok(late)
    }

    fn process_sessions(
        &mut self,
        batch: &RecordBatch,
        keys: &BatchKeys,
        times: &[i64],
        valid: &[bool],
        gap: i64,
        ctx: &mut OperatorContext,
    ) -> Result<Vec<bool>> {
        let readers = self.readers(batch)?;
        let handle = self.state_handle()?;
        let mut late = vec![false; batch.num_rows()];
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        let mut order = Vec::new();
        for row in (0..batch.num_rows()).filter(|&r| valid[r]) {
            let rows = by_key.entry(keys.key(row).bytes).or_default();
            if rows.is_empty() {
                order.push(row);
            }
            rows.push(row as u32);
        }
        let now = ctx.clock().now_ms();
        for first in order {
            let key = keys.key(first);
            let rows = by_key.get(key.bytes).cloned().unwrap_or_default();
            /// A session of this key: bounds, state and the state entries it replaces.
            struct Session {
                start: i64,
                end: i64,
                state: WindowState,
                replaces: Vec<WindowId>,
                dirty: bool,
            }
            let mut sessions: Vec<Session> = handle
                .entries(ctx.keyed_state()?, key)?
                .into_iter()
                .map(|(w, state)| Session { start: w.0, end: w.1, state, replaces: vec![w], dirty: false })
                .collect();
            let bound = self.bound()?;
            for &row in &rows {
                let t = times[row as usize];
                let (s, e) = (t, t.saturating_add(gap));
                // Sessions that touch [s, e] merge with the new row (as Flink's do).
                let mut hit: Vec<usize> =
                    (0..sessions.len()).filter(|&i| sessions[i].start <= e && sessions[i].end >= s).collect();
                // Lateness is judged after merging (as Flink does): a row that joins a live
                // session is not late even if its own `[t, t + gap)` would be. Sessions in
                // state are all live (dropped at their cleanup time), so only a row that
                // joins none can be late.
                if hit.is_empty() && self.cleanup_time(e) <= self.watermark {
                    late[row as usize] = true;
                    continue;
                }
                let idx = match hit.first().copied() {
                    None => {
                        let state = bound.new_state(readers.keys.iter().map(|r| r.get(row as usize)).collect(), now);
                        sessions.push(Session { start: s, end: e, state, replaces: Vec::new(), dirty: true });
                        sessions.len() - 1
                    }
                    Some(target) => {
                        // Merge the others into the first, from the back so indices hold.
                        hit.remove(0);
                        for &other in hit.iter().rev() {
                            let o = sessions.remove(other);
                            let t = &mut sessions[target];
                            t.start = t.start.min(o.start);
                            t.end = t.end.max(o.end);
                            t.state.fired |= o.state.fired;
                            t.state.rows += o.state.rows;
                            t.replaces.extend(o.replaces);
                            for ((agg, acc), other_acc) in
                                bound.aggs.iter().zip(t.state.accs.iter_mut()).zip(o.state.accs)
                            {
                                agg.merge(acc, other_acc).map_err(|e| self.context(e))?;
                            }
                        }
                        target
                    }
                };
                let sess = &mut sessions[idx];
                sess.start = sess.start.min(s);
                sess.end = sess.end.max(e);
                sess.dirty = true;
                sess.state.rows += 1;
                for ((agg, acc), reader) in bound.aggs.iter().zip(sess.state.accs.iter_mut()).zip(&readers.aggs) {
                    agg.add_rows(acc, reader.as_ref(), &[row], times).map_err(|e| self.context(e))?;
                }
            }
            for mut sess in sessions.into_iter().filter(|s| s.dirty) {
                let w = (sess.start, sess.end);
                for old in &sess.replaces {
                    self.fires.remove(&Self::timer(self.fire_time(old.1), key, *old));
                    self.cleanups.remove(&Self::timer(self.cleanup_time(old.1), key, *old));
                    if *old != w {
                        handle.remove(ctx.keyed_state()?, key, old)?;
                    }
                }
                let fire = self.fire_time(w.1);
                if fire <= self.watermark {
                    let row = self.result_row(&sess.state, w, sess.state.fired)?;
                    self.out.push(row);
                    sess.state.fired = true;
                    self.cleanups.insert(Self::timer(self.cleanup_time(w.1), key, w));
                } else {
                    self.fires.insert(Self::timer(fire, key, w));
                }
                handle.put(ctx.keyed_state()?, key, &w, &sess.state)?;
            }
        }
        Ok(late)
    }

    fn process_count(
        &mut self,
        batch: &RecordBatch,
        keys: &BatchKeys,
        count: u64,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let readers = self.readers(batch)?;
        let handle = self.state_handle()?;
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        let mut order = Vec::new();
        for row in 0..batch.num_rows() {
            let rows = by_key.entry(keys.key(row).bytes).or_default();
            if rows.is_empty() {
                order.push(row);
            }
            rows.push(row as u32);
        }
        let now = ctx.clock().now_ms();
        // The position in the window stands in for time in first/last: it keeps rising
        // across batches, where a row index would start over.
        let mut arrival: Vec<i64> = vec![0; batch.num_rows()];
        for first in order {
            let key = keys.key(first);
            let rows = by_key.get(key.bytes).cloned().unwrap_or_default();
            let bound = self.bound()?;
            let mut state = match handle.get(ctx.keyed_state()?, key, &COUNT_WINDOW)? {
                Some(s) => s,
                None => bound.new_state(readers.keys.iter().map(|r| r.get(first)).collect(), now),
            };
            let mut rest: &[u32] = &rows;
            while !rest.is_empty() {
                let room = usize::try_from(count.saturating_sub(state.rows)).unwrap_or(usize::MAX).max(1);
                let (chunk, tail) = rest.split_at(room.min(rest.len()));
                for (k, &r) in chunk.iter().enumerate() {
                    arrival[r as usize] = i64::try_from(state.rows).unwrap_or(i64::MAX).saturating_add(k as i64);
                }
                let bound = self.bound()?;
                for ((agg, acc), reader) in bound.aggs.iter().zip(state.accs.iter_mut()).zip(&readers.aggs) {
                    agg.add_rows(acc, reader.as_ref(), chunk, &arrival).map_err(|e| self.context(e))?;
                }
                state.rows += chunk.len() as u64;
                if state.rows >= count {
                    let row = self.result_row(&state, (state.first_ms, now.max(state.first_ms)), false)?;
                    self.out.push(row);
                    state = self.bound()?.new_state(state.key.clone(), now);
                }
                rest = tail;
            }
            let timer = Self::timer(i64::MAX, key, COUNT_WINDOW);
            let store = ctx.keyed_state()?;
            if state.rows > 0 {
                handle.put(store, key, &COUNT_WINDOW, &state)?;
                self.fires.insert(timer);
            } else {
                handle.remove(store, key, &COUNT_WINDOW)?;
                self.fires.remove(&timer);
            }
        }
        Ok(())
    }

    fn request_processing_timer(&self, ctx: &mut OperatorContext) {
        if matches!(
            self.spec.kind,
            WindowKind::TumblingProcessingTime { .. } | WindowKind::SlidingProcessingTime { .. }
        ) && let Some(((_, end), _)) = self.table.first_pane()
        {
            ctx.request_timer(self.fire_time(end));
        }
    }
}

#[async_trait]
impl Transform for WindowTask {
    async fn restore(&mut self, state: RestoredState) -> Result<()> {
        let decode = |bytes: &[u8]| -> Result<Snapshot> {
            postcard::from_bytes(bytes).map_err(|e| Error::State {
                operator: self.operator.clone(),
                message: format!("cannot read the window operator's checkpointed state: {e}"),
            })
        };
        let snapshots: Vec<Snapshot> = match state.own() {
            Some(own) => vec![decode(own)?],
            // Rescaled: every old subtask's snapshot. The smallest watermark is the one
            // that is true for all the key groups this subtask may now own.
            None => state.snapshots.iter().map(|(_, s)| decode(s)).collect::<Result<_>>()?,
        };
        if let Some(w) = snapshots.iter().map(|s| s.watermark).min() {
            self.watermark = w;
        }
        // Kept until `open`, where the key columns are known.
        self.restored_types = snapshots.into_iter().find(|s| s.key_types.is_some());
        Ok(())
    }

    async fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let Some(selector) = ctx.key_selector().cloned() else {
            return Err(Error::config(
                "window",
                format!("window `{}` needs its input keyed (use key_by(...) before window)", self.operator),
            ));
        };
        if let Some(s) = self.restored_types.take()
            && let (Some(key_types), Some(agg_types)) = (s.key_types, s.agg_types)
        {
            // The accumulators in state are positional: the same keys and aggregations are
            // needed to read them.
            if key_types.len() != selector.columns().len() || agg_types.len() != self.spec.aggregates.len() {
                return Err(Error::State {
                    operator: self.operator.clone(),
                    message: format!(
                        "the restored window state has {} key column(s) and {} aggregation(s), this job has {} and \
                         {}; restore it with the same key_by columns and aggregations, or under a new operator id",
                        key_types.len(),
                        agg_types.len(),
                        selector.columns().len(),
                        self.spec.aggregates.len()
                    ),
                });
            }
            self.bound = Some(Bound::new(selector.columns().to_vec(), key_types, &self.spec, agg_types)?);
        }
        let store = ctx.keyed_state()?;
        let handle: MapState<WindowId, WindowState> = store.map_state("window.windows", None)?;
        let aligned = self.is_aligned();
        for (kg, key, w, state) in handle.scan_all(store)? {
            let key_ref = KeyRef { key_group: kg, bytes: &key };
            if aligned {
                self.table.insert_restored(hash_key(&key), key_ref, w, state);
            } else if self.spec.kind.is_event_time() && state.fired {
                self.cleanups.insert(Self::timer(self.cleanup_time(w.1), key_ref, w));
            } else {
                self.fires.insert(Self::timer(self.fire_time(w.1), key_ref, w));
            }
        }
        self.windows = Some(handle);
        self.request_processing_timer(ctx);
        Ok(())
    }

    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.bound.is_none() {
            let key_columns = ctx.key_selector().map(|k| k.columns().to_vec()).unwrap_or_default();
            self.bound = Some(Bound::from_batch(&batch, key_columns, &self.spec, &self.operator)?);
        }
        let now = ctx.clock().now_ms();
        let late = match self.spec.kind {
            WindowKind::TumblingCount { count } => {
                let keys = ctx.keys(&batch)?;
                self.process_count(&batch, &keys, count, ctx)?;
                None
            }
            WindowKind::TumblingProcessingTime { .. } | WindowKind::SlidingProcessingTime { .. } => {
                // Windows the clock has passed fire before new rows are added.
                self.fire_due(now, ctx)?;
                let times = vec![now; batch.num_rows()];
                let valid = vec![true; batch.num_rows()];
                self.process_aligned(&batch, &times, &valid, ctx)?;
                self.request_processing_timer(ctx);
                None
            }
            kind => {
                let column = self.spec.time_column.clone().unwrap_or_default();
                let times_array = event_times(&batch, &column, &self.operator)?;
                if times_array.null_count() > 0 {
                    self.dead_letter_null_times(&batch, &times_array, ctx);
                }
                let valid: Vec<bool> = (0..batch.num_rows()).map(|r| times_array.is_valid(r)).collect();
                let times: Vec<i64> = times_array.values().to_vec();
                let late = match kind {
                    WindowKind::SessionEventTime { gap } => {
                        let keys = ctx.keys(&batch)?;
                        self.process_sessions(&batch, &keys, &times, &valid, gap, ctx)?
                    }
                    _ => self.process_aligned(&batch, &times, &valid, ctx)?,
                };
                Some(late)
            }
        };
        self.emit_out(ctx)?;
        if let Some(late) = late
            && late.iter().any(|l| *l)
        {
            let mask = BooleanArray::from(late);
            let rows = arrow::compute::filter_record_batch(&batch, &mask)
                .map_err(|e| Error::arrow(format!("window `{}`: selecting late rows", self.operator), e))?;
            ctx.emit_late(rows);
        }
        Ok(())
    }

    async fn on_watermark(&mut self, watermark: Watermark, ctx: &mut OperatorContext) -> Result<()> {
        if !self.spec.kind.is_event_time() || watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.fire_due(watermark, ctx)?;
        self.emit_out(ctx)
    }

    async fn on_timer(&mut self, now_ms: i64, ctx: &mut OperatorContext) -> Result<()> {
        self.fire_due(now_ms, ctx)?;
        self.emit_out(ctx)?;
        self.request_processing_timer(ctx);
        Ok(())
    }

    async fn on_end_of_input(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        // Event-time windows fired on the maximum watermark already; this is for count
        // and processing-time windows, which do not follow watermarks.
        self.fire_due(i64::MAX, ctx)?;
        self.emit_out(ctx)
    }

    fn snapshot(&mut self, _checkpoint_id: CheckpointId, ctx: &mut OperatorContext) -> Result<Option<Vec<u8>>> {
        // Before the runtime takes the keyed-state changelog for this checkpoint.
        self.write_back(ctx)?;
        let (key_types, agg_types) = match &self.bound {
            Some(b) => (Some(b.key_types.clone()), Some(b.aggs.iter().map(|a| a.input.clone()).collect())),
            None => (None, None),
        };
        let snapshot = Snapshot { watermark: self.watermark, key_types, agg_types };
        postcard::to_allocvec(&snapshot).map(Some).map_err(|e| Error::State {
            operator: self.operator.clone(),
            message: format!("cannot write the window operator's state: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::clock::ManualClock;
    use crate::key::{KeyGroupRange, KeySelector};
    use crate::state::KeyedStateStore;
    use crate::window::Agg;

    fn info() -> TaskInfo {
        TaskInfo {
            job_name: "j".into(),
            job_id: "0".repeat(32).into(),
            run_id: "1".repeat(32).into(),
            operator_id: "win".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
        }
    }

    fn context(clock: &ManualClock, store: Option<KeyedStateStore>) -> OperatorContext {
        let clock: crate::clock::SharedClock = Arc::new(clock.clone());
        let store = store.unwrap_or_else(|| {
            KeyedStateStore::new("win", None, KeyGroupRange { start: 0, end: 128 }, clock.clone(), true)
        });
        OperatorContext::new(Arc::new(info()), clock, Some(store), Some(KeySelector::new(["k"])))
    }

    fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// `(key, start, end, count, sum, is_update)` of every result emitted so far.
    fn results(ctx: &mut OperatorContext) -> Vec<(String, i64, i64, i64, i64, bool)> {
        let (batches, _) = ctx.take_output();
        let mut out = Vec::new();
        for b in batches {
            let k = b.column(0).as_string::<i32>();
            let s = b.column(1).as_primitive::<TimestampMillisecondType>();
            let e = b.column(2).as_primitive::<TimestampMillisecondType>();
            let c = b.column(3).as_primitive::<Int64Type>();
            let v = b.column(4).as_primitive::<Int64Type>();
            let u = b.column(5).as_boolean();
            for r in 0..b.num_rows() {
                out.push((k.value(r).to_string(), s.value(r), e.value(r), c.value(r), v.value(r), u.value(r)));
            }
        }
        out
    }

    async fn task(spec: Windows, ctx: &mut OperatorContext) -> WindowTask {
        let spec = spec.aggregate([Agg::count(), Agg::sum("v")]);
        spec.validate().unwrap();
        let mut t = WindowTask::new(Arc::new(spec), "win");
        t.open(ctx).await.unwrap();
        t
    }

    fn row(k: &str, s: i64, e: i64, c: i64, v: i64, u: bool) -> (String, i64, i64, i64, i64, bool) {
        (k.to_string(), s, e, c, v, u)
    }

    #[tokio::test]
    async fn tumbling_fires_on_watermark_updates_within_lateness_and_sides_out_later_rows() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let spec =
            Windows::tumbling_event_time("ts", Duration::from_millis(10)).allowed_lateness(Duration::from_millis(5));
        let mut t = task(spec, &mut ctx).await;
        t.process_batch(batch(&[("a", 1, 1), ("b", 3, 10), ("a", 9, 2), ("a", 12, 4)]), &mut ctx).await.unwrap();
        assert!(results(&mut ctx).is_empty());
        t.on_watermark(8, &mut ctx).await.unwrap();
        assert!(results(&mut ctx).is_empty(), "[0, 10) fires at 9");
        t.on_watermark(9, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 0, 10, 2, 3, false), row("b", 0, 10, 1, 10, false)]);
        // Within the lateness (9 + 5 > 12): an update.
        t.on_watermark(12, &mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 5, 100)]), &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 0, 10, 3, 103, true)]);
        assert!(ctx.late.is_empty());
        // Past it (9 + 5 <= 14): late, in the input's schema.
        t.on_watermark(14, &mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 6, 1), ("a", 15, 1)]), &mut ctx).await.unwrap();
        let late = std::mem::take(&mut ctx.late);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].num_rows(), 1);
        assert_eq!(late[0].schema(), batch(&[]).schema());
        // End of input fires the rest; the dropped window's state is gone.
        t.on_watermark(i64::MAX, &mut ctx).await.unwrap();
        t.on_end_of_input(&mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 10, 20, 2, 5, false)]);
        assert!(
            t.fires.is_empty() && t.cleanups.is_empty() && t.table.is_empty(),
            "the index is empty once all windows are gone"
        );
    }

    #[tokio::test]
    async fn results_are_the_same_when_the_cache_overflows_into_keyed_state() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let spec =
            Windows::tumbling_event_time("ts", Duration::from_millis(10)).allowed_lateness(Duration::from_millis(10));
        let mut t = task(spec, &mut ctx).await;
        t.cache_limit = 2;
        t.process_batch(batch(&[("a", 1, 1), ("b", 2, 1), ("c", 3, 1), ("d", 11, 1)]), &mut ctx).await.unwrap();
        assert!(t.table.resident() <= 2);
        t.process_batch(batch(&[("a", 4, 1), ("c", 5, 1), ("e", 6, 1)]), &mut ctx).await.unwrap();
        t.on_watermark(9, &mut ctx).await.unwrap();
        let mut fired = results(&mut ctx);
        fired.sort();
        assert_eq!(
            fired,
            vec![
                row("a", 0, 10, 2, 2, false),
                row("b", 0, 10, 1, 1, false),
                row("c", 0, 10, 2, 2, false),
                row("e", 0, 10, 1, 1, false)
            ]
        );
        t.process_batch(batch(&[("b", 7, 5)]), &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("b", 0, 10, 2, 6, true)]);
        t.on_watermark(i64::MAX, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("d", 10, 20, 1, 1, false)]);
        assert!(t.table.is_empty() && t.fires.is_empty() && t.cleanups.is_empty());
        // Nothing is left in keyed state either.
        let handle = t.state_handle().unwrap();
        assert!(handle.scan_all(ctx.keyed_state().unwrap()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn sliding_windows_count_each_row_in_every_window() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let spec = Windows::sliding_event_time("ts", Duration::from_millis(10), Duration::from_millis(5));
        let mut t = task(spec, &mut ctx).await;
        t.process_batch(batch(&[("a", 7, 1), ("a", 12, 2)]), &mut ctx).await.unwrap();
        t.on_watermark(i64::MAX, &mut ctx).await.unwrap();
        assert_eq!(
            results(&mut ctx),
            vec![row("a", 0, 10, 1, 1, false), row("a", 5, 15, 2, 3, false), row("a", 10, 20, 1, 2, false)]
        );
    }

    #[tokio::test]
    async fn sessions_merge_across_batches_and_fire_after_the_gap() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let mut t = task(Windows::session_event_time("ts", Duration::from_millis(10)), &mut ctx).await;
        t.process_batch(batch(&[("a", 0, 1), ("a", 30, 1), ("b", 2, 5)]), &mut ctx).await.unwrap();
        // [15, 25) touches neither [0, 10) nor [30, 40); 22 joins it and reaches 32, so
        // it merges with [30, 40).
        t.process_batch(batch(&[("a", 15, 1), ("a", 22, 1)]), &mut ctx).await.unwrap();
        t.on_watermark(11, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 0, 10, 1, 1, false), row("b", 2, 12, 1, 5, false)]);
        t.on_watermark(i64::MAX, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 15, 40, 3, 3, false)]);
    }

    #[tokio::test]
    async fn a_row_joining_a_live_session_is_not_late() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let mut t = task(Windows::session_event_time("ts", Duration::from_millis(10)), &mut ctx).await;
        t.process_batch(batch(&[("a", 0, 1), ("a", 8, 1), ("a", 16, 1)]), &mut ctx).await.unwrap();
        // [0, 26) fires at 25. At 20, a row at 5 has its own [5, 15) past, but it is
        // inside the live session.
        t.on_watermark(20, &mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 5, 1), ("b", 5, 1)]), &mut ctx).await.unwrap();
        let late = std::mem::take(&mut ctx.late);
        assert_eq!(late.iter().map(RecordBatch::num_rows).sum::<usize>(), 1, "only b's row is late");
        t.on_watermark(i64::MAX, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 0, 26, 4, 4, false)]);
    }

    #[tokio::test]
    async fn count_windows_fire_on_the_count_and_the_rest_at_end_of_input() {
        let clock = ManualClock::new(1_000);
        let mut ctx = context(&clock, None);
        let mut t = task(Windows::tumbling_count(2), &mut ctx).await;
        t.process_batch(batch(&[("a", 0, 1), ("a", 0, 2), ("a", 0, 3), ("b", 0, 4)]), &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 1_000, 1_000, 2, 3, false)]);
        clock.advance_ms(5);
        t.process_batch(batch(&[("a", 0, 4)]), &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 1_000, 1_005, 2, 7, false)]);
        t.on_end_of_input(&mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("b", 1_000, 1_005, 1, 4, false)]);
    }

    #[tokio::test]
    async fn first_and_last_of_count_windows_follow_arrival_across_batches() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let spec = Windows::tumbling_count(4).aggregate([Agg::first("v"), Agg::last("v")]);
        let mut t = WindowTask::new(Arc::new(spec), "win");
        t.open(&mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 0, 1), ("a", 0, 2), ("a", 0, 3)]), &mut ctx).await.unwrap();
        t.process_batch(batch(&[("a", 0, 4), ("a", 0, 5)]), &mut ctx).await.unwrap();
        let (out, _) = ctx.take_output();
        let first = out[0].column_by_name("first_v").unwrap().as_primitive::<Int64Type>().value(0);
        let last = out[0].column_by_name("last_v").unwrap().as_primitive::<Int64Type>().value(0);
        assert_eq!((first, last), (1, 4));
    }

    #[tokio::test]
    async fn processing_time_windows_fire_on_the_clock() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let mut t = task(Windows::tumbling_processing_time(Duration::from_millis(100)), &mut ctx).await;
        clock.set_ms(50);
        t.process_batch(batch(&[("a", 0, 1), ("a", 0, 2)]), &mut ctx).await.unwrap();
        assert_eq!(ctx.timer.take(), Some(100));
        clock.set_ms(99);
        t.process_batch(batch(&[("a", 0, 3)]), &mut ctx).await.unwrap();
        assert!(results(&mut ctx).is_empty());
        clock.set_ms(100);
        t.on_timer(100, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 0, 100, 3, 6, false)]);
        t.process_batch(batch(&[("a", 0, 1)]), &mut ctx).await.unwrap();
        t.on_end_of_input(&mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 100, 200, 1, 1, false)]);
    }

    #[tokio::test]
    async fn restore_rebuilds_the_timers_from_keyed_state() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let spec =
            Windows::tumbling_event_time("ts", Duration::from_millis(10)).allowed_lateness(Duration::from_millis(10));
        let mut t = task(spec.clone(), &mut ctx).await;
        t.process_batch(batch(&[("a", 1, 1), ("a", 11, 2), ("b", 12, 3)]), &mut ctx).await.unwrap();
        t.on_watermark(10, &mut ctx).await.unwrap();
        assert_eq!(results(&mut ctx), vec![row("a", 0, 10, 1, 1, false)]);
        let snap = t.snapshot(1, &mut ctx).unwrap().unwrap();

        // A new instance over the same store, as after a restore.
        let store = ctx.keyed.take();
        let mut ctx2 = context(&clock, store);
        let mut t2 = WindowTask::new(Arc::new(spec.aggregate([Agg::count(), Agg::sum("v")])), "win");
        t2.restore(RestoredState::new(1, 1, vec![(0, snap)], 0, 1)).await.unwrap();
        t2.open(&mut ctx2).await.unwrap();
        // The restored watermark (10) judges lateness: [0, 10) is fired but kept.
        t2.process_batch(batch(&[("a", 2, 5)]), &mut ctx2).await.unwrap();
        assert_eq!(results(&mut ctx2), vec![row("a", 0, 10, 2, 6, true)]);
        t2.on_watermark(i64::MAX, &mut ctx2).await.unwrap();
        assert_eq!(results(&mut ctx2), vec![row("a", 10, 20, 1, 2, false), row("b", 10, 20, 1, 3, false)]);
    }

    #[tokio::test]
    async fn null_times_are_dead_letters_and_bad_columns_are_named() {
        let clock = ManualClock::new(0);
        let mut ctx = context(&clock, None);
        let mut t = task(Windows::tumbling_event_time("ts", Duration::from_millis(10)), &mut ctx).await;
        let schema = batch(&[]).schema();
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "a"])),
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        t.process_batch(b, &mut ctx).await.unwrap();
        let (_, dead) = ctx.take_output();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].reason.contains("`ts`") && dead[0].record.contains("v=2"), "{:?}", dead[0]);

        let mut ctx = context(&clock, None);
        let mut t = WindowTransform::new(
            Windows::tumbling_event_time("ts", Duration::from_millis(10)).aggregate([Agg::sum("k")]),
        )
        .create(&info())
        .unwrap();
        t.open(&mut ctx).await.unwrap();
        let err = t.process_batch(batch(&[("a", 1, 1)]), &mut ctx).await.unwrap_err().to_string();
        assert!(err.contains("`k`") && err.contains("numeric"), "{err}");
    }
}
