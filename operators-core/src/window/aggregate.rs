//! Aggregations of a window: the built-in ones ([`Agg`]) and the user trait
//! ([`Aggregate`]), their checkpointable accumulators and the typed values they read
//! from and write to Arrow columns.
//!
//! An accumulator is one small serializable value per key and window, whatever the
//! number of rows, so window state is bounded by keys × open windows.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A user aggregate over the numeric values of a column: a fold into an `f64`
/// accumulator, like Flink's `ReduceFunction` with an optional final step.
///
/// Only [`Aggregate::add`] is required. The defaults fit *reductions*, where the
/// accumulator is a value like the inputs (a sum, a maximum, a product): two
/// accumulators merge by adding one into the other, and the result is the accumulator.
/// Override [`Aggregate::merge`] when that is not true (a sum of squares merges by `+`,
/// not by squaring again) and [`Aggregate::result`] for a final step (a root mean
/// square divides by the count and takes the root).
///
/// Null values are skipped; a window without a non-null value yields null.
///
/// ```
/// use operators_core::window::{Agg, Aggregate};
///
/// /// The product of the values.
/// struct Product;
///
/// impl Aggregate for Product {
///     fn add(&self, acc: Option<f64>, value: f64) -> f64 {
///         acc.unwrap_or(1.0) * value
///     }
/// }
///
/// let agg = Agg::custom("product_amount", "amount", Product);
/// assert_eq!(agg.name(), "product_amount");
/// ```
pub trait Aggregate: Send + Sync + 'static {
    /// Folds `value` into the accumulator (`None` before the first value of a window).
    fn add(&self, acc: Option<f64>, value: f64) -> f64;

    /// Combines the accumulators of two windows that merge (session windows).
    fn merge(&self, acc: f64, other: f64) -> f64 {
        self.add(Some(acc), other)
    }

    /// The window's result from its accumulator and the number of values folded in.
    fn result(&self, acc: f64, _count: u64) -> f64 {
        acc
    }
}

#[derive(Clone)]
pub(crate) enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    Custom(Arc<dyn Aggregate>),
}

impl fmt::Debug for AggKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl AggKind {
    fn label(&self) -> &'static str {
        match self {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
            AggKind::First => "first",
            AggKind::Last => "last",
            AggKind::Custom(_) => "custom",
        }
    }
}

/// One aggregation of a window: what to compute, over which column, under which output
/// name.
///
/// Output names default to `count`, `sum_<column>`, `min_<column>`, ...; rename with
/// [`Agg::alias`]. Nulls are skipped; `sum`, `min`, `max`, `avg`, `first` and `last` of a
/// window without a non-null value are null. `first` and `last` are by event time (by
/// arrival for count and processing-time windows; ties go to the earlier arrival for
/// `first` and the later for `last`).
///
/// | aggregation | input column | output type |
/// |---|---|---|
/// | `count()` | none (rows) | Int64 |
/// | `sum` | integers, floats | Int64 (UInt64 for UInt64), Float64 |
/// | `min`, `max`, `first`, `last` | numbers, strings, binary, booleans, dates, timestamps | the input's type |
/// | `avg`, `custom` | integers, floats | Float64 |///
/// String and binary views come out as Utf8 and Binary, Float16 as Float32.
#[derive(Debug, Clone)]
pub struct Agg {
    pub(crate) kind: AggKind,
    pub(crate) column: Option<String>,
    pub(crate) name: String,
}

impl Agg {
    fn over(kind: AggKind, column: impl Into<String>) -> Self {
        let column = column.into();
        let name = format!("{}_{column}", kind.label());
        Self { kind, column: Some(column), name }
    }

    /// Number of rows in the window (nulls included).
    pub fn count() -> Self {
        Self { kind: AggKind::Count, column: None, name: "count".into() }
    }

    /// Sum of the column.
    pub fn sum(column: impl Into<String>) -> Self {
        Self::over(AggKind::Sum, column)
    }

    /// Smallest value of the column.
    pub fn min(column: impl Into<String>) -> Self {
        Self::over(AggKind::Min, column)
    }

    /// Largest value of the column.
    pub fn max(column: impl Into<String>) -> Self {
        Self::over(AggKind::Max, column)
    }

    /// Mean of the column.
    pub fn avg(column: impl Into<String>) -> Self {
        Self::over(AggKind::Avg, column)
    }

    /// The column's value in the earliest row by event time.
    pub fn first(column: impl Into<String>) -> Self {
        Self::over(AggKind::First, column)
    }

    /// The column's value in the latest row by event time.
    pub fn last(column: impl Into<String>) -> Self {
        Self::over(AggKind::Last, column)
    }

    /// A user [`Aggregate`] over `column`, output as `name`.
    pub fn custom(name: impl Into<String>, column: impl Into<String>, aggregate: impl Aggregate) -> Self {
        Self { kind: AggKind::Custom(Arc::new(aggregate)), column: Some(column.into()), name: name.into() }
    }

    /// Renames the output column.
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The output column name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The input column, `None` for [`Agg::count`].
    pub fn column(&self) -> Option<&str> {
        self.column.as_deref()
    }
}

/// A value read from a column, in the class of its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Scalar {
    Bool(bool),
    /// Signed and small unsigned integers, dates (days or ms) and timestamps (their unit).
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

impl Scalar {
    fn cmp_same(&self, other: &Scalar) -> Ordering {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::Int(a), Scalar::Int(b)) => a.cmp(b),
            (Scalar::UInt(a), Scalar::UInt(b)) => a.cmp(b),
            (Scalar::Float(a), Scalar::Float(b)) => a.total_cmp(b),
            (Scalar::Str(a), Scalar::Str(b)) => a.cmp(b),
            (Scalar::Bytes(a), Scalar::Bytes(b)) => a.cmp(b),
            // One column has one class; mixed classes only meet after a schema change.
            _ => Ordering::Equal,
        }
    }
}

/// The Arrow type of a key or aggregated column, kept in the operator's checkpoint so
/// results can be built after a restore before any new batch arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ScalarType {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Utf8,
    LargeUtf8,
    Binary,
    LargeBinary,
    Date32,
    Date64,
    /// Unit (0 s, 1 ms, 2 µs, 3 ns) and time zone.
    Timestamp(u8, Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Bool,
    Int,
    UInt,
    Float,
    Str,
    Bytes,
}

impl ScalarType {
    /// The type of `dt`; `column` names the column in the error for unsupported types.
    pub(crate) fn of(dt: &DataType, column: &str) -> Result<Self> {
        Ok(match dt {
            DataType::Boolean => ScalarType::Boolean,
            DataType::Int8 => ScalarType::Int8,
            DataType::Int16 => ScalarType::Int16,
            DataType::Int32 => ScalarType::Int32,
            DataType::Int64 => ScalarType::Int64,
            DataType::UInt8 => ScalarType::UInt8,
            DataType::UInt16 => ScalarType::UInt16,
            DataType::UInt32 => ScalarType::UInt32,
            DataType::UInt64 => ScalarType::UInt64,
            DataType::Float16 | DataType::Float32 => ScalarType::Float32,
            DataType::Float64 => ScalarType::Float64,
            DataType::Utf8 | DataType::Utf8View => ScalarType::Utf8,
            DataType::LargeUtf8 => ScalarType::LargeUtf8,
            DataType::Binary | DataType::BinaryView => ScalarType::Binary,
            DataType::LargeBinary => ScalarType::LargeBinary,
            DataType::Date32 => ScalarType::Date32,
            DataType::Date64 => ScalarType::Date64,
            DataType::Timestamp(unit, tz) => {
                let u = match unit {
                    TimeUnit::Second => 0,
                    TimeUnit::Millisecond => 1,
                    TimeUnit::Microsecond => 2,
                    TimeUnit::Nanosecond => 3,
                };
                ScalarType::Timestamp(u, tz.as_ref().map(|t| t.to_string()))
            }
            other => {
                return Err(Error::config(
                    column,
                    format!(
                        "column `{column}` has type {other}, which windows cannot group or aggregate \
                         (supported: booleans, integers, floats, strings, binary, dates, timestamps)"
                    ),
                ));
            }
        })
    }

    pub(crate) fn data_type(&self) -> DataType {
        match self {
            ScalarType::Boolean => DataType::Boolean,
            ScalarType::Int8 => DataType::Int8,
            ScalarType::Int16 => DataType::Int16,
            ScalarType::Int32 => DataType::Int32,
            ScalarType::Int64 => DataType::Int64,
            ScalarType::UInt8 => DataType::UInt8,
            ScalarType::UInt16 => DataType::UInt16,
            ScalarType::UInt32 => DataType::UInt32,
            ScalarType::UInt64 => DataType::UInt64,
            ScalarType::Float32 => DataType::Float32,
            ScalarType::Float64 => DataType::Float64,
            ScalarType::Utf8 => DataType::Utf8,
            ScalarType::LargeUtf8 => DataType::LargeUtf8,
            ScalarType::Binary => DataType::Binary,
            ScalarType::LargeBinary => DataType::LargeBinary,
            ScalarType::Date32 => DataType::Date32,
            ScalarType::Date64 => DataType::Date64,
            ScalarType::Timestamp(u, tz) => {
                let unit = match u {
                    0 => TimeUnit::Second,
                    1 => TimeUnit::Millisecond,
                    2 => TimeUnit::Microsecond,
                    _ => TimeUnit::Nanosecond,
                };
                DataType::Timestamp(unit, tz.as_deref().map(Into::into))
            }
        }
    }

    fn class(&self) -> Class {
        match self {
            ScalarType::Boolean => Class::Bool,
            ScalarType::UInt64 => Class::UInt,
            ScalarType::Float32 | ScalarType::Float64 => Class::Float,
            ScalarType::Utf8 | ScalarType::LargeUtf8 => Class::Str,
            ScalarType::Binary | ScalarType::LargeBinary => Class::Bytes,
            _ => Class::Int,
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(self.class(), Class::Int | Class::UInt | Class::Float)
            && !matches!(self, ScalarType::Date32 | ScalarType::Date64 | ScalarType::Timestamp(..))
    }
}

/// A column read in the class of its type, for row-wise access.
pub(crate) enum ColumnReader {
    Bool(BooleanArray),
    Int(Int64Array),
    UInt(UInt64Array),
    Float(Float64Array),
    Str(StringArray),
    Bytes(BinaryArray),
}

fn cast(array: &ArrayRef, to: &DataType, column: &str) -> Result<ArrayRef> {
    arrow::compute::cast(array, to).map_err(|e| Error::arrow(format!("reading column `{column}` as {to}"), e))
}

impl ColumnReader {
    pub(crate) fn new(array: &ArrayRef, ty: &ScalarType, column: &str) -> Result<Self> {
        Ok(match ty.class() {
            Class::Bool => ColumnReader::Bool(cast(array, &DataType::Boolean, column)?.as_boolean().clone()),
            Class::Int => {
                // Date32 has no direct cast to Int64.
                let array =
                    if *ty == ScalarType::Date32 { cast(array, &DataType::Int32, column)? } else { array.clone() };
                ColumnReader::Int(cast(&array, &DataType::Int64, column)?.as_primitive::<Int64Type>().clone())
            }
            Class::UInt => {
                ColumnReader::UInt(cast(array, &DataType::UInt64, column)?.as_primitive::<UInt64Type>().clone())
            }
            Class::Float => {
                ColumnReader::Float(cast(array, &DataType::Float64, column)?.as_primitive::<Float64Type>().clone())
            }
            Class::Str => ColumnReader::Str(cast(array, &DataType::Utf8, column)?.as_string::<i32>().clone()),
            Class::Bytes => ColumnReader::Bytes(cast(array, &DataType::Binary, column)?.as_binary::<i32>().clone()),
        })
    }

    pub(crate) fn get(&self, row: usize) -> Option<Scalar> {
        match self {
            ColumnReader::Bool(a) => a.is_valid(row).then(|| Scalar::Bool(a.value(row))),
            ColumnReader::Int(a) => a.is_valid(row).then(|| Scalar::Int(a.value(row))),
            ColumnReader::UInt(a) => a.is_valid(row).then(|| Scalar::UInt(a.value(row))),
            ColumnReader::Float(a) => a.is_valid(row).then(|| Scalar::Float(a.value(row))),
            ColumnReader::Str(a) => a.is_valid(row).then(|| Scalar::Str(a.value(row).to_string())),
            ColumnReader::Bytes(a) => a.is_valid(row).then(|| Scalar::Bytes(a.value(row).to_vec())),
        }
    }

    fn f64(&self, row: usize) -> Option<f64> {
        match self {
            ColumnReader::Int(a) => a.is_valid(row).then(|| a.value(row) as f64),
            ColumnReader::UInt(a) => a.is_valid(row).then(|| a.value(row) as f64),
            ColumnReader::Float(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }
}

/// Builds a column of type `ty` from values of its class.
pub(crate) fn build_column(ty: &ScalarType, values: &[Option<Scalar>]) -> Result<ArrayRef> {
    let target = ty.data_type();
    let class_array: ArrayRef = match ty.class() {
        Class::Bool => Arc::new(BooleanArray::from_iter(values.iter().map(|v| match v {
            Some(Scalar::Bool(b)) => Some(*b),
            _ => None,
        }))),
        Class::Int => {
            let ints = Int64Array::from_iter(values.iter().map(|v| match v {
                Some(Scalar::Int(i)) => Some(*i),
                _ => None,
            }));
            if *ty == ScalarType::Date32 {
                // Int64 does not cast to Date32 directly; day numbers fit in i32.
                Arc::new(Int32Array::from_iter(ints.iter().map(|v| v.and_then(|v| i32::try_from(v).ok()))))
            } else {
                Arc::new(ints)
            }
        }
        Class::UInt => Arc::new(UInt64Array::from_iter(values.iter().map(|v| match v {
            Some(Scalar::UInt(i)) => Some(*i),
            _ => None,
        }))),
        Class::Float => Arc::new(Float64Array::from_iter(values.iter().map(|v| match v {
            Some(Scalar::Float(f)) => Some(*f),
            _ => None,
        }))),
        Class::Str => Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
            Some(Scalar::Str(s)) => Some(s.as_str()),
            _ => None,
        }))),
        Class::Bytes => Arc::new(BinaryArray::from_iter(values.iter().map(|v| match v {
            Some(Scalar::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        }))),
    };
    if class_array.data_type() == &target {
        return Ok(class_array);
    }
    arrow::compute::cast(&class_array, &target)
        .map_err(|e| Error::arrow(format!("building a {target} window column"), e))
}

/// An aggregation bound to the input schema.
#[derive(Clone)]
pub(crate) struct BoundAgg {
    pub(crate) kind: AggKind,
    pub(crate) name: String,
    pub(crate) column: Option<String>,
    /// Type of the input column (none for count).
    pub(crate) input: Option<ScalarType>,
}

impl BoundAgg {
    /// Checks that the aggregation can read a column of type `input`.
    pub(crate) fn bind(agg: &Agg, input: Option<ScalarType>) -> Result<Self> {
        let needs_number = matches!(agg.kind, AggKind::Sum | AggKind::Avg | AggKind::Custom(_));
        if let (true, Some(ty), Some(col)) = (needs_number, &input, &agg.column)
            && !ty.is_numeric()
        {
            return Err(Error::config(
                col.as_str(),
                format!("aggregation `{}` needs a numeric column, but `{col}` is {}", agg.name, ty.data_type()),
            ));
        }
        Ok(Self { kind: agg.kind.clone(), name: agg.name.clone(), column: agg.column.clone(), input })
    }

    /// Type of the output column.
    pub(crate) fn output_type(&self) -> ScalarType {
        match (&self.kind, &self.input) {
            (AggKind::Count, _) => ScalarType::Int64,
            (AggKind::Sum, Some(ScalarType::UInt64)) => ScalarType::UInt64,
            (AggKind::Sum, Some(t)) if t.class() == Class::Float => ScalarType::Float64,
            (AggKind::Sum, _) => ScalarType::Int64,
            (AggKind::Avg | AggKind::Custom(_), _) => ScalarType::Float64,
            (AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last, Some(t)) => t.clone(),
            (AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last, None) => ScalarType::Int64,
        }
    }

    /// A fresh accumulator.
    pub(crate) fn new_acc(&self) -> Acc {
        match (&self.kind, self.input.as_ref().map(ScalarType::class)) {
            (AggKind::Count, _) => Acc::Count(0),
            (AggKind::Sum, Some(Class::UInt)) => Acc::SumUInt(None),
            (AggKind::Sum, Some(Class::Float)) => Acc::SumFloat(None),
            (AggKind::Sum, _) => Acc::SumInt(None),
            (AggKind::Min, _) => Acc::Min(None),
            (AggKind::Max, _) => Acc::Max(None),
            (AggKind::Avg, _) => Acc::Avg { sum: 0.0, count: 0 },
            (AggKind::First, _) => Acc::First(None),
            (AggKind::Last, _) => Acc::Last(None),
            (AggKind::Custom(_), _) => Acc::Custom { acc: None, count: 0 },
        }
    }

    /// Whether it folds rows without reading them (a count): then only how many rows
    /// fall into a window matters, not which.
    pub(crate) fn counts_only(&self) -> bool {
        matches!(self.kind, AggKind::Count)
    }

    /// Folds `rows` (with their event times `times`, indexed by row) into `acc`.
    pub(crate) fn add_rows(
        &self,
        acc: &mut Acc,
        reader: Option<&ColumnReader>,
        rows: &[u32],
        times: &[i64],
    ) -> Result<()> {
        let time_of = |r: usize| times.get(r).copied().unwrap_or(0);
        match (acc, reader) {
            (Acc::Count(n), _) => *n += rows.len() as i64,
            (Acc::SumInt(s), Some(ColumnReader::Int(a))) => {
                for &r in rows {
                    let r = r as usize;
                    if a.is_valid(r) {
                        let v = a.value(r);
                        *s = Some(s.unwrap_or(0).checked_add(v).ok_or_else(|| self.overflow())?);
                    }
                }
            }
            (Acc::SumUInt(s), Some(ColumnReader::UInt(a))) => {
                for &r in rows {
                    let r = r as usize;
                    if a.is_valid(r) {
                        *s = Some(s.unwrap_or(0).checked_add(a.value(r)).ok_or_else(|| self.overflow())?);
                    }
                }
            }
            (Acc::SumFloat(s), Some(reader)) => {
                for &r in rows {
                    if let Some(v) = reader.f64(r as usize) {
                        *s = Some(s.unwrap_or(0.0) + v);
                    }
                }
            }
            (Acc::Avg { sum, count }, Some(reader)) => {
                for &r in rows {
                    if let Some(v) = reader.f64(r as usize) {
                        *sum += v;
                        *count += 1;
                    }
                }
            }
            (Acc::Custom { acc, count }, Some(reader)) => {
                let AggKind::Custom(f) = &self.kind else { return Err(self.mismatch()) };
                for &r in rows {
                    if let Some(v) = reader.f64(r as usize) {
                        *acc = Some(f.add(*acc, v));
                        *count += 1;
                    }
                }
            }
            (Acc::Min(m), Some(reader)) => {
                for &r in rows {
                    if let Some(v) = reader.get(r as usize)
                        && m.as_ref().is_none_or(|cur| v.cmp_same(cur) == Ordering::Less)
                    {
                        *m = Some(v);
                    }
                }
            }
            (Acc::Max(m), Some(reader)) => {
                for &r in rows {
                    if let Some(v) = reader.get(r as usize)
                        && m.as_ref().is_none_or(|cur| v.cmp_same(cur) == Ordering::Greater)
                    {
                        *m = Some(v);
                    }
                }
            }
            (Acc::First(f), Some(reader)) => {
                for &r in rows {
                    let t = time_of(r as usize);
                    if f.as_ref().is_none_or(|(cur, _)| t < *cur)
                        && let Some(v) = reader.get(r as usize)
                    {
                        *f = Some((t, v));
                    }
                }
            }
            (Acc::Last(l), Some(reader)) => {
                for &r in rows {
                    let t = time_of(r as usize);
                    if l.as_ref().is_none_or(|(cur, _)| t >= *cur)
                        && let Some(v) = reader.get(r as usize)
                    {
                        *l = Some((t, v));
                    }
                }
            }
            _ => return Err(self.mismatch()),
        }
        Ok(())
    }

    /// Merges `other` into `acc` (session windows that grew together).
    pub(crate) fn merge(&self, acc: &mut Acc, other: Acc) -> Result<()> {
        fn opt<T>(a: Option<T>, b: Option<T>, f: impl FnOnce(T, T) -> Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => f(a, b),
                (a, None) => a,
                (None, b) => b,
            }
        }
        let merged = match (std::mem::replace(acc, Acc::Count(0)), other) {
            (Acc::Count(a), Acc::Count(b)) => Acc::Count(a + b),
            (Acc::SumInt(a), Acc::SumInt(b)) => {
                let mut overflow = false;
                let s = opt(a, b, |a, b| {
                    let s = a.checked_add(b);
                    overflow = s.is_none();
                    s
                });
                if overflow {
                    return Err(self.overflow());
                }
                Acc::SumInt(s)
            }
            (Acc::SumUInt(a), Acc::SumUInt(b)) => {
                let mut overflow = false;
                let s = opt(a, b, |a, b| {
                    let s = a.checked_add(b);
                    overflow = s.is_none();
                    s
                });
                if overflow {
                    return Err(self.overflow());
                }
                Acc::SumUInt(s)
            }
            (Acc::SumFloat(a), Acc::SumFloat(b)) => Acc::SumFloat(opt(a, b, |a, b| Some(a + b))),
            (Acc::Avg { sum: s1, count: c1 }, Acc::Avg { sum: s2, count: c2 }) => {
                Acc::Avg { sum: s1 + s2, count: c1 + c2 }
            }
            (Acc::Min(a), Acc::Min(b)) => {
                Acc::Min(opt(a, b, |a, b| Some(if b.cmp_same(&a) == Ordering::Less { b } else { a })))
            }
            (Acc::Max(a), Acc::Max(b)) => {
                Acc::Max(opt(a, b, |a, b| Some(if b.cmp_same(&a) == Ordering::Greater { b } else { a })))
            }
            (Acc::First(a), Acc::First(b)) => Acc::First(opt(a, b, |a, b| Some(if b.0 < a.0 { b } else { a }))),
            (Acc::Last(a), Acc::Last(b)) => Acc::Last(opt(a, b, |a, b| Some(if b.0 >= a.0 { b } else { a }))),
            (Acc::Custom { acc: a, count: c1 }, Acc::Custom { acc: b, count: c2 }) => {
                let AggKind::Custom(f) = &self.kind else { return Err(self.mismatch()) };
                Acc::Custom { acc: opt(a, b, |a, b| Some(f.merge(a, b))), count: c1 + c2 }
            }
            _ => return Err(self.mismatch()),
        };
        *acc = merged;
        Ok(())
    }

    /// The window's result.
    pub(crate) fn result(&self, acc: &Acc) -> Option<Scalar> {
        match acc {
            Acc::Count(n) => Some(Scalar::Int(*n)),
            Acc::SumInt(s) => s.map(Scalar::Int),
            Acc::SumUInt(s) => s.map(Scalar::UInt),
            Acc::SumFloat(s) => s.map(Scalar::Float),
            Acc::Avg { sum, count } => (*count > 0).then(|| Scalar::Float(*sum / *count as f64)),
            Acc::Min(v) | Acc::Max(v) => v.clone(),
            Acc::First(v) | Acc::Last(v) => v.as_ref().map(|(_, v)| v.clone()),
            Acc::Custom { acc, count } => match (&self.kind, acc) {
                (AggKind::Custom(f), Some(a)) => Some(Scalar::Float(f.result(*a, *count))),
                _ => None,
            },
        }
    }

    fn overflow(&self) -> Error {
        Error::bad_record(
            format!("column `{}`", self.column.as_deref().unwrap_or("")),
            format!("aggregation `{}` overflowed 64-bit integers", self.name),
        )
    }

    fn mismatch(&self) -> Error {
        Error::State {
            operator: String::new(),
            message: format!(
                "the accumulator of aggregation `{}` does not match its column type (was the column's type changed \
                 between runs?)",
                self.name
            ),
        }
    }
}

/// The accumulator of one aggregation in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Acc {
    Count(i64),
    SumInt(Option<i64>),
    SumUInt(Option<u64>),
    SumFloat(Option<f64>),
    Min(Option<Scalar>),
    Max(Option<Scalar>),
    Avg {
        sum: f64,
        count: u64,
    },
    /// Event time and value of the earliest row.
    First(Option<(i64, Scalar)>),
    /// Event time and value of the latest row.
    Last(Option<(i64, Scalar)>),
    Custom {
        acc: Option<f64>,
        count: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(values: Vec<Option<i64>>) -> ColumnReader {
        ColumnReader::Int(Int64Array::from(values))
    }

    #[test]
    fn builtins_fold_merge_and_skip_nulls() {
        let r = reader(vec![Some(5), None, Some(-2), Some(7)]);
        let times = [30, 10, 20, 0];
        let rows = [0u32, 1, 2, 3];
        let make = |agg: Agg| BoundAgg::bind(&agg, Some(ScalarType::Int32)).unwrap();
        let cases = [
            (Agg::count(), Some(Scalar::Int(4))),
            (Agg::sum("x"), Some(Scalar::Int(10))),
            (Agg::min("x"), Some(Scalar::Int(-2))),
            (Agg::max("x"), Some(Scalar::Int(7))),
            (Agg::avg("x"), Some(Scalar::Float(10.0 / 3.0))),
            // Row 3 is earliest (t=0); row 0 latest (t=30).
            (Agg::first("x"), Some(Scalar::Int(7))),
            (Agg::last("x"), Some(Scalar::Int(5))),
        ];
        for (agg, expected) in cases {
            let b = make(agg);
            let mut whole = b.new_acc();
            b.add_rows(&mut whole, Some(&r), &rows, &times).unwrap();
            assert_eq!(b.result(&whole), expected, "{}", b.name);
            // Split in two and merged gives the same.
            let (mut x, mut y) = (b.new_acc(), b.new_acc());
            b.add_rows(&mut x, Some(&r), &rows[..2], &times).unwrap();
            b.add_rows(&mut y, Some(&r), &rows[2..], &times).unwrap();
            b.merge(&mut x, y).unwrap();
            assert_eq!(b.result(&x), expected, "{} merged", b.name);
        }
    }

    struct SumOfSquares;

    impl Aggregate for SumOfSquares {
        fn add(&self, acc: Option<f64>, value: f64) -> f64 {
            acc.unwrap_or(0.0) + value * value
        }
        fn merge(&self, acc: f64, other: f64) -> f64 {
            acc + other
        }
        fn result(&self, acc: f64, count: u64) -> f64 {
            (acc / count as f64).sqrt()
        }
    }

    #[test]
    fn custom_aggregate_uses_its_merge_and_result() {
        let b = BoundAgg::bind(&Agg::custom("rms", "x", SumOfSquares), Some(ScalarType::Int64)).unwrap();
        let r = reader(vec![Some(3), Some(4), Some(5), Some(5)]);
        let (mut x, mut y) = (b.new_acc(), b.new_acc());
        b.add_rows(&mut x, Some(&r), &[0, 1], &[]).unwrap();
        b.add_rows(&mut y, Some(&r), &[2, 3], &[]).unwrap();
        b.merge(&mut x, y).unwrap();
        assert_eq!(b.result(&x), Some(Scalar::Float((75.0f64 / 4.0).sqrt())));
        assert_eq!(b.result(&b.new_acc()), None, "no values: null");
    }

    #[test]
    fn sum_of_strings_is_a_config_error_naming_the_column() {
        let err = BoundAgg::bind(&Agg::sum("name"), Some(ScalarType::Utf8)).err().unwrap().to_string();
        assert!(err.contains("`name`") && err.contains("sum_name"), "{err}");
        let err = ScalarType::of(&DataType::Decimal128(10, 2), "price").unwrap_err().to_string();
        assert!(err.contains("`price`"), "{err}");
    }

    #[test]
    fn integer_overflow_is_an_error_not_a_wrap() {
        let b = BoundAgg::bind(&Agg::sum("x"), Some(ScalarType::Int64)).unwrap();
        let r = reader(vec![Some(i64::MAX), Some(1)]);
        let mut acc = b.new_acc();
        let err = b.add_rows(&mut acc, Some(&r), &[0, 1], &[]).unwrap_err().to_string();
        assert!(err.contains("overflow") && err.contains("`x`"), "{err}");
    }

    #[test]
    fn columns_round_trip_through_their_class() {
        let types = [
            (ScalarType::Int16, vec![Some(Scalar::Int(3)), None]),
            (ScalarType::Date32, vec![Some(Scalar::Int(19_000)), None]),
            (ScalarType::Timestamp(3, Some("UTC".into())), vec![Some(Scalar::Int(1_000_000_000)), None]),
            (ScalarType::LargeUtf8, vec![Some(Scalar::Str("a".into())), None]),
            (ScalarType::Float32, vec![Some(Scalar::Float(1.5)), None]),
            (ScalarType::UInt64, vec![Some(Scalar::UInt(u64::MAX)), None]),
            (ScalarType::Boolean, vec![Some(Scalar::Bool(true)), None]),
        ];
        for (ty, values) in types {
            let col = build_column(&ty, &values).unwrap();
            assert_eq!(col.data_type(), &ty.data_type());
            let back = ColumnReader::new(&col, &ty, "c").unwrap();
            assert_eq!(back.get(0), values[0], "{ty:?}");
            assert_eq!(back.get(1), None);
        }
    }
}
