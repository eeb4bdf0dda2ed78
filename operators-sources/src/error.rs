//! Errors of the sources.

/// Why a source cannot run or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A setting is missing, malformed or conflicts with another.
    #[error("invalid setting `{key}`: {message}")]
    Config {
        /// The setting (toolkit name where there is one, e.g. `source.path`).
        key: String,
        /// What is wrong.
        message: String,
    },

    /// The storage behind `path` failed.
    #[cfg(feature = "file")]
    #[error("cannot access `{path}`: {source}")]
    Storage {
        /// The file or directory.
        path: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },

    /// A file's schema differs from the first file's.
    #[error(
        "`{file}` does not have the schema of `{first}` (one directory holds files of one schema): \
         first difference at column {column}: {difference}"
    )]
    SchemaMismatch {
        /// The file being opened.
        file: String,
        /// The first file read.
        first: String,
        /// 1-based column number.
        column: usize,
        /// What differs.
        difference: String,
    },

    /// A file could not be decoded.
    #[error("cannot read `{file}`: {source}")]
    Decode {
        /// The file.
        file: String,
        /// The decoder's error (csv's, Arrow's, parquet's or orc-rust's).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The client settings of a database or Kafka are wrong.
    #[cfg(any(feature = "jdbc", feature = "kafka"))]
    #[error(transparent)]
    Client(#[from] operators_clients::ClientError),
}

/// `rows` when it is at least 1; a batch or fetch of no rows is refused naming `key`
/// (never raised to 1 behind the caller's back).
pub(crate) fn at_least_one(key: &str, rows: usize) -> Result<usize, SourceError> {
    if rows == 0 {
        return Err(SourceError::config(key, "must be at least 1 row"));
    }
    Ok(rows)
}

impl SourceError {
    /// A configuration error naming `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        SourceError::Config { key: key.into(), message: message.into() }
    }
}

impl From<SourceError> for operators_core::Error {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Config { key, message } => operators_core::Error::Config { key, message },
            SourceError::SchemaMismatch { .. } => operators_core::Error::config("source.path", e.to_string()),
            #[cfg(feature = "file")]
            SourceError::Storage { ref source, .. } => {
                // A missing file is not going to appear by retrying; other storage errors may pass.
                let retryable = !matches!(source, object_store::Error::NotFound { .. });
                operators_core::Error::external("file source", retryable, e)
            }
            SourceError::Decode { .. } => operators_core::Error::external("file source", false, e),
            #[cfg(any(feature = "jdbc", feature = "kafka"))]
            SourceError::Client(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_of_no_rows_is_refused_naming_the_setting() {
        assert_eq!(super::at_least_one("source.batch.size", 1).unwrap(), 1);
        let e = super::at_least_one("source.batch.size", 0).unwrap_err().to_string();
        assert!(e.contains("`source.batch.size`") && e.contains("at least 1"), "{e}");
        #[cfg(feature = "csv")]
        assert!(crate::file::text::TextFormat::csv().with_batch_size(0).is_err());
    }
}
