//! Helpers shared by the file-source tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cdc;

use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::record_batch::RecordBatch;
use operators_core::builtins::{CommittedOutput, TwoPhaseMemorySink};
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline, Result};
use operators_sources::file::{DirectorySource, FileFormat, Location, WatchMode};

/// A dead letter: origin file name, line, byte offset, reason, record.
pub type Letter = (String, Option<u64>, Option<u64>, String, String);

/// Output of a finished read.
#[derive(Debug)]
pub struct Read {
    pub rows: Vec<RecordBatch>,
    pub dead: Vec<RecordBatch>,
}

impl Read {
    pub fn num_rows(&self) -> usize {
        self.rows.iter().map(RecordBatch::num_rows).sum()
    }

    /// Every value as display strings, row by row.
    pub fn strings(&self) -> Vec<Vec<String>> {
        table(&self.rows)
    }

    /// Dead letters as (origin file name, line, offset, reason, record).
    pub fn dead_letters(&self) -> Vec<Letter> {
        let mut out = Vec::new();
        for b in &self.dead {
            let origin = b.column_by_name("origin").unwrap().as_string::<i32>();
            let line = b.column_by_name("line").unwrap().as_primitive::<arrow::datatypes::UInt64Type>();
            let offset = b.column_by_name("offset").unwrap().as_primitive::<arrow::datatypes::UInt64Type>();
            let reason = b.column_by_name("reason").unwrap().as_string::<i32>();
            let record = b.column_by_name("record").unwrap().as_string::<i32>();
            for r in 0..b.num_rows() {
                let name = Path::new(origin.value(r)).file_name().unwrap().to_string_lossy().into_owned();
                out.push((
                    name,
                    (!line.is_null(r)).then(|| line.value(r)),
                    (!offset.is_null(r)).then(|| offset.value(r)),
                    reason.value(r).to_string(),
                    record.value(r).to_string(),
                ));
            }
        }
        out
    }
}

pub fn table(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(b.columns().iter().map(|c| cell(c.as_ref(), r)).collect());
        }
    }
    out
}

pub fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    let options = arrow::util::display::FormatOptions::default();
    arrow::util::display::ArrayFormatter::try_new(array, &options).unwrap().value(row).to_string()
}

/// Reads `dir` once with `format` and returns rows and dead letters.
pub async fn read_dir(dir: &Path, format: impl FileFormat, parallelism: usize) -> Result<Read> {
    read_location(Location::parse("source.path", dir.to_str().unwrap())?, format, parallelism).await
}

/// Reads a directory in any store once with `format` and returns rows and dead letters.
#[allow(dead_code)]
pub async fn read_location(location: Location, format: impl FileFormat, parallelism: usize) -> Result<Read> {
    let source = DirectorySource::new(location, format)
        .with_watch(WatchMode::ProcessOnce)
        .with_settle(Duration::from_millis(10));
    let rows = CommittedOutput::default();
    let dead = CommittedOutput::default();
    let p = Pipeline::new();
    let s = p.source("files", source).parallelism(parallelism);
    s.dead_letters().sink("dead", TwoPhaseMemorySink::new(dead.clone()));
    s.sink("rows", TwoPhaseMemorySink::new(rows.clone())).parallelism(1);
    p.run(JobConfig::new("read-dir").with_restart(RestartStrategy::None)).await?;
    Ok(Read { rows: rows.batches(), dead: dead.batches() })
}
