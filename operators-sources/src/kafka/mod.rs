//! Kafka: the source of JSON records from topics.
//!
//! The client settings it shares with the Kafka sink ([`KafkaConfig`], the retry rule
//! [`is_retryable`], [`restart_may_help`]) live in `operators-clients` and are re-exported here.

mod source;
#[cfg(test)]
mod tests;

pub use operators_clients::kafka::{KafkaConfig, is_retryable, restart_may_help};
pub use source::{KafkaSource, StartOffsets};
