//! Restart strategies: what happens after a task fails.
//!
//! Every restart restores all tasks from the newest complete checkpoint (or the savepoint
//! the job started from). Errors that cannot go away by retrying — bad configuration, a
//! bad record with the `fail` policy — end the job at once, whatever the strategy.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// When and how often a failed job is restarted.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Never restart.
    None,
    /// Restart up to `attempts` times, waiting `delay` before each.
    FixedDelay {
        /// Maximum number of restarts.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart as long as fewer than `max_failures` failures happened within `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// Measuring window.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart with a delay that grows by `multiplier` after each failure, up to `max`, and
    /// falls back to `initial` after the job ran `reset_after` without failing.
    ExponentialBackoff {
        /// First delay.
        initial: Duration,
        /// Largest delay.
        max: Duration,
        /// Growth factor (>= 1).
        multiplier: f64,
        /// A run this long without failure resets the delay.
        reset_after: Duration,
        /// Random spread of each delay, as a fraction (0 = none, 0.1 = ±10 %).
        jitter: f64,
        /// Give up after this many restarts (`None`: never).
        max_attempts: Option<u32>,
    },
}

impl Default for RestartStrategy {
    /// Fixed delay, 4 attempts, 60 s: the original toolkit's defaults.
    fn default() -> Self {
        RestartStrategy::FixedDelay { attempts: 4, delay: Duration::from_secs(60) }
    }
}

impl RestartStrategy {
    /// Fixed delay.
    pub fn fixed_delay(attempts: u32, delay: Duration) -> Self {
        RestartStrategy::FixedDelay { attempts, delay }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        match self {
            RestartStrategy::FailureRate { interval, max_failures, .. } => {
                if interval.is_zero() {
                    return Err(Error::config("restart.failure-rate.interval", "must be greater than 0"));
                }
                if *max_failures == 0 {
                    return Err(Error::config("restart.failure-rate.max-failures", "must be at least 1"));
                }
            }
            RestartStrategy::ExponentialBackoff { initial, max, multiplier, jitter, .. } => {
                if !(multiplier.is_finite() && *multiplier >= 1.0) {
                    return Err(Error::config("restart.exponential.multiplier", "must be a number >= 1"));
                }
                if initial > max {
                    return Err(Error::config(
                        "restart.exponential.initial",
                        "must not be larger than restart.exponential.max",
                    ));
                }
                if !(0.0..1.0).contains(jitter) {
                    return Err(Error::config("restart.exponential.jitter", "must be in [0, 1)"));
                }
            }
            RestartStrategy::None | RestartStrategy::FixedDelay { .. } => {}
        }
        Ok(())
    }
}

/// Applies a strategy to a sequence of failures.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures: VecDeque<Instant>,
    backoff: Option<Duration>,
}

impl RestartTracker {
    pub(crate) fn new(strategy: RestartStrategy) -> Self {
        Self { strategy, restarts: 0, failures: VecDeque::new(), backoff: None }
    }

    /// Number of restarts so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Called on a failure at `now` of an attempt that started at `attempt_started`.
    /// Returns the delay before restarting, or `None` to give up.
    pub(crate) fn on_failure(&mut self, now: Instant, attempt_started: Instant, error: &Error) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        let delay = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (self.restarts < *attempts).then_some(*delay),
            RestartStrategy::FailureRate { max_failures, interval, delay } => {
                self.failures.push_back(now);
                while let Some(first) = self.failures.front() {
                    if now.duration_since(*first) > *interval {
                        self.failures.pop_front();
                    } else {
                        break;
                    }
                }
                (self.failures.len() <= *max_failures as usize).then_some(*delay)
            }
            RestartStrategy::ExponentialBackoff { initial, max, multiplier, reset_after, jitter, max_attempts } => {
                if max_attempts.is_some_and(|m| self.restarts >= m) {
                    None
                } else {
                    let next = match self.backoff {
                        Some(prev) if now.duration_since(attempt_started) < *reset_after => {
                            prev.mul_f64(*multiplier).min(*max)
                        }
                        _ => *initial,
                    };
                    self.backoff = Some(next);
                    let spread = if *jitter > 0.0 { 1.0 + (rand::random::<f64>() * 2.0 - 1.0) * jitter } else { 1.0 };
                    Some(next.mul_f64(spread))
                }
            }
        };
        if delay.is_some() {
            self.restarts += 1;
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> Error {
        Error::external("x", true, std::io::Error::other("down"))
    }

    #[test]
    fn fixed_delay_counts_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::fixed_delay(2, Duration::from_millis(5)));
        let now = Instant::now();
        assert_eq!(t.on_failure(now, now, &err()), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(now, now, &err()), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(now, now, &err()), None);
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn non_retryable_errors_never_restart() {
        let mut t = RestartTracker::new(RestartStrategy::fixed_delay(10, Duration::ZERO));
        let now = Instant::now();
        assert_eq!(t.on_failure(now, now, &Error::config("k", "bad")), None);
    }

    #[test]
    fn failure_rate_window() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(10),
            delay: Duration::ZERO,
        });
        let t0 = Instant::now();
        assert!(t.on_failure(t0, t0, &err()).is_some());
        assert!(t.on_failure(t0 + Duration::from_secs(1), t0, &err()).is_some());
        assert!(t.on_failure(t0 + Duration::from_secs(2), t0, &err()).is_none());
        // Old failures leave the window.
        assert!(t.on_failure(t0 + Duration::from_secs(30), t0, &err()).is_some());
    }

    #[test]
    fn exponential_backoff_grows_caps_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            multiplier: 2.0,
            reset_after: Duration::from_secs(60),
            jitter: 0.0,
            max_attempts: None,
        });
        let t0 = Instant::now();
        let d: Vec<_> = (0..4).map(|_| t.on_failure(t0, t0, &err()).unwrap().as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
        let later = t0 + Duration::from_secs(120);
        assert_eq!(t.on_failure(later, t0, &err()).unwrap().as_millis(), 100);
    }

    #[test]
    fn invalid_parameters_name_their_key() {
        let bad = RestartStrategy::ExponentialBackoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            reset_after: Duration::ZERO,
            jitter: 0.0,
            max_attempts: None,
        };
        assert!(bad.validate().unwrap_err().to_string().contains("restart.exponential.initial"));
    }
}
