//! The cache interface the resolve flow uses (DESIGN.md "Cache and
//! refresh"), and the `internal` in-memory backend.

use crate::cache::{CacheEntry, MemoryCache};
use crate::domain::Domain;
use std::sync::Mutex;

/// A cache backend failure: logged, never turned into a wrong answer (the
/// lookup goes on without the cache).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend could not be reached or answered with an error.
    #[error("cache backend: {0}")]
    Backend(String),
    /// A stored entry could not be decoded.
    #[error("cache entry for {domain}: {reason}")]
    Corrupt {
        /// The entry's domain.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A cache of policies per domain, shared by all lookups: `internal`
/// (memory), `sqlite` or `redis`.
#[async_trait::async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    /// Fast path for backends that answer from memory without waiting:
    /// `Some(result)` skips the async round trip. `wall` is the current
    /// Unix time, for backends that answer only while an entry is fresh.
    fn get_now(&self, _domain: &Domain, _wall: u64) -> Option<Option<CacheEntry>> {
        None
    }
    /// The entry for `domain`, if any.
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, CacheError>;
    /// Store `entry` unless the stored one is newer (`CacheEntry::is_newer_than`).
    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), CacheError>;
    /// Domains whose TXT id was last checked before `checked_before` (Unix
    /// seconds): the proactive refresh's work list.
    async fn stale(&self, checked_before: u64) -> Result<Vec<Domain>, CacheError>;
    /// When the last proactive refresh round ran (Unix seconds).
    async fn proactive_ts(&self) -> Result<Option<u64>, CacheError>;
    /// Record when a proactive refresh round ran.
    async fn set_proactive_ts(&self, ts: u64) -> Result<(), CacheError>;
}

/// The `internal` backend: a bounded LRU in memory (`cache_size`).
pub struct MemoryBackend {
    entries: Mutex<MemoryCache>,
    proactive_ts: Mutex<Option<u64>>,
}

impl MemoryBackend {
    /// An empty cache holding at most `capacity` domains.
    pub fn new(capacity: usize) -> Self {
        MemoryBackend {
            entries: Mutex::new(MemoryCache::new(capacity)),
            proactive_ts: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryCache> {
        // A panic elsewhere cannot leave the map half-written: recover it.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl CacheBackend for MemoryBackend {
    fn get_now(&self, domain: &Domain, _wall: u64) -> Option<Option<CacheEntry>> {
        Some(self.lock().get(domain))
    }

    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, CacheError> {
        Ok(self.lock().get(domain))
    }

    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), CacheError> {
        self.lock().put(domain.clone(), entry.clone());
        Ok(())
    }

    async fn stale(&self, checked_before: u64) -> Result<Vec<Domain>, CacheError> {
        Ok(self
            .lock()
            .entries()
            .filter(|(_, e)| e.checked_at < checked_before)
            .map(|(d, _)| d.clone())
            .collect())
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, CacheError> {
        Ok(*self.proactive_ts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn set_proactive_ts(&self, ts: u64) -> Result<(), CacheError> {
        *self.proactive_ts.lock().unwrap_or_else(|p| p.into_inner()) = Some(ts);
        Ok(())
    }
}

/// A persistent or shared backend (`sqlite`, `redis`) behind a bounded
/// memory copy: entries still within `cache_grace` are answered from memory
/// without a round trip, and a backend that fails to read or write does not
/// make every lookup go back to the network (the memory copy holds what was
/// last fetched or confirmed).
pub struct MemoryFront {
    memory: MemoryBackend,
    inner: std::sync::Arc<dyn CacheBackend>,
    grace: u64,
}

impl MemoryFront {
    /// `inner` fronted by at most `capacity` entries in memory, answered
    /// from memory while fresh (`cache_grace` seconds since their check).
    pub fn new(inner: std::sync::Arc<dyn CacheBackend>, capacity: usize, grace: u64) -> Self {
        MemoryFront {
            memory: MemoryBackend::new(capacity),
            inner,
            grace,
        }
    }
}

#[async_trait::async_trait]
impl CacheBackend for MemoryFront {
    fn get_now(&self, domain: &Domain, wall: u64) -> Option<Option<CacheEntry>> {
        // Only a fresh copy may stand for the backend: another daemon may
        // have stored a newer entry there since.
        match self.memory.lock().get(domain) {
            Some(entry) if entry.is_fresh(wall, self.grace) => Some(Some(entry)),
            _ => None,
        }
    }

    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, CacheError> {
        let copy = self.memory.lock().get(domain);
        match self.inner.get(domain).await {
            Ok(Some(stored)) => {
                self.memory.lock().put(domain.clone(), stored);
                Ok(self.memory.lock().get(domain))
            }
            Ok(None) => Ok(copy),
            Err(e) if copy.is_some() => {
                log::warn!("{domain}: cache read failed, using the copy in memory: {e}");
                Ok(copy)
            }
            Err(e) => Err(e),
        }
    }

    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), CacheError> {
        self.memory.lock().put(domain.clone(), entry.clone());
        self.inner.set(domain, entry).await
    }

    async fn stale(&self, checked_before: u64) -> Result<Vec<Domain>, CacheError> {
        self.inner.stale(checked_before).await
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, CacheError> {
        self.inner.proactive_ts().await
    }

    async fn set_proactive_ts(&self, ts: u64) -> Result<(), CacheError> {
        self.inner.set_proactive_ts(ts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Policy};
    use futures::executor::block_on;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A stored backend that counts reads and can be made to fail.
    #[derive(Default)]
    struct Stored {
        entries: Mutex<Vec<(Domain, CacheEntry)>>,
        reads: AtomicUsize,
        broken: AtomicBool,
    }

    impl Stored {
        fn fail(&self) -> Result<(), CacheError> {
            match self.broken.load(Ordering::SeqCst) {
                true => Err(CacheError::Backend("down".into())),
                false => Ok(()),
            }
        }
    }

    #[async_trait::async_trait]
    impl CacheBackend for Stored {
        async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, CacheError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.fail()?;
            let entries = self.entries.lock().unwrap();
            Ok(entries
                .iter()
                .find(|(d, _)| d == domain)
                .map(|(_, e)| e.clone()))
        }
        async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), CacheError> {
            self.fail()?;
            let mut entries = self.entries.lock().unwrap();
            entries.retain(|(d, _)| d != domain);
            entries.push((domain.clone(), entry.clone()));
            Ok(())
        }
        async fn stale(&self, _: u64) -> Result<Vec<Domain>, CacheError> {
            Ok(Vec::new())
        }
        async fn proactive_ts(&self) -> Result<Option<u64>, CacheError> {
            Ok(None)
        }
        async fn set_proactive_ts(&self, _: u64) -> Result<(), CacheError> {
            Ok(())
        }
    }

    fn entry(id: &str, checked_at: u64) -> CacheEntry {
        let policy = Policy {
            mode: Mode::Enforce,
            max_age: 86_400,
            mx: vec!["mx.example".into()],
            lines: Vec::new(),
        };
        CacheEntry {
            policy_id: id.into(),
            policy,
            fetched_at: 1_000,
            checked_at,
        }
    }

    fn front() -> (Arc<Stored>, MemoryFront) {
        let stored = Arc::new(Stored::default());
        (stored.clone(), MemoryFront::new(stored, 10, 60))
    }

    #[test]
    fn fresh_copy_answers_without_a_backend_read() {
        let (stored, front) = front();
        let domain: Domain = "example.com".parse().unwrap();
        block_on(front.set(&domain, &entry("a", 1_000))).unwrap();
        assert_eq!(front.get_now(&domain, 1_059), Some(Some(entry("a", 1_000))));
        assert_eq!(stored.reads.load(Ordering::SeqCst), 0);
        // Past cache_grace the backend is asked: another daemon may have news.
        assert_eq!(front.get_now(&domain, 1_060), None);
    }

    #[test]
    fn backend_entry_replaces_an_older_copy() {
        let (stored, front) = front();
        let domain: Domain = "example.com".parse().unwrap();
        block_on(front.set(&domain, &entry("a", 1_000))).unwrap();
        block_on(stored.set(&domain, &entry("b", 2_000))).unwrap();
        assert_eq!(
            block_on(front.get(&domain)).unwrap(),
            Some(entry("b", 2_000))
        );
        assert_eq!(front.get_now(&domain, 2_001), Some(Some(entry("b", 2_000))));
    }

    #[test]
    fn failing_backend_falls_back_to_the_copy() {
        let (stored, front) = front();
        let domain: Domain = "example.com".parse().unwrap();
        stored.broken.store(true, Ordering::SeqCst);
        // The write fails but the copy is kept, and reads use it.
        assert!(block_on(front.set(&domain, &entry("a", 1_000))).is_err());
        assert_eq!(
            block_on(front.get(&domain)).unwrap(),
            Some(entry("a", 1_000))
        );
        // With no copy, the backend's error is the answer.
        let other: Domain = "other.example".parse().unwrap();
        assert!(block_on(front.get(&other)).is_err());
    }
}
