//! Abuse limits (R-AUTH-2): how many sign-in attempts one login id, and one
//! peer address, may make per minute on this replica, before anything is
//! looked up or hashed. Counted in memory per replica: with N service
//! replicas an attacker spread over all of them gets N times the limit,
//! which the per-account lockout (counted in the database) still bounds.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::Millis;

/// Beyond this many keys, windows that ended are dropped; if still beyond,
/// the half that counted least (a flood of distinct keys must not grow
/// memory, nor wipe the counters that matter: starting the table over let
/// 100,000 junk login ids in a minute give every address and account a
/// fresh budget).
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
                forget_least_counted_half(&mut windows);
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

    /// `Err(ms)` when `key` has made `limit` attempts in its window, as
    /// `attempt` would answer, without counting one: a wider limit that is
    /// used up refuses before a narrower key is even added.
    pub fn exhausted(&self, key: &str, limit: u32, window_ms: Millis, now: Millis) -> Result<(), Millis> {
        if limit == 0 {
            return Ok(());
        }
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(key) {
            Some((start, count)) if now - *start < window_ms && *count >= limit => Err(window_ms - (now - *start)),
            _ => Ok(()),
        }
    }
}

/// Drops the windows whose counts are at most the median. A key forgotten
/// regains at most the attempts it had made, and those are the fewest: to
/// push out a counter near its limit, a flood would need that many
/// attempts on each of 50,000 keys within one window.
fn forget_least_counted_half(windows: &mut HashMap<String, (Millis, u32)>) {
    let mut counts: Vec<u32> = windows.values().map(|(_, count)| *count).collect();
    let middle = counts.len() / 2;
    let (_, median, _) = counts.select_nth_unstable(middle);
    let median = *median;
    windows.retain(|_, (_, count)| *count > median);
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

    /// A flood of distinct keys within one window neither grows the table
    /// past its bound nor gives a used-up key a fresh budget (the table
    /// used to start over when full).
    #[test]
    fn a_flood_of_new_keys_keeps_the_counters_that_matter() {
        let limiter = AttemptLimiter::default();
        for _ in 0..10 {
            assert!(limiter.attempt("login:victim", 10, 60_000, 1_000).is_ok());
        }
        assert!(limiter.attempt("login:victim", 10, 60_000, 1_000).is_err());
        for i in 0..(3 * MAX_KEYS) {
            let _ = limiter.attempt(&format!("login:junk-{i}"), 10, 60_000, 2_000);
        }
        assert!(limiter.windows.lock().unwrap().len() <= MAX_KEYS);
        assert_eq!(
            limiter.attempt("login:victim", 10, 60_000, 3_000),
            Err(58_000),
            "still used up"
        );
        assert_eq!(limiter.exhausted("login:victim", 10, 60_000, 3_000), Err(58_000));
        assert_eq!(limiter.exhausted("login:junk-0", 10, 60_000, 3_000), Ok(()));
    }
}
