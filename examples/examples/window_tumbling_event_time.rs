//! Tumbling event-time windows: clicks per user per second, with the sum of their amounts.
//!
//! Events arrive slightly out of order (up to 200 ms); a bounded-out-of-orderness
//! watermark of 200 ms keeps every row on time, so each `[start, start + 1 s)` window of
//! each user fires once, when the watermark passes its end, with every row in it.
//!
//! ```sh
//! cargo run -p operators-examples --example window_tumbling_event_time
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
