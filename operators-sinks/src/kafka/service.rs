//! The producer side: librdkafka producers, their delivery failures, and the sink's errors.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use operators_clients::kafka::{KafkaConfig, restart_may_help};
use operators_core::operator::blocking;
use operators_core::{Error, Result};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use super::recovery::RecoveryError;

/// Remembers the first delivery failure of a producer: where, and librdkafka's error.
#[derive(Default)]
pub(super) struct DeliveryContext {
    failure: Mutex<Option<(String, KafkaError)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if failure.is_none() {
                *failure = Some((format!("delivery to {}/{}", msg.topic(), msg.partition()), e.clone()));
            }
        }
    }
}

pub(super) type KafkaProducer = ThreadedProducer<DeliveryContext>;

pub(super) fn take_failure(producer: &KafkaProducer) -> Option<(String, KafkaError)> {
    producer.context().failure.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A librdkafka error of the sink, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
struct KafkaSinkError {
    context: String,
    #[source]
    source: KafkaError,
}

/// Whether a restart may help is decided from librdkafka's error code
/// ([`restart_may_help`]): a record larger than the broker takes or a topic that does
/// not exist fails the job at once instead of through every restart attempt.
pub(super) fn kafka_error(context: impl Into<String>, e: KafkaError) -> Error {
    Error::external("Kafka sink", restart_may_help(&e), KafkaSinkError { context: context.into(), source: e })
}

pub(super) fn recovery_error(e: RecoveryError) -> Error {
    let retryable = !matches!(e, RecoveryError::Unsupported(_));
    Error::external("Kafka sink recovery", retryable, e)
}

pub(super) fn create_producer(config: &KafkaConfig, transactional: Option<(&str, i32)>) -> Result<KafkaProducer> {
    let mut client = config.client_config();
    match transactional {
        Some((tid, timeout_ms)) => {
            client.set("transactional.id", tid).set("transaction.timeout.ms", timeout_ms.to_string());
        }
        None => {
            if config.property("enable.idempotence").is_none() {
                client.set("enable.idempotence", "true");
            }
        }
    }
    let producer: KafkaProducer =
        client.create_with_context(DeliveryContext::default()).map_err(|e| Error::from(config.creation_error(e)))?;
    if let Some((tid, timeout_ms)) = transactional {
        let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(60_000).min(120_000));
        producer
            .init_transactions(timeout)
            .map_err(|e| kafka_error(format!("initialising transactional id `{tid}`"), e))?;
    }
    Ok(producer)
}

pub(super) fn drop_in_background(producer: Arc<KafkaProducer>) {
    // Destroying a librdkafka instance waits for its threads; keep that off the workers.
    tokio::task::spawn_blocking(move || drop(producer));
}

pub(super) async fn flush(producer: Arc<KafkaProducer>) -> Result<()> {
    blocking("Kafka sink", move || {
        producer.flush(rdkafka::util::Timeout::Never).map_err(|e| kafka_error("flushing", e))?;
        match take_failure(&producer) {
            Some((context, e)) => Err(kafka_error(context, e)),
            None => Ok(()),
        }
    })
    .await
}
