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
//!
//! A request from a zone with `dane: true` ([`Resolver::handle_dane_request`])
//! waits on two lookups that run at once, each joined per domain: the DANE
//! lookup (RFC 7672, [`Action::LookupDane`]) and the MTA-STS lookup. A DANE
//! verdict that decides (RFC 8461 §2: `dane-only`, `dane`, a null MX, or a
//! failure) answers at once; "no DANE" waits for the MTA-STS answer.

mod dane;
#[cfg(test)]
mod dane_tests;
mod decision;
mod joined;
mod machine;
mod outcome;
mod remembered;
mod state;
#[cfg(test)]
mod tests;

pub use decision::{dane_class, Class, Decision, LogClass, Source, TempCause, Why};
pub use machine::Resolver;
pub use outcome::{Failure, NoPolicy};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::CacheEntry;
use crate::dane::DaneResult;
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
    /// Lookups doing IO at once; more wait in order (config `max_lookups`).
    pub max_lookups: usize,
}

/// Default bound on lookups doing IO at once.
pub const DEFAULT_MAX_LOOKUPS: usize = 1000;

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
            max_lookups: DEFAULT_MAX_LOOKUPS,
        }
    }
}

/// Outcome of the `_mta-sts` TXT lookup (RFC 8461 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtResult {
    /// Exactly one valid STSv1 record with this `id`.
    Id(String),
    /// The domain publishes no policy (NXDOMAIN, no STSv1 record, two
    /// records, invalid record).
    NoPolicy(NoPolicy),
    /// The lookup failed (SERVFAIL, timeout, ...): not "no policy".
    Error(Failure),
}

/// Outcome of the HTTPS policy fetch (RFC 8461 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// A valid policy (any mode).
    Policy(Policy),
    /// Fetch or validation failure.
    Error(Failure),
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
    /// Run the DANE lookup of the domain (RFC 7672 §2.2: MX, A/AAAA and
    /// TLSA queries with the DO bit); pass the result to
    /// [`Resolver::handle_dane`].
    LookupDane {
        /// The lookup to answer.
        lookup: LookupId,
        /// The destination domain.
        domain: Domain,
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
    /// For a request of a `dane: true` zone, the DANE decision (RFC 8461
    /// §2); when it [decides](crate::dane::Verdict::decides), it is the
    /// reply and `policy`/`reason` say only what MTA-STS knew by then.
    pub dane: Option<DaneAnswer>,
}

/// A DANE result as a request got it (RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneAnswer {
    /// The result, shared with the index and the lookup's other requests.
    pub result: Arc<DaneResult>,
    /// Answered from the index with no traffic.
    pub cached: bool,
}

impl fmt::Display for DaneAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.result)?;
        if self.cached {
            f.write_str(" (cached)")?;
        }
        Ok(())
    }
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
    NoPolicy(NoPolicy),
    /// The TXT lookup or the fetch failed (why); the cached policy is used
    /// while unexpired.
    Fallback(Failure),
    /// A fetch for this id failed recently and is not retried yet.
    FailureBackoff,
    /// The deadline passed; the cached policy is used while unexpired.
    Timeout,
    /// The DANE verdict decided the reply before the MTA-STS lookup ended
    /// (RFC 8461 §2); that lookup goes on and its result is kept.
    DaneDecided,
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
            Reason::DaneDecided => f.write_str("not waited for, DANE decided"),
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
