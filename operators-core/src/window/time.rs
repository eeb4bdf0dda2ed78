//! Event time of rows and the windows a time falls into.

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// The event time of every row of `batch`, in milliseconds since the epoch, read from
/// `column`: an Arrow `Timestamp` of any unit (converted to milliseconds, rounding
/// towards negative infinity) or an `Int64` of milliseconds. Null times stay null.
pub(crate) fn event_times(batch: &RecordBatch, column: &str, operator: &str) -> Result<Int64Array> {
    let Some(array) = batch.column_by_name(column) else {
        let names: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        return Err(Error::config(
            column,
            format!(
                "operator `{operator}`: the event-time column `{column}` is not in the stream (columns: {})",
                names.join(", ")
            ),
        ));
    };
    let per_ms = match array.data_type() {
        DataType::Int64 => return Ok(array.as_primitive::<Int64Type>().clone()),
        DataType::Timestamp(TimeUnit::Second, _) => {
            let raw = array.to_data();
            let secs = Int64Array::from(raw.into_builder().data_type(DataType::Int64).build().map_err(|e| {
                Error::arrow(format!("operator `{operator}`: reading event-time column `{column}`"), e)
            })?);
            return Ok(secs.iter().map(|v| v.map(|s| s.saturating_mul(1000))).collect());
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000,
        other => {
            return Err(Error::config(
                column,
                format!(
                    "operator `{operator}`: the event-time column `{column}` has type {other}; expected a \
                     Timestamp (any unit) or Int64 milliseconds"
                ),
            ));
        }
    };
    // Reinterpret the timestamp's i64 values, then scale to milliseconds.
    let raw = array.to_data();
    let values = Int64Array::from(
        raw.into_builder()
            .data_type(DataType::Int64)
            .build()
            .map_err(|e| Error::arrow(format!("operator `{operator}`: reading event-time column `{column}`"), e))?,
    );
    if per_ms == 1 {
        return Ok(values);
    }
    Ok(values.iter().map(|v| v.map(|t| t.div_euclid(per_ms))).collect())
}

/// Start of the tumbling window of `size` ms holding `ts` (windows are aligned to the
/// epoch, like Flink's).
pub(crate) fn tumbling_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// Every sliding window `[start, start + size)` with `start` a multiple of `slide` that
/// holds `ts`, latest first.
pub(crate) fn sliding_windows(ts: i64, size: i64, slide: i64, out: &mut Vec<(i64, i64)>) {
    out.clear();
    let mut start = tumbling_start(ts, slide);
    let earliest = ts.saturating_sub(size);
    while start > earliest {
        out.push((start, start.saturating_add(size)));
        match start.checked_sub(slide) {
            Some(s) => start = s,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampMicrosecondArray, TimestampSecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(name: &str, array: arrow::array::ArrayRef) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(name, array.data_type().clone(), true)]));
        RecordBatch::try_new(schema, vec![array]).unwrap()
    }

    #[test]
    fn times_of_every_unit_become_milliseconds() {
        let s = batch("ts", Arc::new(TimestampSecondArray::from(vec![Some(2), None])));
        assert_eq!(event_times(&s, "ts", "w").unwrap(), Int64Array::from(vec![Some(2000), None]));
        let us = batch("ts", Arc::new(TimestampMicrosecondArray::from(vec![1_500, -1]).with_timezone("UTC")));
        assert_eq!(event_times(&us, "ts", "w").unwrap(), Int64Array::from(vec![1, -1]));
        let ms = batch("ts", Arc::new(Int64Array::from(vec![7])));
        assert_eq!(event_times(&ms, "ts", "w").unwrap(), Int64Array::from(vec![7]));
    }

    #[test]
    fn wrong_or_missing_time_column_is_named() {
        let b = batch("ts", Arc::new(StringArray::from(vec!["x"])));
        let err = event_times(&b, "ts", "w").unwrap_err().to_string();
        assert!(err.contains("`ts`") && err.contains("Utf8") && err.contains("`w`"), "{err}");
        let err = event_times(&b, "time", "w").unwrap_err().to_string();
        assert!(err.contains("`time`") && err.contains("columns: ts"), "{err}");
    }

    #[test]
    fn window_assignment() {
        assert_eq!(tumbling_start(1_999, 1_000), 1_000);
        assert_eq!(tumbling_start(-1, 1_000), -1_000);
        let mut out = Vec::new();
        sliding_windows(1_250, 1_000, 500, &mut out);
        assert_eq!(out, vec![(1_000, 2_000), (500, 1_500)]);
        sliding_windows(1_000, 1_000, 500, &mut out);
        assert_eq!(out, vec![(1_000, 2_000), (500, 1_500)]);
        // A slide larger than the size leaves gaps: some times are in no window.
        sliding_windows(1_600, 500, 1_000, &mut out);
        assert!(out.is_empty());
    }
}
