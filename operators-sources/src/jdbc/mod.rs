//! Databases ("JDBC" in the toolkit): a query or table of PostgreSQL, MySQL/MariaDB or
//! SQLite read into Arrow batches.
//!
//! The connection code it shares with the database sink ([`DbConfig`], [`DbPool`], the
//! type mapping [`ColumnKind`], the retry rule [`is_transient`]) lives in
//! `operators-clients` and is re-exported here.

pub(crate) mod source;
#[cfg(test)]
mod tests;

/// Per-test databases for integration tests (feature `test-util`).
#[cfg(feature = "test-util")]
pub use operators_clients::jdbc::test_util;
pub use operators_clients::jdbc::{
    ColumnKind, DbConfig, DbKind, DbPool, DriverError, Secret, describe_sqlx, is_transient, quote_ident, redact,
};
pub use source::{DbPosition, JdbcSource};
