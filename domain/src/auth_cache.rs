//! A short-lived cache of authenticated callers, keyed by token hash.
//!
//! Every RPC authenticates; without the cache that is a database round trip
//! per call. Entries live `ttl_ms` (1 s by default) and never past the token's
//! expiry. This replica drops every entry on each change that can take rights
//! away (revocation, deactivation, deletion, role change); other replicas
//! notice within the TTL. A TTL of 0 turns the cache off.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::Millis;
use crate::policy::Caller;

/// Beyond this many live tokens the cache starts over rather than grow.
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug)]
pub(crate) struct AuthCache {
    ttl_ms: i64,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    callers: HashMap<String, (Caller, Millis)>,
    /// Counts the clears. A caller read from the database before a clear
    /// (a revocation committed while the lookup was under way) is not put
    /// after it: it would bring the revoked token back for a TTL.
    generation: u64,
}

/// What [`AuthCache::generation`] gave before a database lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generation(u64);

impl AuthCache {
    pub(crate) fn new(ttl_ms: i64) -> Self {
        Self {
            ttl_ms,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Taken before reading a caller from the database, given to `put`.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.entries.lock().unwrap_or_else(|e| e.into_inner()).generation)
    }

    pub(crate) fn get(&self, token_hash: &str, now: Millis) -> Option<Caller> {
        if self.ttl_ms <= 0 {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .callers
            .get(token_hash)
            .filter(|(_, until)| *until > now)
            .map(|(caller, _)| caller.clone())
    }

    /// Keeps `caller`, read from the database after `read_at`, unless the
    /// cache was cleared since.
    pub(crate) fn put(
        &self,
        token_hash: String,
        caller: Caller,
        read_at: Generation,
        now: Millis,
        token_expires_at: Option<Millis>,
    ) {
        if self.ttl_ms <= 0 {
            return;
        }
        let until = token_expires_at.map_or(now + self.ttl_ms, |at| at.min(now + self.ttl_ms));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.generation != read_at.0 {
            return;
        }
        if entries.callers.len() >= MAX_ENTRIES {
            entries.callers.clear();
        }
        entries.callers.insert(token_hash, (caller, until));
    }

    /// Forgets everything: called on every change that can take rights away.
    pub(crate) fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.callers.clear();
        entries.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Principal;

    fn caller() -> Caller {
        Caller::new(Principal::Operator {
            token_id: uuid::Uuid::nil(),
        })
    }

    #[test]
    fn entries_expire_with_the_ttl_or_the_token() {
        let cache = AuthCache::new(1000);
        cache.put("a".into(), caller(), cache.generation(), 10_000, None);
        assert!(cache.get("a", 10_999).is_some());
        assert!(cache.get("a", 11_000).is_none());
        cache.put("b".into(), caller(), cache.generation(), 10_000, Some(10_200));
        assert!(cache.get("b", 10_199).is_some());
        assert!(cache.get("b", 10_200).is_none(), "never past the token's expiry");
        cache.clear();
        assert!(cache.get("a", 10_001).is_none());
    }

    /// A lookup that began before a clear (a revocation committed while it
    /// read the token) does not put its caller back.
    #[test]
    fn a_caller_read_before_a_clear_is_not_kept() {
        let cache = AuthCache::new(1000);
        let before = cache.generation();
        cache.clear();
        cache.put("a".into(), caller(), before, 10_000, None);
        assert!(cache.get("a", 10_001).is_none());
        cache.put("a".into(), caller(), cache.generation(), 10_000, None);
        assert!(cache.get("a", 10_001).is_some());
    }

    #[test]
    fn zero_ttl_turns_it_off() {
        let cache = AuthCache::new(0);
        cache.put("a".into(), caller(), cache.generation(), 10_000, None);
        assert!(cache.get("a", 10_000).is_none());
    }
}
