//! Test support for the operators workspace. Not for production use.
//!
//! - [`kafka`]: a single-node Kafka broker with real transaction semantics (commit and
//!   abort markers, last stable offset, fencing, timeouts), harnesses that run against
//!   it, against librdkafka's mock cluster or against a real cluster in `KAFKA_BROKERS`.
//! - [`es`]: an HTTP server with the subset of Elasticsearch's API the sink uses (bulk
//!   with per-item statuses, versions, partial updates, delete-by-query, auth, several
//!   nodes, injectable faults), and a harness that also runs against `ES_URL`.
//!
//! ```no_run
//! use operators_testkit::kafka::{Isolation, TestKafka};
//!
//! let kafka = TestKafka::start(); // KAFKA_BROKERS, or the test broker on loopback
//! let topic = kafka.topic("input", 2).unwrap();
//! kafka.produce_values(&topic, 2, &[r#"{"id":1}"#, r#"{"id":2}"#]).unwrap();
//! let read = kafka.read(&topic, Isolation::ReadCommitted).unwrap();
//! assert_eq!(read.len(), 2);
//! ```

pub mod es;
pub mod kafka;
