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
    COMMIT_TIME_COLUMN, ChangeKind, DATABASE_COLUMN, KIND_COLUMN, POSITION_COLUMN, TABLE_COLUMN,
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
/// The change columns, after the table's.
pub(crate) fn change_fields() -> Vec<Field> {
    vec![
        Field::new(KIND_COLUMN, DataType::Utf8, false),
        Field::new(DATABASE_COLUMN, DataType::Utf8, false),
        Field::new(TABLE_COLUMN, DataType::Utf8, false),
        Field::new(POSITION_COLUMN, DataType::Utf8, false),
        Field::new(COMMIT_TIME_COLUMN, DataType::Int64, true),
    ]
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
