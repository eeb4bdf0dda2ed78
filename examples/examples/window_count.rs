//! Count windows: every 3 clicks of a user form a window; at end of input an incomplete
//! window fires with the rows it has, so no click goes uncounted. `window_start` and
//! `window_end` are the job clock when the window's first row came and when it fired.
//!
//! ```sh
//! cargo run -p operators-examples --example window_count
//! ```

use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::operator::TaskInfo;
use operators_core::window::{Agg, Windows};
use operators_core::{JobConfig, Pipeline};

mod support;
use support::{Batches, clicks, clicks_schema, print};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = clicks_schema();
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
