//! Allowed lateness and the late-records side output.
//!
//! One-second tumbling windows, a watermark with no out-of-orderness allowance, and an
//! allowed lateness of one second: a row that arrives after its window fired but within
//! the lateness updates the window, which is emitted again with `is_update = true`; a row
//! later than that goes, unchanged, to the late-records output, here its own sink.
//!
//! ```sh
//! cargo run -p operators-examples --example window_allowed_lateness
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::operator::{Source, SourceContext, SourcePoll, TaskInfo};
use operators_core::window::{Agg, WatermarkGenerator, Windows};
use operators_core::{JobConfig, Pipeline};

/// Emits its batches in order, then finishes.
struct Batches(std::vec::IntoIter<RecordBatch>);

#[async_trait]
impl Source for Batches {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> operators_core::Result<SourcePoll> {
        Ok(self.0.next().map_or(SourcePoll::Finished, SourcePoll::Batch))
    }
}

fn clicks(schema: &SchemaRef, rows: &[(&str, i64, i64)]) -> arrow::error::Result<RecordBatch> {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
}

/// Prints every row of `batches`, one line per row, `name=value` for each column.
fn print(title: &str, batches: &[RecordBatch]) -> Result<(), arrow::error::ArrowError> {
    println!("{title}:");
    let options = FormatOptions::default();
    for b in batches {
        let schema = b.schema();
        let formatters =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c, &options)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let cells: Vec<String> = schema
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, v)| format!("{}={}", f.name(), v.value(row)))
                .collect();
            println!("  {}", cells.join(" "));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let batches = vec![
        clicks(&schema, &[("ann", 100, 5), ("ann", 900, 1)])?,
        // Watermark 1_499: ann's [0 s, 1 s) fires with 2 clicks.
        clicks(&schema, &[("ann", 1_500, 2)])?,
        // Late, but within the lateness (the watermark has not passed 1_999): [0 s, 1 s) is
        // emitted again with 3 clicks and is_update = true.
        clicks(&schema, &[("ann", 800, 3)])?,
        // Watermark 2_599: [1 s, 2 s) fires; [0 s, 1 s) is past its lateness and dropped.
        clicks(&schema, &[("ann", 2_600, 4)])?,
        // Later than the lateness: to the late-records output.
        clicks(&schema, &[("ann", 300, 9)])?,
    ];

    let output = CommittedOutput::default();
    let late = CommittedOutput::default();
    let pipeline = Pipeline::new();
    let windows = pipeline
        .source("clicks", move |_: &TaskInfo| Ok(Batches(batches.clone().into_iter())))
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::ZERO))
        .key_by(["user"])
        .window(
            "per-second",
            Windows::tumbling_event_time("ts", Duration::from_secs(1))
                .allowed_lateness(Duration::from_secs(1))
                .aggregate([Agg::count(), Agg::sum("amount")]),
        );
    windows.late_records().sink("late", TwoPhaseMemorySink::new(late.clone()));
    windows.sink("out", TwoPhaseMemorySink::new(output.clone()));
    pipeline.run(JobConfig::new("allowed-lateness")).await?;

    // [0 s, 1 s): 2 clicks, 6, then the update 3 clicks, 9; [1 s, 2 s): 1, 2; [2 s, 3 s): 1, 4.
    print("window results", &output.batches())?;
    // ann at 300 ms, amount 9, in the input's schema.
    print("late records", &late.batches())?;
    Ok(())
}
