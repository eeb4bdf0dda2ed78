//! Writes rows into a database table: insert or upsert, batched, at least or exactly once.
//!
//! Rows are written with multi-row `INSERT` statements (`ON CONFLICT … DO UPDATE` on
//! PostgreSQL and SQLite, `ON DUPLICATE KEY UPDATE` on MySQL/MariaDB for upserts), a
//! statement every `batch.size` rows or `flush interval`.
//!
//! **At least once**: statements run as they fill, transient errors (lost connections,
//! deadlocks) are retried with backoff, and every barrier flushes.
//!
//! **Exactly once**: the rows of one checkpoint are kept with the checkpoint (the sink's
//! committable) and written when the checkpoint completes, in one transaction that also
//! upserts a row of a small progress table — `(sink, run, subtask) → checkpoint id`. The
//! database thus records which checkpoint's rows are in. Committing and recovering are one
//! code path: given a checkpoint's rows, look up the progress table, and write them only if
//! it does not already list that checkpoint. A crash at any instant — before the
//! checkpoint completes, after it but before the commit, or during the commit — leaves the
//! rows either in or out together with their progress row, and the restored job writes
//! exactly the ones that are out.
//!
//! Writing at commit time (rather than into a transaction kept open across the barrier)
//! keeps one writer at a time: SQLite allows no more, and on PostgreSQL an upsert of a key
//! written in the previous, still open transaction would wait on it forever.
//!
//! Upserts de-duplicate the rows of a statement by key (the last row wins), as a database
//! refuses to update one row twice in one statement.
//!
//! **Changelogs** (a CDC source's rows, with a `_kind` column: see
//! [`operators_core::changelog`]) are applied in upsert mode: the last change of each key
//! in a statement's rows decides, `+I`/`+U` upserting the row and `-U`/`-D` deleting the
//! key, as Flink's JDBC sink applies row kinds. The change columns are not written unless
//! the table has columns of those names. In insert mode a changelog is stored as rows, so
//! the table must have the change columns.

mod changelog;
mod config;
mod sink;
mod statement;
#[cfg(test)]
mod tests;

pub use config::WriteMode;
pub use sink::{JdbcSink, PROGRESS_TABLE};
