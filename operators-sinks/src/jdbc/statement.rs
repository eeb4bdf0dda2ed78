//! Arrow values as statement parameters, and how many rows one statement takes.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use operators_core::{Error, Result};

/// One value of an Arrow column, as the database should receive it.
pub(super) enum Value {
    /// A NULL, typed after its column: PostgreSQL refuses a text NULL for a date column.
    Null(NullType),
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Date(chrono::NaiveDate),
    Timestamp(chrono::NaiveDateTime),
}

impl Value {
    /// Whether the value is bound as text (a NULL of a text column included): such a
    /// parameter may need a cast to its column's type.
    pub(super) fn is_text(&self) -> bool {
        matches!(self, Value::Text(_) | Value::Null(NullType::Text))
    }
}

/// The SQL type a NULL is bound as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NullType {
    Bool,
    Int,
    Float,
    Text,
    Bytes,
    Date,
    Timestamp,
}

impl NullType {
    fn of(data_type: &DataType) -> Self {
        match data_type {
            DataType::Boolean => NullType::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => NullType::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => NullType::Float,
            DataType::Binary | DataType::LargeBinary => NullType::Bytes,
            DataType::Date32 => NullType::Date,
            DataType::Timestamp(_, _) => NullType::Timestamp,
            _ => NullType::Text,
        }
    }
}

/// A value the database cannot be given: it fails the write naming the column and row
/// (a NULL in its place would lose it silently).
fn out_of_range(name: &str, row: usize, what: String) -> Error {
    Error::bad_record(
        format!("row {row} of the batch, column `{name}`"),
        format!("{what} is outside the dates the database sink writes (years -262143 to 262142)"),
    )
}

/// The timestamp `count` microseconds after 1970 (`None` when converting the column's
/// `raw` value in `unit` to microseconds overflowed).
fn ts(count: Option<i64>, name: &str, row: usize, raw: i64, unit: &str) -> Result<Value> {
    count
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| Value::Timestamp(t.naive_utc()))
        .ok_or_else(|| out_of_range(name, row, format!("timestamp {raw} {unit} since 1970")))
}

/// Row `row` of `column` (named `name`, for errors) as a statement parameter.
pub(super) fn value(column: &dyn Array, row: usize, name: &str) -> Result<Value> {
    if column.is_null(row) {
        return Ok(Value::Null(NullType::of(column.data_type())));
    }
    Ok(match column.data_type() {
        DataType::Boolean => Value::Bool(column.as_boolean().value(row)),
        DataType::Int8 => Value::Int(i64::from(column.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => Value::Int(i64::from(column.as_primitive::<Int16Type>().value(row))),
        DataType::Int32 => Value::Int(i64::from(column.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => Value::Int(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::Int(i64::from(column.as_primitive::<UInt8Type>().value(row))),
        DataType::UInt16 => Value::Int(i64::from(column.as_primitive::<UInt16Type>().value(row))),
        DataType::UInt32 => Value::Int(i64::from(column.as_primitive::<UInt32Type>().value(row))),
        DataType::UInt64 => {
            let v = column.as_primitive::<UInt64Type>().value(row);
            i64::try_from(v).map(Value::Int).unwrap_or_else(|_| Value::Text(v.to_string()))
        }
        DataType::Float32 => Value::Float(f64::from(column.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => Value::Float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::Text(column.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::Text(column.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::Text(column.as_string_view().value(row).to_string()),
        DataType::Binary => Value::Bytes(column.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Value::Bytes(column.as_binary::<i64>().value(row).to_vec()),
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(days))))
                .map(Value::Date)
                .ok_or_else(|| out_of_range(name, row, format!("date {days} days since 1970")))?
        }
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => {
                let v = column.as_primitive::<TimestampSecondType>().value(row);
                ts(v.checked_mul(1_000_000), name, row, v, "s")?
            }
            TimeUnit::Millisecond => {
                let v = column.as_primitive::<TimestampMillisecondType>().value(row);
                ts(v.checked_mul(1000), name, row, v, "ms")?
            }
            TimeUnit::Microsecond => {
                let v = column.as_primitive::<TimestampMicrosecondType>().value(row);
                ts(Some(v), name, row, v, "µs")?
            }
            // Floor, not truncation: 1 ns before 1970 is in the microsecond before it.
            TimeUnit::Nanosecond => {
                let v = column.as_primitive::<TimestampNanosecondType>().value(row);
                ts(Some(v.div_euclid(1000)), name, row, v, "ns")?
            }
        },
        DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) | DataType::Map(_, _) => {
            // Nested values go in as JSON text.
            let one = arrow::record_batch::RecordBatch::try_from_iter([("v", column.slice(row, 1))])
                .map_err(|e| Error::arrow("encoding a nested value", e))?;
            let mut out = Vec::new();
            operators_core::codec::JsonEncoder::new().encode_lines(&one, &mut out)?;
            let obj: serde_json::Value =
                serde_json::from_slice(&out).map_err(|e| Error::Internal(format!("re-reading a JSON value: {e}")))?;
            Value::Text(obj["v"].to_string())
        }
        other => {
            let s = arrow::compute::cast(&column.slice(row, 1), &DataType::Utf8)
                .map_err(|e| Error::arrow(format!("writing a {other} value"), e))?;
            Value::Text(s.as_string::<i32>().value(0).to_string())
        }
    })
}

/// Rows per statement: the drivers allow 65535 parameters (SQLite 32766).
pub(super) fn rows_per_statement(batch_size: usize, columns: usize) -> usize {
    batch_size.min(30_000 / columns.max(1)).max(1)
}
