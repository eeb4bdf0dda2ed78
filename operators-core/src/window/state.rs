//! What the window operator keeps per key and window: shared by the operator
//! (`runtime.rs`), which checkpoints it as keyed state, and the in-memory window table
//! (`table.rs`), so that neither imports the other.

use serde::{Deserialize, Serialize};

use super::aggregate::{Acc, Scalar};

/// What is kept per key and window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WindowState {
    /// The key's column values, to put in the result row.
    pub(super) key: Vec<Option<Scalar>>,
    pub(super) accs: Vec<Acc>,
    /// The window's result was emitted (later results are updates).
    pub(super) fired: bool,
    /// Rows folded in (count windows fire on it).
    pub(super) rows: u64,
    /// Count windows: job clock when the first row came.
    pub(super) first_ms: i64,
}
