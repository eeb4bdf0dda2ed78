//! # operators-sql
//!
//! SQL over record-batch streams, on DataFusion: the toolkit's `stream.sql` step.
//! A query is planned once against the declared input schema and then evaluated on every
//! batch — projections, filters, scalar and string functions, `CASE`, casts, and the
//! toolkit's `arraySplit` UDF.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, StringArray};
//! use arrow::record_batch::RecordBatch;
//! use operators_sql::{SqlTransformBuilder, display_value};
//!
//! let sql = SqlTransformBuilder::new(
//!     "select id, city, name, concat(x, '-', y) as location, arraySplit(tags, '|') as tags from t1",
//! )
//! .with_schema_string(r#"{"city":"String","name":"String","x":"String","y":"String","tags":"String","id":"BigInt"}"#)?
//! .build()?;
//!
//! let batch = RecordBatch::try_new(
//!     sql.input_schema(),
//!     vec![
//!         Arc::new(StringArray::from(vec!["beijing"])),
//!         Arc::new(StringArray::from(vec!["n1"])),
//!         Arc::new(StringArray::from(vec!["116"])),
//!         Arc::new(StringArray::from(vec!["39"])),
//!         Arc::new(StringArray::from(vec!["t1|t2"])),
//!         Arc::new(Int64Array::from(vec![1])),
//!     ],
//! )?;
//! let (out, bad) = sql.process(&batch)?;
//! assert!(bad.is_empty());
//! assert_eq!(display_value(out.column(3).as_ref(), 0), "116-39");
//! assert_eq!(display_value(out.column(4).as_ref(), 0), "[t1, t2]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Schema strings (`struct<id:BigInt,...>`, ordered JSON) and the toolkit's type table are
//! in [`operators_core::schema`], re-exported here as [`schema`]: sources that need a
//! schema but no SQL do not have to compile DataFusion.
//!
//! Queries that need state across batches — `GROUP BY`, `JOIN`, `ORDER BY`, window
//! functions, `DISTINCT`, `LIMIT` — are refused when the transform is built.

#![warn(missing_docs)]

mod error;
mod transform;
pub mod udf;

pub use error::SqlError;
pub use operators_core::schema;
pub use transform::{SqlTransform, SqlTransformBuilder, display_value, nullable};
