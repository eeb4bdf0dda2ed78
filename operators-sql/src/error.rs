//! Errors of the SQL transform.

use operators_core::schema::SchemaError;

/// Why a query cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The input schema string is malformed.
    #[error("{0}")]
    Schema(#[from] SchemaError),

    /// DataFusion could not plan the query (syntax, unknown column or function, types).
    #[error("cannot plan the SQL: {message}\n  in: {sql}")]
    Plan {
        /// DataFusion's message, or what this crate's planner refused.
        message: String,
        /// The query.
        sql: String,
        /// DataFusion's error, where it refused the query.
        #[source]
        source: Option<BoxError>,
    },

    /// The query needs state across batches (or is not a query over the table).
    #[error("unsupported SQL: {clause} {reason}\n  in: {sql}")]
    Unsupported {
        /// The clause, as the user wrote it (`GROUP BY`, `JOIN`, `ORDER BY`...).
        clause: &'static str,
        /// Why it cannot run.
        reason: String,
        /// The query.
        sql: String,
    },

    /// A batch did not fit the declared input schema.
    #[error("the stream does not match the SQL input schema: {0}")]
    Input(String),

    /// A watermark declaration is malformed or does not fit the query.
    #[error("bad watermark: {0}")]
    Watermark(String),

    /// Evaluating the query on a batch failed.
    #[error("evaluating the SQL failed: {message}\n  in: {sql}")]
    Execution {
        /// DataFusion's or Arrow's message.
        message: String,
        /// The query.
        sql: String,
        /// DataFusion's or Arrow's error, where one failed.
        #[source]
        source: Option<BoxError>,
    },
}

/// The error of a library this crate calls, kept as the cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<SqlError> for operators_core::Error {
    fn from(e: SqlError) -> Self {
        let key = match &e {
            SqlError::Schema(_) | SqlError::Input(_) => "sql.schema",
            SqlError::Plan { .. } | SqlError::Unsupported { .. } => "sql",
            SqlError::Watermark(_) => "sql.watermark",
            SqlError::Execution { .. } => {
                return operators_core::Error::external("SQL transform", false, e);
            }
        };
        operators_core::Error::config(key, e.to_string())
    }
}
