//! Built-in operators for tests, examples and benchmarks, and the record-shaping
//! transforms of the original toolkit.
//!
//! - [`GeneratorSource`]: deterministic rows, bounded or not, optionally rate-limited.
//! - [`MapTransform`] and [`FilterTransform`]: batch functions.
//! - [`DiscardSink`]: counts and drops.
//! - [`TwoPhaseMemorySink`]: an exactly-once sink whose output ([`CommittedOutput`])
//!   shows only what committed checkpoints made visible.
//! - [`FaultInjector`]: fails chosen calls, counted across restarts, to test recovery.
//! - [`RateLimitTransform`]: at most N rows per second.
//! - [`DedupTransform`]: the toolkit's `kafka_deduplication`, first row per key within a TTL.
//! - [`NestTransform`]: the toolkit's "merge": nest all fields but a few into one struct.

mod dedup;
mod discard;
mod faults;
mod generator;
mod map;
mod memory_sink;
mod nest;
mod rate_limit;

pub use dedup::DedupTransform;
pub use discard::DiscardSink;
pub use faults::FaultInjector;
pub use generator::GeneratorSource;
pub use map::{FilterTransform, MapTransform};
pub use memory_sink::{CommittedOutput, TwoPhaseMemorySink};
pub use nest::NestTransform;
pub use rate_limit::RateLimitTransform;
