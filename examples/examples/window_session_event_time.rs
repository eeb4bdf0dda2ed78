//! Session event-time windows: a user's clicks less than 500 ms apart form one session,
//! `[first click, last click + 500 ms)`.
//!
//! ```sh
//! cargo run -p operators-examples --example window_session_event_time
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
        clicks(&schema, &[("ann", 100, 5), ("bob", 100, 7), ("ann", 300, 1)])?,
        clicks(&schema, &[("ann", 700, 2), ("bob", 900, 3)])?,
        clicks(&schema, &[("ann", 2_000, 4)])?,
    ];

    let output = CommittedOutput::default();
    let pipeline = Pipeline::new();
    pipeline
        .source("clicks", move |_: &TaskInfo| Ok(Batches(batches.clone().into_iter())))
        .assign_watermarks("watermarks", WatermarkGenerator::bounded_out_of_orderness("ts", Duration::ZERO))
        .key_by(["user"])
        .window(
            "sessions",
            Windows::session_event_time("ts", Duration::from_millis(500)).aggregate([Agg::count(), Agg::sum("amount")]),
        )
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    pipeline.run(JobConfig::new("session-event-time")).await?;

    // ann [0.1 s, 1.2 s): 3 clicks, 8; [2 s, 2.5 s): 1, 4.
    // bob [0.1 s, 0.6 s): 1, 7; [0.9 s, 1.4 s): 1, 3 (800 ms apart: two sessions).
    print("sessions per user (gap 500 ms)", &output.batches())?;
    Ok(())
}
