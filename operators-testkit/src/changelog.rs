//! Changelog batches for the tests of sinks that apply changes.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

/// A batch of `(kind, id, name)` changes (`+I`, `-U`, `+U`, `-D`), with the change
/// columns a CDC source adds after the table's `id` and `name`.
pub fn changes(rows: &[(&str, i64, Option<&str>)]) -> RecordBatch {
    let n = rows.len();
    let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("_kind", DataType::Utf8, false),
        Field::new("_database", DataType::Utf8, false),
        Field::new("_table", DataType::Utf8, false),
        Field::new("_position", DataType::Utf8, false),
        Field::new("_commit_ms", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        text("shop"),
        text("items"),
        text("b.000001:4:1"),
        Arc::new(Int64Array::from(vec![Some(0); n])),
    ];
    // The columns are made for this schema: the batch is always valid.
    #[allow(clippy::expect_used)]
    RecordBatch::try_new(Arc::new(schema), columns).expect("a changelog batch of matching columns")
}
