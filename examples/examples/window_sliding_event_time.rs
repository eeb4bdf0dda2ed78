//! Sliding event-time windows: clicks per user over the last second, every 500 ms.
//!
//! A window of 1 s starting every 500 ms holds each row in two windows: the row at
//! 700 ms counts in `[0 s, 1 s)` and in `[0.5 s, 1.5 s)`.
//!
//! ```sh
//! cargo run -p operators-examples --example window_sliding_event_time
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
        clicks(&schema, &[("ann", 100, 5), ("ann", 700, 1), ("bob", 600, 7)])?,
        clicks(&schema, &[("ann", 1_200, 2)])?,
    ];

    let output = CommittedOutput::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("clicks", move |_: &TaskInfo| Ok(Batches(batches.clone().into_iter())))
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::ZERO))
        .key_by(["user"])
        .window(
            "last-second",
            Windows::sliding_event_time("ts", Duration::from_secs(1), Duration::from_millis(500))
                .aggregate([Agg::count(), Agg::sum("amount")]),
        )
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    pipeline.run(JobConfig::new("sliding-event-time")).await?;

    // ann [-0.5 s, 0.5 s): 1 click; [0 s, 1 s): 2; [0.5 s, 1.5 s): 2; [1 s, 2 s): 1.
    // bob [0 s, 1 s): 1; [0.5 s, 1.5 s): 1.
    print("clicks per user, 1-s windows every 500 ms", &output.batches())?;
    Ok(())
}
