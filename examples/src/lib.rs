//! # operators-examples
//!
//! One runnable example per pipeline kind, written in plain Rust against the library
//! crates — the way a service embeds them. Each is a file under `examples/`:
//!
//! ```text
//! cargo run -p operators-examples --example csv_sql_files
//! cargo run -p operators-examples --example window_tumbling_event_time
//! ```
//!
//! | example | shows |
//! |---|---|
//! | `csv_sql_files` | CSV files through SQL into JSON part files |
//! | `parquet_orc_files` | Parquet and ORC directories into Parquet files |
//! | `nest_stdout` | the toolkit's "merge" (nesting fields into `feas`) to stdout |
//! | `keyed_running_count` | keyed state in a custom transform, exactly once across failures |
//! | `window_tumbling_event_time`, `window_sliding_event_time`, `window_session_event_time` | event-time windows |
//! | `window_count`, `window_processing_time`, `window_allowed_lateness` | count and processing-time windows, late data |
//!
//! The `operator` runner and its job server are in the `operators-runner` package. This
//! library has no items of its own.

#![warn(missing_docs)]
