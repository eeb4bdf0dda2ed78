//! Hive tables and queries, read through HiveServer2.
//!
//! HiveServer2 speaks Thrift (`TCLIService`); no Rust crate speaks it, so this module
//! has its own client on the `thrift` crate's binary protocol: [`transport`] (SASL
//! `PLAIN` or `NOSASL` framing over TCP), the calls (`OpenSession`, `ExecuteStatement`,
//! `GetOperationStatus`, `GetResultSetMetadata`, `FetchResults`, `CloseOperation`,
//! `CloseSession`), and the columnar row sets read straight into Arrow arrays (the type
//! table is in the `columns` docs below [`HiveSession::fetch`]). The source runs one
//! statement and is exactly once for an import (see [`HiveSource`]).
//!
//! ```no_run
//! use operators_sources::hive::{HiveConfig, HiveSession};
//!
//! # fn run() -> operators_core::Result<()> {
//! let config = HiveConfig::parse("source.db.url", "jdbc:hive2://127.0.0.1:10000/default", Some("etl"), Some("pw"))?;
//! let mut session = HiveSession::open(&config)?;
//! if let Some(query) = session.execute("select * from lyh limit 3")? {
//!     while let Some(batch) = session.fetch(&query, 10_000)? {
//!         println!("{} rows of {:?}", batch.num_rows(), batch.schema());
//!     }
//!     session.close_query(query)?;
//! }
//! session.close();
//! # Ok(()) }
//! ```
//!
//! Hive types become Arrow types as follows: `boolean`, `tinyint`…`bigint`, `float`,
//! `double`, `binary` as their Arrow counterparts; `decimal(p,s)` as Decimal128(p,s);
//! `date` as Date32; `timestamp` as Timestamp(ns) without a zone; `string`, `varchar`,
//! `char` as Utf8; `array`, `map`, `struct` as Utf8 holding the JSON text HiveServer2
//! returns for them. Authentication: SASL `PLAIN` with a user and password (servers
//! with `hive.server2.authentication` `NONE`, `LDAP`, `CUSTOM`, `PAM`) or `NOSASL`
//! (`;auth=noSasl` in the URL). Not covered: Kerberos, TLS, the HTTP transport,
//! ZooKeeper discovery (each refused by name when the URL asks for it).

mod client;
mod columns;
mod protocol;
mod source;
pub mod transport;

pub use client::{DEFAULT_PORT, DEFAULT_SOCKET_TIMEOUT, HiveConfig, HiveQuery, HiveSession, ServerError};
pub use source::{DEFAULT_FETCH_SIZE, HiveSource};
