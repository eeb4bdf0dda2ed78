//! Errors of the sinks.
//!
//! [`SinkError::Config`] is every sink's: a setting named by its toolkit key. The other
//! variants are the file sink's, the one sink whose failures are its own I/O. The sinks
//! built on a client (Kafka, Elasticsearch, databases) report that client's error as the
//! `#[source]` of an [`operators_core::Error::External`] naming the sink, with
//! `retryable` decided from the cause (`kafka::service`, `elasticsearch::retry`,
//! `operators_clients::jdbc::is_transient`).

use std::path::PathBuf;

/// Why a sink cannot write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A setting is missing, malformed or conflicts with another.
    #[error("invalid setting `{key}`: {message}")]
    Config {
        /// The setting.
        key: String,
        /// What is wrong.
        message: String,
    },

    /// The file sink: a file operation failed.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file sink: encoding records failed.
    #[error("cannot encode records for `{}`: {message}", path.display())]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },

    /// The file sink: a pending part file that a committed checkpoint needs is gone.
    #[error("part file `{}` of a committed checkpoint is missing (was the output directory changed by hand?)", path.display())]
    LostPart {
        /// The in-progress file that should have been there.
        path: PathBuf,
    },
}

impl SinkError {
    /// A configuration error naming `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        SinkError::Config { key: key.into(), message: message.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SinkError::Io { path: path.into(), source }
    }
}

impl From<SinkError> for operators_core::Error {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Config { key, message } => operators_core::Error::Config { key, message },
            // An I/O error may pass (a full disk, a NameNode restarting); a record that cannot
            // be encoded, or a part removed by hand, will not come back by restarting.
            SinkError::Io { .. } => operators_core::Error::external("file sink", true, e),
            SinkError::Encode { .. } | SinkError::LostPart { .. } => {
                operators_core::Error::external("file sink", false, e)
            }
        }
    }
}
