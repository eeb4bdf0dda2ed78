//! Which transactions a snapshot saw: the rule that joins a chunk of the snapshot to the
//! replication stream.
//!
//! A chunk is read in a REPEATABLE READ transaction whose snapshot (`pg_current_snapshot()`,
//! `xmin:xmax:xip…`) says exactly which transactions it sees. A change in the stream, of a
//! transaction the chunk's snapshot saw, is already in the chunk's rows; one of a
//! transaction it did not see is not. This is PostgreSQL's own visibility rule, so it is
//! exact whatever the commit order, with no lock and no watermark reading.

use serde::{Deserialize, Serialize};

/// A snapshot as `pg_current_snapshot()` shows it, with 64-bit transaction ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every transaction below this one had ended when the snapshot was taken.
    pub xmin: u64,
    /// No transaction from this one on had started.
    pub xmax: u64,
    /// Transactions between the two that were still running.
    pub running: Vec<u64>,
}

impl Snapshot {
    /// Reads `xmin:xmax:xip1,xip2,…`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        (xmin <= xmax).then_some(Self { xmin, xmax, running })
    }

    /// Whether the snapshot saw the (committed) transaction `xid`.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }

    /// The 64-bit id of a transaction the stream names by its 32 bits: the one nearest
    /// this snapshot's `xmax` (transactions followed are never 2^31 ids away from it).
    pub fn widen(&self, xid: u32) -> u64 {
        Self::widen_near(self.xmax, xid)
    }

    /// The 64-bit id whose low 32 bits are `xid`, nearest `reference`.
    pub fn widen_near(reference: u64, xid: u32) -> u64 {
        let epoch = reference & !0xFFFF_FFFF;
        let candidate = epoch | u64::from(xid);
        let half = 1u64 << 31;
        if candidate > reference.saturating_add(half) && candidate >= 1 << 32 {
            candidate - (1 << 32)
        } else if candidate.saturating_add(half) < reference {
            candidate + (1 << 32)
        } else {
            candidate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    #[test]
    fn a_snapshot_sees_what_ended_before_it_and_not_what_ran_across_it() {
        let s = Snapshot::parse("100:110:102,105").unwrap();
        assert!(s.sees(99));
        assert!(s.sees(100) && s.sees(101) && s.sees(109));
        assert!(!s.sees(102) && !s.sees(105), "running when it was taken");
        assert!(!s.sees(110) && !s.sees(200), "started after it");
        assert_eq!(Snapshot::parse("7:7:").unwrap().running, Vec::<u64>::new());
        assert!(Snapshot::parse("9:7:").is_none());
        assert!(Snapshot::parse("a:7:").is_none());
    }

    #[test]
    fn a_32_bit_id_is_widened_near_the_snapshot() {
        let s = Snapshot { xmin: (3 << 32) + 10, xmax: (3 << 32) + 20, running: vec![] };
        assert_eq!(s.widen(15), (3 << 32) + 15);
        // Just before the epoch turned.
        assert_eq!(s.widen(u32::MAX - 5), (3 << 32) - 6);
        let late = Snapshot { xmin: (3 << 32) - 20, xmax: (3 << 32) - 10, running: vec![] };
        assert_eq!(late.widen(5), (3 << 32) + 5, "just after it turned");
        let first = Snapshot { xmin: 3, xmax: 10, running: vec![] };
        assert_eq!(first.widen(12), 12);
    }
}
