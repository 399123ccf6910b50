//! A bounded map `Domain -> V` that evicts a rarely used domain beyond its
//! capacity (`cache.options.cache_size`), by the CLOCK (second chance)
//! approximation of LRU: a read only sets a flag, so the hot path neither
//! allocates nor reorders anything (docs/ARCHITECTURE.md "Cache").

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::domain::Domain;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    /// Set by a read (a shared borrow suffices: readers never block each
    /// other), cleared by the eviction hand.
    referenced: AtomicBool,
}

/// A bounded map with second-chance eviction. O(1) amortised per operation.
#[derive(Debug)]
pub struct Bounded<V> {
    capacity: usize,
    /// Keyed by the domain's text, shared with `ring` (one allocation per
    /// domain, not two).
    map: HashMap<Arc<str>, Slot<V>>,
    /// Every key exactly once; the eviction hand is its front.
    ring: VecDeque<Arc<str>>,
}

impl<V> Bounded<V> {
    /// An empty map holding at most `capacity` domains (0 stores nothing).
    pub fn new(capacity: usize) -> Self {
        Bounded {
            capacity,
            map: HashMap::new(),
            ring: VecDeque::new(),
        }
    }

    /// The value for `domain`, if any; marks it used.
    pub fn get(&self, domain: &str) -> Option<&V> {
        let slot = self.map.get(domain)?;
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(&slot.value)
    }

    /// The value for `domain` without marking it used.
    pub fn peek(&self, domain: &str) -> Option<&V> {
        self.map.get(domain).map(|s| &s.value)
    }

    /// Store `value` for `domain`, evicting another domain when over
    /// capacity.
    pub fn insert(&mut self, domain: Domain, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(slot) = self.map.get_mut(domain.as_str()) {
            slot.value = value;
            *slot.referenced.get_mut() = true;
            return;
        }
        while self.map.len() >= self.capacity {
            self.evict_one();
        }
        let key: Arc<str> = Arc::from(domain.as_str());
        self.ring.push_back(Arc::clone(&key));
        self.map.insert(
            key,
            Slot {
                value,
                referenced: AtomicBool::new(false),
            },
        );
    }

    /// Remove `domain`; true if it was there.
    pub fn remove(&mut self, domain: &str) -> bool {
        // O(n), but only purges, a domain changing between a policy and
        // "no policy" (each after a lookup with network IO) and an idle
        // policy's expiry (once per domain) remove.
        let found = self.map.remove(domain).is_some();
        if found {
            self.ring.retain(|d| &**d != domain);
        }
        found
    }

    /// The most domains stored.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of domains stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every stored value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.map.iter().map(|(d, s)| (&**d, &s.value))
    }

    fn evict_one(&mut self) {
        while let Some(domain) = self.ring.pop_front() {
            match self.map.get_mut(&*domain) {
                None => continue,
                Some(slot) if slot.referenced.load(Ordering::Relaxed) => {
                    *slot.referenced.get_mut() = false;
                    self.ring.push_back(domain);
                }
                Some(_) => {
                    self.map.remove(&*domain);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Domain {
        crate::domain::normalize_key(s).unwrap()
    }

    #[test]
    fn evicts_an_unused_domain_first() {
        let mut c = Bounded::new(2);
        c.insert(d("a.example"), 1);
        c.insert(d("b.example"), 2);
        // Using a gives it a second chance: b goes.
        assert_eq!(c.get("a.example"), Some(&1));
        c.insert(d("c.example"), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.peek("b.example"), None);
        assert_eq!(c.peek("a.example"), Some(&1));
        assert_eq!(c.peek("c.example"), Some(&3));
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut c = Bounded::new(0);
        c.insert(d("a.example"), 1);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn replace_keeps_one_slot_and_remove_works() {
        let mut c = Bounded::new(2);
        c.insert(d("a.example"), 1);
        c.insert(d("a.example"), 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.peek("a.example"), Some(&2));
        assert!(c.remove("a.example"));
        assert!(!c.remove("a.example"));
        c.insert(d("b.example"), 3);
        c.insert(d("c.example"), 4);
        assert_eq!(c.len(), 2);
    }

    proptest! {
        #[test]
        fn never_over_capacity_and_keeps_what_it_says(
            ops in proptest::collection::vec((0u8..8, 0u8..3), 0..300)
        ) {
            let cap = 3;
            let mut c = Bounded::new(cap);
            let mut last: HashMap<u8, u32> = HashMap::new();
            for (i, (k, op)) in ops.into_iter().enumerate() {
                let name = format!("d{k}.example");
                match op {
                    0 => { c.insert(d(&name), i as u32); last.insert(k, i as u32); }
                    1 => { if let Some(v) = c.get(&name) { prop_assert_eq!(Some(v), last.get(&k)); } }
                    _ => { c.remove(&name); }
                }
                prop_assert!(c.len() <= cap);
                prop_assert_eq!(c.ring.len(), c.len());
            }
        }
    }
}
