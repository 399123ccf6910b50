//! The index's maps split by domain into shards, each behind its own lock
//! on its own cache line. Connection threads on different cores answer
//! hits for different domains without writing a shared cache line: a
//! single lock, even one taken shared, is written by every reader
//! (docs/ARCHITECTURE.md "Cache").

use std::hash::{BuildHasher, RandomState};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Fewest domains a shard is given: below that, one map is exact and
/// cheap, and per-shard eviction would stray from the map-wide CLOCK.
const MIN_PER_SHARD: usize = 512;
/// Most shards.
const MAX_SHARDS: usize = 16;

/// One shard, alone on its cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Shard<T>(RwLock<T>);

/// Room for `capacity` domains in shards of `capacity / shards` each: a
/// shard evicts when it is full, so a full index holds a little less than
/// `capacity` when domains spread unevenly.
#[derive(Debug)]
pub struct Sharded<T> {
    /// Keyed per index (std's SipHash with random keys): recipient domains
    /// are chosen from outside, and with a known hash a chosen set of names
    /// would fill one shard with a fraction of `capacity`.
    hasher: RandomState,
    shards: Box<[Shard<T>]>,
}

impl<T> Sharded<T> {
    /// Room for `capacity` domains: `make(per_shard)` builds each shard.
    pub fn new(capacity: usize, make: impl Fn(usize) -> T) -> Self {
        let count = (capacity / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = capacity.div_ceil(count);
        Sharded {
            hasher: RandomState::new(),
            shards: (0..count)
                .map(|_| Shard(RwLock::new(make(per_shard))))
                .collect(),
        }
    }

    /// The shard `domain` belongs to.
    fn index_of(&self, domain: &str) -> usize {
        let count = self.shards.len();
        if count == 1 {
            // Nothing to choose: no hashing on a small index's hit path.
            return 0;
        }
        // The remainder is below the number of shards, a usize.
        (self.hasher.hash_one(domain) % count as u64) as usize
    }

    fn shard(&self, domain: &str) -> &RwLock<T> {
        // `new` makes at least one shard, and `index_of` is below their number.
        &self.shards[self.index_of(domain)].0
    }

    /// The shard of `domain`, for reading. No code path panics under a
    /// lock; a poisoned one is recovered anyway.
    pub fn read(&self, domain: &str) -> RwLockReadGuard<'_, T> {
        self.shard(domain).read().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard of `domain`, for writing.
    pub fn write(&self, domain: &str) -> RwLockWriteGuard<'_, T> {
        self.shard(domain)
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with each shard in turn, read-locked.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        for shard in self.shards.iter() {
            f(&shard.0.read().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Calls `f` with each shard in turn, write-locked.
    pub fn for_each_mut(&self, mut f: impl FnMut(&mut T)) {
        for shard in self.shards.iter() {
            f(&mut shard.0.write().unwrap_or_else(|p| p.into_inner()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lru::Bounded;
    use super::*;
    use crate::domain::Domain;

    fn d(s: &str) -> Domain {
        s.parse().unwrap()
    }

    fn map(capacity: usize) -> Sharded<Bounded<usize>> {
        Sharded::new(capacity, Bounded::new)
    }

    fn insert(map: &Sharded<Bounded<usize>>, i: usize) {
        let domain = d(&format!("d{i}.example"));
        map.write(domain.as_str()).insert(domain, i);
    }

    fn len(map: &Sharded<Bounded<usize>>) -> usize {
        let mut n = 0;
        map.for_each(|m| n += m.len());
        n
    }

    #[test]
    fn small_maps_are_one_shard_with_exact_eviction() {
        let map = map(3);
        assert_eq!(map.shards.len(), 1);
        for i in 0..10 {
            insert(&map, i);
        }
        assert_eq!(len(&map), 3);
        assert_eq!(map.read("d9.example").peek("d9.example"), Some(&9));
    }

    #[test]
    fn large_maps_spread_domains_and_stay_within_capacity() {
        let map = map(10_000);
        assert_eq!(map.shards.len(), MAX_SHARDS);
        for i in 0..5_000 {
            insert(&map, i);
        }
        assert_eq!(len(&map), 5_000);
        for i in (0..5_000).step_by(97) {
            let name = format!("d{i}.example");
            assert_eq!(map.read(&name).peek(&name), Some(&i));
        }
        let mut sizes = Vec::new();
        map.for_each(|m| sizes.push(m.len()));
        // Every shard has a share: no shard is empty or holds most.
        assert!(sizes.iter().all(|&n| n > 150 && n < 500), "{sizes:?}");
        for i in 5_000..40_000 {
            insert(&map, i);
        }
        assert!(len(&map) <= 10_000 && len(&map) > 9_000, "{}", len(&map));
    }

    /// Two indexes put the same names in different shards: the hash is
    /// keyed, so which names share a shard cannot be worked out offline.
    #[test]
    fn shard_choice_is_keyed_per_map() {
        let (one, two) = (map(10_000), map(10_000));
        let names: Vec<String> = (0..1_000).map(|i| format!("d{i}.example")).collect();
        let differ = names
            .iter()
            .filter(|n| one.index_of(n) != two.index_of(n))
            .count();
        // Unkeyed, none would differ; keyed, about 15 in 16 do. Fewer than
        // half has a probability far below 2^-500.
        assert!(differ > 500, "{differ} of 1000 differ");
    }
}
