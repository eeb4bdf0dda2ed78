//! Tumbling processing-time windows: rows per key per 500 ms of the job clock.
//!
//! A generator emits 3 000 rows over three keys at 2 000 rows/s, so the job runs for
//! about 1.5 s and each key's rows fall into three or four windows by the time they are
//! processed; the counts of a key add up to 1 000. At end of input the open windows fire.
//!
//! ```sh
//! cargo run -p operators-examples --example window_processing_time
//! ```

use std::time::Duration;

use operators_core::builtins::{CommittedOutput, GeneratorSource, TwoPhaseMemorySink};
use operators_core::window::{Agg, Windows};
use operators_core::{JobConfig, Pipeline};

mod support;
use support::print;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let output = CommittedOutput::default();
    let pipeline = Pipeline::new();
    pipeline
        .source(
            "numbers",
            GeneratorSource::bounded(3_000).with_keys(3).with_batch_size(100).with_splits(1).with_rate_limit(2_000),
        )
        .key_by(["key"])
        .window(
            "per-500ms",
            Windows::tumbling_processing_time(Duration::from_millis(500)).aggregate([Agg::count(), Agg::sum("value")]),
        )
        .sink("out", TwoPhaseMemorySink::new(output.clone()));
    pipeline.run(JobConfig::new("processing-time-windows")).await?;

    print("rows per key per 500 ms of processing time", &output.batches())?;
    Ok(())
}
