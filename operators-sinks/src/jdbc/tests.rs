//! Unit tests of the database sink's pieces that need no database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListArray, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::Int64Type;

use super::statement::{NullType, Value, rows_per_statement, value};

#[test]
fn statements_stay_under_the_drivers_parameter_limit() {
    assert_eq!(rows_per_statement(1000, 8), 1000);
    assert_eq!(rows_per_statement(10_000, 8), 3750);
    assert_eq!(rows_per_statement(10_000, 40_000), 1);
    assert_eq!(rows_per_statement(0, 0), 1);
}

#[test]
fn values_become_what_the_database_takes() {
    let text = |array: ArrayRef, row| match value(&*array, row, "c").unwrap() {
        Value::Text(t) => t,
        _ => panic!("not text"),
    };
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None]));
    assert!(matches!(value(&*ints, 0, "c").unwrap(), Value::Int(7)));
    assert!(matches!(value(&*ints, 1, "c").unwrap(), Value::Null(NullType::Int)), "a NULL is typed after its column");
    // An unsigned value past i64 goes in as its decimal text, not wrapped.
    let big: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX]));
    assert_eq!(text(big, 0), "18446744073709551615");
    let s: ArrayRef = Arc::new(StringArray::from(vec!["a'b"]));
    assert_eq!(text(s, 0), "a'b");
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), None])]));
    assert_eq!(text(list, 0), "[1,null]");
}

#[test]
fn nanosecond_timestamps_round_down_before_1970_too() {
    let ts: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![-1, 1_500]));
    let micros = |row| match value(&*ts, row, "c").unwrap() {
        Value::Timestamp(t) => t.and_utc().timestamp_micros(),
        _ => panic!("not a timestamp"),
    };
    // 1 ns before the epoch lies in the microsecond before it.
    assert_eq!(micros(0), -1);
    assert_eq!(micros(1), 1);
}

#[test]
fn text_parameters_are_cast_to_postgres_types_other_than_text() {
    use super::sink::text_cast;
    assert_eq!(text_cast("JSONB", true).as_deref(), Some("::JSONB"));
    assert_eq!(text_cast("TIME", true).as_deref(), Some("::TIME"));
    assert_eq!(text_cast("INT4[]", true).as_deref(), Some("::INT4[]"));
    for textual in ["TEXT", "VARCHAR", "CHAR", "NAME"] {
        assert_eq!(text_cast(textual, true), None, "{textual}");
    }
    // Not a plain type name: no cast spliced into the statement.
    assert_eq!(text_cast("\"CHAR\"", true), None);
    assert_eq!(text_cast("x; drop table t", true), None);
    assert_eq!(text_cast("", true), None);
    // A user-defined type is cast by the name PostgreSQL gives it (`regtype`), quotes
    // and schema included.
    assert_eq!(text_cast("mood", false).as_deref(), Some("::mood"));
    assert_eq!(text_cast("\"Mood\"", false).as_deref(), Some("::\"Mood\""));
    assert_eq!(text_cast("other.\"Mood\"", false).as_deref(), Some("::other.\"Mood\""));
    assert_eq!(text_cast("\"a\"\"b\"[]", false).as_deref(), Some("::\"a\"\"b\"[]"));
    // Not the shape of a type's name: nothing is spliced.
    for bad in ["?", "", "\"\"", "\"Mood", "mood; drop table t", "\"a\"x", "a..b", "a.", "1a", "\"a\" \"b\""] {
        assert_eq!(text_cast(bad, false), None, "{bad}");
    }
}

#[test]
fn dates_and_timestamps_past_the_databases_range_fail_naming_column_and_row() {
    use arrow::array::{Date32Array, TimestampSecondArray};
    let dates: ArrayRef = Arc::new(Date32Array::from(vec![0, i32::MAX]));
    assert!(matches!(value(&*dates, 0, "day").unwrap(), Value::Date(_)));
    let e = value(&*dates, 1, "day").err().unwrap().to_string();
    assert!(e.contains("`day`") && e.contains("row 1") && e.contains(&i32::MAX.to_string()), "{e}");
    // Seconds that overflow microseconds: refused, not saturated into some other time.
    let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MAX]));
    let e = value(&*seconds, 0, "at").err().unwrap().to_string();
    assert!(e.contains("`at`") && e.contains("row 0"), "{e}");
}
