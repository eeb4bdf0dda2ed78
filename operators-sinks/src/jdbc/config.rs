//! The settings: insert or upsert.

/// Insert or upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Plain `INSERT`.
    Insert,
    /// Insert, or update the row with the same key columns.
    Upsert {
        /// The key columns (a unique or primary key of the table).
        keys: Vec<String>,
    },
}
