//! The one error type of the runtime.
//!
//! Every variant says what went wrong and where (setting name, operator id, file path,
//! checkpoint id). [`Error::kind`] classifies an error as a user mistake, an external
//! failure or an internal bug, and [`Error::is_retryable`] tells restart logic whether
//! trying again can help.

use std::path::PathBuf;

use arrow::error::ArrowError;

/// A boxed error from a connector or user code, kept with its cause chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Broad class of an error, for logging, metrics and deciding who has to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Wrong configuration or input: the user must change something.
    User,
    /// An external system (file system, broker, database) failed.
    External,
    /// A bug or broken invariant in the runtime or an operator.
    Internal,
    /// The job was canceled; not a failure.
    Canceled,
}

/// Errors of the dataflow runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing, malformed or conflicts with another one.
    #[error("invalid setting `{key}`: {message}")]
    Config {
        /// The setting, as the user wrote it (for example `checkpoint.interval`).
        key: String,
        /// What is wrong with it and what would be accepted.
        message: String,
    },

    /// The pipeline graph cannot run as built.
    #[error("invalid pipeline at operator `{operator}`: {message}")]
    Graph {
        /// The operator id the problem is attached to.
        operator: String,
        /// What is wrong.
        message: String,
    },

    /// A file-system operation failed.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An Arrow computation failed.
    #[error("{context}: {source}")]
    Arrow {
        /// What the runtime was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: ArrowError,
    },

    /// A state file or checkpoint metadata could not be decoded.
    #[error("corrupt state in `{}`: {reason}", path.display())]
    CorruptState {
        /// The file that failed to decode.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },

    /// Keyed or operator state could not be read or written.
    #[error("state error in operator `{operator}`: {message}")]
    State {
        /// Operator id.
        operator: String,
        /// What went wrong.
        message: String,
    },

    /// Restoring from a checkpoint or savepoint is impossible as asked.
    #[error("cannot restore from `{}`: {message}", path.display())]
    Restore {
        /// Checkpoint or savepoint directory.
        path: PathBuf,
        /// What prevents the restore.
        message: String,
    },

    /// A checkpoint did not complete (declined, timed out, or storage failed).
    #[error("checkpoint {checkpoint_id} failed: {reason}")]
    CheckpointFailed {
        /// The checkpoint id.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },

    /// More checkpoints failed in a row than `tolerable_failures` allows.
    #[error("{failures} consecutive checkpoint failures exceed the tolerable number {tolerable}; last: {last}")]
    TooManyCheckpointFailures {
        /// Consecutive failures seen.
        failures: u32,
        /// The configured limit.
        tolerable: u32,
        /// The last failure's reason.
        last: String,
    },

    /// An operator (connector or user code) returned an error.
    #[error("operator `{operator}` (subtask {subtask}) failed: {source}")]
    Operator {
        /// Operator id.
        operator: String,
        /// Subtask index.
        subtask: usize,
        /// The operator's error.
        #[source]
        source: Box<Error>,
    },

    /// An operator task panicked.
    #[error("operator `{operator}` (subtask {subtask}) panicked: {message}")]
    Panic {
        /// Operator id.
        operator: String,
        /// Subtask index.
        subtask: usize,
        /// The panic payload, when it was a string.
        message: String,
    },

    /// A record could not be processed and the operator is configured to fail on bad records.
    #[error("bad record at {location}: {reason}")]
    BadRecord {
        /// Where the record came from (file and line, topic/partition/offset, ...).
        location: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An error from a connector's client library, classified.
    #[error("{context}: {source}")]
    External {
        /// What the connector was doing (never contains credentials).
        context: String,
        /// Whether retrying the same operation may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The job was canceled.
    #[error("job canceled")]
    Canceled,

    /// A broken invariant inside the runtime.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A configuration error naming `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { key: key.into(), message: message.into() }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// An Arrow error with context.
    pub fn arrow(context: impl Into<String>, source: ArrowError) -> Self {
        Error::Arrow { context: context.into(), source }
    }

    /// An error from an external system.
    pub fn external(context: impl Into<String>, retryable: bool, source: impl Into<BoxError>) -> Self {
        Error::External { context: context.into(), retryable, source: source.into() }
    }

    /// A bad record error.
    pub fn bad_record(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadRecord { location: location.into(), reason: reason.into() }
    }

    /// Broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::Graph { .. } | Error::BadRecord { .. } => ErrorKind::User,
            Error::Restore { .. } => ErrorKind::User,
            Error::Io { .. }
            | Error::External { .. }
            | Error::CheckpointFailed { .. }
            | Error::TooManyCheckpointFailures { .. }
            | Error::CorruptState { .. } => ErrorKind::External,
            Error::Operator { source, .. } => source.kind(),
            Error::Canceled => ErrorKind::Canceled,
            Error::Arrow { .. } | Error::State { .. } | Error::Panic { .. } | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether retrying (restarting the job) may make this error go away.
    ///
    /// Configuration errors and bad records fail the same way every time; external
    /// failures may be transient.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::External { retryable, .. } => *retryable,
            Error::Operator { source, .. } => source.is_retryable(),
            Error::Config { .. }
            | Error::Graph { .. }
            | Error::Restore { .. }
            | Error::BadRecord { .. }
            | Error::Canceled => false,
            _ => true,
        }
    }

    /// Wraps this error with the operator and subtask it happened in (once).
    pub(crate) fn in_operator(self, operator: &str, subtask: usize) -> Self {
        match self {
            e @ (Error::Operator { .. } | Error::Panic { .. } | Error::Canceled) => e,
            other => Error::Operator { operator: operator.to_string(), subtask, source: Box::new(other) },
        }
    }
}

impl From<ArrowError> for Error {
    fn from(source: ArrowError) -> Self {
        Error::Arrow { context: "arrow".to_string(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_names_the_key() {
        let e = Error::config("checkpoint.interval", "must be greater than 0");
        assert_eq!(e.to_string(), "invalid setting `checkpoint.interval`: must be greater than 0");
        assert_eq!(e.kind(), ErrorKind::User);
        assert!(!e.is_retryable());
    }

    #[test]
    fn operator_wrapping_keeps_classification() {
        let e = Error::external("write", true, std::io::Error::other("boom")).in_operator("sink", 2);
        assert!(e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::External);
        assert!(e.to_string().contains("operator `sink` (subtask 2)"));
        // Wrapping twice does not nest.
        let again = e.in_operator("other", 0);
        assert!(again.to_string().contains("`sink`"));
    }
}
