//! JSON objects ⇄ Arrow batches, one object per record (a Kafka message, a line).
//!
//! Decoding follows the declared schema: top-level fields only, a missing field is null,
//! an unknown field is ignored. A record that is not one JSON object, or has a value of
//! the wrong type, is a bad record: [`JsonDecoder::decode`] returns it as a
//! [`DeadLetter`] with its origin and offset, and decodes the others. The common case
//! (every record good) decodes the whole batch in one pass of arrow-json's tape decoder;
//! only a batch with a bad record is decoded again record by record to find it.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, StructArray};
use arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::json::reader::{Decoder, ReaderBuilder};
use arrow::json::writer::{EncoderOptions, make_encoder};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::operator::DeadLetter;

/// One record to decode, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct JsonRecord<'a> {
    /// The bytes of one JSON object.
    pub payload: &'a [u8],
    /// Origin for error messages (`topic/partition`, file path).
    pub origin: &'a str,
    /// Offset in the origin.
    pub offset: Option<u64>,
}

/// Decodes JSON records by a declared schema.
pub struct JsonDecoder {
    schema: SchemaRef,
    decoder: Decoder,
}

impl std::fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonDecoder").field("schema", &self.schema).finish()
    }
}

const BATCH: usize = 64 * 1024;

fn builder(schema: &SchemaRef, batch: usize) -> ReaderBuilder {
    ReaderBuilder::new(schema.clone()).with_batch_size(batch).with_strict_mode(false)
}

impl JsonDecoder {
    /// A decoder for records of `schema`.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let decoder =
            builder(&schema, BATCH).build_decoder().map_err(|e| Error::arrow("creating a JSON decoder", e))?;
        Ok(Self { schema, decoder })
    }

    /// The schema of decoded batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn fast_path(&mut self, records: &[JsonRecord<'_>]) -> std::result::Result<RecordBatch, ()> {
        let mut batches = Vec::new();
        for r in records {
            if r.payload.iter().all(u8::is_ascii_whitespace) {
                return Err(());
            }
            for part in [r.payload, b"\n".as_slice()] {
                let mut buf = part;
                while !buf.is_empty() {
                    let read = self.decoder.decode(buf).map_err(|_| ())?;
                    buf = &buf[read..];
                    if !buf.is_empty() {
                        // The decoder's batch is full.
                        batches.extend(self.decoder.flush().map_err(|_| ())?);
                    }
                }
            }
        }
        batches.extend(self.decoder.flush().map_err(|_| ())?);
        let batch = arrow::compute::concat_batches(&self.schema, &batches).map_err(|_| ())?;
        if batch.num_rows() == records.len() { Ok(batch) } else { Err(()) }
    }

    fn decode_one(&self, payload: &[u8]) -> std::result::Result<RecordBatch, String> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Err("empty record".into());
        }
        let mut decoder = builder(&self.schema, 2).build_decoder().map_err(|e| e.to_string())?;
        let read = decoder.decode(payload).map_err(|e| e.to_string())?;
        if read < payload.len() {
            return Err("more than one JSON value in the record".into());
        }
        if decoder.has_partial_record() {
            return Err("truncated JSON: the record ends inside a value".into());
        }
        let batch = decoder.flush().map_err(|e| e.to_string())?.ok_or_else(|| "empty record".to_string())?;
        match batch.num_rows() {
            1 => Ok(batch),
            0 => Err("empty record".into()),
            n => Err(format!("{n} JSON values in one record; expected one object")),
        }
    }

    /// Decodes `records`; bad ones come back as dead letters, in input order.
    pub fn decode(&mut self, records: &[JsonRecord<'_>]) -> Result<(RecordBatch, Vec<DeadLetter>)> {
        if records.is_empty() {
            return Ok((RecordBatch::new_empty(self.schema.clone()), Vec::new()));
        }
        match self.fast_path(records) {
            Ok(batch) => return Ok((batch, Vec::new())),
            Err(()) => {
                // The decoder may hold half a record now; start from a clean one.
                self.decoder = builder(&self.schema, BATCH)
                    .build_decoder()
                    .map_err(|e| Error::arrow("creating a JSON decoder", e))?;
            }
        }
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for r in records {
            match self.decode_one(r.payload) {
                Ok(b) => good.push(b),
                Err(reason) => bad.push(DeadLetter {
                    origin: r.origin.to_string(),
                    line: None,
                    offset: r.offset,
                    reason: format!("bad JSON record: {reason}"),
                    record: String::from_utf8_lossy(r.payload).into_owned(),
                }),
            }
        }
        let batch = arrow::compute::concat_batches(&self.schema, &good)
            .map_err(|e| Error::arrow("combining decoded JSON records", e))?;
        Ok((batch, bad))
    }
}

/// Encodes the rows of batches as JSON objects.
#[derive(Debug, Clone)]
pub struct JsonEncoder {
    options: EncoderOptions,
}

impl Default for JsonEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonEncoder {
    /// An encoder that writes null fields explicitly and timestamps as
    /// `yyyy-MM-dd HH:mm:ss.SSS` (the toolkit's own format, so output can be read back).
    pub fn new() -> Self {
        Self {
            options: EncoderOptions::default()
                .with_explicit_nulls(true)
                .with_timestamp_format("%Y-%m-%d %H:%M:%S%.3f".to_string()),
        }
    }

    /// Whether null fields are written (`"f": null`) or left out.
    pub fn with_explicit_nulls(mut self, explicit: bool) -> Self {
        self.options = self.options.with_explicit_nulls(explicit);
        self
    }

    /// Appends every row of `batch` to `out` as one JSON object each, and the byte range
    /// of each row to `rows`.
    pub fn encode_rows(&self, batch: &RecordBatch, out: &mut Vec<u8>, rows: &mut Vec<Range<usize>>) -> Result<()> {
        let array = StructArray::from(preformat_timestamps(batch)?);
        let field = std::sync::Arc::new(arrow::datatypes::Field::new("row", array.data_type().clone(), false));
        let mut encoder = make_encoder(&field, &array, &self.options).map_err(|e| Error::arrow("encoding JSON", e))?;
        for i in 0..array.len() {
            let start = out.len();
            encoder.encode(i, out);
            rows.push(start..out.len());
        }
        Ok(())
    }

    /// Appends every row of `batch` to `out` as JSON lines (`\n` after each object).
    pub fn encode_lines(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let array = StructArray::from(preformat_timestamps(batch)?);
        let field = std::sync::Arc::new(arrow::datatypes::Field::new("row", array.data_type().clone(), false));
        let mut encoder = make_encoder(&field, &array, &self.options).map_err(|e| Error::arrow("encoding JSON", e))?;
        for i in 0..array.len() {
            encoder.encode(i, out);
            out.push(b'\n');
        }
        Ok(())
    }
}

/// `batch` with its time-zone-less timestamp columns as strings in the encoder's format
/// (`yyyy-MM-dd HH:mm:ss.SSS`).
///
/// Formatted here because arrow-json hands the pattern to chrono for every value, and
/// chrono parses a strftime pattern each time it formats: that parse was a visible part
/// of a JSON sink's time. Columns with a time zone are left to arrow-json, which formats
/// them in their zone.
fn preformat_timestamps(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| matches!(f.data_type(), DataType::Timestamp(_, None))) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, None) => {
                fields.push(
                    Field::new(field.name(), DataType::Utf8, field.is_nullable())
                        .with_metadata(field.metadata().clone()),
                );
                columns.push(format_timestamps(field.name(), column, *unit)?);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), columns)
        .map_err(|e| Error::arrow("formatting timestamps for JSON", e))
}

fn format_timestamps(name: &str, column: &ArrayRef, unit: TimeUnit) -> Result<ArrayRef> {
    let (values, per_second): (&[i64], i64) = match unit {
        TimeUnit::Second => (column.as_primitive::<TimestampSecondType>().values(), 1),
        TimeUnit::Millisecond => (column.as_primitive::<TimestampMillisecondType>().values(), 1_000),
        TimeUnit::Microsecond => (column.as_primitive::<TimestampMicrosecondType>().values(), 1_000_000),
        TimeUnit::Nanosecond => (column.as_primitive::<TimestampNanosecondType>().values(), 1_000_000_000),
    };
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 23);
    let mut text = String::with_capacity(32);
    for (i, v) in values.iter().enumerate() {
        if column.is_null(i) {
            out.append_null();
            continue;
        }
        let secs = v.div_euclid(per_second);
        let millis = (v.rem_euclid(per_second) * 1_000 / per_second) as u32;
        text.clear();
        if !write_timestamp(secs, millis, &mut text) {
            return Err(Error::Internal(format!(
                "timestamp {v} ({unit:?}) of column `{name}` is outside the years chrono can represent"
            )));
        }
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

/// Writes `secs` (UTC seconds since the epoch) and `millis` as `yyyy-MM-dd HH:mm:ss.SSS`,
/// as chrono's `%Y-%m-%d %H:%M:%S%.3f` does. Returns false when chrono could not represent
/// the time either.
fn write_timestamp(secs: i64, millis: u32, out: &mut String) -> bool {
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Signed or five-digit years: rare enough to leave to chrono.
        return match chrono::DateTime::from_timestamp(secs, millis * 1_000_000) {
            Some(dt) => {
                use std::fmt::Write;
                write!(out, "{}", dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f")).is_ok()
            }
            None => false,
        };
    }
    let digits = |out: &mut String, v: i64, width: u32| {
        for p in (0..width).rev() {
            out.push(char::from(b'0' + ((v / 10i64.pow(p)) % 10) as u8));
        }
    };
    digits(out, year, 4);
    out.push('-');
    digits(out, month, 2);
    out.push('-');
    digits(out, day, 2);
    out.push(' ');
    digits(out, second_of_day / 3600, 2);
    out.push(':');
    digits(out, second_of_day / 60 % 60, 2);
    out.push(':');
    digits(out, second_of_day % 60, 2);
    out.push('.');
    digits(out, i64::from(millis), 3);
    true
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn rec(payload: &[u8], offset: u64) -> JsonRecord<'_> {
        JsonRecord { payload, origin: "topic/0", offset: Some(offset) }
    }

    #[test]
    fn missing_fields_are_null_and_unknown_ignored() {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let (b, bad) =
            d.decode(&[rec(br#"{"id": 1, "name": "a", "extra": [1,2]}"#, 0), rec(br#"{"id": 2}"#, 1)]).unwrap();
        assert!(bad.is_empty());
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(1).is_null(1));
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(1), 2);
    }

    #[test]
    fn bad_records_become_dead_letters_with_provenance() {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let inputs: Vec<&[u8]> = vec![
            br#"{"id": 1}"#,
            br#"{"id": "x"}"#,
            br#"{"id": 3"#,
            br#"not json"#,
            b"",
            br#"{"id": 6}{"id": 7}"#,
            br#"[1,2]"#,
            b"\xff\xfe",
            br#"{"id": 9, "ts": "2020-04-15 14:06:34"}"#,
        ];
        let records: Vec<JsonRecord<'_>> = inputs.iter().enumerate().map(|(i, p)| rec(p, i as u64)).collect();
        let (b, bad) = d.decode(&records).unwrap();
        let ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().iter().flatten().collect();
        assert_eq!(ids, vec![1, 9]);
        let offsets: Vec<u64> = bad.iter().filter_map(|d| d.offset).collect();
        assert_eq!(offsets, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(bad.iter().all(|d| d.origin == "topic/0" && d.reason.starts_with("bad JSON record")));
        // The decoder is usable after bad input.
        let (b, bad) = d.decode(&[rec(br#"{"id": 10}"#, 10)]).unwrap();
        assert_eq!((b.num_rows(), bad.len()), (1, 0));
    }

    proptest::proptest! {
        /// The hand-written timestamp format is chrono's `%Y-%m-%d %H:%M:%S%.3f`, for
        /// every unit, before and after the epoch, and past year 9999.
        #[test]
        fn timestamps_format_as_chrono_does(v in -300_000_000_000_000i64..300_000_000_000_000, unit in 0..4usize) {
            let (unit, per_second) = [
                (TimeUnit::Second, 1i64),
                (TimeUnit::Millisecond, 1_000),
                (TimeUnit::Microsecond, 1_000_000),
                (TimeUnit::Nanosecond, 1_000_000_000),
            ][unit];
            let v = if per_second == 1 { v / 1000 } else { v.saturating_mul(per_second / 1000) };
            let array: ArrayRef = match unit {
                TimeUnit::Second => Arc::new(arrow::array::TimestampSecondArray::from(vec![Some(v), None])),
                TimeUnit::Millisecond => Arc::new(arrow::array::TimestampMillisecondArray::from(vec![Some(v), None])),
                TimeUnit::Microsecond => Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![Some(v), None])),
                TimeUnit::Nanosecond => Arc::new(arrow::array::TimestampNanosecondArray::from(vec![Some(v), None])),
            };
            let got = format_timestamps("ts", &array, unit).unwrap();
            let got = got.as_string::<i32>();
            let secs = v.div_euclid(per_second);
            let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
            let want = chrono::DateTime::from_timestamp(secs, nanos).unwrap().naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string();
            proptest::prop_assert_eq!(got.value(0), want.as_str());
            proptest::prop_assert!(got.is_null(1));
        }
    }

    #[test]
    fn encode_round_trips() {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let (b, _) =
            d.decode(&[rec(br#"{"id": 1, "name": "n\"1", "ts": 1586959594123}"#, 0), rec(br#"{"id": 2}"#, 1)]).unwrap();
        let mut out = Vec::new();
        let mut rows = Vec::new();
        JsonEncoder::new().encode_rows(&b, &mut out, &mut rows).unwrap();
        let first = std::str::from_utf8(&out[rows[0].clone()]).unwrap();
        assert_eq!(first, r#"{"id":1,"name":"n\"1","ts":"2020-04-15 14:06:34.123"}"#);
        let second = std::str::from_utf8(&out[rows[1].clone()]).unwrap();
        assert_eq!(second, r#"{"id":2,"name":null,"ts":null}"#);
        let again: Vec<JsonRecord<'_>> = rows.iter().map(|r| rec(&out[r.clone()], 0)).collect();
        let (b2, bad) = d.decode(&again).unwrap();
        assert!(bad.is_empty());
        assert_eq!(b2, b);
    }
}
