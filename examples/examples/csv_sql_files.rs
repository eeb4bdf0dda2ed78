//! CSV directory → SQL → JSON-lines files.
//!
//! Delivery: exactly once. Checkpoints are aligned (EXACTLY_ONCE), the source position
//! (file and byte offset) is in every checkpoint, and the file sink renames a part to its
//! final name only when the checkpoint that closed it is complete. It stops holding if
//! two jobs write to the same output directory.
//!
//! ```sh
//! cargo run -p operators-examples --example csv_sql_files -- examples/data/csv /tmp/out
//! ```

use std::time::Duration;

use operators_core::checkpoint::{CheckpointConfig, CheckpointingMode};
use operators_core::{JobConfig, Pipeline};
use operators_sinks::file::{FileFormat, FileSink};
use operators_sources::file::text::TextFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};
use operators_sql::SqlTransformBuilder;

const SCHEMA: &str = r#"{"id":"BigInt","city":"String","name":"String","x":"String","y":"String","tags":"String","score":"Double","ts":"Timestamp"}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().unwrap_or_else(|| "examples/data/csv".into());
    let output = args.next().unwrap_or_else(|| "target/example-csv-sql".into());

    let schema = operators_core::schema::parse_schema(SCHEMA)?;
    let source = DirectorySource::new(
        Location::parse("source.path", &input)?,
        TextFormat::csv().with_header(true).with_schema(schema.clone()),
    )
    .with_watch(WatchMode::ProcessOnce);
    let sql = SqlTransformBuilder::new(
        "select id, city, name, concat(x, '-', y) as location, arraySplit(tags, '|') as tags, score from t1 where score > 50",
    )
    .with_schema(schema)
    .build()?;

    let pipeline = Pipeline::new();
    pipeline.source("csv", source).transform("sql", sql).sink("files", FileSink::new(&output, FileFormat::JsonLines));

    let checkpoints = std::env::temp_dir().join("operators-example-checkpoints");
    let config = JobConfig::new("csv-sql-files").with_checkpointing(
        CheckpointConfig::new(checkpoints)
            .with_mode(CheckpointingMode::ExactlyOnce)
            .with_interval(Duration::from_secs(1)),
    );
    let job = pipeline.start(config)?;
    job.wait().await?;
    let written: u64 = job.metrics().iter().filter(|m| m.id == "files").map(|m| m.total.records_in).sum();
    println!("{written} rows written to {output}");
    Ok(())
}
