//! CSV → the toolkit's "merge" (nest fields into `feas`) → stdout.
//!
//! Delivery: at least once. Stdout cannot take back what it printed: after a crash and
//! restore, records since the last checkpoint are printed again.
//!
//! ```sh
//! cargo run -p operators-examples --example nest_stdout
//! ```
//! prints `{"id":1,"feas":{"city":"成都","name":"judy",...}}` per row.

use operators_core::builtins::NestTransform;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::stdout::StdoutSink;
use operators_sources::file::text::TextFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source =
        DirectorySource::new(Location::parse("source.path", "examples/data/csv")?, TextFormat::csv().with_header(true))
            .with_watch(WatchMode::ProcessOnce);
    let pipeline = Pipeline::new();
    pipeline
        .source("csv", source)
        .transform("merge", NestTransform::new().with_nested_field("feas").with_exclude(["id"]))
        .sink("stdout", StdoutSink);
    pipeline.run(JobConfig::new("nest-stdout")).await?;
    Ok(())
}
