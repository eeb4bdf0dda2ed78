//! Changelog input (a CDC source's rows, see [`operators_core::changelog`]): the rows of a
//! batch, reduced to the last change of each key, as the rows to upsert and the keys to
//! delete.

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
pub(crate) use operators_core::changelog::CHANGE_COLUMNS;
use operators_core::changelog::{ChangeKind, KIND_COLUMN};
use operators_core::{Error, Result};

/// Whether rows of `schema` are changes (they have a text [`KIND_COLUMN`]).
pub(crate) fn is_changelog(schema: &Schema) -> bool {
    schema.field_with_name(KIND_COLUMN).is_ok_and(|f| matches!(f.data_type(), DataType::Utf8))
}

/// A batch of changes, each key's last, split by what it does.
#[derive(Debug)]
pub(crate) struct Changes {
    /// Rows to write (`+I`, `+U`), with the change columns the table lacks removed.
    pub upserts: Option<RecordBatch>,
    /// Rows whose keys are to be deleted (`-U`, `-D`): the key columns only.
    pub deletes: Option<RecordBatch>,
}

/// Splits `batch` (already reduced to one row per key, the last) into upserts and deletes.
/// `table_columns` are the target table's, `keys` the key columns.
pub(crate) fn split(batch: &RecordBatch, table_columns: &[String], keys: &[String]) -> Result<Changes> {
    let kinds = batch
        .column_by_name(KIND_COLUMN)
        .ok_or_else(|| Error::Internal("a changelog batch without its kind column".into()))?
        .as_string::<i32>();
    let mut upsert = Vec::with_capacity(batch.num_rows());
    for (row, kind) in kinds.iter().enumerate() {
        let kind = kind.and_then(ChangeKind::parse).ok_or_else(|| {
            Error::bad_record(
                format!("row {row} of a changelog batch"),
                format!(
                    "`{KIND_COLUMN}` is {:?}, not one of +I, -U, +U, -D",
                    kinds.is_valid(row).then(|| kinds.value(row))
                ),
            )
        })?;
        upsert.push(kind.is_upsert());
    }
    let writes = BooleanArray::from(upsert);
    let removes = arrow::compute::not(&writes).map_err(|e| Error::arrow("splitting changes", e))?;
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            !CHANGE_COLUMNS.contains(&f.name().as_str())
                || table_columns.iter().any(|c| c.eq_ignore_ascii_case(f.name()))
        })
        .map(|(i, _)| i)
        .collect();
    let key_columns: Vec<usize> = keys
        .iter()
        .map(|k| {
            batch
                .schema()
                .index_of(k)
                .map_err(|_| Error::config("sink.db.key.columns", format!("key column `{k}` is not in the stream")))
        })
        .collect::<Result<_>>()?;
    let project = |mask: &BooleanArray, columns: &[usize]| -> Result<Option<RecordBatch>> {
        if mask.true_count() == 0 {
            return Ok(None);
        }
        let rows = filter_record_batch(batch, mask).map_err(|e| Error::arrow("splitting changes", e))?;
        rows.project(columns).map(Some).map_err(|e| Error::arrow("splitting changes", e))
    };
    Ok(Changes { upserts: project(&writes, &keep)?, deletes: project(&removes, &key_columns)? })
}
