//! Record codecs shared by connectors: JSON objects in and out of Arrow batches.

pub mod json;

pub use json::{JsonDecoder, JsonEncoder, JsonRecord};
