//! Event time and windows: watermarks, keyed tumbling/sliding/session/count windows with
//! aggregations, allowed lateness and a side output for records later than that.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
//! use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
//! use arrow::record_batch::RecordBatch;
//! use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
//! use operators_core::operator::{Source, SourceContext, SourcePoll, TaskInfo};
//! use operators_core::window::{Agg, WatermarkGenerator, Windows};
//! use operators_core::{JobConfig, Pipeline};
//!
//! /// Three clicks, then the end.
//! struct Clicks(Option<RecordBatch>);
//!
//! #[async_trait::async_trait]
//! impl Source for Clicks {
//!     async fn poll_next(&mut self, _ctx: &mut SourceContext) -> operators_core::Result<SourcePoll> {
//!         Ok(self.0.take().map_or(SourcePoll::Finished, SourcePoll::Batch))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> operators_core::Result<()> {
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("user", DataType::Utf8, false),
//!     Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
//!     Field::new("amount", DataType::Int64, false),
//! ]));
//! let clicks = RecordBatch::try_new(schema, vec![
//!     Arc::new(StringArray::from(vec!["ann", "bob", "ann"])),
//!     Arc::new(TimestampMillisecondArray::from(vec![100, 200, 1_100])),
//!     Arc::new(Int64Array::from(vec![5, 7, 1])),
//! ])?;
//!
//! let output = CommittedOutput::default();
//! let pipeline = Pipeline::new();
//! let windows = pipeline
//!     .source("clicks", move |_: &TaskInfo| Ok(Clicks(Some(clicks.clone()))))
//!     .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(50)))
//!     .key_by(["user"])
//!     .window(
//!         "per-second",
//!         Windows::tumbling_event_time("ts", Duration::from_secs(1))
//!             .aggregate([Agg::count(), Agg::sum("amount")]),
//!     );
//! windows.sink("out", TwoPhaseMemorySink::new(output.clone()));
//! pipeline.run(JobConfig::new("clicks per second").with_parallelism(1)).await?;
//!
//! // ann [0, 1000): 1 click, 5; bob [0, 1000): 1 click, 7; ann [1000, 2000): 1 click, 1.
//! assert_eq!(output.num_rows(), 3);
//! let schema = output.batches()[0].schema();
//! let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
//! assert_eq!(names, ["user", "window_start", "window_end", "count", "sum_amount", "is_update"]);
//! # Ok(()) }
//! ```
//!
//! ## Event time and watermarks
//!
//! A row's event time comes from a column named in the configuration: an Arrow
//! `Timestamp` of any unit or an `Int64` of milliseconds. A [`WatermarkGenerator`] placed
//! after a source emits, as batches pass, the watermark `max event time seen − delay − 1`
//! (bounded out-of-orderness): the claim that no row older than it will follow. Operators
//! with several inputs (and every exchange) take the minimum over their inputs; a
//! generator subtask that sees no row for its idle timeout declares itself idle
//! ([`Message::Idle`](crate::message::Message::Idle)), and downstream leaves it out of
//! the minimum until it sends again, so one quiet partition does not stall event time.
//! End of input is the maximum watermark: every open window fires.
//!
//! ## Windows
//!
//! [`Windows`] says how rows of a key are grouped ([`WindowKind`]) and what is computed
//! over each group ([`Agg`], [`Aggregate`]). A window `[start, end)` fires when the
//! watermark reaches `end − 1` (event time), when the job clock reaches `end`
//! (processing time) or when it holds `n` rows (count windows). Its result is one row:
//! the key columns, `window_start`, `window_end` (`Timestamp(Millisecond)`), one column
//! per aggregation, and `is_update`.
//!
//! ## Lateness
//!
//! With [`Windows::allowed_lateness`] an event-time window is kept after it fired until
//! the watermark passes `end − 1 + lateness`. A row for it in that time updates it and
//! the window's result is emitted again with `is_update = true` (once per window per
//! input batch). A row whose windows are all past their lateness is *late*: it goes, in
//! the input's schema, to the operator's late-records output
//! ([`Stream::late_records`](crate::pipeline::Stream::late_records)), which connects to
//! any sink or transform like dead letters do; unconnected, late rows are counted in the
//! `late_records` metric and dropped. Rows without an event time (null) go to the
//! dead-letter output.
//!
//! ## Timers
//!
//! For logic windows do not cover, [`KeyedProcessFunction`] (via
//! [`Stream::process`](crate::pipeline::Stream::process)) runs user code per batch with
//! keyed state and per-key event-time and processing-time timers, kept in keyed state
//! like the windows' accumulators.
//!
//! ## State
//!
//! One accumulator per key and window lives in keyed state (memory, or disk past a budget), so it is in
//! every checkpoint, restored after a failure and redistributed by key group when the
//! parallelism changes; state is bounded by keys × open windows, never by rows. Windows
//! that fired and passed their lateness are removed. Tumbling and sliding window states
//! are also cached decoded between batches (up to 65 536 windows per subtask) and written
//! to keyed state before every checkpoint, so a window's rows cost no state round trip
//! per batch. Which windows are due when is an in-memory index rebuilt from keyed state
//! when a subtask starts, so it always agrees with the state it points to.

mod aggregate;
mod process;
mod runtime;
mod state;
mod table;
mod time;
mod watermark;

use std::time::Duration;

pub use aggregate::{Agg, Aggregate};
pub use process::{KeyedProcessFunction, KeyedProcessTransform, ProcessContext, TimeDomain};
pub use runtime::WindowTransform;
pub use watermark::WatermarkGenerator;

use crate::error::{Error, Result};

/// Name of the output column holding the window's start.
pub const WINDOW_START: &str = "window_start";
/// Name of the output column holding the window's end (exclusive).
pub const WINDOW_END: &str = "window_end";
/// Name of the output column that is true for a result re-emitted after a late update.
pub const IS_UPDATE: &str = "is_update";

/// How the rows of a key are grouped into windows. Sizes are in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back event-time windows of `size`, aligned to the epoch.
    TumblingEventTime {
        /// Window length.
        size: i64,
    },
    /// Event-time windows of `size` starting every `slide`; a row is in `size / slide` of them.
    SlidingEventTime {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// Event-time sessions: a key's rows closer than `gap` to each other form one window,
    /// `[first row, last row + gap)`.
    SessionEventTime {
        /// Inactivity that closes a session.
        gap: i64,
    },
    /// Tumbling windows by the job clock at the time a row is processed.
    TumblingProcessingTime {
        /// Window length.
        size: i64,
    },
    /// Sliding windows by the job clock at the time a row is processed.
    SlidingProcessingTime {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// Every `count` rows of a key form a window. `window_start` is the job clock when its
    /// first row was processed and `window_end` when it fired; at end of input an
    /// incomplete window fires with the rows it has, so no row goes uncounted.
    TumblingCount {
        /// Rows per window.
        count: u64,
    },
}

impl WindowKind {
    /// Whether windows are driven by watermarks.
    pub fn is_event_time(&self) -> bool {
        matches!(
            self,
            WindowKind::TumblingEventTime { .. }
                | WindowKind::SlidingEventTime { .. }
                | WindowKind::SessionEventTime { .. }
        )
    }
}

/// A window specification: kind, event-time column, lateness and aggregations.
///
/// ```
/// use std::time::Duration;
/// use operators_core::window::{Agg, Windows};
///
/// let spec = Windows::sliding_event_time("ts", Duration::from_secs(60), Duration::from_secs(10))
///     .allowed_lateness(Duration::from_secs(5))
///     .aggregate([Agg::count(), Agg::avg("latency_ms").alias("mean_latency"), Agg::last("status")]);
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Windows {
    pub(crate) kind: WindowKind,
    pub(crate) time_column: Option<String>,
    pub(crate) allowed_lateness: i64,
    pub(crate) aggregates: Vec<Agg>,
    /// A duration that did not fit in i64 milliseconds, reported by `validate`.
    pub(crate) bad_duration: Option<&'static str>,
}

fn ms(d: Duration, what: &'static str, bad: &mut Option<&'static str>) -> i64 {
    match i64::try_from(d.as_millis()) {
        Ok(v) => v,
        Err(_) => {
            *bad = Some(what);
            0
        }
    }
}

impl Windows {
    fn new(kind: impl FnOnce(&mut Option<&'static str>) -> WindowKind, time_column: Option<String>) -> Self {
        let mut bad = None;
        let kind = kind(&mut bad);
        Self { kind, time_column, allowed_lateness: 0, aggregates: Vec::new(), bad_duration: bad }
    }

    /// Tumbling windows of `size` by the event time in `time_column`.
    pub fn tumbling_event_time(time_column: impl Into<String>, size: Duration) -> Self {
        Self::new(|b| WindowKind::TumblingEventTime { size: ms(size, "size", b) }, Some(time_column.into()))
    }

    /// Sliding windows of `size` every `slide` by the event time in `time_column`.
    pub fn sliding_event_time(time_column: impl Into<String>, size: Duration, slide: Duration) -> Self {
        Self::new(
            |b| WindowKind::SlidingEventTime { size: ms(size, "size", b), slide: ms(slide, "slide", b) },
            Some(time_column.into()),
        )
    }

    /// Session windows closed by `gap` of inactivity, by the event time in `time_column`.
    pub fn session_event_time(time_column: impl Into<String>, gap: Duration) -> Self {
        Self::new(|b| WindowKind::SessionEventTime { gap: ms(gap, "gap", b) }, Some(time_column.into()))
    }

    /// Tumbling windows of `size` by the job clock.
    pub fn tumbling_processing_time(size: Duration) -> Self {
        Self::new(|b| WindowKind::TumblingProcessingTime { size: ms(size, "size", b) }, None)
    }

    /// Sliding windows of `size` every `slide` by the job clock.
    pub fn sliding_processing_time(size: Duration, slide: Duration) -> Self {
        Self::new(
            |b| WindowKind::SlidingProcessingTime { size: ms(size, "size", b), slide: ms(slide, "slide", b) },
            None,
        )
    }

    /// Windows of `count` rows per key.
    pub fn tumbling_count(count: u64) -> Self {
        Self::new(|_| WindowKind::TumblingCount { count }, None)
    }

    /// Keeps event-time windows for `lateness` after they fired, updating them with rows
    /// that arrive in that time (default zero: a window is dropped when it fires).
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        let mut bad = self.bad_duration;
        self.allowed_lateness = ms(lateness, "allowed lateness", &mut bad);
        self.bad_duration = bad;
        self
    }

    /// Adds aggregations; their results are the output columns, in this order.
    pub fn aggregate(mut self, aggregates: impl IntoIterator<Item = Agg>) -> Self {
        self.aggregates.extend(aggregates);
        self
    }

    /// The kind of window.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The event-time column, for event-time windows.
    pub fn time_column(&self) -> Option<&str> {
        self.time_column.as_deref()
    }

    /// Checks sizes and aggregation names; the column types are checked against the first
    /// batch. Called when the operator is created, so a bad specification fails the job
    /// before any record is read.
    pub fn validate(&self) -> Result<()> {
        if let Some(what) = self.bad_duration {
            return Err(Error::config(format!("window {what}"), "the duration does not fit in i64 milliseconds"));
        }
        let positive = |v: i64, what: &str| {
            if v > 0 {
                Ok(())
            } else {
                Err(Error::config(format!("window {what}"), format!("must be at least 1 ms, got {v} ms")))
            }
        };
        match self.kind {
            WindowKind::TumblingEventTime { size } | WindowKind::TumblingProcessingTime { size } => {
                positive(size, "size")?
            }
            WindowKind::SlidingEventTime { size, slide } | WindowKind::SlidingProcessingTime { size, slide } => {
                positive(size, "size")?;
                positive(slide, "slide")?;
                if slide > size {
                    return Err(Error::config(
                        "window slide",
                        format!(
                            "a slide of {slide} ms longer than the size {size} ms would leave rows in no window \
                             (and drop them); use a slide <= size"
                        ),
                    ));
                }
            }
            WindowKind::SessionEventTime { gap } => positive(gap, "gap")?,
            WindowKind::TumblingCount { count } => {
                if count == 0 {
                    return Err(Error::config("window count", "must be at least 1"));
                }
            }
        }
        if self.allowed_lateness < 0 {
            return Err(Error::config("allowed lateness", "must not be negative"));
        }
        if self.aggregates.is_empty() {
            return Err(Error::config(
                "window aggregates",
                "a window needs at least one aggregation (e.g. `.aggregate([Agg::count()])`)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.aggregates {
            if [WINDOW_START, WINDOW_END, IS_UPDATE].contains(&a.name()) {
                return Err(Error::config(
                    a.name(),
                    format!("aggregation name `{}` is reserved for a window column; use Agg::alias", a.name()),
                ));
            }
            if !names.insert(a.name()) {
                return Err(Error::config(
                    a.name(),
                    format!("two aggregations are named `{}`; rename one with Agg::alias", a.name()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        let err = |w: Windows| w.validate().unwrap_err().to_string();
        assert!(err(Windows::tumbling_event_time("ts", Duration::ZERO).aggregate([Agg::count()])).contains("size"));
        assert!(err(Windows::tumbling_count(5)).contains("at least one aggregation"));
        let e =
            err(Windows::sliding_event_time("ts", Duration::from_secs(1), Duration::from_secs(2))
                .aggregate([Agg::count()]));
        assert!(e.contains("slide"), "{e}");
        let e = err(Windows::tumbling_count(5).aggregate([Agg::sum("a"), Agg::max("a").alias("sum_a")]));
        assert!(e.contains("`sum_a`"), "{e}");
        let e = err(Windows::tumbling_count(5).aggregate([Agg::count().alias("window_end")]));
        assert!(e.contains("reserved"), "{e}");
        let e = err(Windows::session_event_time("ts", Duration::MAX).aggregate([Agg::count()]));
        assert!(e.contains("gap"), "{e}");
    }
}
