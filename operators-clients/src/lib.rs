//! # operators-clients
//!
//! Client settings shared by the source and the sink of one system, so that neither
//! connector crate depends on the other: Kafka client configuration and the rule of which
//! librdkafka errors pass by retrying (feature `kafka`); database URLs, connection pools,
//! identifier quoting, the column-type mapping to Arrow and the rule of which driver errors
//! are transient (feature `jdbc`). Secrets stay in [`operators_core::secret::Secret`] and
//! are masked in every `Debug` output and error here.
//!
//! ```
//! # #[cfg(feature = "kafka")] {
//! use operators_clients::kafka::KafkaConfig;
//! let kafka = KafkaConfig::new("sink.kafka", "127.0.0.1:9092")?.with_property("sasl.password", "secret")?;
//! assert!(!format!("{kafka:?}").contains("secret"));
//! # }
//! # Ok::<(), operators_clients::ClientError>(())
//! ```
//!
//! | feature | what |
//! |---|---|
//! | `kafka` | `kafka::KafkaConfig`, `kafka::is_retryable` |
//! | `jdbc` | `jdbc::DbConfig`, `jdbc::DbPool`, `jdbc::ColumnKind`, `jdbc::is_transient`, `jdbc::quote_ident` |
//! | `test-util` | `jdbc::test_util::TestDb`: a fresh schema or database per test |

#![warn(missing_docs)]

#[cfg(feature = "jdbc")]
pub mod jdbc;
#[cfg(feature = "kafka")]
pub mod kafka;

/// The result of this crate's functions.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client cannot be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A setting is missing, malformed or refused by the client library.
    #[error("invalid setting `{key}`: {message}")]
    Config {
        /// The setting as the user spells it (`sink.kafka.brokers`, `source.db.url`).
        key: String,
        /// What is wrong (never a secret's value).
        message: String,
    },
}

impl ClientError {
    /// A configuration error naming `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        ClientError::Config { key: key.into(), message: message.into() }
    }
}

impl From<ClientError> for operators_core::Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Config { key, message } => operators_core::Error::Config { key, message },
        }
    }
}
