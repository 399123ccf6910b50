//! How long a DANE result may be cached: the smallest TTL among the
//! records that decided it (RFC 2181 §5.2; RFC 2308 §5 for negative
//! answers), within [`MIN_TTL`]..=[`MAX_TTL`].

use std::time::Duration;

/// The shortest caching time: even a TTL of 0 spares a burst of requests.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest caching time: a withdrawn TLSA record is noticed within it.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// The smallest TTL seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Option<u32>);

impl Ttl {
    /// No TTL seen yet ([`Ttl::duration`] is then [`MAX_TTL`]).
    pub const fn new() -> Self {
        Ttl(None)
    }

    /// Take `secs` into account.
    pub fn note(&mut self, secs: u32) {
        self.0 = Some(self.0.map_or(secs, |t| t.min(secs)));
    }

    /// Take another tracker's smallest TTL into account.
    pub fn merge(&mut self, other: Ttl) {
        if let Some(secs) = other.0 {
            self.note(secs);
        }
    }

    /// The caching time: the smallest TTL, clamped to
    /// [`MIN_TTL`]..=[`MAX_TTL`].
    pub fn duration(self) -> Duration {
        self.0
            .map_or(MAX_TTL, |s| Duration::from_secs(u64::from(s)))
            .clamp(MIN_TTL, MAX_TTL)
    }
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl::new()
    }
}
