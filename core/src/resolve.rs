//! The per-domain lookup as a sans-IO state machine (RFC 8461 §3.3, §5.1;
//! DESIGN.md "Cache and refresh").
//!
//! The driver feeds requests and IO results in (`handle_*`, with the current
//! `now: Instant` for deadlines and `wall` Unix seconds for policy
//! lifetimes), carries out the [`Action`]s it gets from [`Resolver::poll_action`]
//! and calls [`Resolver::handle_timeout`] at [`Resolver::poll_timeout`].
//! Concurrent requests for one domain join one lookup.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::cache::{self, CacheEntry};
use crate::domain::Domain;
use crate::policy::{Mode, Policy};

/// A request's identity, chosen by the caller and unique among its open
/// requests (DESIGN.md "Socketmap": lookups run concurrently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A lookup's identity, chosen by the [`Resolver`]; IO results quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(u64);

/// Tunables of the lookup (DESIGN.md "Cache and refresh").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Seconds after a TXT check during which a cached policy is served with
    /// no traffic, and a "no policy" result is remembered (`cache_grace`).
    pub cache_grace: u64,
    /// Seconds before a failed fetch for the same domain and id is retried.
    pub retry_after_failure: u64,
    /// Bound on the entries of each in-memory map (no-policy, failures).
    pub memory_limit: usize,
}

impl Default for ResolverSettings {
    /// The defaults of DESIGN.md: `cache_grace` 60 s, retry after 5 minutes.
    fn default() -> Self {
        ResolverSettings {
            cache_grace: 60,
            retry_after_failure: 300,
            memory_limit: 10_000,
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

/// What the driver must do next (RFC 8461 §3.3 / §5.1 as DESIGN.md orders it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the cache; pass the entry (or `None`, also on a backend error) to
    /// [`Resolver::handle_cache_loaded`].
    LoadCache {
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
    /// Write the entry to the cache; nothing to report back.
    Store {
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

/// The answer to one request (DESIGN.md "Replies for a policy").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `None`: no policy (NOTFOUND). `Some` may still be mode `none` or
    /// `testing`: the caller renders it per zone.
    pub policy: Option<Policy>,
    /// How the answer was reached, for one log line per lookup.
    pub reason: Reason,
}

/// How an answer was reached (DESIGN.md "Cache and refresh").
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

/// Where a lookup is waiting.
#[derive(Debug)]
enum Stage {
    LoadingCache,
    QueryingTxt,
    Fetching { policy_id: String },
}

#[derive(Debug)]
struct Waiter {
    request: RequestId,
    deadline: Instant,
}

#[derive(Debug)]
struct Lookup {
    domain: Domain,
    deadline: Instant,
    /// A proactive refresh checks the TXT id even within `cache_grace`.
    refresh: bool,
    stage: Stage,
    /// The cached entry, kept for the id comparison and for fallback.
    entry: Option<CacheEntry>,
    waiters: Vec<Waiter>,
}

/// A pending deadline. Requests sort before lookups at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Request(LookupId, RequestId),
    Lookup(LookupId),
}

/// A bounded "noted at" map whose items lapse `ttl` seconds after noting.
/// The order log makes trimming O(1) amortised: items are noted in wall
/// order, so the oldest (first to lapse) sit at the front.
#[derive(Debug)]
struct Remembered<K> {
    ttl: u64,
    limit: usize,
    map: HashMap<K, u64>,
    log: VecDeque<(K, u64)>,
}

impl<K: Eq + Hash + Clone> Remembered<K> {
    fn new(ttl: u64, limit: usize) -> Self {
        Remembered {
            ttl,
            limit,
            map: HashMap::new(),
            log: VecDeque::new(),
        }
    }

    fn is_active(&self, key: &K, wall: u64) -> bool {
        self.map
            .get(key)
            .is_some_and(|&noted| wall < noted.saturating_add(self.ttl))
    }

    fn note(&mut self, key: K, wall: u64) {
        self.map.insert(key.clone(), wall);
        self.log.push_back((key, wall));
        self.trim(wall);
    }

    fn forget(&mut self, key: &K) {
        // The log item goes stale and is skipped when it reaches the front.
        self.map.remove(key);
    }

    /// Drop lapsed items first, then the oldest while over the limit.
    fn trim(&mut self, wall: u64) {
        while let Some((key, noted)) = self.log.front() {
            let current = self.map.get(key) == Some(noted);
            let lapsed = wall >= noted.saturating_add(self.ttl);
            if current && !lapsed && self.map.len() <= self.limit {
                break;
            }
            if current {
                self.map.remove(key);
            }
            self.log.pop_front();
        }
        if self.log.len() > self.limit.saturating_mul(2).saturating_add(16) {
            let map = &self.map;
            self.log.retain(|(k, noted)| map.get(k) == Some(noted));
        }
    }
}

/// Longest deadline honoured; guards `Instant + Duration` against overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The lookup state machine (DESIGN.md "Cache and refresh"): joins concurrent
/// requests per domain, remembers "no policy" and failed fetches in bounded
/// memory, and answers every request exactly once, by its deadline.
#[derive(Debug)]
pub struct Resolver {
    settings: ResolverSettings,
    next_lookup: u64,
    lookups: HashMap<LookupId, Lookup>,
    running: HashMap<Domain, LookupId>,
    timers: BTreeSet<(Instant, Timer)>,
    no_policy: Remembered<Domain>,
    failures: Remembered<(Domain, String)>,
    actions: VecDeque<Action>,
    /// The latest wall clock passed in: `handle_timeout` has none, and a
    /// deadline is at most a zone timeout after the last call that had one.
    wall: u64,
}

impl Resolver {
    /// A resolver with nothing in flight.
    pub fn new(settings: ResolverSettings) -> Self {
        Resolver {
            settings,
            next_lookup: 0,
            lookups: HashMap::new(),
            running: HashMap::new(),
            timers: BTreeSet::new(),
            no_policy: Remembered::new(settings.cache_grace, settings.memory_limit),
            failures: Remembered::new(settings.retry_after_failure, settings.memory_limit),
            actions: VecDeque::new(),
            wall: 0,
        }
    }

    /// A Postfix lookup for `domain` that must be answered by `now + timeout`
    /// (the zone's `timeout`). Joins a running lookup for the domain; answers
    /// at once when the domain is remembered as having no policy; else
    /// starts a lookup with [`Action::LoadCache`].
    pub fn handle_request(
        &mut self,
        request: RequestId,
        domain: Domain,
        timeout: Duration,
        now: Instant,
        wall: u64,
    ) {
        self.advance(now, wall);
        let deadline = deadline(now, timeout);
        let waiter = Waiter { request, deadline };
        if let Some(&id) = self.running.get(&domain) {
            if let Some(lookup) = self.lookups.get_mut(&id) {
                // The lookup's own deadline covers later request deadlines.
                if deadline < lookup.deadline {
                    self.timers.insert((deadline, Timer::Request(id, request)));
                }
                lookup.waiters.push(waiter);
                return;
            }
        }
        if self.no_policy.is_active(&domain, wall) {
            self.reply(request, domain, None, Reason::NoPolicyRemembered);
            return;
        }
        self.start(domain, deadline, false, vec![waiter]);
    }

    /// Proactive refresh (RFC 8461 §5.1, DESIGN.md `proactive_policy_fetching`):
    /// a lookup with no request that checks the TXT id even within
    /// `cache_grace`. Does nothing if a lookup for the domain is running.
    pub fn handle_refresh(&mut self, domain: Domain, timeout: Duration, now: Instant, wall: u64) {
        self.advance(now, wall);
        if self.running.contains_key(&domain) {
            return;
        }
        self.start(domain, deadline(now, timeout), true, Vec::new());
    }

    /// The result of [`Action::LoadCache`] (`None` also for a backend error).
    /// A fresh entry answers every waiter with no traffic; otherwise the TXT
    /// id is checked (RFC 8461 §5.1).
    pub fn handle_cache_loaded(
        &mut self,
        lookup: LookupId,
        entry: Option<CacheEntry>,
        now: Instant,
        wall: u64,
    ) {
        self.advance(now, wall);
        let grace = self.settings.cache_grace;
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        if !matches!(l.stage, Stage::LoadingCache) {
            return;
        }
        if let Some(e) = entry
            .as_ref()
            .filter(|e| !l.refresh && e.is_fresh(wall, grace))
        {
            let policy = e.policy.clone();
            self.finish(lookup, Some(policy), Reason::Cached);
            return;
        }
        l.entry = entry;
        l.stage = Stage::QueryingTxt;
        let domain = l.domain.clone();
        self.actions.push_back(Action::QueryTxt { lookup, domain });
    }

    /// The result of [`Action::QueryTxt`] (RFC 8461 §3.1, §5.1): an unchanged
    /// id confirms an unexpired cached policy; a new id or an expired policy
    /// is fetched unless a fetch for that id failed recently; no policy or an
    /// error falls back to the cached policy while unexpired.
    pub fn handle_txt(&mut self, lookup: LookupId, result: TxtResult, now: Instant, wall: u64) {
        self.advance(now, wall);
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        if !matches!(l.stage, Stage::QueryingTxt) {
            return;
        }
        let domain = l.domain.clone();
        match result {
            TxtResult::Id(id) => {
                let confirmed = l
                    .entry
                    .as_ref()
                    .filter(|e| e.policy_id == id && !e.is_expired(wall))
                    .cloned();
                if let Some(mut entry) = confirmed {
                    // Same fetched_at: an unchanged id never extends the lifetime.
                    entry.checked_at = entry.checked_at.max(wall);
                    let policy = entry.policy.clone();
                    self.no_policy.forget(&domain);
                    self.actions.push_back(Action::Store { domain, entry });
                    self.finish(lookup, Some(policy), Reason::Confirmed);
                } else if self.failures.is_active(&(domain.clone(), id.clone()), wall) {
                    self.finish_fallback(lookup, Reason::FailureBackoff);
                } else {
                    l.stage = Stage::Fetching {
                        policy_id: id.clone(),
                    };
                    self.actions.push_back(Action::FetchPolicy {
                        lookup,
                        domain,
                        policy_id: id,
                    });
                }
            }
            TxtResult::NoPolicy(why) => {
                // A missing TXT record does not evict a cached policy.
                if cache::fallback(l.entry.as_ref(), wall).is_none() {
                    self.no_policy.note(domain, wall);
                }
                self.finish_fallback(lookup, Reason::NoPolicy(why));
            }
            TxtResult::Error(why) => self.finish_fallback(lookup, Reason::Fallback(why)),
        }
    }

    /// The result of [`Action::FetchPolicy`] (RFC 8461 §3.3): a policy is
    /// stored and answered (mode `none` too); a failure is remembered for
    /// `retry_after_failure` seconds and falls back to the cache.
    pub fn handle_fetch(&mut self, lookup: LookupId, result: FetchResult, now: Instant, wall: u64) {
        self.advance(now, wall);
        let Some(l) = self.lookups.get(&lookup) else {
            return;
        };
        let Stage::Fetching { policy_id } = &l.stage else {
            return;
        };
        let key = (l.domain.clone(), policy_id.clone());
        match result {
            FetchResult::Policy(policy) => {
                let (domain, policy_id) = key;
                self.failures.forget(&(domain.clone(), policy_id.clone()));
                self.no_policy.forget(&domain);
                let entry = CacheEntry {
                    policy_id,
                    policy: policy.clone(),
                    fetched_at: wall,
                    checked_at: wall,
                };
                self.actions.push_back(Action::Store { domain, entry });
                self.finish(lookup, Some(policy), Reason::Fetched);
            }
            FetchResult::Error(why) => {
                self.failures.note(key, wall);
                self.finish_fallback(lookup, Reason::Fallback(why));
            }
        }
    }

    /// Process every deadline up to `now`: a request past its deadline gets
    /// the fallback answer and leaves its lookup; a lookup past its deadline
    /// is cancelled and all its waiters get the fallback answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Request(id, request) => self.expire_request(id, request, at),
                Timer::Lookup(id) => self.expire_lookup(id),
            }
        }
    }

    /// The next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest pending deadline: call [`Resolver::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Number of lookups running (for graceful shutdown and tests).
    pub fn in_flight(&self) -> usize {
        self.lookups.len()
    }

    /// Record the clock and settle deadlines already past, so that a result
    /// arriving after its lookup's deadline is ignored even if the driver
    /// was late calling `handle_timeout`.
    fn advance(&mut self, now: Instant, wall: u64) {
        self.wall = wall;
        self.handle_timeout(now);
    }

    fn start(&mut self, domain: Domain, deadline: Instant, refresh: bool, waiters: Vec<Waiter>) {
        self.next_lookup += 1;
        let id = LookupId(self.next_lookup);
        self.timers.insert((deadline, Timer::Lookup(id)));
        self.running.insert(domain.clone(), id);
        self.lookups.insert(
            id,
            Lookup {
                domain: domain.clone(),
                deadline,
                refresh,
                stage: Stage::LoadingCache,
                entry: None,
                waiters,
            },
        );
        self.actions
            .push_back(Action::LoadCache { lookup: id, domain });
    }

    fn reply(
        &mut self,
        request: RequestId,
        domain: Domain,
        policy: Option<Policy>,
        reason: Reason,
    ) {
        self.actions.push_back(Action::Reply {
            request,
            domain,
            answer: Answer { policy, reason },
        });
    }

    /// End a lookup, answering every waiter with `policy`.
    fn finish(&mut self, id: LookupId, policy: Option<Policy>, reason: Reason) {
        let Some(lookup) = self.lookups.remove(&id) else {
            return;
        };
        if self.running.get(&lookup.domain) == Some(&id) {
            self.running.remove(&lookup.domain);
        }
        self.timers.remove(&(lookup.deadline, Timer::Lookup(id)));
        for w in lookup.waiters {
            self.timers
                .remove(&(w.deadline, Timer::Request(id, w.request)));
            self.reply(
                w.request,
                lookup.domain.clone(),
                policy.clone(),
                reason.clone(),
            );
        }
    }

    /// End a lookup with the cached policy while unexpired, else no policy.
    fn finish_fallback(&mut self, id: LookupId, reason: Reason) {
        let policy = self.fallback_policy(id);
        self.finish(id, policy, reason);
    }

    fn fallback_policy(&self, id: LookupId) -> Option<Policy> {
        let entry = self.lookups.get(&id)?.entry.as_ref();
        cache::fallback(entry, self.wall).map(|e| e.policy.clone())
    }

    fn expire_request(&mut self, id: LookupId, request: RequestId, deadline: Instant) {
        let policy = self.fallback_policy(id);
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let Some(pos) = lookup
            .waiters
            .iter()
            .position(|w| w.request == request && w.deadline == deadline)
        else {
            return;
        };
        lookup.waiters.remove(pos);
        let domain = lookup.domain.clone();
        self.reply(request, domain, policy, Reason::Timeout);
    }

    fn expire_lookup(&mut self, id: LookupId) {
        let Some(lookup) = self.lookups.get(&id) else {
            return;
        };
        // A fetch cut off by the deadline counts as a failed fetch.
        if let Stage::Fetching { policy_id } = &lookup.stage {
            let key = (lookup.domain.clone(), policy_id.clone());
            self.failures.note(key, self.wall);
        }
        self.actions.push_back(Action::Cancel { lookup: id });
        self.finish_fallback(id, Reason::Timeout);
    }
}

fn deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout.min(MAX_TIMEOUT)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryCache;
    use crate::domain::normalize_key;
    use proptest::prelude::*;

    const W: u64 = 1_700_000_000;
    const DAY: u64 = 86_400;
    const T: Duration = Duration::from_secs(4);

    fn d(s: &str) -> Domain {
        normalize_key(s).unwrap()
    }

    fn pol(max_age: u64, mx: &str) -> Policy {
        Policy {
            mode: Mode::Enforce,
            max_age,
            mx: vec![mx.to_owned()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                format!("max_age: {max_age}"),
                format!("mx: {mx}"),
            ],
        }
    }

    fn entry(id: &str, fetched_at: u64, checked_at: u64) -> CacheEntry {
        CacheEntry {
            policy_id: id.to_owned(),
            policy: pol(DAY, "mail.example.com"),
            fetched_at,
            checked_at,
        }
    }

    fn resolver() -> Resolver {
        Resolver::new(ResolverSettings {
            cache_grace: 60,
            retry_after_failure: 300,
            memory_limit: 100,
        })
    }

    fn drain(r: &mut Resolver) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn reply(req: u64, dom: &str, policy: Option<Policy>, reason: Reason) -> Action {
        Action::Reply {
            request: RequestId(req),
            domain: d(dom),
            answer: Answer { policy, reason },
        }
    }

    /// Start a request that must begin a lookup; returns its id.
    fn start(r: &mut Resolver, req: u64, dom: &str, now: Instant, wall: u64) -> LookupId {
        r.handle_request(RequestId(req), d(dom), T, now, wall);
        match drain(r).as_slice() {
            [Action::LoadCache { lookup, domain }] if *domain == d(dom) => *lookup,
            other => panic!("expected LoadCache, got {other:?}"),
        }
    }

    /// Drive a request through LoadCache(entry) to QueryTxt.
    fn to_txt(
        r: &mut Resolver,
        req: u64,
        e: Option<CacheEntry>,
        now: Instant,
        wall: u64,
    ) -> LookupId {
        let id = start(r, req, "example.com", now, wall);
        r.handle_cache_loaded(id, e, now, wall);
        assert_eq!(
            drain(r),
            vec![Action::QueryTxt {
                lookup: id,
                domain: d("example.com")
            }]
        );
        id
    }

    fn fetch_action(id: LookupId, policy_id: &str) -> Action {
        Action::FetchPolicy {
            lookup: id,
            domain: d("example.com"),
            policy_id: policy_id.to_owned(),
        }
    }

    #[test]
    fn fresh_cache_needs_no_network() {
        let mut r = resolver();
        let now = Instant::now();
        let id = start(&mut r, 1, "example.com", now, W);
        r.handle_cache_loaded(id, Some(entry("a", W - 100, W - 59)), now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1,
                "example.com",
                Some(pol(DAY, "mail.example.com")),
                Reason::Cached
            )]
        );
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn grace_passed_same_id_confirms_without_fetch() {
        let mut r = resolver();
        let now = Instant::now();
        let cached = entry("a", W - 1000, W - 60);
        let id = to_txt(&mut r, 1, Some(cached.clone()), now, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        let mut stored = cached.clone();
        stored.checked_at = W;
        assert_eq!(
            drain(&mut r),
            vec![
                Action::Store {
                    domain: d("example.com"),
                    entry: stored
                },
                reply(1, "example.com", Some(cached.policy), Reason::Confirmed),
            ]
        );
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn changed_id_fetches() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, Some(entry("a", W - 1000, W - 100)), now, W);
        r.handle_txt(id, TxtResult::Id("b".into()), now, W);
        assert_eq!(drain(&mut r), vec![fetch_action(id, "b")]);
        let new = pol(3600, "mx2.example.com");
        r.handle_fetch(id, FetchResult::Policy(new.clone()), now, W + 1);
        assert_eq!(
            drain(&mut r),
            vec![
                Action::Store {
                    domain: d("example.com"),
                    entry: CacheEntry {
                        policy_id: "b".into(),
                        policy: new.clone(),
                        fetched_at: W + 1,
                        checked_at: W + 1
                    }
                },
                reply(1, "example.com", Some(new), Reason::Fetched),
            ]
        );
    }

    #[test]
    fn expired_policy_with_same_id_fetches() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, Some(entry("a", W - DAY, W - 10)), now, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
    }

    #[test]
    fn fetch_failure_falls_back_to_unexpired_cache() {
        let mut r = resolver();
        let now = Instant::now();
        let cached = entry("a", W - 1000, W - 100);
        let id = to_txt(&mut r, 1, Some(cached.clone()), now, W);
        r.handle_txt(id, TxtResult::Id("b".into()), now, W);
        drain(&mut r);
        r.handle_fetch(id, FetchResult::Error("HTTP 404".into()), now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1,
                "example.com",
                Some(cached.policy),
                Reason::Fallback("HTTP 404".into())
            )]
        );
    }

    #[test]
    fn fetch_failure_with_expired_cache_gives_no_policy() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, Some(entry("a", W - DAY - 5, W - 100)), now, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        drain(&mut r);
        r.handle_fetch(id, FetchResult::Error("tls".into()), now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1,
                "example.com",
                None,
                Reason::Fallback("tls".into())
            )]
        );
    }

    #[test]
    fn failed_fetch_is_not_retried_for_five_minutes() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, None, now, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        drain(&mut r);
        r.handle_fetch(id, FetchResult::Error("refused".into()), now, W);
        drain(&mut r);

        // Within 300 s: the TXT is checked but the fetch is not retried.
        let id = to_txt(&mut r, 2, None, now, W + 299);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W + 299);
        assert_eq!(
            drain(&mut r),
            vec![reply(2, "example.com", None, Reason::FailureBackoff)]
        );
        // A different id is fetched at once.
        let id = to_txt(&mut r, 3, None, now, W + 299);
        r.handle_txt(id, TxtResult::Id("b".into()), now, W + 299);
        assert_eq!(drain(&mut r), vec![fetch_action(id, "b")]);
        r.handle_fetch(id, FetchResult::Error("x".into()), now, W + 299);
        drain(&mut r);
        // After 300 s the first id is retried.
        let id = to_txt(&mut r, 4, None, now, W + 300);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W + 300);
        assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
    }

    #[test]
    fn no_policy_is_remembered_for_cache_grace() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, None, now, W);
        r.handle_txt(id, TxtResult::NoPolicy("NXDOMAIN".into()), now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1,
                "example.com",
                None,
                Reason::NoPolicy("NXDOMAIN".into())
            )]
        );
        r.handle_request(RequestId(2), d("example.com"), T, now, W + 59);
        assert_eq!(
            drain(&mut r),
            vec![reply(2, "example.com", None, Reason::NoPolicyRemembered)]
        );
        assert_eq!(r.in_flight(), 0);
        // Once cache_grace has passed, it is looked up again.
        start(&mut r, 3, "example.com", now, W + 60);
    }

    #[test]
    fn missing_txt_keeps_unexpired_cached_policy() {
        let mut r = resolver();
        let now = Instant::now();
        let cached = entry("a", W - 1000, W - 100);
        let id = to_txt(&mut r, 1, Some(cached.clone()), now, W);
        r.handle_txt(id, TxtResult::NoPolicy("no STSv1 record".into()), now, W);
        // No Store, no eviction: the cached policy answers.
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1,
                "example.com",
                Some(cached.policy),
                Reason::NoPolicy("no STSv1 record".into())
            )]
        );
        // And "no policy" is not remembered: the next request looks up again.
        start(&mut r, 2, "example.com", now, W + 1);
    }

    #[test]
    fn dns_error_is_not_remembered_as_no_policy() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, None, now, W);
        r.handle_txt(id, TxtResult::Error("SERVFAIL".into()), now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1,
                "example.com",
                None,
                Reason::Fallback("SERVFAIL".into())
            )]
        );
        start(&mut r, 2, "example.com", now, W + 1);
    }

    #[test]
    fn mode_none_policy_is_stored_and_answered() {
        let mut r = resolver();
        let now = Instant::now();
        let id = to_txt(&mut r, 1, None, now, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        drain(&mut r);
        let none = Policy {
            mode: Mode::None,
            max_age: 600,
            mx: vec![],
            lines: vec![
                "version: STSv1".into(),
                "mode: none".into(),
                "max_age: 600".into(),
            ],
        };
        r.handle_fetch(id, FetchResult::Policy(none.clone()), now, W);
        let actions = drain(&mut r);
        assert!(matches!(
            &actions[..],
            [Action::Store { .. }, Action::Reply { .. }]
        ));
        assert_eq!(
            actions[1],
            reply(1, "example.com", Some(none), Reason::Fetched)
        );
    }

    #[test]
    fn concurrent_requests_share_one_lookup() {
        let mut r = resolver();
        let now = Instant::now();
        let id = start(&mut r, 1, "example.com", now, W);
        r.handle_request(RequestId(2), d("example.com"), T, now, W);
        assert_eq!(drain(&mut r), vec![]);
        // Another domain gets its own lookup.
        let other = start(&mut r, 3, "example.net", now, W);
        assert_ne!(id, other);
        assert_eq!(r.in_flight(), 2);

        r.handle_cache_loaded(id, None, now, W);
        assert_eq!(drain(&mut r).len(), 1);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
        let p = pol(DAY, "mail.example.com");
        r.handle_fetch(id, FetchResult::Policy(p.clone()), now, W);
        let actions = drain(&mut r);
        assert_eq!(actions.len(), 3);
        assert_eq!(
            actions[1],
            reply(1, "example.com", Some(p.clone()), Reason::Fetched)
        );
        assert_eq!(
            actions[2],
            reply(2, "example.com", Some(p), Reason::Fetched)
        );
        assert_eq!(r.in_flight(), 1);
    }

    #[test]
    fn shorter_request_timeout_answers_that_request_only() {
        let mut r = resolver();
        let t0 = Instant::now();
        r.handle_request(
            RequestId(1),
            d("example.com"),
            Duration::from_secs(10),
            t0,
            W,
        );
        let id = match drain(&mut r).as_slice() {
            [Action::LoadCache { lookup, .. }] => *lookup,
            other => panic!("{other:?}"),
        };
        let cached = entry("a", W - 1000, W - 100);
        r.handle_cache_loaded(id, Some(cached.clone()), t0, W);
        drain(&mut r);
        // A zone with a 2 s timeout joins at t0 + 1 s.
        let t1 = t0 + Duration::from_secs(1);
        r.handle_request(
            RequestId(2),
            d("example.com"),
            Duration::from_secs(2),
            t1,
            W + 1,
        );
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(2)));
        r.handle_timeout(t1 + Duration::from_millis(1999));
        assert_eq!(drain(&mut r), vec![]);
        r.handle_timeout(t1 + Duration::from_secs(2));
        assert_eq!(
            drain(&mut r),
            vec![reply(
                2,
                "example.com",
                Some(cached.policy.clone()),
                Reason::Timeout
            )]
        );
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        // The lookup goes on for request 1.
        r.handle_txt(id, TxtResult::Id("a".into()), t1, W + 3);
        let actions = drain(&mut r);
        assert_eq!(actions.len(), 2);
        assert_eq!(
            actions[1],
            reply(1, "example.com", Some(cached.policy), Reason::Confirmed)
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn joined_request_with_longer_timeout_ends_with_the_lookup() {
        let mut r = resolver();
        let t0 = Instant::now();
        let id = start(&mut r, 1, "example.com", t0, W);
        r.handle_request(
            RequestId(2),
            d("example.com"),
            Duration::from_secs(30),
            t0,
            W,
        );
        r.handle_timeout(t0 + T);
        assert_eq!(
            drain(&mut r),
            vec![
                Action::Cancel { lookup: id },
                reply(1, "example.com", None, Reason::Timeout),
                reply(2, "example.com", None, Reason::Timeout),
            ]
        );
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn lookup_deadline_cancels_and_ignores_late_results() {
        let mut r = resolver();
        let t0 = Instant::now();
        let cached = entry("a", W - 1000, W - 100);
        let id = to_txt(&mut r, 1, Some(cached.clone()), t0, W);
        assert_eq!(r.poll_timeout(), Some(t0 + T));
        r.handle_timeout(t0 + T);
        assert_eq!(
            drain(&mut r),
            vec![
                Action::Cancel { lookup: id },
                reply(1, "example.com", Some(cached.policy), Reason::Timeout),
            ]
        );
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.poll_timeout(), None);
        // Late results, and results for lookups that never existed.
        r.handle_txt(id, TxtResult::Id("b".into()), t0 + T, W + 5);
        r.handle_cache_loaded(id, None, t0 + T, W + 5);
        r.handle_fetch(LookupId(999), FetchResult::Error("x".into()), t0 + T, W + 5);
        assert_eq!(drain(&mut r), vec![]);
    }

    #[test]
    fn late_driver_still_cancels_before_result() {
        // The driver missed poll_timeout: a result after the deadline is ignored.
        let mut r = resolver();
        let t0 = Instant::now();
        let id = to_txt(&mut r, 1, None, t0, W);
        r.handle_txt(id, TxtResult::Id("a".into()), t0 + T, W + 4);
        assert_eq!(
            drain(&mut r),
            vec![
                Action::Cancel { lookup: id },
                reply(1, "example.com", None, Reason::Timeout)
            ]
        );
    }

    #[test]
    fn results_in_the_wrong_stage_are_ignored() {
        let mut r = resolver();
        let now = Instant::now();
        let id = start(&mut r, 1, "example.com", now, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        r.handle_fetch(id, FetchResult::Error("x".into()), now, W);
        assert_eq!(drain(&mut r), vec![]);
        assert_eq!(r.in_flight(), 1);
    }

    #[test]
    fn deadline_during_fetch_counts_as_failed_fetch() {
        let mut r = resolver();
        let t0 = Instant::now();
        let id = to_txt(&mut r, 1, None, t0, W);
        r.handle_txt(id, TxtResult::Id("a".into()), t0, W);
        drain(&mut r);
        r.handle_timeout(t0 + T);
        assert_eq!(drain(&mut r)[0], Action::Cancel { lookup: id });
        let t1 = t0 + Duration::from_secs(10);
        let id = to_txt(&mut r, 2, None, t1, W + 10);
        r.handle_txt(id, TxtResult::Id("a".into()), t1, W + 10);
        assert_eq!(
            drain(&mut r),
            vec![reply(2, "example.com", None, Reason::FailureBackoff)]
        );
    }

    #[test]
    fn refresh_checks_id_within_grace() {
        let mut r = resolver();
        let now = Instant::now();
        let fresh = entry("a", W - 10, W - 10);
        r.handle_refresh(d("example.com"), T, now, W);
        let id = match drain(&mut r).as_slice() {
            [Action::LoadCache { lookup, .. }] => *lookup,
            other => panic!("{other:?}"),
        };
        // A second refresh while running does nothing.
        r.handle_refresh(d("example.com"), T, now, W);
        assert_eq!(drain(&mut r), vec![]);
        r.handle_cache_loaded(id, Some(fresh.clone()), now, W);
        assert_eq!(
            drain(&mut r),
            vec![Action::QueryTxt {
                lookup: id,
                domain: d("example.com")
            }]
        );
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        let mut stored = fresh;
        stored.checked_at = W;
        // No Reply: the refresh has no request.
        assert_eq!(
            drain(&mut r),
            vec![Action::Store {
                domain: d("example.com"),
                entry: stored
            }]
        );
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn request_joins_running_refresh() {
        let mut r = resolver();
        let now = Instant::now();
        r.handle_refresh(d("example.com"), T, now, W);
        let id = match drain(&mut r).as_slice() {
            [Action::LoadCache { lookup, .. }] => *lookup,
            other => panic!("{other:?}"),
        };
        r.handle_request(RequestId(7), d("example.com"), T, now, W);
        assert_eq!(drain(&mut r), vec![]);
        r.handle_cache_loaded(id, None, now, W);
        r.handle_txt(id, TxtResult::Error("timeout".into()), now, W);
        assert_eq!(
            drain(&mut r).last(),
            Some(&reply(
                7,
                "example.com",
                None,
                Reason::Fallback("timeout".into())
            ))
        );
    }

    #[test]
    fn memory_maps_stay_bounded() {
        let mut r = Resolver::new(ResolverSettings {
            cache_grace: 60,
            retry_after_failure: 300,
            memory_limit: 3,
        });
        let now = Instant::now();
        for i in 0..10u64 {
            let dom = format!("d{i}.example");
            let id = start(&mut r, i, &dom, now, W + i);
            r.handle_cache_loaded(id, None, now, W + i);
            r.handle_txt(id, TxtResult::NoPolicy("NXDOMAIN".into()), now, W + i);
            drain(&mut r);
            assert!(r.no_policy.map.len() <= 3);
        }
        // The newest are kept, the oldest dropped.
        r.handle_request(RequestId(100), d("d9.example"), T, now, W + 10);
        assert_eq!(
            drain(&mut r),
            vec![reply(100, "d9.example", None, Reason::NoPolicyRemembered)]
        );
        start(&mut r, 101, "d0.example", now, W + 10);
        // Lapsed items go first.
        let mut m = Remembered::new(10, 2);
        m.note("old", 0);
        m.note("new", 5);
        m.note("newer", 11);
        assert!(!m.is_active(&"old", 11));
        assert!(m.is_active(&"new", 11) && m.is_active(&"newer", 11));
        assert_eq!(m.map.len(), 2);
    }

    /// A day and more of requests every hour, with a driver holding a real
    /// MemoryCache: the TXT id is re-checked each hour, the policy is only
    /// re-fetched once it has expired, never extended by confirmations.
    #[test]
    fn hours_of_cache_life() {
        let mut r = resolver();
        let mut store = MemoryCache::new(10);
        let t0 = Instant::now();
        let mut fetches = Vec::new();
        for hour in 0..50u64 {
            let wall = W + hour * 3600;
            let now = t0 + Duration::from_secs(hour * 3600);
            r.handle_request(RequestId(hour), d("example.com"), T, now, wall);
            let mut replies = 0;
            while let Some(action) = r.poll_action() {
                match action {
                    Action::LoadCache { lookup, domain } => {
                        r.handle_cache_loaded(lookup, store.get(&domain), now, wall)
                    }
                    Action::QueryTxt { lookup, .. } => {
                        r.handle_txt(lookup, TxtResult::Id("a".into()), now, wall)
                    }
                    Action::FetchPolicy { lookup, .. } => {
                        fetches.push(hour);
                        let p = pol(DAY, "mail.example.com");
                        r.handle_fetch(lookup, FetchResult::Policy(p), now, wall)
                    }
                    Action::Store { domain, entry } => store.put(domain, entry),
                    Action::Reply { answer, .. } => {
                        assert!(answer.policy.is_some());
                        replies += 1;
                    }
                    Action::Cancel { .. } => panic!("no deadline should pass"),
                }
            }
            assert_eq!(replies, 1);
            let e = store.get(&d("example.com")).unwrap();
            assert_eq!(e.checked_at, wall);
            assert!(!e.is_expired(wall));
        }
        assert_eq!(fetches, vec![0, 24, 48]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request { dom: u8, timeout_ms: u64 },
        Refresh { dom: u8, timeout_ms: u64 },
        Advance { ms: u64, extra_wall: u64 },
        Deliver { pick: usize, variant: u8, age: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, 0u64..3000).prop_map(|(dom, timeout_ms)| Op::Request { dom, timeout_ms }),
            1 => (0u8..3, 0u64..3000).prop_map(|(dom, timeout_ms)| Op::Refresh { dom, timeout_ms }),
            2 => (0u64..2000, prop_oneof![Just(0u64), 0u64..400, Just(DAY)])
                .prop_map(|(ms, extra_wall)| Op::Advance { ms, extra_wall }),
            4 => (any::<usize>(), any::<u8>(), 0u64..2000)
                .prop_map(|(pick, variant, age)| Op::Deliver { pick, variant, age }),
        ]
    }

    #[derive(Debug, Clone, Copy)]
    enum Io {
        Load,
        Txt,
        Fetch,
    }

    proptest! {
        #[test]
        fn every_request_gets_exactly_one_timely_reply(ops in proptest::collection::vec(op(), 0..80)) {
            let mut r = resolver();
            let t0 = Instant::now();
            let mut now = t0;
            let mut wall = W;
            let mut next_req = 0u64;
            let mut open: HashMap<RequestId, Instant> = HashMap::new();
            let mut pending: Vec<(Io, LookupId)> = Vec::new();
            let ids = ["a", "b"];
            let domains = ["a.example", "b.example", "c.example"];

            let collect = |r: &mut Resolver,
                               now: Instant,
                               open: &mut HashMap<RequestId, Instant>,
                               pending: &mut Vec<(Io, LookupId)>|
             -> Result<(), TestCaseError> {
                while let Some(action) = r.poll_action() {
                    match action {
                        Action::LoadCache { lookup, .. } => pending.push((Io::Load, lookup)),
                        Action::QueryTxt { lookup, .. } => pending.push((Io::Txt, lookup)),
                        Action::FetchPolicy { lookup, .. } => pending.push((Io::Fetch, lookup)),
                        // Late results are still delivered: they must be ignored.
                        Action::Store { .. } | Action::Cancel { .. } => {}
                        Action::Reply { request, .. } => {
                            let deadline = open.remove(&request);
                            prop_assert!(deadline.is_some(), "unknown or repeated reply {request:?}");
                            prop_assert!(deadline.is_some_and(|d| now <= d), "reply after deadline");
                        }
                    }
                }
                if let Some(t) = r.poll_timeout() {
                    prop_assert!(t >= now, "a passed deadline was not handled");
                }
                Ok(())
            };

            for op in ops {
                match op {
                    Op::Request { dom, timeout_ms } => {
                        let req = RequestId(next_req);
                        next_req += 1;
                        let timeout = Duration::from_millis(timeout_ms);
                        open.insert(req, now + timeout);
                        r.handle_request(req, d(domains[usize::from(dom)]), timeout, now, wall);
                    }
                    Op::Refresh { dom, timeout_ms } => {
                        let timeout = Duration::from_millis(timeout_ms);
                        r.handle_refresh(d(domains[usize::from(dom)]), timeout, now, wall);
                    }
                    Op::Advance { ms, extra_wall } => {
                        // A driver that wakes at every poll_timeout on the way.
                        let target = now + Duration::from_millis(ms);
                        while let Some(t) = r.poll_timeout().filter(|t| *t <= target) {
                            now = t;
                            r.handle_timeout(now);
                            collect(&mut r, now, &mut open, &mut pending)?;
                        }
                        now = target;
                        wall += ms / 1000 + extra_wall;
                        r.handle_timeout(now);
                    }
                    Op::Deliver { pick, variant, age } => {
                        if pending.is_empty() {
                            continue;
                        }
                        let (io, lookup) = pending.swap_remove(pick % pending.len());
                        let id = ids[usize::from(variant / 8 % 2)].to_owned();
                        match io {
                            Io::Load => {
                                let e = (variant % 3 != 0).then(|| CacheEntry {
                                    policy_id: id,
                                    policy: pol(1000, "mx.example"),
                                    fetched_at: wall.saturating_sub(age),
                                    checked_at: wall.saturating_sub(age / 2),
                                });
                                r.handle_cache_loaded(lookup, e, now, wall);
                            }
                            Io::Txt => {
                                let res = match variant % 3 {
                                    0 => TxtResult::Id(id),
                                    1 => TxtResult::NoPolicy("nx".into()),
                                    _ => TxtResult::Error("servfail".into()),
                                };
                                r.handle_txt(lookup, res, now, wall);
                            }
                            Io::Fetch => {
                                let res = if variant % 2 == 0 {
                                    FetchResult::Policy(pol(1000, "mx.example"))
                                } else {
                                    FetchResult::Error("404".into())
                                };
                                r.handle_fetch(lookup, res, now, wall);
                            }
                        }
                    }
                }
                collect(&mut r, now, &mut open, &mut pending)?;
                // A zero timeout is due at once: the driver's timer fires now.
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                    collect(&mut r, now, &mut open, &mut pending)?;
                }
            }
            // Past every deadline, waking at each one: nothing open, nothing in flight.
            while let Some(t) = r.poll_timeout() {
                prop_assert!(t <= t0 + Duration::from_secs(3600), "runaway deadline");
                now = t;
                r.handle_timeout(now);
                collect(&mut r, now, &mut open, &mut pending)?;
            }
            prop_assert!(open.is_empty(), "requests never answered: {open:?}");
            prop_assert_eq!(r.in_flight(), 0);
            prop_assert_eq!(r.poll_timeout(), None);
            prop_assert!(r.running.is_empty());
        }
    }
}
