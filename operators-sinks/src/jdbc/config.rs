//! The settings: insert or upsert.

/// Insert or upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteMode {
    /// Plain `INSERT`.
    Insert,
    /// Insert, or update the row with the same key columns.
    Upsert {
        /// The key columns (a unique or primary key of the table).
        keys: Vec<String>,
    },
    /// Upsert by the primary key the stream's CDC source names in its schema
    /// ([`operators_core::changelog::KEY_METADATA`]): a CDC source's changes are applied
    /// by key without naming the key again. A stream that names none is refused at its
    /// first batch, naming `sink.db.key.columns`.
    SourceKey,
}
