//! Errors of the sinks.

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

    /// A file operation failed.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Encoding records failed.
    #[error("cannot encode records for `{}`: {message}", path.display())]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },

    /// A pending part file that a committed checkpoint needs is gone.
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
            SinkError::Io { .. } => operators_core::Error::external("file sink", true, e),
            SinkError::Encode { .. } | SinkError::LostPart { .. } => {
                operators_core::Error::external("file sink", false, e)
            }
        }
    }
}
