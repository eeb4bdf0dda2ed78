//! # operators-sql
//!
//! SQL over record-batch streams, on DataFusion: the toolkit's `stream.sql` step.
//! A query is planned once against the declared input schema and then evaluated on every
//! batch — projections, filters, scalar and string functions, `CASE`, casts, and the
//! toolkit's `arraySplit` UDF.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, StringArray};
//! use arrow::record_batch::RecordBatch;
//! use operators_sql::{SqlTransformBuilder, display_value};
//!
//! let sql = SqlTransformBuilder::new(
//!     "select id, city, name, concat(x, '-', y) as location, arraySplit(tags, '|') as tags from t1",
//! )
//! .with_schema_string(r#"{"city":"String","name":"String","x":"String","y":"String","tags":"String","id":"BigInt"}"#)?
//! .build()?;
//!
//! let batch = RecordBatch::try_new(
//!     sql.input_schema(),
//!     vec![
//!         Arc::new(StringArray::from(vec!["beijing"])),
//!         Arc::new(StringArray::from(vec!["n1"])),
//!         Arc::new(StringArray::from(vec!["116"])),
//!         Arc::new(StringArray::from(vec!["39"])),
//!         Arc::new(StringArray::from(vec!["t1|t2"])),
//!         Arc::new(Int64Array::from(vec![1])),
//!     ],
//! )?;
//! let (out, bad) = sql.process(&batch)?;
//! assert!(bad.is_empty());
//! assert_eq!(display_value(out.column(3).as_ref(), 0), "116-39");
//! assert_eq!(display_value(out.column(4).as_ref(), 0), "[t1, t2]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Schema strings (`struct<id:BigInt,...>`, ordered JSON) and the toolkit's type table are
//! in [`operators_core::schema`], re-exported here as [`schema`]: sources that need a
//! schema but no SQL do not have to compile DataFusion.
//!
//! Queries that need state across batches — `JOIN`, `ORDER BY`, window functions,
//! `DISTINCT`, `LIMIT`, and `GROUP BY` without a window — are refused when the transform is
//! built, naming the clause.
//!
//! ## Windowed aggregation
//!
//! A query whose `GROUP BY` has `tumble(ts, size)` or `hop(ts, slide, size)` (Flink's
//! group-window functions; `hop` takes the **slide before the size**, as Flink's `HOP`)
//! runs on the event-time window operator of [`operators_core::window`].
//! [`SqlTransformBuilder::build_plan`] plans it as a [`WindowedSql`]: a per-batch
//! pre-projection (the `WHERE`, the keys and the aggregates' arguments, which may be
//! expressions), `key_by` the keys, the window, and a projection to the SELECT list.
//!
//! - SELECT may name the keys, `window_start`, `window_end` (or Flink's
//!   `tumble_start(…)`/`tumble_end(…)`/`hop_start(…)`/`hop_end(…)` with the same
//!   arguments), `is_update` (true for a result re-emitted after a late row within the
//!   allowed lateness) and the aggregates `count(*)`, `count(x)`, `sum`, `min`, `max`,
//!   `avg`, `first_value` and `last_value` (by event time, skipping nulls).
//! - Sizes are literal `INTERVAL`s (`INTERVAL '1' SECOND`, `INTERVAL '500' MILLISECOND`,
//!   `INTERVAL '1 minute'`); months and years are refused.
//! - The time argument is a Timestamp (or BigInt epoch-ms) column; watermarks on it come
//!   from [`WindowedSql::with_watermark`] (see [`parse_watermark`]) or from upstream.
//! - Refused, naming the construct: `HAVING`, expressions over aggregates or window
//!   columns, other aggregates, `DISTINCT`/`FILTER`/`OVER` in aggregates, `SELECT *`,
//!   `ORDER BY`, `LIMIT`, non-literal sizes, two windows.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
//! use arrow::record_batch::RecordBatch;
//! use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
//! use operators_core::operator::{Source, SourceContext, SourcePoll, TaskInfo};
//! use operators_core::{JobConfig, Pipeline};
//! use operators_sql::{SqlPlan, SqlStreamExt, SqlTransformBuilder, display_value, parse_watermark};
//!
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
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let SqlPlan::Windowed(windowed) = SqlTransformBuilder::new(
//!     "select user, window_start, count(*) as clicks, sum(amount) as total \
//!      from t1 where amount > 0 group by user, tumble(ts, interval '1' second)",
//! )
//! .with_schema_string(r#"{"user":"String","ts":"Timestamp","amount":"BigInt"}"#)?
//! .build_plan()?
//! else {
//!     unreachable!("a GROUP BY with tumble is windowed")
//! };
//! let plan = SqlPlan::from(windowed.with_watermark(parse_watermark("ts,50ms")?)?);
//!
//! let clicks = RecordBatch::try_new(plan.input_schema(), vec![
//!     Arc::new(StringArray::from(vec!["ann", "bob", "ann", "ann"])),
//!     Arc::new(TimestampMillisecondArray::from(vec![100, 200, 300, 1_100])),
//!     Arc::new(Int64Array::from(vec![5, 7, 1, 2])),
//! ])?;
//! let output = CommittedOutput::default();
//! let pipeline = Pipeline::new();
//! pipeline
//!     .source("clicks", move |_: &TaskInfo| Ok(Clicks(Some(clicks.clone()))))
//!     .sql("sql", &plan)
//!     .sink("out", TwoPhaseMemorySink::new(output.clone()));
//! pipeline.run(JobConfig::new("clicks per second").with_parallelism(1)).await?;
//!
//! let mut rows = Vec::new();
//! for b in output.batches() {
//!     for r in 0..b.num_rows() {
//!         let cells: Vec<String> = b.columns().iter().map(|c| display_value(c.as_ref(), r)).collect();
//!         rows.push(cells.join(" "));
//!     }
//! }
//! rows.sort();
//! assert_eq!(rows, [
//!     "ann 1970-01-01T00:00:00 2 6",
//!     "ann 1970-01-01T00:00:01 1 2",
//!     "bob 1970-01-01T00:00:00 1 7",
//! ]);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod transform;
pub mod udf;
pub mod window;

pub use error::{BoxError, SqlError};

/// The result of this crate's own functions (settings, parsing); operators themselves
/// return [`operators_core::Result`], into which [`SqlError`] converts.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
pub use operators_core::schema;
pub use transform::{SqlTransform, SqlTransformBuilder, display_value, nullable};
pub use window::{SqlOutput, SqlPlan, SqlStreamExt, WindowedSql, parse_watermark};
