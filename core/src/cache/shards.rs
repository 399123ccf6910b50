//! The index's maps split by domain into shards, each a [`Bounded`] map
//! behind its own lock on its own cache line. Connection threads on
//! different cores answer hits for different domains without writing a
//! shared cache line: a single lock, even one taken shared, is written by
//! every reader (docs/ARCHITECTURE.md "Cache").

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::lru::Bounded;
use crate::domain::Domain;

/// Fewest domains a shard is given: below that, one map is exact and
/// cheap, and per-shard eviction would stray from the map-wide CLOCK.
const MIN_PER_SHARD: usize = 512;
/// Most shards.
const MAX_SHARDS: usize = 16;

/// One shard, alone on its cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Shard<V>(RwLock<Bounded<V>>);

/// `capacity` domains at most, in shards of `capacity / shards` each:
/// a shard evicts (CLOCK, `Bounded`) when it is full, so a full index
/// holds a little less than `capacity` when domains spread unevenly.
#[derive(Debug)]
pub struct Sharded<V> {
    shards: Box<[Shard<V>]>,
}

/// FNV-1a of `domain`: cheap, and stable for a domain's lifetime.
fn hash(domain: &str) -> u64 {
    domain.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl<V> Sharded<V> {
    /// An empty map of at most `capacity` domains.
    pub fn new(capacity: usize) -> Self {
        let count = (capacity / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = capacity.div_ceil(count);
        Sharded {
            shards: (0..count)
                .map(|_| Shard(RwLock::new(Bounded::new(per_shard))))
                .collect(),
        }
    }

    fn shard(&self, domain: &str) -> &RwLock<Bounded<V>> {
        // `new` makes at least one shard, and the remainder is below their
        // number.
        let i = (hash(domain) % self.shards.len() as u64) as usize;
        &self.shards[i].0
    }

    /// The shard of `domain`, for reading. No code path panics under a
    /// lock; a poisoned one is recovered anyway.
    pub fn read(&self, domain: &str) -> RwLockReadGuard<'_, Bounded<V>> {
        self.shard(domain).read().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard of `domain`, for writing.
    pub fn write(&self, domain: &str) -> RwLockWriteGuard<'_, Bounded<V>> {
        self.shard(domain)
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Store `value` for `domain` (see [`Bounded::insert`]).
    pub fn insert(&self, domain: Domain, value: V) {
        self.write(domain.as_str()).insert(domain, value);
    }

    /// Calls `f` with each shard in turn, read-locked.
    pub fn for_each(&self, mut f: impl FnMut(&Bounded<V>)) {
        for shard in self.shards.iter() {
            f(&shard.0.read().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Empty every shard; how many domains were held.
    pub fn clear(&self) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut map = shard.0.write().unwrap_or_else(|p| p.into_inner());
            n += map.len();
            *map = Bounded::new(map.capacity());
        }
        n
    }

    /// Domains held.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.for_each(|map| n += map.len());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        s.parse().unwrap()
    }

    #[test]
    fn small_maps_are_one_shard_with_exact_eviction() {
        let map = Sharded::new(3);
        assert_eq!(map.shards.len(), 1);
        for i in 0..10 {
            map.insert(d(&format!("d{i}.example")), i);
        }
        assert_eq!(map.len(), 3);
        assert_eq!(map.read("d9.example").peek("d9.example"), Some(&9));
    }

    #[test]
    fn large_maps_spread_domains_and_stay_within_capacity() {
        let map = Sharded::new(10_000);
        assert_eq!(map.shards.len(), MAX_SHARDS);
        for i in 0..5_000 {
            map.insert(d(&format!("d{i}.example")), i);
        }
        assert_eq!(map.len(), 5_000);
        for i in (0..5_000).step_by(97) {
            let name = format!("d{i}.example");
            assert_eq!(map.read(&name).peek(&name), Some(&i));
        }
        let mut sizes = Vec::new();
        map.for_each(|m| sizes.push(m.len()));
        // Every shard has a share: no shard is empty or holds most.
        assert!(sizes.iter().all(|&n| n > 150 && n < 500), "{sizes:?}");
        for i in 5_000..40_000 {
            map.insert(d(&format!("d{i}.example")), i);
        }
        assert!(map.len() <= 10_000 && map.len() > 9_000, "{}", map.len());
        let before = map.len();
        assert_eq!(map.clear(), before);
        assert_eq!(map.len(), 0);
    }
}
