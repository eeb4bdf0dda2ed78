//! Tumbling event-time windows: clicks per user per second, with the sum of their amounts.
//!
//! Events arrive slightly out of order (up to 200 ms); a bounded-out-of-orderness
//! watermark of 200 ms keeps every row on time, so each `[start, start + 1 s)` window of
//! each user fires once, when the watermark passes its end, with every row in it.
//!
//! ```sh
//! cargo run -p operators-examples --example window_tumbling_event_time
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
    // Two seconds of clicks; the 1_850 and 950 rows arrive after later ones.
    let batches = vec![
        clicks(&schema, &[("ann", 100, 5), ("bob", 200, 7), ("ann", 700, 1)])?,
        clicks(&schema, &[("ann", 1_050, 2), ("bob", 950, 3), ("bob", 1_300, 4)])?,
        clicks(&schema, &[("ann", 2_000, 6), ("ann", 1_850, 8), ("bob", 2_400, 9)])?,
    ];

    let output = CommittedOutput::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("clicks", move |_: &TaskInfo| Ok(Batches(batches.clone().into_iter())))
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(200)))
        .key_by(["user"])
        .window(
            "per-second",
            Windows::tumbling_event_time("ts", Duration::from_secs(1)).aggregate([Agg::count(), Agg::sum("amount")]),
        )
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    pipeline.run(JobConfig::new("tumbling-event-time")).await?;

    // ann [0 s, 1 s): 2 clicks, 6; [1 s, 2 s): 2, 10; [2 s, 3 s): 1, 6.
    // bob [0 s, 1 s): 2 clicks, 10; [1 s, 2 s): 1, 4; [2 s, 3 s): 1, 9.
    print("clicks per user per second", &output.batches())?;
    Ok(())
}
