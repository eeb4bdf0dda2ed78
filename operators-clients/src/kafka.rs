//! Kafka client settings, shared by the Kafka source and the Kafka sink.
//!
//! Clients are librdkafka's (through `rdkafka`). Settings pass through to librdkafka
//! unchanged, except that the names of the Java client that the toolkit's users know
//! and librdkafka spells differently are translated (`buffer.memory`,
//! `send.buffer.bytes`, `max.request.size`…), and Java-only settings (serializer
//! classes) are ignored with a warning instead of failing. Secrets (`sasl.password`,
//! `ssl.key.password`…) never appear in `Debug` output or errors.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::ClientError;
use operators_core::secret::{MASK, is_secret_key, redact_url};

/// Brokers and librdkafka properties of one Kafka client.
///
/// ```
/// use operators_clients::kafka::KafkaConfig;
/// let cfg = KafkaConfig::new("sink.kafka", "127.0.0.1:9092")?
///     .with_property("buffer.memory", "67108864")? // the Java client's name
///     .with_property("sasl.password", "secret")?;
/// assert_eq!(cfg.property("queue.buffering.max.kbytes"), Some("65536"));
/// assert!(!format!("{cfg:?}").contains("secret"));
/// # Ok::<(), operators_clients::ClientError>(())
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    prefix: String,
    brokers: String,
    properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_key(k) { MASK } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig").field("brokers", &self.brokers).field("properties", &props).finish()
    }
}

impl KafkaConfig {
    /// Settings for a client of `brokers` (`host:port[,host:port…]`). `prefix` is how the
    /// user spells these settings (`source.kafka`, `sink.kafka`) and names them in errors.
    pub fn new(prefix: &str, brokers: &str) -> Result<Self, ClientError> {
        let brokers = brokers.trim();
        let key = format!("{prefix}.brokers");
        if brokers.is_empty() {
            return Err(ClientError::config(key, "no brokers given; expected host:port[,host:port…]"));
        }
        for b in brokers.split(',') {
            let b = b.trim();
            let b = b.rsplit_once("://").map_or(b, |(_, rest)| rest);
            let port_ok = b.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(ClientError::config(key, format!("`{b}` is not host:port")));
            }
        }
        Ok(Self { prefix: prefix.to_string(), brokers: brokers.to_string(), properties: BTreeMap::new() })
    }

    /// Sets a librdkafka property; Java client names are translated (see the module docs).
    pub fn with_property(mut self, key: &str, value: &str) -> Result<Self, ClientError> {
        let key = key.trim();
        let full = format!("{}.{key}", self.prefix);
        let translated = match key {
            "bootstrap.servers" | "metadata.broker.list" => {
                let checked = Self::new(&self.prefix, value)?;
                self.brokers = checked.brokers;
                return Ok(self);
            }
            "buffer.memory" => {
                let bytes: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| ClientError::config(&full, format!("`{value}` is not a number of bytes")))?;
                Some(("queue.buffering.max.kbytes".to_string(), (bytes / 1024).max(1).to_string()))
            }
            "send.buffer.bytes" => Some(("socket.send.buffer.bytes".to_string(), value.to_string())),
            "receive.buffer.bytes" => Some(("socket.receive.buffer.bytes".to_string(), value.to_string())),
            "max.request.size" => Some(("message.max.bytes".to_string(), value.to_string())),
            "key.serializer"
            | "value.serializer"
            | "key.deserializer"
            | "value.deserializer"
            | "interceptor.classes"
            | "partitioner.class"
            | "max.poll.records" => {
                tracing::warn!(
                    "{full} is a setting of the Java client with no librdkafka equivalent; ignored \
                     (records are JSON; the batch size is source.batch.size)"
                );
                None
            }
            _ => Some((key.to_string(), value.to_string())),
        };
        if let Some((k, v)) = translated {
            self.properties.insert(k, v);
        }
        Ok(self)
    }

    /// Applies the toolkit's `*.kafka.version` (`0.9`, `0.10`, `0.11` or newer). Brokers
    /// from 0.10 on tell their protocol versions themselves; 0.9 needs librdkafka's
    /// fallback settings.
    pub fn with_version(self, version: &str) -> Result<Self, ClientError> {
        let v = version.trim();
        let key = format!("{}.version", self.prefix);
        let mut parts = v.split('.').map(str::parse::<u32>);
        let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
            return Err(ClientError::config(key, format!("`{v}` is not a Kafka version such as 0.11 or 2.8")));
        };
        if (major, minor) < (0, 9) {
            return Err(ClientError::config(key, format!("Kafka {v} is too old; 0.9 is the oldest supported")));
        }
        if (major, minor) < (0, 10) {
            self.with_property("api.version.request", "false")?.with_property("broker.version.fallback", "0.9.0")
        } else {
            Ok(self)
        }
    }

    /// The brokers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A property as it will be given to librdkafka.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// Sets a property unless the user did.
    pub fn set_default(&mut self, key: &str, value: &str) {
        self.properties.entry(key.to_string()).or_insert_with(|| value.to_string());
    }

    /// Removes a property and returns its value.
    pub fn take_property(&mut self, key: &str) -> Option<String> {
        self.properties.remove(key)
    }

    /// The setting prefix (`source.kafka`, `sink.kafka`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All properties (secrets included: for building clients, not for printing).
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A librdkafka configuration with the brokers and every property.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Turns a client-creation error into one that names the setting.
    pub fn creation_error(&self, e: KafkaError) -> ClientError {
        let (property, message) = match &e {
            // rdkafka's text of this error ends with the refused value, which may be a key
            // or a password (this build of librdkafka refuses every `ssl.*` property): it is
            // left out, and the property is named instead.
            KafkaError::ClientConfig(_, description, key, value) => {
                // librdkafka's own description quotes a value it cannot parse as one of a
                // property's choices; masked too, in case that value is a secret's.
                let description =
                    if value.is_empty() { description.clone() } else { description.replace(value.as_str(), MASK) };
                (Some(key.as_str()), format!("{description} (value not shown)"))
            }
            other => (None, redact_url(&other.to_string())),
        };
        let key = match property.filter(|p| !p.is_empty()) {
            Some(p) => format!("{}.{p}", self.prefix),
            None => self.prefix.clone(),
        };
        ClientError::config(key, format!("the Kafka client refused its settings: {message}"))
    }
}

/// Whether an rdkafka error may pass by retrying (a broker down, a timeout).
pub fn is_retryable(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::InvalidConfig
            | C::InvalidArgument
            | C::MessageSizeTooLarge
            | C::AutoOffsetReset
            | C::InvalidRecord
            | C::Fatal
            | C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::UnsupportedVersion
            | C::UnsupportedFeature,
        ) => false,
        _ => !matches!(e, KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)),
    }
}

/// Whether a restarted task, with new clients, may succeed where this error happened:
/// the job-level rule, where [`is_retryable`] is the rule of one client's call.
///
/// Everything [`is_retryable`] lets pass, and the errors that end one client instance
/// but not the next: a fatal error of an idempotent or transactional producer (librdkafka
/// refuses that instance from then on), a producer fenced or with an outdated epoch (the
/// restarted task's producer initialises a new epoch).
pub fn restart_may_help(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    is_retryable(e) || matches!(e.rdkafka_error_code(), Some(C::Fatal | C::ProducerFenced | C::InvalidProducerEpoch))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn brokers_are_checked() {
        assert!(KafkaConfig::new("source.kafka", "").is_err());
        let e = KafkaConfig::new("source.kafka", "localhost").unwrap_err().to_string();
        assert!(e.contains("source.kafka.brokers") && e.contains("host:port"), "{e}");
        KafkaConfig::new("source.kafka", "a:1, b:2,SASL_SSL://c:9093").unwrap();
    }

    #[test]
    fn java_names_are_translated_and_secrets_hidden() {
        let c = KafkaConfig::new("sink.kafka", "h:1")
            .unwrap()
            .with_property("send.buffer.bytes", "262144")
            .unwrap()
            .with_property("value.serializer", "org.apache.kafka.common.serialization.StringSerializer")
            .unwrap()
            .with_property("sasl.password", "hunter2")
            .unwrap();
        assert_eq!(c.property("socket.send.buffer.bytes"), Some("262144"));
        assert_eq!(c.property("value.serializer"), None);
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = KafkaConfig::new("sink.kafka", "h:1").unwrap().with_property("buffer.memory", "lots").unwrap_err();
        assert!(e.to_string().contains("sink.kafka.buffer.memory"), "{e}");
    }

    #[test]
    fn retry_rules() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let produce = |c| KafkaError::MessageProduction(c);
        // A broker away or slow: the same client gets there.
        assert!(is_retryable(&produce(C::MessageTimedOut)) && restart_may_help(&produce(C::MessageTimedOut)));
        assert!(is_retryable(&produce(C::BrokerTransportFailure)));
        // This producer instance is done, the next one is not.
        for c in [C::Fatal, C::ProducerFenced, C::InvalidProducerEpoch] {
            assert!(!is_retryable(&produce(c)) && restart_may_help(&produce(c)), "{c:?}");
        }
        // The same every time: a record too large, no such topic, refused credentials.
        for c in [C::MessageSizeTooLarge, C::UnknownTopicOrPartition, C::TopicAuthorizationFailed] {
            assert!(!restart_may_help(&produce(c)), "{c:?}");
        }
        assert!(!restart_may_help(&KafkaError::ClientCreation("bad".into())));
    }

    #[test]
    fn versions() {
        let c = KafkaConfig::new("source.kafka", "h:1").unwrap().with_version("0.9").unwrap();
        assert_eq!(c.property("api.version.request"), Some("false"));
        let c = KafkaConfig::new("source.kafka", "h:1").unwrap().with_version("0.11").unwrap();
        assert_eq!(c.property("api.version.request"), None);
        assert!(KafkaConfig::new("source.kafka", "h:1").unwrap().with_version("eleven").is_err());
    }

    #[test]
    fn unknown_properties_are_named() {
        let c = KafkaConfig::new("source.kafka", "h:1").unwrap().with_property("no.such.thing", "1").unwrap();
        let e = c.client_config().create::<rdkafka::consumer::BaseConsumer>().err().unwrap();
        let msg = c.creation_error(e).to_string();
        assert!(msg.contains("source.kafka.no.such.thing"), "{msg}");
    }

    /// librdkafka's error text ends with the value it refused; a private key or password
    /// must not reach the job's exceptions that way.
    #[test]
    fn a_refused_secret_is_not_echoed() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIBsecretbody\n-----END PRIVATE KEY-----";
        for (key, value) in [
            ("ssl.key.pem", pem),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="pw-in-jaas";"#,
            ),
            ("sasl.oauthbearer.client.secret", "oauth-secret-1"),
        ] {
            let c = KafkaConfig::new("sink.kafka", "h:1").unwrap().with_property(key, value).unwrap();
            assert!(!format!("{c:?}").contains(value), "{key}");
            let Err(e) = c.client_config().create::<rdkafka::producer::BaseProducer>() else {
                continue; // accepted by this build of librdkafka: nothing echoed
            };
            let msg = c.creation_error(e).to_string();
            assert!(msg.contains(&format!("sink.kafka.{key}")), "{msg}");
            for part in ["MIIBsecretbody", "pw-in-jaas", "oauth-secret-1"] {
                assert!(!msg.contains(part), "{key}: {msg}");
            }
        }
    }
}
