//! Test support for the operators workspace. Not for production use.
//!
//! - [`kafka`]: harnesses for the real Apache Kafka clusters the project's service
//!   scripts start (`testing/services/kafka.sh`: one node in `KAFKA_BROKERS`, three in
//!   `KAFKA_CLUSTER_BROKERS`, whose nodes a test can kill), and librdkafka's mock cluster
//!   for errors on chosen requests.
//! - [`es`]: a harness for the real OpenSearch in `ES_URL` (`testing/services/opensearch.sh`),
//!   and an HTTP server with the subset of Elasticsearch's API the sink uses, for the
//!   faults a real server cannot be made to show (per-item 429/503/409, a dropped
//!   connection after applying a bulk, slow answers, nodes going down, Elasticsearch 6).
//! - [`tables`]: MySQL and PostgreSQL tables of every column type, with random rows and
//!   writes, for the change-data-capture tests.
//!
//! ```no_run
//! use operators_testkit::kafka::{Isolation, TestKafka};
//!
//! let kafka = TestKafka::start(); // KAFKA_BROKERS, default 127.0.0.1:9092
//! let topic = kafka.topic("input", 2).unwrap();
//! kafka.produce_values(&topic, 2, &[r#"{"id":1}"#, r#"{"id":2}"#]).unwrap();
//! let read = kafka.read(&topic, Isolation::ReadCommitted).unwrap();
//! assert_eq!(read.len(), 2);
//! ```

pub mod changelog;
pub mod es;
pub mod kafka;
pub mod tables;
