//! Hive result columns as Arrow arrays.
//!
//! | Hive | wire (`TColumn`) | Arrow |
//! |---|---|---|
//! | `boolean` | bool | Boolean |
//! | `tinyint`, `smallint`, `int`, `bigint` | byte, i16, i32, i64 | Int8, Int16, Int32, Int64 |
//! | `float` | double | Float32 (the float the server widened) |
//! | `double` | double | Float64 |
//! | `decimal(p,s)` | string | Decimal128(p, s) |
//! | `string`, `varchar(n)`, `char(n)` | string | Utf8 (`char` padded, as Hive returns it) |
//! | `date` | string | Date32 |
//! | `timestamp` | string | Timestamp(ns), no time zone: Hive's own precision; a value outside 1677–2262 fails the read naming the column |
//! | `binary` | binary | Binary |
//! | `array`, `map`, `struct`, `uniontype` | string | Utf8, the JSON text HiveServer2 writes (`[1,2]`, `{"a":1}`) |
//! | `interval_*`, `timestamp with local time zone`, `void` | string | Utf8, Hive's text |
//!
//! Numbers, booleans and binaries go from the wire's vectors into the arrays' buffers;
//! the types Hive sends as text (decimal, date, timestamp) are converted by Arrow's
//! casts, strictly: a value that does not convert is an error, never a NULL.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
    StringArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use operators_core::{Error, Result};

use super::protocol::{ColumnDesc, RawColumn, RawValues};

/// `TTypeId` values.
mod type_id {
    pub const BOOLEAN: i32 = 0;
    pub const TINYINT: i32 = 1;
    pub const SMALLINT: i32 = 2;
    pub const INT: i32 = 3;
    pub const BIGINT: i32 = 4;
    pub const FLOAT: i32 = 5;
    pub const DOUBLE: i32 = 6;
    pub const TIMESTAMP: i32 = 8;
    pub const BINARY: i32 = 9;
    pub const DECIMAL: i32 = 15;
    pub const DATE: i32 = 17;
}

/// The Arrow type of a result column.
pub(crate) fn arrow_type(c: &ColumnDesc) -> Result<DataType> {
    Ok(match c.type_id {
        type_id::BOOLEAN => DataType::Boolean,
        type_id::TINYINT => DataType::Int8,
        type_id::SMALLINT => DataType::Int16,
        type_id::INT => DataType::Int32,
        type_id::BIGINT => DataType::Int64,
        type_id::FLOAT => DataType::Float32,
        type_id::DOUBLE => DataType::Float64,
        type_id::TIMESTAMP => DataType::Timestamp(TimeUnit::Nanosecond, None),
        type_id::BINARY => DataType::Binary,
        type_id::DATE => DataType::Date32,
        type_id::DECIMAL => {
            // Without them the cast would round the values to some guessed scale.
            let (Some(precision), Some(scale)) = (c.precision, c.scale) else {
                return Err(Error::Internal(format!(
                    "HiveServer2 gave no precision and scale for decimal column `{}`",
                    c.name
                )));
            };
            match (u8::try_from(precision), i8::try_from(scale)) {
                (Ok(p @ 1..=38), Ok(s)) if i32::from(s) <= precision => DataType::Decimal128(p, s),
                _ => {
                    return Err(Error::Internal(format!(
                        "HiveServer2 described column `{}` as decimal({precision},{scale})",
                        c.name
                    )));
                }
            }
        }
        // Text on the wire, text in Arrow: string, varchar, char, the complex types as
        // JSON, intervals, void, and any type a newer server adds.
        _ => DataType::Utf8,
    })
}

/// The schema of a result. Two columns of one name (`select a.id, b.id` of a join) are
/// refused: the name is all that JSON keys and SQL have of a column downstream.
pub(crate) fn schema(columns: &[ColumnDesc]) -> Result<SchemaRef> {
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = columns.iter().find(|c| !seen.insert(c.name.as_str())) {
        return Err(Error::config(
            "source.db.sql",
            format!("the query returns two columns named `{}`: give them distinct names with AS", twice.name),
        ));
    }
    let fields: Vec<Field> =
        columns.iter().map(|c| Ok(Field::new(&c.name, arrow_type(c)?, true))).collect::<Result<_>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// One fetched row set as a batch of `schema`.
pub(crate) fn batch(schema: &SchemaRef, descs: &[ColumnDesc], raw: Vec<RawColumn>) -> Result<RecordBatch> {
    if raw.len() != descs.len() {
        return Err(Error::Internal(format!(
            "HiveServer2 sent {} columns for a result of {} ({})",
            raw.len(),
            descs.len(),
            descs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let rows = raw.first().map_or(0, |c| c.values.len());
    let mut arrays = Vec::with_capacity(raw.len());
    for ((column, desc), field) in raw.into_iter().zip(descs).zip(schema.fields()) {
        if column.values.len() != rows {
            return Err(Error::Internal(format!(
                "HiveServer2 sent {} values of column `{}` and {rows} of the first",
                column.values.len(),
                desc.name
            )));
        }
        arrays.push(array(column, desc, field.data_type())?);
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| Error::arrow("building a batch of Hive rows", e))
}

fn array(column: RawColumn, desc: &ColumnDesc, target: &DataType) -> Result<ArrayRef> {
    let n = column.values.len();
    let nulls = if column.nulls.iter().all(|b| *b == 0) {
        None
    } else {
        Some(NullBuffer::from_iter((0..n).map(|i| !column.is_null(i))))
    };
    let mismatch =
        |wire: &str| Error::Internal(format!("HiveServer2 sent column `{}` ({target}) as {wire} values", desc.name));
    let array: ArrayRef = match (column.values, target) {
        (RawValues::Bool(v), DataType::Boolean) => Arc::new(BooleanArray::new(v.into_iter().collect(), nulls)),
        (RawValues::Byte(v), DataType::Int8) => Arc::new(Int8Array::new(ScalarBuffer::from(v), nulls)),
        (RawValues::I16(v), DataType::Int16) => Arc::new(Int16Array::new(ScalarBuffer::from(v), nulls)),
        (RawValues::I32(v), DataType::Int32) => Arc::new(Int32Array::new(ScalarBuffer::from(v), nulls)),
        (RawValues::I64(v), DataType::Int64) => Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls)),
        (RawValues::Double(v), DataType::Float64) => Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls)),
        // Hive's float, widened to a double for the wire: narrowing gives it back.
        #[allow(clippy::cast_possible_truncation)]
        (RawValues::Double(v), DataType::Float32) => {
            Arc::new(Float32Array::new(v.into_iter().map(|x| x as f32).collect(), nulls))
        }
        (RawValues::Binary { data, ends }, DataType::Binary) => Arc::new(
            BinaryArray::try_new(offsets(&ends, &desc.name)?, Buffer::from_vec(data), nulls)
                .map_err(|e| Error::arrow(format!("Hive column `{}`", desc.name), e))?,
        ),
        (RawValues::String { data, ends }, _) => {
            let text: ArrayRef = Arc::new(
                StringArray::try_new(offsets(&ends, &desc.name)?, Buffer::from_vec(data), nulls)
                    .map_err(|e| Error::arrow(format!("Hive column `{}` is not UTF-8", desc.name), e))?,
            );
            if target == &DataType::Utf8 {
                text
            } else {
                // decimal, date, timestamp: strict, so that a value that does not
                // convert fails the read instead of becoming a NULL.
                let options = CastOptions { safe: false, ..Default::default() };
                cast_with_options(&text, target, &options)
                    .map_err(|e| Error::arrow(format!("converting Hive column `{}` to {target}", desc.name), e))?
            }
        }
        (RawValues::Bool(_), _) => return Err(mismatch("boolean")),
        (RawValues::Byte(_), _) => return Err(mismatch("byte")),
        (RawValues::I16(_), _) => return Err(mismatch("i16")),
        (RawValues::I32(_), _) => return Err(mismatch("i32")),
        (RawValues::I64(_), _) => return Err(mismatch("i64")),
        (RawValues::Double(_), _) => return Err(mismatch("double")),
        (RawValues::Binary { .. }, _) => return Err(mismatch("binary")),
    };
    Ok(array)
}

/// Arrow's 32-bit offsets of values ending at `ends`.
fn offsets(ends: &[usize], column: &str) -> Result<OffsetBuffer<i32>> {
    let mut offsets = Vec::with_capacity(ends.len() + 1);
    offsets.push(0i32);
    for end in ends {
        offsets.push(i32::try_from(*end).map_err(|_| {
            Error::Internal(format!("column `{column}` holds more than 2 GiB in one fetch: lower source.db.fetch.size"))
        })?);
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(offsets)))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Decimal128Type, Float32Type, Int32Type, TimestampNanosecondType};

    use super::*;

    fn desc(name: &str, type_id: i32) -> ColumnDesc {
        ColumnDesc { name: name.into(), type_id, precision: None, scale: None }
    }

    fn strings(values: &[&str]) -> RawValues {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for v in values {
            data.extend_from_slice(v.as_bytes());
            ends.push(data.len());
        }
        RawValues::String { data, ends }
    }

    #[test]
    fn wire_columns_become_typed_arrays_with_their_nulls() {
        let descs = vec![
            desc("i", type_id::INT),
            desc("f", type_id::FLOAT),
            ColumnDesc { precision: Some(10), scale: Some(2), ..desc("d", type_id::DECIMAL) },
            desc("day", type_id::DATE),
            desc("ts", type_id::TIMESTAMP),
            desc("tags", 10),
        ];
        let schema = schema(&descs).unwrap();
        let raw = vec![
            RawColumn { values: RawValues::I32(vec![7, 0, -1]), nulls: vec![0b010] },
            RawColumn { values: RawValues::Double(vec![f64::from(1.1f32), 0.0, 2.5]), nulls: vec![0b010] },
            RawColumn { values: strings(&["1.50", "", "-12345678.99"]), nulls: vec![0b010] },
            RawColumn { values: strings(&["2024-02-29", "", "1969-12-31"]), nulls: vec![0b010] },
            RawColumn {
                values: strings(&["2021-03-04 05:06:07.123456789", "", "1970-01-01 00:00:00"]),
                nulls: vec![2],
            },
            // Java's BitSet drops trailing zero bytes: no byte at all means no null.
            RawColumn { values: strings(&["[1,2]", "[]", "[null]"]), nulls: vec![] },
        ];
        let b = batch(&schema, &descs, raw).unwrap();
        assert_eq!(b.num_rows(), 3);
        for c in 0..5 {
            assert!(b.column(c).is_null(1) && b.column(c).is_valid(0), "column {c}");
        }
        assert_eq!(b.column(0).as_primitive::<Int32Type>().value(2), -1);
        assert_eq!(b.column(1).as_primitive::<Float32Type>().value(0), 1.1f32);
        assert_eq!(b.column(2).as_primitive::<Decimal128Type>().value(0), 150);
        assert_eq!(b.column(2).as_primitive::<Decimal128Type>().value(2), -1_234_567_899);
        assert_eq!(b.column(3).as_primitive::<Date32Type>().value(2), -1);
        assert_eq!(b.column(4).as_primitive::<TimestampNanosecondType>().value(0), 1_614_834_367_123_456_789);
        assert_eq!(b.column(5).as_string::<i32>().value(0), "[1,2]");
        assert_eq!(b.column(5).null_count(), 0);
    }

    #[test]
    fn a_decimal_without_precision_and_scale_is_refused() {
        let e = arrow_type(&desc("amount", type_id::DECIMAL)).unwrap_err().to_string();
        assert!(e.contains("`amount`"), "{e}");
    }

    #[test]
    fn two_columns_of_one_name_are_refused() {
        let e = schema(&[desc("id", type_id::INT), desc("id", type_id::BIGINT)]).unwrap_err().to_string();
        assert!(e.contains("source.db.sql") && e.contains("`id`"), "{e}");
    }

    #[test]
    fn a_value_that_does_not_convert_fails_naming_its_column() {
        let descs = vec![desc("when", type_id::TIMESTAMP)];
        let raw = vec![RawColumn { values: strings(&["1500-01-01 00:00:00"]), nulls: vec![] }];
        let e = batch(&schema(&descs).unwrap(), &descs, raw).unwrap_err().to_string();
        assert!(e.contains("`when`"), "{e}");

        let descs = vec![desc("n", type_id::INT)];
        let raw = vec![RawColumn { values: RawValues::Bool(vec![true]), nulls: vec![] }];
        let e = batch(&schema(&descs).unwrap(), &descs, raw).unwrap_err().to_string();
        assert!(e.contains("`n`") && e.contains("boolean"), "{e}");

        let descs = vec![desc("a", type_id::INT), desc("b", type_id::INT)];
        let raw = vec![RawColumn { values: RawValues::I32(vec![1]), nulls: vec![] }];
        assert!(batch(&schema(&descs).unwrap(), &descs, raw).is_err());
    }
}
