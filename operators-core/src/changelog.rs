//! Changelog rows: a batch whose rows are changes to a table rather than new facts.
//!
//! A change-data-capture source (`operators-sources`' `cdc`) emits the changed table's
//! columns plus the columns named here; sinks that apply changes (upsert and delete by
//! key) read [`KIND_COLUMN`]. The kinds are Flink's row kinds, which the toolkit's users
//! know from Flink CDC.
//!
//! | column | type | what |
//! |---|---|---|
//! | [`KIND_COLUMN`] `_kind` | text | the change: `+I` insert (and every snapshot row), `-U` a row's values before an update, `+U` after it, `-D` delete (the row's last values) |
//! | [`DATABASE_COLUMN`] `_database` | text | the database (MySQL schema) of the table |
//! | [`TABLE_COLUMN`] `_table` | text | the table |
//! | [`POSITION_COLUMN`] `_position` | text | where the change is in the source's log (its form is the source's) |
//! | [`COMMIT_TIME_COLUMN`] `_commit_ms` | Int64 | when the change was committed, in ms since 1970; null for snapshot rows |
//!
//! An update is two rows, `-U` then `+U`, so that a changed key is seen: a sink that
//! applies changes deletes the `-U` key and writes the `+U` row.

/// The change kind column: `+I`, `-U`, `+U` or `-D`.
pub const KIND_COLUMN: &str = "_kind";
/// The column of the changed table's database.
pub const DATABASE_COLUMN: &str = "_database";
/// The column of the changed table's name.
pub const TABLE_COLUMN: &str = "_table";
/// The column of the change's place in the log.
pub const POSITION_COLUMN: &str = "_position";
/// The column of the change's commit time (ms since 1970).
pub const COMMIT_TIME_COLUMN: &str = "_commit_ms";

/// The schema metadata key under which a CDC source names the table's primary key
/// columns (comma separated), so that sinks key their writes by it without being told.
/// Operators that rebuild the schema (SQL) drop it; a sink then needs its key columns
/// set.
pub const KEY_METADATA: &str = "operators.changelog.key";

/// The primary key columns a CDC source recorded in `schema`'s metadata, if any.
pub fn key_columns(schema: &arrow::datatypes::Schema) -> Option<Vec<String>> {
    let keys: Vec<String> = schema
        .metadata()
        .get(KEY_METADATA)?
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// Every change column, in the order a CDC source appends them after the table's.
pub const CHANGE_COLUMNS: [&str; 5] = [KIND_COLUMN, DATABASE_COLUMN, TABLE_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN];

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A new row, or a row of the snapshot (`+I`).
    Insert,
    /// A row's values before an update (`-U`).
    UpdateBefore,
    /// A row's values after an update (`+U`).
    UpdateAfter,
    /// A deleted row's last values (`-D`).
    Delete,
}

impl ChangeKind {
    /// The short form in [`KIND_COLUMN`].
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "+I",
            ChangeKind::UpdateBefore => "-U",
            ChangeKind::UpdateAfter => "+U",
            ChangeKind::Delete => "-D",
        }
    }

    /// Reads the short form.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "+I" => ChangeKind::Insert,
            "-U" => ChangeKind::UpdateBefore,
            "+U" => ChangeKind::UpdateAfter,
            "-D" => ChangeKind::Delete,
            _ => return None,
        })
    }

    /// Whether the row is to be written (insert or update-after) rather than removed.
    pub fn is_upsert(self) -> bool {
        matches!(self, ChangeKind::Insert | ChangeKind::UpdateAfter)
    }
}

#[cfg(test)]
mod tests {
    use super::ChangeKind;

    #[test]
    fn kinds_read_back_and_say_whether_they_write() {
        for kind in [ChangeKind::Insert, ChangeKind::UpdateBefore, ChangeKind::UpdateAfter, ChangeKind::Delete] {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        assert!(ChangeKind::Insert.is_upsert() && ChangeKind::UpdateAfter.is_upsert());
        assert!(!ChangeKind::UpdateBefore.is_upsert() && !ChangeKind::Delete.is_upsert());
        assert_eq!(ChangeKind::parse("+X"), None);
    }

    #[test]
    fn key_columns_read_from_the_metadata() {
        use arrow::datatypes::Schema;
        let schema = Schema::empty();
        assert_eq!(super::key_columns(&schema), None);
        let keyed = schema.clone().with_metadata([(super::KEY_METADATA.to_string(), "a, b".to_string())].into());
        assert_eq!(super::key_columns(&keyed), Some(vec!["a".to_string(), "b".to_string()]));
        let empty = schema.with_metadata([(super::KEY_METADATA.to_string(), " ".to_string())].into());
        assert_eq!(super::key_columns(&empty), None);
    }
}
