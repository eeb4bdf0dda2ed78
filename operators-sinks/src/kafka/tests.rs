//! Unit tests of the Kafka sink's pieces that need no broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode as C;

use super::service::kafka_error;

/// librdkafka's error, found down the chain of causes of the error the sink returns.
fn cause(e: &operators_core::Error) -> Option<&KafkaError> {
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(k) = err.downcast_ref::<KafkaError>() {
            return Some(k);
        }
        next = err.source();
    }
    None
}

#[test]
fn errors_keep_librdkafka_error_as_their_cause() {
    let e = kafka_error("delivery to orders/3", KafkaError::MessageProduction(C::MessageSizeTooLarge));
    assert!(e.to_string().contains("delivery to orders/3"), "{e}");
    assert_eq!(cause(&e).and_then(KafkaError::rdkafka_error_code), Some(C::MessageSizeTooLarge));
}

#[test]
fn retrying_is_decided_from_the_cause() {
    let retryable = |code| kafka_error("sending", KafkaError::MessageProduction(code)).is_retryable();
    // The same every time: a restart would fail the same way.
    for code in [C::MessageSizeTooLarge, C::UnknownTopicOrPartition, C::TopicAuthorizationFailed, C::InvalidConfig] {
        assert!(!retryable(code), "{code:?}");
    }
    // A broker away, a timeout; or this producer instance done and the next one not.
    for code in [C::MessageTimedOut, C::BrokerTransportFailure, C::AllBrokersDown, C::Fatal, C::ProducerFenced] {
        assert!(retryable(code), "{code:?}");
    }
}
