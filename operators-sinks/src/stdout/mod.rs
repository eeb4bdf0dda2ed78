//! Prints records to standard output as JSON lines (at-least-once; for trying things out).
//!
//! ```
//! use operators_sinks::stdout::StdoutSink;
//! let sink = StdoutSink; // `sink.type=stdout` in the runner
//! # let _ = sink;
//! ```

mod sink;
#[cfg(test)]
mod tests;

pub use sink::StdoutSink;
