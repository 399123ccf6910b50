//! One cached policy and the freshness and expiry decisions made on it
//! (RFC 8461 §3.3, §5.1). Times are Unix milliseconds: a `cache_grace` of
//! N seconds holds to the millisecond (docs/ARCHITECTURE.md "Time"). Times
//! from outside (a shared store's rows, an import) are believed up to
//! [`MAX_SKEW`] ahead of our clock, no further.

use std::time::Duration;

use crate::policy::Policy;

/// One cached policy for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The TXT record `id` the policy was fetched under.
    pub policy_id: String,
    /// The policy (its mode may be `none`).
    pub policy: Policy,
    /// Unix milliseconds when the policy was fetched: it expires `max_age`
    /// seconds later (RFC 8461 §3.2).
    pub fetched_at_ms: u64,
    /// Unix milliseconds when the TXT id was last confirmed.
    pub checked_at_ms: u64,
}

/// How far ahead of our clock a fetch or check time from outside (a row of
/// a shared store, written by a peer whose clock runs fast, by the Python
/// original, restored from a backup or forged; an imported line) is still
/// believed (docs/ARCHITECTURE.md "Time"). A time beyond it would keep a
/// policy fresh, and unexpired, for as long as it lies ahead.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The latest time from outside believed at `now_ms`: `now_ms` plus
/// [`MAX_SKEW`]. Stores' atomic writes get it as an argument.
pub fn latest_believed(now_ms: u64) -> u64 {
    now_ms.saturating_add(millis(MAX_SKEW))
}

/// A time from outside as compared at `now_ms`: itself while believed,
/// else 0, older than anything we write, so a write of ours always
/// replaces it and it never puts anything off (docs/ARCHITECTURE.md "Time").
pub fn believed(t_ms: u64, now_ms: u64) -> u64 {
    if t_ms > latest_believed(now_ms) {
        0
    } else {
        t_ms
    }
}

/// `d` in milliseconds, saturating (a `Duration` can hold more than `u64` ms).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CacheEntry {
    /// Unix millisecond at which the policy stops being valid (RFC 8461
    /// §3.2 `max_age`, counted from the fetch: §5.1, an unchanged id never
    /// extends a policy's lifetime).
    pub fn expires_at_ms(&self) -> u64 {
        self.fetched_at_ms
            .saturating_add(self.policy.max_age.saturating_mul(1000))
    }

    /// True once the policy's `max_age` has run out (RFC 8461 §3.2).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms()
    }

    /// True when the entry may be served with no network traffic at all:
    /// unexpired and its TXT id was checked less than `grace` ago
    /// (`cache_grace`, docs/ARCHITECTURE.md "Cache").
    pub fn is_fresh(&self, now_ms: u64, grace: Duration) -> bool {
        !self.is_expired(now_ms) && now_ms < self.checked_at_ms.saturating_add(millis(grace))
    }

    /// True when `self` is strictly newer than `other`, comparing
    /// `(fetched_at, checked_at)`: a cache write never replaces a newer entry
    /// with an older one (concurrent lookups and refreshes, or two daemons
    /// sharing a store, may finish out of order).
    pub fn is_newer_than(&self, other: &CacheEntry) -> bool {
        (self.fetched_at_ms, self.checked_at_ms) > (other.fetched_at_ms, other.checked_at_ms)
    }

    /// True when a fetch or check time of this entry lies beyond
    /// [`latest_believed`] at `now_ms`: read, it must be
    /// [`clamped`](Self::clamped), and the clamped entry written back so it
    /// ages from that read (docs/ARCHITECTURE.md "Time").
    pub fn is_ahead(&self, now_ms: u64) -> bool {
        self.fetched_at_ms.max(self.checked_at_ms) > latest_believed(now_ms)
    }

    /// This entry from outside as read at `now_ms`: a fetch or check time
    /// beyond [`latest_believed`] is taken as `now_ms`, so its freshness
    /// and its expiry count from now (docs/ARCHITECTURE.md "Time").
    pub fn clamped(mut self, now_ms: u64) -> Self {
        if self.fetched_at_ms > latest_believed(now_ms) {
            self.fetched_at_ms = now_ms;
        }
        if self.checked_at_ms > latest_believed(now_ms) {
            self.checked_at_ms = now_ms;
        }
        self
    }

    /// [`is_newer_than`](Self::is_newer_than) for entries from outside at
    /// `now_ms`: a time beyond [`latest_believed`] counts as the oldest, so
    /// a future-dated entry never outranks one whose times we believe. The
    /// stores' atomic writes apply the same rule in SQL and Lua; taking it
    /// as now there would make every write made before that instant lose.
    pub fn is_newer_at(&self, other: &CacheEntry, now_ms: u64) -> bool {
        let at = |e: &CacheEntry| {
            (
                believed(e.fetched_at_ms, now_ms),
                believed(e.checked_at_ms, now_ms),
            )
        };
        at(self) > at(other)
    }
}

/// The entry to fall back on after a failed lookup: the cached policy while
/// it is unexpired, else none (RFC 8461 §5.1).
pub fn fallback(entry: Option<&CacheEntry>, now_ms: u64) -> Option<&CacheEntry> {
    entry.filter(|e| !e.is_expired(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;

    pub(crate) fn entry(fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
        CacheEntry {
            policy_id: "20160831085700Z".into(),
            policy: Policy {
                mode: Mode::Enforce,
                max_age: 86400,
                mx: vec!["mail.example.com".into()],
                lines: Default::default(),
            },
            fetched_at_ms,
            checked_at_ms,
        }
    }

    #[test]
    fn lifetime_counts_from_fetch() {
        let e = entry(1_000_000, 5_000_000);
        assert_eq!(e.expires_at_ms(), 87_400_000);
        assert!(!e.is_expired(87_399_999));
        assert!(e.is_expired(87_400_000));
    }

    #[test]
    fn fresh_within_grace_of_last_check_to_the_millisecond() {
        let e = entry(1_000_000, 5_000_000);
        let grace = Duration::from_secs(2);
        assert!(e.is_fresh(5_000_000, grace));
        assert!(e.is_fresh(5_001_999, grace));
        assert!(!e.is_fresh(5_002_000, grace));
        let half = Duration::from_millis(500);
        assert!(e.is_fresh(5_000_499, half));
        assert!(!e.is_fresh(5_000_500, half));
        // Never fresh once expired, whatever the check time.
        let e = entry(1_000_000, 87_399_000);
        assert!(!e.is_fresh(87_400_000, Duration::from_secs(60)));
    }

    #[test]
    fn fallback_only_unexpired() {
        let e = entry(1_000_000, 1_000_000);
        assert_eq!(fallback(Some(&e), 87_399_999), Some(&e));
        assert_eq!(fallback(Some(&e), 87_400_000), None);
        assert_eq!(fallback(None, 0), None);
    }

    #[test]
    fn newer_compares_fetch_then_check() {
        assert!(entry(2, 0).is_newer_than(&entry(1, 9)));
        assert!(entry(1, 5).is_newer_than(&entry(1, 4)));
        assert!(!entry(1, 4).is_newer_than(&entry(1, 4)));
        assert!(!entry(1, 4).is_newer_than(&entry(2, 0)));
    }

    #[test]
    fn times_beyond_the_skew_are_taken_as_now() {
        let now = 1_700_000_000_000;
        let limit = now + 300_000;
        assert_eq!(latest_believed(now), limit);
        let e = entry(limit, limit);
        assert_eq!(e.clone().clamped(now), e, "within the skew: as it is");
        let e = entry(limit + 1, now - 5);
        let c = e.clamped(now);
        assert_eq!((c.fetched_at_ms, c.checked_at_ms), (now, now - 5));
        assert_eq!(c.expires_at_ms(), now + 86_400_000, "expiry from now");
        assert!(!entry(limit, limit).is_ahead(now));
        assert!(entry(limit + 1, now - 5).is_ahead(now));
        assert!(entry(now - 9, u64::MAX).is_ahead(now));
        let c = entry(now - 9, u64::MAX).clamped(now);
        assert_eq!((c.fetched_at_ms, c.checked_at_ms), (now - 9, now));
        assert!(!c.is_fresh(now + 2_000, Duration::from_secs(2)));
    }

    #[test]
    fn future_dated_entries_are_older_than_any_believed_one() {
        let now = 1_700_000_000_000;
        let ahead = entry(now + 10 * 86_400_000, now + 10 * 86_400_000);
        let ours = entry(now - 60_000, now - 1);
        assert!(ahead.is_newer_than(&ours));
        assert!(!ahead.is_newer_at(&ours, now));
        assert!(ours.is_newer_at(&ahead, now));
        // Believed times compare as is_newer_than does.
        let skewed = entry(now + 300_000, now + 300_000);
        assert!(skewed.is_newer_at(&ours, now));
        assert!(!ours.is_newer_at(&skewed, now));
        assert!(!ours.is_newer_at(&ours, now));
        // A fetch time ahead alone is enough to lose.
        assert!(ours.is_newer_at(&entry(now + 400_000, now - 2), now));
    }

    #[test]
    fn huge_values_saturate() {
        let mut e = entry(u64::MAX - 5, 0);
        e.policy.max_age = u64::MAX;
        assert_eq!(e.expires_at_ms(), u64::MAX);
        assert!(!e.is_fresh(u64::MAX, Duration::MAX));
        assert_eq!(latest_believed(u64::MAX), u64::MAX);
        assert_eq!(believed(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(e.clone().clamped(u64::MAX), e);
    }
}
