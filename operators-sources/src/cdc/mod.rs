//! Change data capture: a table's rows, then every change to them, from the database's
//! own log.
//!
//! Rows are changelog rows: the table's columns plus the change columns of
//! [`operators_core::changelog`] (kind `+I`/`-U`/`+U`/`-D`, database, table, position,
//! commit time).

#[cfg(feature = "mysql-cdc")]
pub mod mysql;

pub use operators_core::changelog::{
    COMMIT_TIME_COLUMN, ChangeKind, DATABASE_COLUMN, KIND_COLUMN, POSITION_COLUMN, TABLE_COLUMN,
};
