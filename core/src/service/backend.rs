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
    /// `Some(result)` skips the async round trip.
    fn get_now(&self, _domain: &Domain) -> Option<Option<CacheEntry>> {
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
    fn get_now(&self, domain: &Domain) -> Option<Option<CacheEntry>> {
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
