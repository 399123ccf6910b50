//! The per-domain lookup as a sans-IO state machine (RFC 8461 §3.3, §5.1;
//! docs/ARCHITECTURE.md "The lookup coordinator").
//!
//! The driver feeds requests and IO results in (`handle_*`, with the current
//! `now: Instant` for deadlines and `wall_ms` Unix milliseconds for policy
//! lifetimes), carries out the [`Action`]s it gets from [`Resolver::poll_action`]
//! and calls [`Resolver::handle_timeout`] at [`Resolver::poll_timeout`].
//! Concurrent requests for one domain join one lookup. What a lookup learns
//! is written to the shared [`crate::cache::PolicyIndex`] before any reply
//! leaves, so a later request finds it in memory.

mod machine;
mod remembered;
#[cfg(all(test, any()))]
mod tests;

pub use machine::Resolver;

use std::fmt;
use std::time::Duration;

use crate::cache::CacheEntry;
use crate::domain::Domain;
use crate::policy::{Mode, Policy};

/// A request's identity, chosen by the caller and unique among its open
/// requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A lookup's identity, chosen by the [`Resolver`]; IO results quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(u64);

/// Tunables of the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverSettings {
    /// After a TXT check, how long a cached policy is served with no
    /// traffic (`cache_grace`; the index applies it to "no policy" too).
    pub cache_grace: Duration,
    /// How long a failed fetch for the same domain and id is not retried.
    pub retry_after_failure: Duration,
    /// Bound on the failed-fetch memory.
    pub memory_limit: usize,
    /// A persistent store sits behind the index: read it on a miss, write
    /// through to it ([`Action::LoadStore`], [`Action::Persist`]).
    pub persistent: bool,
}

/// How long a failed fetch for a domain and id is not retried (5 minutes).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

impl Default for ResolverSettings {
    /// `cache_grace` 60 s, retry after 5 minutes, no persistent store.
    fn default() -> Self {
        ResolverSettings {
            cache_grace: Duration::from_secs(60),
            retry_after_failure: RETRY_AFTER_FAILURE,
            memory_limit: 10_000,
            persistent: false,
        }
    }
}

/// Outcome of the `_mta-sts` TXT lookup (RFC 8461 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtResult {
    /// Exactly one valid STSv1 record with this `id`.
    Id(String),
    /// The domain publishes no policy (NXDOMAIN, no STSv1 record, two
    /// records, invalid record): the reason, for the log.
    NoPolicy(String),
    /// The lookup failed (SERVFAIL, timeout, ...): not "no policy".
    Error(String),
}

/// Outcome of the HTTPS policy fetch (RFC 8461 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// A valid policy (any mode).
    Policy(Policy),
    /// Fetch or validation failure, for the log.
    Error(String),
}

/// What the driver must do next (RFC 8461 §3.3 / §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the persistent store; pass the result to
    /// [`Resolver::handle_store_loaded`].
    LoadStore {
        /// The lookup to answer.
        lookup: LookupId,
        /// The cache key.
        domain: Domain,
    },
    /// Query TXT `_mta-sts.<domain>`; pass the result to [`Resolver::handle_txt`].
    QueryTxt {
        /// The lookup to answer.
        lookup: LookupId,
        /// The policy domain.
        domain: Domain,
    },
    /// Fetch the policy over HTTPS; pass the result to [`Resolver::handle_fetch`].
    FetchPolicy {
        /// The lookup to answer.
        lookup: LookupId,
        /// The policy domain.
        domain: Domain,
        /// The TXT id the policy is fetched under.
        policy_id: String,
    },
    /// Write the entry to the persistent store (the index already holds
    /// it); nothing to report back.
    Persist {
        /// The cache key.
        domain: Domain,
        /// The entry to write.
        entry: CacheEntry,
    },
    /// The lookup's deadline passed: drop its IO; late results are ignored.
    Cancel {
        /// The cancelled lookup.
        lookup: LookupId,
    },
    /// Answer a request (exactly once per request).
    Reply {
        /// The request answered.
        request: RequestId,
        /// The domain it asked for.
        domain: Domain,
        /// The policy and why.
        answer: Answer,
    },
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `None`: no policy (NOTFOUND). `Some` may still be mode `none` or
    /// `testing`: the caller renders it per zone.
    pub policy: Option<Policy>,
    /// How the answer was reached, for one log line per lookup.
    pub reason: Reason,
}

/// How an answer was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Served from cache within `cache_grace` of the last TXT check.
    Cached,
    /// The TXT id is unchanged: the cached policy was served and re-checked.
    Confirmed,
    /// A new policy was fetched.
    Fetched,
    /// The domain was recently found to publish no policy: no traffic.
    NoPolicyRemembered,
    /// The TXT lookup found no policy (why); the cached policy is used
    /// while unexpired.
    NoPolicy(String),
    /// The TXT lookup or the fetch failed (why); the cached policy is used
    /// while unexpired.
    Fallback(String),
    /// A fetch for this id failed recently and is not retried yet.
    FailureBackoff,
    /// The deadline passed; the cached policy is used while unexpired.
    Timeout,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Cached => f.write_str("cached policy, checked within cache_grace"),
            Reason::Confirmed => f.write_str("policy id unchanged, cached policy confirmed"),
            Reason::Fetched => f.write_str("policy fetched"),
            Reason::NoPolicyRemembered => f.write_str("no policy (remembered)"),
            Reason::NoPolicy(why) => write!(f, "no policy published: {why}"),
            Reason::Fallback(why) => write!(f, "lookup failed: {why}"),
            Reason::FailureBackoff => {
                f.write_str("recent fetch failure for this id, not retried yet")
            }
            Reason::Timeout => f.write_str("lookup timed out"),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.policy.as_ref().map(|p| p.mode) {
            None => "no policy",
            Some(Mode::Enforce) => "enforce",
            Some(Mode::Testing) => "testing",
            Some(Mode::None) => "mode none",
        };
        write!(f, "{}; answer: {mode}", self.reason)
    }
}

