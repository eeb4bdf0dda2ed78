//! Sliding event-time windows: clicks per user over the last second, every 500 ms.
//!
//! A window of 1 s starting every 500 ms holds each row in two windows: the row at
//! 700 ms counts in `[0 s, 1 s)` and in `[0.5 s, 1.5 s)`.
//!
//! ```sh
//! cargo run -p operators-examples --example window_sliding_event_time
//! ```

use std::time::Duration;

use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::operator::TaskInfo;
use operators_core::window::{Agg, WatermarkGenerator, Windows};
use operators_core::{JobConfig, Pipeline};

mod support;
use support::{Batches, clicks, clicks_schema, print};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = clicks_schema();
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
