//! What the window examples share: click batches (`user`, `ts`, `amount`), a source that
//! emits them in order, and a printer for results.
// Each example compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use operators_core::operator::{Source, SourceContext, SourcePoll};

/// The schema of [`clicks`]: who clicked, when (event time), and an amount.
pub fn clicks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

/// Emits its batches in order, then finishes.
pub struct Batches(pub std::vec::IntoIter<RecordBatch>);

#[async_trait]
impl Source for Batches {
    async fn poll_next(&mut self, _ctx: &mut SourceContext) -> operators_core::Result<SourcePoll> {
        Ok(self.0.next().map_or(SourcePoll::Finished, SourcePoll::Batch))
    }
}

pub fn clicks(schema: &SchemaRef, rows: &[(&str, i64, i64)]) -> arrow::error::Result<RecordBatch> {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
}

/// Prints every row of `batches`, one line per row, `name=value` for each column.
pub fn print(title: &str, batches: &[RecordBatch]) -> Result<(), arrow::error::ArrowError> {
    println!("{title}:");
    let options = FormatOptions::default();
    for b in batches {
        let schema = b.schema();
        let formatters =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c, &options)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let cells: Vec<String> = schema
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, v)| format!("{}={}", f.name(), v.value(row)))
                .collect();
            println!("  {}", cells.join(" "));
        }
    }
    Ok(())
}
