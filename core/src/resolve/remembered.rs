//! A bounded "noted at" memory: the failed fetches not retried yet
//! (RFC 8461 §3.3 leaves the retry policy to the sender; we wait 5 minutes).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A bounded "noted at" map whose items lapse `ttl_ms` after noting.
/// The order log makes trimming O(1) amortised: items are noted in time
/// order, so the oldest (first to lapse) sit at the front.
#[derive(Debug)]
pub(super) struct Remembered<K> {
    ttl_ms: u64,
    limit: usize,
    pub(super) map: HashMap<K, u64>,
    log: VecDeque<(K, u64)>,
}

impl<K: Eq + Hash + Clone> Remembered<K> {
    pub(super) fn new(ttl_ms: u64, limit: usize) -> Self {
        Remembered {
            ttl_ms,
            limit,
            map: HashMap::new(),
            log: VecDeque::new(),
        }
    }

    pub(super) fn is_active(&self, key: &K, now_ms: u64) -> bool {
        self.map
            .get(key)
            .is_some_and(|&noted| now_ms < noted.saturating_add(self.ttl_ms))
    }

    pub(super) fn note(&mut self, key: K, now_ms: u64) {
        self.map.insert(key.clone(), now_ms);
        self.log.push_back((key, now_ms));
        self.trim(now_ms);
    }

    pub(super) fn forget(&mut self, key: &K) {
        // The log item goes stale and is skipped when it reaches the front.
        self.map.remove(key);
    }

    /// Drop lapsed items first, then the oldest while over the limit.
    fn trim(&mut self, now_ms: u64) {
        while let Some((key, noted)) = self.log.front() {
            let current = self.map.get(key) == Some(noted);
            let lapsed = now_ms >= noted.saturating_add(self.ttl_ms);
            if current && !lapsed && self.map.len() <= self.limit {
                break;
            }
            if current {
                self.map.remove(key);
            }
            self.log.pop_front();
        }
        if self.log.len() > self.limit.saturating_mul(2).saturating_add(16) {
            let map = &self.map;
            self.log.retain(|(k, noted)| map.get(k) == Some(noted));
        }
    }
}

