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
