//! Abuse limits (R-AUTH-2): how many sign-in attempts one login id, and one
//! peer address, may make per minute on this replica, before anything is
//! looked up or hashed. Counted in memory per replica: with N service
//! replicas an attacker spread over all of them gets N times the limit,
//! which the per-account lockout (counted in the database) still bounds.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::Millis;

/// Beyond this many keys, windows that ended are dropped; if still beyond,
/// the table starts over (a flood of distinct keys must not grow memory).
const MAX_KEYS: usize = 100_000;

/// Fixed one-window counters per key.
#[derive(Debug, Default)]
pub struct AttemptLimiter {
    windows: Mutex<HashMap<String, (Millis, u32)>>,
}

impl AttemptLimiter {
    /// Counts an attempt for `key`; `Err(ms)` says how long until the
    /// window ends when `limit` attempts were already made in it. A limit
    /// of 0 is no limit.
    pub fn attempt(&self, key: &str, limit: u32, window_ms: Millis, now: Millis) -> Result<(), Millis> {
        if limit == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            windows.retain(|_, (start, _)| now - *start < window_ms);
            if windows.len() >= MAX_KEYS {
                windows.clear();
            }
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now - entry.0 >= window_ms {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return Err(window_ms - (now - entry.0));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_window() {
        let limiter = AttemptLimiter::default();
        for _ in 0..3 {
            assert!(limiter.attempt("a", 3, 60_000, 1_000).is_ok());
        }
        assert_eq!(limiter.attempt("a", 3, 60_000, 11_000), Err(50_000));
        assert!(limiter.attempt("b", 3, 60_000, 11_000).is_ok(), "keys are apart");
        assert!(limiter.attempt("a", 3, 60_000, 61_000).is_ok(), "a new window");
        assert!(limiter.attempt("a", 0, 60_000, 61_000).is_ok(), "0 is no limit");
    }
}
