//! Keys and key groups: how rows are routed by key and where keyed state lives.
//!
//! A row's key is the stable byte encoding of its key columns. Its hash picks one of
//! `max_parallelism` key groups; each subtask owns a contiguous range of key groups
//! (the same arithmetic as Flink), so state snapshotted at one parallelism can be split
//! by key group and restored at another with every key where it belongs.
//!
//! The encoding is defined here rather than borrowed from `arrow-row`, whose format is
//! not promised to stay the same across Arrow versions: keys end up in savepoints.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray,
    types::{
        Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type,
        UInt16Type, UInt32Type, UInt64Type,
    },
};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default number of key groups (Flink's default for small jobs). Also the upper bound of
/// an operator's parallelism, and fixed for the lifetime of the job's state.
pub const DEFAULT_MAX_PARALLELISM: u16 = 128;

/// Upper bound accepted for `max_parallelism` (key groups are `u16`; Flink uses 2^15).
pub const MAX_MAX_PARALLELISM: u16 = 32768;

/// A half-open range of key groups `[start, end)` owned by one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    /// First key group.
    pub start: u16,
    /// One past the last key group.
    pub end: u16,
}

impl KeyGroupRange {
    /// Whether `key_group` lies in the range.
    pub fn contains(&self, key_group: u16) -> bool {
        key_group >= self.start && key_group < self.end
    }

    /// Whether the two ranges share a key group.
    pub fn overlaps(&self, other: &KeyGroupRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Number of key groups.
    pub fn len(&self) -> usize {
        usize::from(self.end.saturating_sub(self.start))
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key group of a key hash.
pub fn key_group_of_hash(hash: u64, max_parallelism: u16) -> u16 {
    // max_parallelism <= 32768, so the remainder fits in u16.
    (hash % u64::from(max_parallelism.max(1))) as u16
}

/// The subtask that owns `key_group` at `parallelism`.
pub fn subtask_for_key_group(key_group: u16, parallelism: usize, max_parallelism: u16) -> usize {
    usize::from(key_group) * parallelism / usize::from(max_parallelism.max(1))
}

/// The key groups owned by `subtask` of `parallelism` subtasks.
///
/// Consistent with [`subtask_for_key_group`]: a key group is in this range exactly when
/// that function maps it to `subtask`.
pub fn key_group_range(subtask: usize, parallelism: usize, max_parallelism: u16) -> KeyGroupRange {
    let max = usize::from(max_parallelism);
    let p = parallelism.max(1);
    let start = (subtask * max).div_ceil(p);
    let end = ((subtask + 1) * max).div_ceil(p);
    KeyGroupRange { start: start.min(max) as u16, end: end.min(max) as u16 }
}

/// Hash of an encoded key; stable across processes and versions (XXH3-64, seed 0).
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A key of one row: its encoded bytes and its key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// Key group of the key.
    pub key_group: u16,
    /// Stable encoding of the key columns.
    pub bytes: &'a [u8],
}

/// The keys of every row of one batch, in one buffer.
#[derive(Debug, Clone, Default)]
pub struct BatchKeys {
    data: Vec<u8>,
    offsets: Vec<usize>,
    groups: Vec<u16>,
    /// `hash_key` of every row's key: computed for the key group anyway, and kept so
    /// that operators indexing keys in hash tables need not hash them again.
    hashes: Vec<u64>,
}

impl BatchKeys {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The key of row `row`.
    ///
    /// # Panics
    /// If `row >= self.len()` (an index bug in the caller, not a data problem).
    pub fn key(&self, row: usize) -> KeyRef<'_> {
        KeyRef { key_group: self.groups[row], bytes: &self.data[self.offsets[row]..self.offsets[row + 1]] }
    }

    /// Key groups of all rows.
    pub fn key_groups(&self) -> &[u16] {
        &self.groups
    }

    /// [`hash_key`] of every row's key.
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }
}

/// Selects the key columns of a stream by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySelector {
    columns: Arc<[String]>,
}

impl KeySelector {
    /// Key on the named columns, in this order.
    pub fn new<I, S>(columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { columns: columns.into_iter().map(Into::into).collect() }
    }

    /// The key column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Checks that `batch` has the key columns, in types keys can be made of, without
    /// encoding any row (for a hash exchange with one receiver, which routes nothing).
    pub fn check(&self, batch: &RecordBatch) -> Result<()> {
        self.columns_of(batch).map(drop)
    }

    fn columns_of<'a>(&self, batch: &'a RecordBatch) -> Result<Vec<KeyColumn<'a>>> {
        let schema = batch.schema();
        let mut cols = Vec::with_capacity(self.columns.len());
        for name in self.columns.iter() {
            let idx = schema.index_of(name).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::config(
                    "key columns",
                    format!("key column `{name}` is not in the stream (columns: {})", names.join(", ")),
                )
            })?;
            cols.push(KeyColumn::prepare(batch.column(idx))?);
        }
        Ok(cols)
    }

    /// Encodes the key of every row of `batch` and computes its key group.
    pub fn extract(&self, batch: &RecordBatch, max_parallelism: u16) -> Result<BatchKeys> {
        let cols = self.columns_of(batch)?;
        let rows = batch.num_rows();
        let mut keys = BatchKeys {
            data: Vec::with_capacity(rows * 12 * cols.len().max(1)),
            offsets: Vec::with_capacity(rows + 1),
            groups: Vec::with_capacity(rows),
            hashes: Vec::with_capacity(rows),
        };
        keys.offsets.push(0);
        for row in 0..rows {
            let start = keys.data.len();
            for col in &cols {
                col.encode(row, &mut keys.data);
            }
            keys.offsets.push(keys.data.len());
            let hash = hash_key(&keys.data[start..]);
            keys.groups.push(key_group_of_hash(hash, max_parallelism));
            keys.hashes.push(hash);
        }
        Ok(keys)
    }
}

/// The encoding [`KeySelector::extract`] gives a key of one non-null integer column, so
/// that an operator keyed on such a column can index rows by the integer and encode only
/// the keys it has not seen.
pub fn int_key_bytes(v: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = TAG_INT;
    out[1..].copy_from_slice(&v.to_be_bytes());
    out
}

/// The integer of a key encoded by [`int_key_bytes`], if it is one.
pub fn int_key_of(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [TAG_INT, rest @ ..] => <[u8; 8]>::try_from(rest).ok().map(i64::from_be_bytes),
        _ => None,
    }
}

// Tags of the key encoding. Integers of every width share one tag so that a key keeps its
// identity when a column's integer type changes (Int32 5 == Int64 5).
const TAG_NULL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_BOOL: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_BIN: u8 = 5;
const TAG_DATE: u8 = 6;
const TAG_TS_NS: u8 = 7;
const TAG_OTHER: u8 = 8;
const TAG_UINT_BIG: u8 = 9;

enum KeyColumn<'a> {
    Null,
    Bool(&'a BooleanArray),
    Int(&'a dyn Array, fn(&dyn Array, usize) -> i64),
    /// The common key type, read without a downcast per row.
    Int64(&'a Int64Array),
    UInt64(&'a dyn Array),
    Float(&'a dyn Array, fn(&dyn Array, usize) -> f64),
    Str(&'a dyn Array, fn(&dyn Array, usize) -> &[u8]),
    Bin(&'a dyn Array, fn(&dyn Array, usize) -> &[u8]),
    Date(&'a dyn Array, fn(&dyn Array, usize) -> i64),
    TimestampNs(&'a dyn Array, fn(&dyn Array, usize) -> i64),
    Other(StringArray),
}

impl<'a> KeyColumn<'a> {
    fn prepare(array: &'a ArrayRef) -> Result<Self> {
        let a: &'a dyn Array = array.as_ref();
        Ok(match array.data_type() {
            DataType::Null => KeyColumn::Null,
            DataType::Boolean => KeyColumn::Bool(a.as_boolean()),
            DataType::Int8 => KeyColumn::Int(a, |a, i| i64::from(a.as_primitive::<Int8Type>().value(i))),
            DataType::Int16 => KeyColumn::Int(a, |a, i| i64::from(a.as_primitive::<Int16Type>().value(i))),
            DataType::Int32 => KeyColumn::Int(a, |a, i| i64::from(a.as_primitive::<Int32Type>().value(i))),
            DataType::Int64 => KeyColumn::Int64(a.as_primitive::<Int64Type>()),
            DataType::UInt8 => KeyColumn::Int(a, |a, i| i64::from(a.as_primitive::<UInt8Type>().value(i))),
            DataType::UInt16 => KeyColumn::Int(a, |a, i| i64::from(a.as_primitive::<UInt16Type>().value(i))),
            DataType::UInt32 => KeyColumn::Int(a, |a, i| i64::from(a.as_primitive::<UInt32Type>().value(i))),
            DataType::UInt64 => KeyColumn::UInt64(a),
            DataType::Float16 => {
                KeyColumn::Float(a, |a, i| f64::from(a.as_primitive::<Float16Type>().value(i).to_f32()))
            }
            DataType::Float32 => KeyColumn::Float(a, |a, i| f64::from(a.as_primitive::<Float32Type>().value(i))),
            DataType::Float64 => KeyColumn::Float(a, |a, i| a.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 => KeyColumn::Str(a, |a, i| a.as_string::<i32>().value(i).as_bytes()),
            DataType::LargeUtf8 => KeyColumn::Str(a, |a, i| a.as_string::<i64>().value(i).as_bytes()),
            DataType::Utf8View => KeyColumn::Str(a, |a, i| a.as_string_view().value(i).as_bytes()),
            DataType::Binary => KeyColumn::Bin(a, |a, i| a.as_binary::<i32>().value(i)),
            DataType::LargeBinary => KeyColumn::Bin(a, |a, i| a.as_binary::<i64>().value(i)),
            DataType::BinaryView => KeyColumn::Bin(a, |a, i| a.as_binary_view().value(i)),
            DataType::Date32 => KeyColumn::Date(a, |a, i| i64::from(a.as_primitive::<Date32Type>().value(i))),
            DataType::Date64 => {
                KeyColumn::Date(a, |a, i| a.as_primitive::<Date64Type>().value(i).div_euclid(86_400_000))
            }
            DataType::Timestamp(unit, _) => match unit {
                TimeUnit::Second => KeyColumn::TimestampNs(a, |a, i| {
                    a.as_primitive::<TimestampSecondType>().value(i).saturating_mul(1_000_000_000)
                }),
                TimeUnit::Millisecond => KeyColumn::TimestampNs(a, |a, i| {
                    a.as_primitive::<TimestampMillisecondType>().value(i).saturating_mul(1_000_000)
                }),
                TimeUnit::Microsecond => KeyColumn::TimestampNs(a, |a, i| {
                    a.as_primitive::<TimestampMicrosecondType>().value(i).saturating_mul(1_000)
                }),
                TimeUnit::Nanosecond => {
                    KeyColumn::TimestampNs(a, |a, i| a.as_primitive::<TimestampNanosecondType>().value(i))
                }
            },
            _ => {
                // Decimals, lists, structs...: their display form is a stable identity.
                let strings = arrow::compute::cast(array, &DataType::Utf8)
                    .map_err(|e| Error::arrow(format!("encoding a key column of type {}", array.data_type()), e))?;
                KeyColumn::Other(strings.as_string::<i32>().clone())
            }
        })
    }

    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        let array: &dyn Array = match self {
            KeyColumn::Null => {
                out.push(TAG_NULL);
                return;
            }
            KeyColumn::Bool(a) => *a,
            KeyColumn::Int64(a) => *a,
            KeyColumn::Int(a, _)
            | KeyColumn::UInt64(a)
            | KeyColumn::Float(a, _)
            | KeyColumn::Str(a, _)
            | KeyColumn::Bin(a, _)
            | KeyColumn::Date(a, _)
            | KeyColumn::TimestampNs(a, _) => *a,
            KeyColumn::Other(a) => a,
        };
        if array.is_null(row) {
            out.push(TAG_NULL);
            return;
        }
        match self {
            KeyColumn::Null => {}
            KeyColumn::Bool(a) => {
                out.push(TAG_BOOL);
                out.push(u8::from(a.value(row)));
            }
            KeyColumn::Int(a, get) => {
                out.push(TAG_INT);
                out.extend_from_slice(&get(*a, row).to_be_bytes());
            }
            KeyColumn::Int64(a) => {
                out.push(TAG_INT);
                out.extend_from_slice(&a.value(row).to_be_bytes());
            }
            KeyColumn::UInt64(a) => {
                let v = a.as_primitive::<UInt64Type>().value(row);
                match i64::try_from(v) {
                    Ok(v) => {
                        out.push(TAG_INT);
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    Err(_) => {
                        out.push(TAG_UINT_BIG);
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                }
            }
            KeyColumn::Float(a, get) => {
                let v = get(*a, row);
                // One identity for 0.0/-0.0 and for every NaN.
                let v = if v == 0.0 {
                    0.0
                } else if v.is_nan() {
                    f64::NAN
                } else {
                    v
                };
                out.push(TAG_FLOAT);
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            KeyColumn::Str(a, get) => push_bytes(out, TAG_STR, get(*a, row)),
            KeyColumn::Bin(a, get) => push_bytes(out, TAG_BIN, get(*a, row)),
            KeyColumn::Date(a, get) => {
                out.push(TAG_DATE);
                out.extend_from_slice(&get(*a, row).to_be_bytes());
            }
            KeyColumn::TimestampNs(a, get) => {
                out.push(TAG_TS_NS);
                out.extend_from_slice(&get(*a, row).to_be_bytes());
            }
            KeyColumn::Other(a) => push_bytes(out, TAG_OTHER, a.value(row).as_bytes()),
        }
    }
}

fn push_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    // Keys longer than 4 GiB are not meaningful; saturate rather than wrap.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn key_group_ranges_agree_with_subtask_mapping() {
        for max in [1u16, 2, 7, 128, 1000] {
            for p in 1..=usize::from(max).min(17) {
                let mut covered = 0;
                for s in 0..p {
                    let r = key_group_range(s, p, max);
                    covered += r.len();
                    for kg in r.start..r.end {
                        assert_eq!(subtask_for_key_group(kg, p, max), s, "max={max} p={p} kg={kg}");
                    }
                }
                assert_eq!(covered, usize::from(max));
            }
        }
    }

    #[test]
    fn integer_widths_share_identity_and_strings_differ() {
        let schema32 = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
        let schema64 = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let schemas = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let b32 = RecordBatch::try_new(schema32, vec![Arc::new(Int32Array::from(vec![Some(5), None]))]).unwrap();
        let b64 = RecordBatch::try_new(schema64, vec![Arc::new(Int64Array::from(vec![Some(5), None]))]).unwrap();
        let bs = RecordBatch::try_new(schemas, vec![Arc::new(StringArray::from(vec![Some("5"), None]))]).unwrap();
        let sel = KeySelector::new(["k"]);
        let k32 = sel.extract(&b32, 128).unwrap();
        let k64 = sel.extract(&b64, 128).unwrap();
        let ks = sel.extract(&bs, 128).unwrap();
        assert_eq!(k32.key(0), k64.key(0));
        assert_ne!(k32.key(0).bytes, ks.key(0).bytes);
        assert_eq!(k32.key(1), ks.key(1), "nulls encode alike");
    }

    #[test]
    fn integer_keys_encode_as_extract_does() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![-3, 0, i64::MAX]))]).unwrap();
        let keys = KeySelector::new(["id"]).extract(&b, 128).unwrap();
        for (row, v) in [-3, 0, i64::MAX].into_iter().enumerate() {
            assert_eq!(keys.key(row).bytes, int_key_bytes(v));
            assert_eq!(int_key_of(keys.key(row).bytes), Some(v));
            assert_eq!(keys.hashes()[row], hash_key(&int_key_bytes(v)));
        }
        assert_eq!(int_key_of(&int_key_bytes(5)[..8]), None);
    }

    #[test]
    fn missing_key_column_is_named() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1]))]).unwrap();
        let err = KeySelector::new(["id"]).extract(&b, 128).unwrap_err().to_string();
        assert!(err.contains("`id`") && err.contains("columns: a"), "{err}");
    }

    #[test]
    fn composite_keys_are_unambiguous() {
        // ("ab","c") and ("a","bc") must not collide: lengths are part of the encoding.
        let schema =
            Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false), Field::new("y", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["ab", "a"])), Arc::new(StringArray::from(vec!["c", "bc"]))],
        )
        .unwrap();
        let keys = KeySelector::new(["x", "y"]).extract(&b, 128).unwrap();
        assert_ne!(keys.key(0).bytes, keys.key(1).bytes);
    }
}
