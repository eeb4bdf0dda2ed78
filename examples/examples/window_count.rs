//! Count windows: every 3 clicks of a user form a window; at end of input an incomplete
//! window fires with the rows it has, so no click goes uncounted. `window_start` and
//! `window_end` are the job clock when the window's first row came and when it fired.
//!
//! ```sh
//! cargo run -p operators-examples --example window_count
//! ```

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::operator::{Source, SourceContext, SourcePoll, TaskInfo};
use operators_core::window::{Agg, Windows};
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
    let ann: Vec<(&str, i64, i64)> = (1..=8).map(|i| ("ann", i * 100, i)).collect();
    let bob: Vec<(&str, i64, i64)> = (1..=4).map(|i| ("bob", i * 100, 10 * i)).collect();
    let batches = vec![clicks(&schema, &ann[..5])?, clicks(&schema, &bob)?, clicks(&schema, &ann[5..])?];

    let output = CommittedOutput::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("clicks", move |_: &TaskInfo| Ok(Batches(batches.clone().into_iter())))
        .key_by(["user"])
        .window(
            "every-3",
            Windows::tumbling_count(3).aggregate([
                Agg::count(),
                Agg::sum("amount"),
                Agg::first("amount"),
                Agg::last("amount"),
            ]),
        )
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    pipeline.run(JobConfig::new("count-windows")).await?;

    // ann: 3 clicks (1+2+3), 3 (4+5+6), then 2 (7+8) at end of input; bob: 3 (10+20+30), 1 (40).
    print("every 3 clicks per user", &output.batches())?;
    Ok(())
}
