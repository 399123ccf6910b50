//! Cache entries and freshness decisions (RFC 8461 §3.3, §5.1).

use crate::policy::Policy;

/// One cached policy for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The TXT record `id` the policy was fetched under.
    pub policy_id: String,
    /// The policy (its mode may be `none`).
    pub policy: Policy,
    /// Wall-clock seconds (Unix) when the policy was fetched: it expires at
    /// `fetched_at + policy.max_age`.
    pub fetched_at: u64,
    /// Wall-clock seconds (Unix) when the TXT id was last confirmed.
    pub checked_at: u64,
}
