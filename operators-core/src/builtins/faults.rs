//! Deterministic fault injection for recovery tests.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Inner {
    hits: HashMap<String, u64>,
    fail_at: HashMap<String, BTreeSet<u64>>,
    fired: Vec<(String, u64)>,
}

/// Fails chosen hits of named fault points.
///
/// Hits are counted over the whole life of the injector — across job restarts — so a
/// plan like "fail the 3rd and the 40th commit" injects exactly two failures however
/// often the job restarts. Clones share their counters.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    inner: Arc<Mutex<Inner>>,
}

impl FaultInjector {
    /// An injector that fails nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the given hits (1-based) of `point` fail.
    pub fn fail_at(self, point: &str, hits: impl IntoIterator<Item = u64>) -> Self {
        self.lock().fail_at.entry(point.to_string()).or_default().extend(hits);
        self
    }

    /// Counts a hit of `point`; returns true when this hit must fail.
    pub fn hit(&self, point: &str) -> bool {
        let mut inner = self.lock();
        let n = {
            let c = inner.hits.entry(point.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        let fail = inner.fail_at.get(point).is_some_and(|s| s.contains(&n));
        if fail {
            inner.fired.push((point.to_string(), n));
        }
        fail
    }

    /// Counts a hit and returns an error when it must fail.
    pub fn check(&self, point: &str) -> Result<()> {
        if self.hit(point) {
            Err(Error::external(format!("injected fault at `{point}`"), true, std::io::Error::other("injected fault")))
        } else {
            Ok(())
        }
    }

    /// The faults that fired, as `(point, hit)`.
    pub fn fired(&self) -> Vec<(String, u64)> {
        self.lock().fired.clone()
    }

    /// How many times `point` was hit.
    pub fn hits(&self, point: &str) -> u64 {
        self.lock().hits.get(point).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_exactly_the_planned_hits() {
        let f = FaultInjector::new().fail_at("p", [2, 4]);
        let results: Vec<bool> = (0..5).map(|_| f.hit("p")).collect();
        assert_eq!(results, vec![false, true, false, true, false]);
        assert_eq!(f.fired(), vec![("p".to_string(), 2), ("p".to_string(), 4)]);
        assert!(f.clone().check("other").is_ok());
    }
}
