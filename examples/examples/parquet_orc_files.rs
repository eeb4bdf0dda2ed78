//! Parquet and ORC directories → Parquet files.
//!
//! Delivery: exactly once (aligned checkpoints, rows-read position per file, part files
//! committed with their checkpoint). Every file of a directory must have the first
//! file's schema; a file that does not is an error naming both files.
//!
//! ```sh
//! cargo run -p operators-examples --example parquet_orc_files
//! ```

use std::time::Duration;

use operators_core::checkpoint::CheckpointConfig;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::file::{FileFormat, FileSink};
use operators_sources::file::orc::OrcFormat;
use operators_sources::file::parquet::ParquetFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from("target/example-columnar");
    let pipeline = Pipeline::new();
    pipeline
        .source(
            "parquet",
            DirectorySource::new(Location::parse("source.path", "examples/data/parquet")?, ParquetFormat::new())
                .with_watch(WatchMode::ProcessOnce),
        )
        .sink("from-parquet", FileSink::new(out.join("from-parquet"), FileFormat::Parquet));
    pipeline
        .source(
            "orc",
            DirectorySource::new(Location::parse("source.path", "examples/data/orc")?, OrcFormat::new())
                .with_watch(WatchMode::ProcessOnce),
        )
        .sink("from-orc", FileSink::new(out.join("from-orc"), FileFormat::Parquet));
    let config = JobConfig::new("columnar-files").with_checkpointing(
        CheckpointConfig::new(std::env::temp_dir().join("operators-example-checkpoints"))
            .with_interval(Duration::from_secs(1)),
    );
    let job = pipeline.start(config)?;
    job.wait().await?;
    for m in job.metrics() {
        println!("{:>12}: {} rows in, {} rows out", m.id, m.total.records_in, m.total.records_out);
    }
    Ok(())
}
