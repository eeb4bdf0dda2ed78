//! Places in a binary log, and the rule that joins the snapshot to the log.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::SourceError;

/// A place in a server's binary log: a file and a byte offset in it, at an event's start.
///
/// Positions of one server compare in log order: by the file's sequence number (the
/// digits after its last `.`, as in `mariadb-bin.000012`), then by offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// The log file's name, as `SHOW BINARY LOGS` lists it.
    pub file: String,
    /// The byte offset in that file.
    pub pos: u64,
}

impl BinlogPosition {
    /// The position `pos` of `file`.
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self { file: file.into(), pos }
    }

    /// Parses `file:pos`, the form this source writes in its position column and takes
    /// for `source.cdc.startup.specific-offset`. `key` names the setting in errors.
    pub fn parse(key: &str, text: &str) -> Result<Self, SourceError> {
        let bad = || {
            SourceError::config(
                key,
                format!("`{text}` is not a binlog position; write it as file:pos, e.g. mariadb-bin.000003:4"),
            )
        };
        let (file, pos) = text.trim().rsplit_once(':').ok_or_else(bad)?;
        let pos: u64 = pos.parse().map_err(|_| bad())?;
        if file.is_empty() || pos < 4 {
            return Err(bad());
        }
        Ok(Self::new(file, pos))
    }

    /// The file's sequence number, when its name ends in digits after a dot.
    fn sequence(&self) -> Option<u64> {
        self.file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_file = match (self.sequence(), other.sequence()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.file.cmp(&other.file),
        };
        by_file.then(self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Where the log read stands: the start of the transaction being read and how many of
/// its changes to the followed table were already emitted. A restart reads the log from
/// the transaction's start (the only place a row event can be decoded from: it needs
/// the table map event before it) and skips that many changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// The start of the transaction (or the place between two transactions).
    pub at: BinlogPosition,
    /// Changes of the followed table in that transaction already emitted.
    pub skip: u64,
}

/// One chunk of the snapshot: the rows with keys above the previous chunk's `upper` up to
/// and including its own (the last chunk has none: every key above the previous one),
/// read in one consistent-snapshot transaction whose place in the log is `at`.
///
/// The join rule: a change to a row found in the log at a transaction starting at or
/// after its chunk's `at` is emitted; one before it is already in the chunk's rows.
/// Every row's state is thus taken once, at its chunk's point, and every later change
/// once, from the log: none missed, none twice, with no lock on the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The chunk's highest key; `None` for the last chunk.
    pub upper: Option<i128>,
    /// The log position of the chunk's snapshot.
    pub at: BinlogPosition,
}

/// The snapshot's chunks in key order, for deciding which log changes were not in them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    chunks: Vec<Chunk>,
    /// The latest chunk position: from there on every change is emitted.
    last: Option<BinlogPosition>,
}

impl ChunkFilter {
    /// A filter over `chunks` (in key order, as they were read).
    pub fn new(chunks: Vec<Chunk>) -> Self {
        let last = chunks.iter().map(|c| &c.at).max().cloned();
        Self { chunks, last }
    }

    /// Whether a change of the row with `key`, in the transaction starting at `tx_start`,
    /// is to be emitted.
    pub fn emits(&self, key: i128, tx_start: &BinlogPosition) -> bool {
        if self.passed(tx_start) {
            return true;
        }
        // The first chunk whose upper bound is at or above the key; keys above every
        // bound belong to the last (unbounded) chunk.
        let i = self.chunks.partition_point(|c| c.upper.is_some_and(|u| u < key));
        match self.chunks.get(i) {
            Some(chunk) => *tx_start >= chunk.at,
            // No chunk covers the key: the snapshot had no unbounded chunk (it is not
            // finished), so the row is not in it.
            None => true,
        }
    }

    /// Whether the log read at `at` is past every chunk, so that the filter is no longer
    /// needed.
    pub fn passed(&self, at: &BinlogPosition) -> bool {
        self.last.as_ref().is_none_or(|last| at >= last)
    }
}
