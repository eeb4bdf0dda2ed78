//! Runs the `.slt` files under `tests/slt` through the SQL transform.
//!
//! Besides queries, the files use two commands:
//!
//! - `CREATE STREAM <table> <schema>` declares the input table with a toolkit schema
//!   string (`struct<...>` or ordered JSON);
//! - `ROWS` followed by CSV lines sets the batch the next queries run on; values are
//!   converted with the toolkit's rules (an empty field is NULL), and a value that does
//!   not convert makes the statement fail.
//!
//! Every query is planned by `SqlTransformBuilder` against the declared schema and run
//! on the batch; planning errors surface as statement errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::csv::ReaderBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use operators_sql::schema::{convert_strings, parse_schema};
use operators_sql::{SqlTransformBuilder, display_value};
use sqllogictest::{DB, DBOutput, DefaultColumnType, Runner};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

#[derive(Default)]
struct StreamDb {
    table: String,
    schema: Option<SchemaRef>,
    rows: Option<RecordBatch>,
}

fn strip_keyword<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    (s.len() >= kw.len() && s[..kw.len()].eq_ignore_ascii_case(kw)).then(|| &s[kw.len()..])
}

impl StreamDb {
    fn parse_rows(&self, text: &str) -> Result<RecordBatch, SltError> {
        let schema = self.schema.clone().ok_or_else(|| SltError("ROWS before CREATE STREAM".into()))?;
        let text_schema = Arc::new(Schema::new(
            schema.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
        ));
        let mut reader = ReaderBuilder::new(text_schema)
            .with_header(false)
            .build(text.trim().as_bytes())
            .map_err(|e| SltError(e.to_string()))?;
        let mut columns: Vec<ArrayRef> = Vec::new();
        let Some(batch) = reader.next().transpose().map_err(|e| SltError(e.to_string()))? else {
            return Ok(RecordBatch::new_empty(schema));
        };
        for (i, field) in schema.fields().iter().enumerate() {
            let converted = convert_strings(batch.column(i).as_string::<i32>(), field.data_type());
            if let Some((row, why)) = converted.errors.first() {
                return Err(SltError(format!("row {}, column `{}`: {why}", row + 1, field.name())));
            }
            columns.push(converted.array);
        }
        RecordBatch::try_new(schema, columns).map_err(|e| SltError(e.to_string()))
    }
}

impl DB for StreamDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let sql = sql.trim();
        if let Some(rest) = strip_keyword(sql, "CREATE STREAM") {
            let (name, schema) = rest
                .trim()
                .split_once(char::is_whitespace)
                .ok_or_else(|| SltError("CREATE STREAM <name> <schema>".into()))?;
            self.table = name.to_string();
            self.schema = Some(parse_schema(schema.trim()).map_err(|e| SltError(e.to_string()))?);
            self.rows = None;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(rest) = strip_keyword(sql, "ROWS") {
            let batch = self.parse_rows(rest)?;
            let n = batch.num_rows() as u64;
            self.rows = Some(batch);
            return Ok(DBOutput::StatementComplete(n));
        }
        let schema = self.schema.clone().ok_or_else(|| SltError("query before CREATE STREAM".into()))?;
        let query = SqlTransformBuilder::new(sql)
            .with_table(&self.table)
            .with_schema(schema.clone())
            .build()
            .map_err(|e| SltError(e.to_string()))?;
        let input = self.rows.clone().unwrap_or_else(|| RecordBatch::new_empty(schema));
        let (out, bad) = query.process(&input).map_err(|e| SltError(e.to_string()))?;
        if !bad.is_empty() {
            return Err(SltError(format!("bad rows: {bad:?}")));
        }
        let rows = (0..out.num_rows())
            .map(|r| {
                out.columns()
                    .iter()
                    .map(|c| {
                        let v = display_value(c.as_ref() as &dyn Array, r);
                        if v.is_empty() { "(empty)".to_string() } else { v }
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; out.num_columns()], rows })
    }
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failed = 0;
    for file in &files {
        let mut runner = Runner::new(|| async { Ok(StreamDb::default()) });
        match runner.run_file(file) {
            Ok(()) => println!("ok    {}", file.display()),
            Err(e) => {
                failed += 1;
                println!("FAIL  {}\n{e}", file.display());
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} .slt files failed", files.len());
        std::process::exit(1);
    }
}
