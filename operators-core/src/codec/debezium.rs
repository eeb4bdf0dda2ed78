//! Changelog rows as Debezium change events: the envelope Kafka consumers of change
//! streams read (Debezium's own connectors, Flink's `debezium-json` format, Kafka
//! Connect sinks).
//!
//! Each event's value is a JSON object
//! `{"before": row|null, "after": row|null, "source": {...}, "op": "c"|"u"|"d"|"r"}` and
//! its key the JSON object of the key columns (`{"id": 7}`), so that every change of a
//! row lands in one partition, in order, and a compacted topic keeps each row's last
//! state. Rows are written as [`JsonEncoder`] writes them (timestamps as
//! `yyyy-MM-dd HH:mm:ss.SSS`, like Flink's `debezium-json` with its default `SQL`
//! timestamp format); the change columns are not part of them.
//!
//! | changelog rows | event |
//! |---|---|
//! | `+I` with no commit time (a snapshot row) | `op: "r"`, `after` |
//! | `+I` | `op: "c"`, `after` |
//! | `-U` directly followed by `+U` of the same key | one event, `op: "u"`, `before` and `after` |
//! | `-U` otherwise (the key changed, or the `+U` is in the next batch) | `op: "d"`, `before` |
//! | `+U` otherwise | `op: "c"`, `after` |
//! | `-D` | `op: "d"`, `before` |
//!
//! An update that changes the key is a delete of the old key and a create of the new
//! one, as Debezium itself writes it, so that each key's events stay in its partition.
//! With tombstones on (Debezium's `tombstones.on.delete`, its default), every `d` event
//! is followed by a message of the same key and no value, which lets log compaction drop
//! the row; consumers that read the envelope (Flink's `debezium-json` among them) skip
//! such messages.
//!
//! `source` holds the change columns a CDC source adds: `db`, `table`, `position` (the
//! source's log position, in its own form), `ts_ms` (commit time) and `snapshot`.
//!
//! ```
//! use operators_core::codec::debezium::DebeziumEncoder;
//! # use std::sync::Arc;
//! # use arrow::array::{ArrayRef, Int64Array, StringArray};
//! # use arrow::datatypes::{DataType, Field, Schema};
//! # use arrow::record_batch::RecordBatch;
//! let schema = Schema::new(vec![
//!     Field::new("id", DataType::Int64, false),
//!     Field::new("name", DataType::Utf8, true),
//!     Field::new("_kind", DataType::Utf8, false),
//! ]);
//! let batch = RecordBatch::try_new(Arc::new(schema), vec![
//!     Arc::new(Int64Array::from(vec![1, 1, 1])) as ArrayRef,
//!     Arc::new(StringArray::from(vec!["a", "a", "b"])),
//!     Arc::new(StringArray::from(vec!["+I", "-U", "+U"])),
//! ])?;
//! let mut out = Vec::new();
//! let mut events = Vec::new();
//! DebeziumEncoder::new(["id"]).encode(&batch, &mut out, &mut events)?;
//! let value = |i: usize| std::str::from_utf8(&out[events[i].value.clone().unwrap()]).unwrap().to_string();
//! assert_eq!(events.len(), 2);
//! assert_eq!(&out[events[0].key.clone().unwrap()], br#"{"id":1}"#);
//! assert_eq!(value(0), r#"{"before":null,"after":{"id":1,"name":"a"},"source":{},"op":"c"}"#);
//! assert_eq!(value(1), r#"{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"b"},"source":{},"op":"u"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::Range;

use arrow::array::{Array, AsArray, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::JsonEncoder;
use crate::changelog::{
    CHANGE_COLUMNS, COMMIT_TIME_COLUMN, ChangeKind, DATABASE_COLUMN, KIND_COLUMN, POSITION_COLUMN, TABLE_COLUMN,
};
use crate::{Error, Result};

/// One message of the encoded stream: its key and value as byte ranges of the output
/// buffer. A tombstone has a key and no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The JSON object of the key columns; `None` when they are all null.
    pub key: Option<Range<usize>>,
    /// The envelope; `None` for a tombstone.
    pub value: Option<Range<usize>>,
}

/// Encodes changelog rows (with a [`KIND_COLUMN`]) as Debezium change events.
#[derive(Debug, Clone)]
pub struct DebeziumEncoder {
    key_columns: Vec<String>,
    tombstones: bool,
    setting: String,
    key_setting: String,
    json: JsonEncoder,
}

impl DebeziumEncoder {
    /// An encoder keying events by `key_columns` (the table's primary key), with
    /// tombstones after deletes.
    pub fn new<I, S>(key_columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            key_columns: key_columns.into_iter().map(Into::into).collect(),
            tombstones: true,
            setting: "format".into(),
            key_setting: "key.columns".into(),
            json: JsonEncoder::new(),
        }
    }

    /// The setting that chose this envelope (default `format`), named by the errors
    /// about rows that cannot be written in it.
    pub fn with_setting(mut self, setting: impl Into<String>) -> Self {
        self.setting = setting.into();
        self
    }

    /// The setting that names the key columns (default `key.columns`), named by the error
    /// about a key column the rows do not have.
    pub fn with_key_setting(mut self, setting: impl Into<String>) -> Self {
        self.key_setting = setting.into();
        self
    }

    /// Whether a delete event is followed by a tombstone (a message with the key and no
    /// value). Default: yes, as Debezium's `tombstones.on.delete`.
    pub fn with_tombstones(mut self, tombstones: bool) -> Self {
        self.tombstones = tombstones;
        self
    }

    /// The key columns.
    pub fn key_columns(&self) -> &[String] {
        &self.key_columns
    }

    /// Appends the events of `batch` to `events`, their bytes to `out`.
    ///
    /// Fails naming the setting when the batch has no [`KIND_COLUMN`] or no key column,
    /// and naming the row (a bad record) when a kind is not one of `+I`, `-U`, `+U`, `-D`.
    pub fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>, events: &mut Vec<ChangeEvent>) -> Result<()> {
        let schema = batch.schema();
        let names = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
        let kinds = text_column(batch, KIND_COLUMN, &self.setting)?.ok_or_else(|| {
            Error::config(
                &self.setting,
                format!(
                    "the Debezium envelope is written from changelog rows, which have a `{KIND_COLUMN}` column (a CDC \
                 source adds it); these rows have: {}",
                    names()
                ),
            )
        })?;
        let mut key_indices = Vec::with_capacity(self.key_columns.len());
        for name in &self.key_columns {
            key_indices.push(schema.index_of(name).map_err(|_| {
                Error::config(
                    &self.key_setting,
                    format!("no key column `{name}` in the changelog rows (columns: {})", names()),
                )
            })?);
        }
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| !CHANGE_COLUMNS.contains(&schema.field(i).name().as_str()))
            .collect();
        let project = |indices: &[usize]| batch.project(indices).map_err(|e| Error::arrow("Debezium envelope", e));

        // Rows and keys are encoded once each, into a scratch buffer, then copied into
        // the envelopes: a row is `before` of one event and `after` of another at most.
        let mut scratch = Vec::new();
        let mut rows = Vec::with_capacity(batch.num_rows());
        self.json.encode_rows(&project(&data)?, &mut scratch, &mut rows)?;
        let mut keys = Vec::with_capacity(batch.num_rows());
        if !key_indices.is_empty() {
            self.json.encode_rows(&project(&key_indices)?, &mut scratch, &mut keys)?;
        }
        let key_of = |i: usize| -> Option<&[u8]> {
            let all_null = key_indices.iter().all(|&c| batch.column(c).is_null(i));
            (!all_null).then(|| &scratch[keys[i].clone()])
        };
        let source = Source {
            database: text_column(batch, DATABASE_COLUMN, &self.setting)?,
            table: text_column(batch, TABLE_COLUMN, &self.setting)?,
            position: text_column(batch, POSITION_COLUMN, &self.setting)?,
            commit_ms: int_column(batch, COMMIT_TIME_COLUMN, &self.setting)?,
        };
        let kind_at = |i: usize| -> Result<ChangeKind> {
            let text = if kinds.is_null(i) { None } else { Some(kinds.value(i)) };
            text.and_then(ChangeKind::parse).ok_or_else(|| {
                Error::bad_record(
                    format!("changelog row {i} of the batch"),
                    format!(
                        "`{KIND_COLUMN}` is {}, not one of +I, -U, +U, -D",
                        text.map_or("null".to_string(), |t| format!("`{t}`"))
                    ),
                )
            })
        };

        let mut i = 0;
        while i < batch.num_rows() {
            let kind = kind_at(i)?;
            let row = &scratch[rows[i].clone()];
            let (key, before, after, op, last) = match kind {
                ChangeKind::Insert => {
                    let snapshot = source.commit_ms.is_some_and(|c| c.is_null(i));
                    (key_of(i), None, Some(row), if snapshot { "r" } else { "c" }, i)
                }
                ChangeKind::UpdateBefore
                    if i + 1 < batch.num_rows()
                        && kind_at(i + 1)? == ChangeKind::UpdateAfter
                        && key_of(i) == key_of(i + 1) =>
                {
                    (key_of(i + 1), Some(row), Some(&scratch[rows[i + 1].clone()]), "u", i + 1)
                }
                ChangeKind::UpdateBefore | ChangeKind::Delete => (key_of(i), Some(row), None, "d", i),
                ChangeKind::UpdateAfter => (key_of(i), None, Some(row), "c", i),
            };
            let key = key.map(|k| append(out, k));
            let start = out.len();
            out.extend_from_slice(b"{\"before\":");
            out.extend_from_slice(before.unwrap_or(b"null"));
            out.extend_from_slice(b",\"after\":");
            out.extend_from_slice(after.unwrap_or(b"null"));
            out.extend_from_slice(b",\"source\":");
            source.write(last, op == "r", out)?;
            out.extend_from_slice(b",\"op\":\"");
            out.extend_from_slice(op.as_bytes());
            out.extend_from_slice(b"\"}");
            events.push(ChangeEvent { key: key.clone(), value: Some(start..out.len()) });
            if op == "d" && self.tombstones && key.is_some() {
                events.push(ChangeEvent { key, value: None });
            }
            i = last + 1;
        }
        Ok(())
    }
}

fn append(out: &mut Vec<u8>, bytes: &[u8]) -> Range<usize> {
    let start = out.len();
    out.extend_from_slice(bytes);
    start..out.len()
}

/// The change columns present in a batch, for the events' `source`.
struct Source<'a> {
    database: Option<&'a StringArray>,
    table: Option<&'a StringArray>,
    position: Option<&'a StringArray>,
    commit_ms: Option<&'a Int64Array>,
}

impl Source<'_> {
    fn write(&self, row: usize, snapshot: bool, out: &mut Vec<u8>) -> Result<()> {
        out.push(b'{');
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        for (name, column) in [("db", self.database), ("table", self.table), ("position", self.position)] {
            if let Some(c) = column.filter(|c| c.is_valid(row)) {
                field(out, name);
                serde_json::to_writer(&mut *out, c.value(row))
                    .map_err(|e| Error::Internal(format!("writing the Debezium source `{name}`: {e}")))?;
            }
        }
        if let Some(c) = self.commit_ms {
            field(out, "ts_ms");
            if c.is_valid(row) {
                // Written in place: no String per event.
                serde_json::to_writer(&mut *out, &c.value(row))
                    .map_err(|e| Error::Internal(format!("writing the Debezium source `ts_ms`: {e}")))?;
            } else {
                out.extend_from_slice(b"null");
            }
            field(out, "snapshot");
            out.extend_from_slice(if snapshot { b"true" } else { b"false" });
        }
        out.push(b'}');
        Ok(())
    }
}

/// The text column `name`, if the batch has it; an error naming `setting` if it has it
/// with another type.
fn text_column<'a>(batch: &'a RecordBatch, name: &str, setting: &str) -> Result<Option<&'a StringArray>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => c.as_string_opt::<i32>().map(Some).ok_or_else(|| {
            Error::config(setting, format!("the change column `{name}` is {}, not text", c.data_type()))
        }),
    }
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str, setting: &str) -> Result<Option<&'a Int64Array>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) if c.data_type() == &DataType::Int64 => Ok(Some(c.as_primitive())),
        Some(c) => Err(Error::config(setting, format!("the change column `{name}` is {}, not Int64", c.data_type()))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::{ChangeEvent, DebeziumEncoder};

    /// `(kind, id, name, commit_ms)` rows with every change column.
    fn changes(rows: &[(&str, i64, Option<&str>, Option<i64>)]) -> RecordBatch {
        let n = rows.len();
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
            Arc::new(StringArray::from(vec!["shop"; n])),
            Arc::new(StringArray::from(vec!["it\"ems"; n])),
            Arc::new(StringArray::from((0..n).map(|i| format!("b.1:{i}")).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn encode(encoder: &DebeziumEncoder, batch: &RecordBatch) -> Vec<(Option<String>, Option<serde_json::Value>)> {
        let (mut out, mut events) = (Vec::new(), Vec::new());
        encoder.encode(batch, &mut out, &mut events).unwrap();
        events
            .into_iter()
            .map(|ChangeEvent { key, value }| {
                (
                    key.map(|k| String::from_utf8(out[k].to_vec()).unwrap()),
                    value.map(|v| serde_json::from_slice(&out[v]).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn every_kind_becomes_its_debezium_event() {
        let batch = changes(&[
            ("+I", 1, Some("snap"), None),
            ("+I", 2, None, Some(10)),
            ("-U", 2, None, Some(11)),
            ("+U", 2, Some("b"), Some(11)),
            ("-D", 1, Some("snap"), Some(12)),
        ]);
        let events = encode(&DebeziumEncoder::new(["id"]), &batch);
        let expected = [
            (
                Some(r#"{"id":1}"#),
                r#"{"before":null,"after":{"id":1,"name":"snap"},"source":{"db":"shop","table":"it\"ems","position":"b.1:0","ts_ms":null,"snapshot":true},"op":"r"}"#,
            ),
            (
                Some(r#"{"id":2}"#),
                r#"{"before":null,"after":{"id":2,"name":null},"source":{"db":"shop","table":"it\"ems","position":"b.1:1","ts_ms":10,"snapshot":false},"op":"c"}"#,
            ),
            (
                Some(r#"{"id":2}"#),
                r#"{"before":{"id":2,"name":null},"after":{"id":2,"name":"b"},"source":{"db":"shop","table":"it\"ems","position":"b.1:3","ts_ms":11,"snapshot":false},"op":"u"}"#,
            ),
            (
                Some(r#"{"id":1}"#),
                r#"{"before":{"id":1,"name":"snap"},"after":null,"source":{"db":"shop","table":"it\"ems","position":"b.1:4","ts_ms":12,"snapshot":false},"op":"d"}"#,
            ),
        ];
        assert_eq!(events.len(), 5, "{events:?}");
        for (i, (key, value)) in expected.iter().enumerate() {
            assert_eq!(events[i].0.as_deref(), *key, "event {i}");
            assert_eq!(events[i].1, Some(serde_json::from_str(value).unwrap()), "event {i}");
        }
        assert_eq!(events[4], (Some(r#"{"id":1}"#.to_string()), None), "a tombstone follows the delete");
    }

    #[test]
    fn a_changed_key_or_a_split_update_is_a_delete_and_a_create() {
        let batch = changes(&[("-U", 1, Some("a"), Some(1)), ("+U", 9, Some("a"), Some(1)), ("-U", 3, None, Some(2))]);
        let events = encode(&DebeziumEncoder::new(["id"]).with_tombstones(false), &batch);
        let ops: Vec<_> = events.iter().map(|(k, v)| (k.clone().unwrap(), v.as_ref().unwrap()["op"].clone())).collect();
        assert_eq!(
            ops,
            [
                (r#"{"id":1}"#.to_string(), serde_json::json!("d")),
                (r#"{"id":9}"#.to_string(), serde_json::json!("c")),
                (r#"{"id":3}"#.to_string(), serde_json::json!("d")),
            ]
        );
        let next = changes(&[("+U", 3, Some("c"), Some(2))]);
        let events = encode(&DebeziumEncoder::new(["id"]), &next);
        assert_eq!(events[0].1.as_ref().unwrap()["op"], "c");
        assert_eq!(events[0].1.as_ref().unwrap()["after"]["name"], "c");
    }

    #[test]
    fn rows_that_are_not_a_changelog_are_refused_by_name() {
        let plain = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
        )
        .unwrap();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let encoder = DebeziumEncoder::new(["id"]).with_setting("sink.format");
        let e = encoder.encode(&plain, &mut out, &mut events).unwrap_err().to_string();
        assert!(e.contains("`sink.format`") && e.contains("`_kind`") && e.contains("have: id"), "{e}");

        let encoder = DebeziumEncoder::new(["sku"]).with_key_setting("sink.key.columns");
        let e = encoder.encode(&changes(&[("+I", 1, None, None)]), &mut out, &mut events).unwrap_err().to_string();
        assert!(e.contains("`sink.key.columns`") && e.contains("no key column `sku`"), "{e}");

        let e = DebeziumEncoder::new(["id"]).encode(&changes(&[("+X", 1, None, None)]), &mut out, &mut events);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("row 0 of the batch") && e.contains("`+X`"), "{e}");
    }
}
