//! Record codecs shared by connectors: JSON objects in and out of Arrow batches,
//! changelog rows as Debezium change events, and Arrow IPC streams of batches kept in
//! committables.

pub mod debezium;
pub mod ipc;
pub mod json;

pub use json::{JsonDecoder, JsonEncoder, JsonRecord};
