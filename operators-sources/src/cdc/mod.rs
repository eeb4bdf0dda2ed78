//! Change data capture: a table's rows, then every change to them, from the database's
//! own log.
//!
//! Rows are changelog rows: the table's columns plus the change columns of
//! [`operators_core::changelog`] (kind `+I`/`-U`/`+U`/`-D`, database, table, position,
//! commit time).

#[cfg(feature = "mysql-cdc")]
pub mod mysql;
#[cfg(feature = "postgres-cdc")]
pub mod postgres;

pub use operators_core::changelog::{
    CHANGE_COLUMNS, COMMIT_TIME_COLUMN, ChangeKind, DATABASE_COLUMN, KEY_METADATA, KIND_COLUMN, POSITION_COLUMN,
    TABLE_COLUMN,
};

#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
use arrow::array::{Array, ArrayRef, AsArray};
#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
use arrow::datatypes::{
    DataType, Field, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
use operators_core::{Error, Result};

#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
/// The schema of a table's changelog rows: the table's `fields`, then the change
/// columns, with the primary key named in the metadata ([`KEY_METADATA`]) for the sinks
/// that key their writes by it.
pub(crate) fn changelog_schema(mut fields: Vec<Field>, key: &str) -> arrow::datatypes::SchemaRef {
    fields.extend([
        Field::new(KIND_COLUMN, DataType::Utf8, false),
        Field::new(DATABASE_COLUMN, DataType::Utf8, false),
        Field::new(TABLE_COLUMN, DataType::Utf8, false),
        Field::new(POSITION_COLUMN, DataType::Utf8, false),
        Field::new(COMMIT_TIME_COLUMN, DataType::Int64, true),
    ]);
    let metadata = [(KEY_METADATA.to_string(), key.to_string())].into();
    std::sync::Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, metadata))
}

#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
/// The integer key of row `row` (`None` for a null, which a primary key never is).
pub(crate) fn key_at(column: &ArrayRef, row: usize) -> Result<Option<i128>> {
    if column.is_null(row) {
        return Ok(None);
    }
    Ok(Some(match column.data_type() {
        DataType::Int8 => column.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => column.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => column.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => column.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => column.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => column.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => column.as_primitive::<UInt64Type>().value(row).into(),
        other => return Err(Error::Internal(format!("key column of type {other}"))),
    }))
}

/// Builders of the change columns of one batch of changes, in [`CHANGE_COLUMNS`] order.
#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
#[derive(Default)]
pub(crate) struct ChangeColumns {
    kind: arrow::array::StringBuilder,
    database: arrow::array::StringBuilder,
    table: arrow::array::StringBuilder,
    position: arrow::array::StringBuilder,
    commit_ms: arrow::array::Int64Builder,
}

#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
impl ChangeColumns {
    /// Appends one change's columns; the position is written into the builder's buffer
    /// (no string per change).
    pub(crate) fn append(
        &mut self,
        kind: ChangeKind,
        database: &str,
        table: &str,
        position: std::fmt::Arguments<'_>,
        commit_ms: Option<i64>,
    ) {
        use std::fmt::Write as _;
        self.kind.append_value(kind.as_str());
        self.database.append_value(database);
        self.table.append_value(table);
        let _ = self.position.write_fmt(position);
        self.position.append_value("");
        self.commit_ms.append_option(commit_ms);
    }

    /// The columns built since the last call.
    pub(crate) fn finish(&mut self) -> [ArrayRef; 5] {
        [
            std::sync::Arc::new(self.kind.finish()),
            std::sync::Arc::new(self.database.finish()),
            std::sync::Arc::new(self.table.finish()),
            std::sync::Arc::new(self.position.finish()),
            std::sync::Arc::new(self.commit_ms.finish()),
        ]
    }
}

/// A snapshot batch: the table's `columns`, then the change columns of snapshot rows
/// (`+I`, the database and table, one `position` for all, no commit time).
#[cfg(any(feature = "mysql-cdc", feature = "postgres-cdc"))]
pub(crate) fn snapshot_batch(
    schema: arrow::datatypes::SchemaRef,
    columns: &[ArrayRef],
    rows: usize,
    (database, table): (&str, &str),
    position: &str,
) -> Result<arrow::record_batch::RecordBatch> {
    use arrow::array::{Int64Array, StringArray};
    let constant =
        |v: &str| -> ArrayRef { std::sync::Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, rows))) };
    let mut all = columns.to_vec();
    all.extend([
        constant(ChangeKind::Insert.as_str()),
        constant(database),
        constant(table),
        constant(position),
        std::sync::Arc::new(Int64Array::new_null(rows)),
    ]);
    arrow::record_batch::RecordBatch::try_new(schema, all).map_err(|e| Error::arrow("adding the change columns", e))
}
