//! The interface of persistent or shared stores (`sqlite`, `redis`) behind
//! the in-memory index, and how a stored entry meets the one in memory.
//! Stores are written through asynchronously; what a lookup decides is
//! already visible in the index (docs/ARCHITECTURE.md "Cache").

use super::entry::CacheEntry;
use crate::domain::Domain;

/// A store failure: logged, never turned into a wrong answer (the lookup
/// goes on with what memory holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error.
    #[error("cache store: {0}")]
    Backend(String),
    /// The store did not answer in time.
    #[error("cache store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The store's file is not a usable database (garbled pages, not a
    /// database at all): it may be moved aside and recreated.
    #[error("cache file {path} is corrupt: {reason}")]
    CorruptFile {
        /// The file.
        path: String,
        /// What the database engine said (first line).
        reason: String,
    },
    /// A stored entry could not be decoded.
    #[error("cache entry for {domain}: {reason}")]
    Corrupt {
        /// The entry's domain.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A persistent or shared store of policies per domain. Times are Unix
/// milliseconds, as stored: other writers' clocks are not ours, so entries
/// read are taken through [`merge`] (or [`CacheEntry::clamped`]) at the
/// reader's now (docs/ARCHITECTURE.md "Time").
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The entry for `domain`, if any.
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError>;
    /// Store `entry` unless the stored one is newer
    /// ([`CacheEntry::is_newer_at`] the store's now: a stored time beyond
    /// `now + MAX_SKEW` never keeps a write out), atomically in the store.
    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError>;
    /// Domains whose TXT id was last checked before `before_ms`, or later
    /// than [`latest_believed`](super::latest_believed)`(now_ms)` (a row dated ahead is refreshed
    /// too, docs/ARCHITECTURE.md "Time"): the proactive refresh's work list
    /// (RFC 8461 §5.1).
    async fn checked_before(&self, before_ms: u64, now_ms: u64) -> Result<Vec<Domain>, StoreError>;
    /// When the last proactive refresh round ran (Unix milliseconds).
    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError>;
    /// Record when a proactive refresh round ran.
    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError>;
    /// Every stored entry (cache administration: list, export); entries
    /// that do not read are skipped. By default every domain checked before
    /// the end of time, each read in turn.
    async fn entries(&self) -> Result<Vec<(Domain, CacheEntry)>, StoreError> {
        let mut out = Vec::new();
        for domain in self.checked_before(u64::MAX, u64::MAX).await? {
            if let Ok(Some(entry)) = self.get(&domain).await {
                out.push((domain, entry));
            }
        }
        Ok(out)
    }
    /// Remove `domain`'s entry; true if there was one (cache purge).
    async fn remove(&self, _domain: &Domain) -> Result<bool, StoreError> {
        Err(StoreError::Backend(
            "this store cannot remove entries".into(),
        ))
    }
    /// Remove every entry; how many there were (cache purge --all).
    async fn remove_all(&self) -> Result<u64, StoreError> {
        Err(StoreError::Backend(
            "this store cannot remove entries".into(),
        ))
    }
}

/// The entry a lookup goes on with, from what memory holds and what the
/// store answered, at `now_ms`: the newer of the two
/// ([`CacheEntry::is_newer_at`], so a future-dated row never outranks
/// memory), with times beyond `now + MAX_SKEW` taken as now
/// ([`CacheEntry::clamped`]); memory's on a store failure (a failing store
/// costs neither answers nor extra fetches).
pub fn merge(
    held: Option<CacheEntry>,
    stored: Result<Option<CacheEntry>, StoreError>,
    now_ms: u64,
) -> Option<CacheEntry> {
    let newer = match (held, stored) {
        (Some(held), Ok(Some(stored))) if held.is_newer_at(&stored, now_ms) => Some(held),
        (_, Ok(Some(stored))) => Some(stored),
        (held, _) => held,
    };
    newer.map(|e| e.clamped(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Policy};

    fn entry(id: &str, at: u64) -> CacheEntry {
        CacheEntry {
            policy_id: id.into(),
            policy: Policy {
                mode: Mode::Enforce,
                max_age: 86_400,
                mx: vec!["mx.example".into()],
                lines: Default::default(),
            },
            fetched_at_ms: at,
            checked_at_ms: at,
        }
    }

    #[test]
    fn newer_of_memory_and_store_wins() {
        let down = || Err(StoreError::Backend("down".into()));
        let merge = |held, stored| merge(held, stored, 10);
        assert_eq!(
            merge(Some(entry("a", 1)), Ok(Some(entry("b", 2)))),
            Some(entry("b", 2))
        );
        assert_eq!(
            merge(Some(entry("a", 3)), Ok(Some(entry("b", 2)))),
            Some(entry("a", 3))
        );
        assert_eq!(merge(Some(entry("a", 1)), Ok(None)), Some(entry("a", 1)));
        assert_eq!(merge(None, Ok(Some(entry("b", 2)))), Some(entry("b", 2)));
        assert_eq!(merge(Some(entry("a", 1)), down()), Some(entry("a", 1)));
        assert_eq!(merge(None, down()), None);
    }

    #[test]
    fn a_future_dated_row_is_read_as_now_and_never_outranks_memory() {
        const NOW: u64 = 1_700_000_000_000;
        const DAY: u64 = 86_400_000;
        let ahead = entry("forged", NOW + 10 * DAY);
        // Read alone, it counts from now: fresh for cache_grace, no longer.
        let read = merge(None, Ok(Some(ahead.clone())), NOW).unwrap();
        assert_eq!((read.fetched_at_ms, read.checked_at_ms), (NOW, NOW));
        assert_eq!(read.policy_id, "forged");
        assert_eq!(read.expires_at_ms(), NOW + DAY);
        // Memory's entry, older but believed, stays: re-reading the row
        // later never makes it fresh again.
        let held = entry("a", NOW - 2_000);
        assert_eq!(
            merge(Some(held.clone()), Ok(Some(ahead.clone())), NOW),
            Some(held)
        );
        // Up to MAX_SKEW ahead a peer's time is believed as it is.
        let skewed = entry("b", NOW + 300_000);
        assert_eq!(
            merge(Some(entry("a", NOW)), Ok(Some(skewed.clone())), NOW),
            Some(skewed)
        );
    }
}
