//! The wall clock both runtimes read for `Runtime::unix_ms`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now as Unix milliseconds, for policy lifetimes (RFC 8461 §3.2
/// `max_age`) and `cache_grace`. A clock set before 1970 reads as 0 and one
/// past `u64::MAX` ms as `u64::MAX`: never a panic on a bad system clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
