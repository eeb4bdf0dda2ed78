//! CSV scenarios: generated input, the pipelines, and their bare-loop baselines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use operators_core::codec::JsonEncoder;
use operators_core::restart::RestartStrategy;
use operators_core::{JobConfig, Pipeline};
use operators_sinks::file::{FileFormat, FileSink};
use operators_sources::file::text::TextFormat;
use operators_sources::file::{DirectorySource, Location, WatchMode};
use operators_sql::{SqlTransform, SqlTransformBuilder};

/// The SQL of the `csv-sql-json` scenario (the toolkit's example plus a filter).
pub const SQL: &str =
    "select id, city, name, concat(x,'-',y) as location, arraySplit(tags,'|') as tags, score from t1 where score > 50";

/// The 8 columns of the bench input.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("x", DataType::Utf8, true),
        Field::new("y", DataType::Utf8, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// Writes `rows` rows over 8 files into `dir`; returns the bytes written.
pub fn generate(dir: &Path, rows: u64) -> std::io::Result<u64> {
    write_rows(dir, rows, None)
}

/// Like [`generate`], but with `distinct` ids in all: row `r` gets the id of `r % distinct`,
/// scrambled over `0..distinct` (`i * 2654435761 mod distinct`, a bijection), so there are
/// exactly `min(rows, distinct)` ids, each first written within the first `distinct` rows,
/// in no ascending order. The `name` of row `r` ends in `r` (not `r % 977`), so the rows of one id
/// differ; the other columns are those of [`generate`].
pub fn generate_with_distinct(dir: &Path, rows: u64, distinct: u64) -> std::io::Result<u64> {
    if distinct == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the number of distinct ids must be at least 1",
        ));
    }
    write_rows(dir, rows, Some(distinct))
}

/// A bijection of `0..n`: `i * P mod n`, with `P` the prime 2654435761 (`1` in the
/// unlikely case that it divides `n`), so consecutive indexes land far apart.
fn scramble(i: u64, n: u64) -> u64 {
    const P: u64 = 2_654_435_761;
    let p = if n.is_multiple_of(P) { 1 } else { P };
    // The remainder is below `n`, so it fits in a u64.
    ((u128::from(i) * u128::from(p)) % u128::from(n)) as u64
}

/// Writes rows `0..rows` over 8 files (row `r` into `part-{r % 8}.csv`); every column
/// derives from the row number, and with `distinct` the id and name as
/// [`generate_with_distinct`] says.
fn write_rows(dir: &Path, rows: u64, distinct: Option<u64>) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    const CITIES: [&str; 6] = ["beijing", "shanghai", "guangzhou", "shenzhen", "hangzhou", "chengdu"];
    const NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];
    const TAGS: [&str; 4] = ["new|vip", "returning", "mobile|web|promo", "web"];
    let files = 8;
    let mut bytes = 0;
    for f in 0..files {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join(format!("part-{f}.csv")))?);
        let mut row = f;
        while row < rows {
            let (id, name_suffix) = match distinct {
                None => (row, row % 977),
                Some(n) => (scramble(row % n, n), row),
            };
            let line = format!(
                "{id},{}-{name_suffix},{},{}.{:02},{}.{:02},{},{}.{},2024-{:02}-{:02} {:02}:{:02}:{:02}\n",
                NAMES[(row % 5) as usize],
                CITIES[(row % 6) as usize],
                100 + row % 30,
                row % 100,
                20 + row % 25,
                (row * 7) % 100,
                TAGS[(row % 4) as usize],
                row % 100,
                row % 10,
                1 + row % 12,
                1 + row % 28,
                row % 24,
                row % 60,
                (row * 13) % 60,
            );
            w.write_all(line.as_bytes())?;
            bytes += line.len() as u64;
            row += files;
        }
        w.flush()?;
    }
    Ok(bytes)
}

/// The CSV files of `dir`, in name order.
pub fn inputs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    Ok(files)
}

/// Builds the SQL transform of the `csv-sql-json` scenario.
pub fn sql() -> Result<SqlTransform, operators_sql::SqlError> {
    SqlTransformBuilder::new(SQL).with_schema(schema()).build()
}

/// Runs CSV dir → [SQL] → JSON-lines files through the runtime; returns rows written.
pub async fn pipeline(input: &Path, out: &Path, with_sql: bool) -> Result<u64, Box<dyn std::error::Error>> {
    let source = DirectorySource::new(
        Location::parse("source.path", input.to_str().unwrap_or_default())?,
        TextFormat::csv().with_schema(schema()),
    )
    .with_watch(WatchMode::ProcessOnce)
    .with_settle(Duration::ZERO);
    let p = Pipeline::new();
    let mut stream = p.source("csv", source);
    if with_sql {
        stream = stream.transform("sql", sql()?);
    }
    stream.sink("json", FileSink::new(out, FileFormat::JsonLines).with_roll_size(1 << 30));
    let job = p.start(JobConfig::new("bench").with_restart(RestartStrategy::None))?;
    job.wait().await?;
    let rows = job.metrics().iter().find(|m| m.id == "json").map_or(0, |m| m.total.records_in);
    Ok(rows)
}

/// The baseline: arrow-csv decode → [the same physical expressions] → arrow-json encode
/// → file, in one loop, no runtime.
pub fn bare_loop(input: &Path, out: &Path, with_sql: bool) -> Result<u64, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;
    let sql = if with_sql { Some(sql()?) } else { None };
    let encoder = JsonEncoder::new();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out.join("baseline.json"))?);
    let mut rows = 0u64;
    let mut buf = Vec::with_capacity(4 << 20);
    for file in inputs(input)? {
        let reader = arrow::csv::ReaderBuilder::new(schema()).with_batch_size(8192).build(File::open(&file)?)?;
        for batch in reader {
            let batch = batch?;
            let batch = match &sql {
                Some(q) => q.evaluate(&batch)?,
                None => batch,
            };
            buf.clear();
            encoder.encode_lines(&batch, &mut buf)?;
            w.write_all(&buf)?;
            rows += batch.num_rows() as u64;
        }
    }
    w.flush()?;
    Ok(rows)
}
