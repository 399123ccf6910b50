//! The [`Resolver`]: one lookup per domain however many requests wait on it,
//! each request answered exactly once by its deadline (RFC 8461 §3.3, §5.1;
//! docs/ARCHITECTURE.md "The lookup coordinator"). The MTA-STS steps live
//! here, the DANE ones in `dane.rs` (which builds on this file, never the
//! other way round); what both keep is `state.rs`'s; the joining, deadlines
//! and queue of both are the [`Joined`] table's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::joined::{deadline, Joined, Kind, Timer, Waiter};
use super::outcome::OVERLOADED;
use super::remembered::Remembered;
use super::state::{Combined, Stage, Steps, StsSteps};
use super::{
    Action, Answer, Failure, FetchResult, LookupId, Reason, RequestId, ResolverSettings, TxtResult,
};
use crate::cache::{self, millis, CacheEntry, Held, PolicyIndex, StoreError};
use crate::domain::Domain;
use crate::policy::Policy;

/// The lookup state machine: joins concurrent requests per domain, keeps
/// what it learns in the shared [`PolicyIndex`] (written before any reply),
/// remembers failed fetches in bounded memory, and answers every request
/// exactly once, by its deadline.
#[derive(Debug)]
pub struct Resolver {
    pub(super) settings: ResolverSettings,
    pub(super) index: Arc<PolicyIndex>,
    /// The running lookups of both kinds.
    pub(super) lookups: Joined<Steps>,
    pub(super) failures: Remembered<(Domain, String)>,
    /// Requests that joined a running MTA-STS lookup, ever.
    joined: u64,
    /// The latest monotonic time passed in.
    now: Option<Instant>,
    pub(super) actions: VecDeque<Action>,
    /// The latest wall clock passed in, and the monotonic time it came
    /// with: `handle_timeout` has none, so a deadline's wall time is
    /// reckoned from them ([`Resolver::wall_at`]).
    wall_ms: u64,
    wall_read_at: Option<Instant>,
    /// Requests of `dane: true` zones waiting for their DANE and MTA-STS
    /// parts.
    pub(super) combined: HashMap<RequestId, Combined>,
}

impl Resolver {
    /// A resolver with nothing in flight, keeping what it learns in `index`.
    pub fn new(settings: ResolverSettings, index: Arc<PolicyIndex>) -> Self {
        Resolver {
            settings,
            index,
            lookups: Joined::new(),
            failures: Remembered::new(millis(settings.retry_after_failure), settings.memory_limit),
            joined: 0,
            now: None,
            actions: VecDeque::new(),
            wall_ms: 0,
            wall_read_at: None,
            combined: HashMap::new(),
        }
    }

    /// Apply a reloaded configuration: `cache_grace` (also in the index)
    /// and the bound on lookups doing IO.
    pub fn update(&mut self, cache_grace: Duration, max_lookups: usize) {
        self.settings.cache_grace = cache_grace;
        self.settings.max_lookups = max_lookups;
        self.index.set_grace(cache_grace);
        self.start_queued();
    }

    /// The shared index this resolver writes.
    pub fn index(&self) -> &Arc<PolicyIndex> {
        &self.index
    }

    /// A Postfix lookup for `domain` that must be answered by `now + timeout`
    /// (the zone's `timeout`). Joins a running lookup for the domain; answers
    /// at once from the index when it holds a fresh policy or a fresh "no
    /// policy"; else starts a lookup.
    pub fn handle_request(
        &mut self,
        request: RequestId,
        domain: Domain,
        timeout: Duration,
        now: Instant,
        wall_ms: u64,
    ) {
        self.advance(now, wall_ms);
        self.request_sts(request, domain, now, deadline(now, timeout), wall_ms);
    }

    /// The MTA-STS part of a request made at `now`: join the domain's
    /// running lookup, answer from the index, or start a lookup. Returns the
    /// lookup the request now waits on, if any.
    pub(super) fn request_sts(
        &mut self,
        request: RequestId,
        domain: Domain,
        now: Instant,
        deadline: Instant,
        wall_ms: u64,
    ) -> Option<LookupId> {
        if let Some(id) = self
            .lookups
            .join(Kind::Sts, &domain, request, now, deadline)
        {
            self.joined += 1;
            return Some(id);
        }
        let held = match self.index.known(domain.as_str(), wall_ms) {
            Held::NoPolicy => {
                self.reply(request, domain, None, Reason::NoPolicyRemembered);
                return None;
            }
            Held::Entry(e) if e.is_fresh(wall_ms, self.settings.cache_grace) => {
                self.reply(request, domain, Some(e.policy), Reason::Cached);
                return None;
            }
            Held::Entry(e) => Some(e),
            Held::Miss => None,
        };
        let waiter = Waiter { request, deadline };
        Some(self.start(domain, held, now, deadline, false, vec![waiter]))
    }

    /// Proactive refresh (RFC 8461 §5.1, `proactive_policy_fetching`): a
    /// lookup with no request that checks the TXT id even within
    /// `cache_grace`. Does nothing if a lookup for the domain is running.
    pub fn handle_refresh(
        &mut self,
        domain: Domain,
        timeout: Duration,
        now: Instant,
        wall_ms: u64,
    ) {
        self.advance(now, wall_ms);
        if self.lookups.running(Kind::Sts, &domain).is_some() {
            return;
        }
        let held = match self.index.known(domain.as_str(), wall_ms) {
            Held::Entry(e) => Some(e),
            Held::NoPolicy | Held::Miss => None,
        };
        self.start(domain, held, now, deadline(now, timeout), true, Vec::new());
    }

    /// The result of [`Action::LoadStore`]: the newer of the store's entry
    /// and memory's goes on (memory's when the store failed; times from the
    /// store beyond `MAX_SKEW` ahead read as now, [`cache::merge`]); if fresh it
    /// answers every waiter with no traffic, else the TXT id is checked
    /// (RFC 8461 §5.1). A stored entry dated beyond `MAX_SKEW` ahead is
    /// replaced in the store by the one that goes on, so it ages from this
    /// read, not from every later one (docs/ARCHITECTURE.md "Time").
    pub fn handle_store_loaded(
        &mut self,
        lookup: LookupId,
        stored: Result<Option<CacheEntry>, StoreError>,
        now: Instant,
        wall_ms: u64,
    ) {
        self.advance(now, wall_ms);
        let grace = self.settings.cache_grace;
        let Some((domain, l)) = sts_mut(&mut self.lookups, lookup) else {
            return;
        };
        if !matches!(l.stage, Stage::LoadingStore) {
            return;
        }
        let ahead = matches!(&stored, Ok(Some(s)) if s.is_ahead(wall_ms));
        let entry = cache::merge(l.entry.take(), stored, wall_ms);
        match &entry {
            // Written back as read: without it every restart or eviction
            // would read the row as "now" again, and it would never expire.
            Some(e) if ahead => self.keep(domain, e.clone()),
            // Another daemon sharing the store may have news: keep it.
            Some(e) => self.index.store(domain, e.clone()),
            None => {}
        }
        let Some((domain, l)) = sts_mut(&mut self.lookups, lookup) else {
            return;
        };
        if let Some(e) = entry
            .as_ref()
            .filter(|e| !l.refresh && e.is_fresh(wall_ms, grace))
        {
            let policy = e.policy.clone();
            self.finish(lookup, Some(policy), Reason::Cached);
            return;
        }
        l.entry = entry;
        l.stage = Stage::QueryingTxt;
        self.actions.push_back(Action::QueryTxt { lookup, domain });
    }

    /// The result of [`Action::QueryTxt`] (RFC 8461 §3.1, §5.1): an unchanged
    /// id confirms an unexpired cached policy; a new id or an expired policy
    /// is fetched unless a fetch for that id failed recently; no policy or an
    /// error falls back to the cached policy while unexpired.
    pub fn handle_txt(&mut self, lookup: LookupId, result: TxtResult, now: Instant, wall_ms: u64) {
        self.advance(now, wall_ms);
        let Some((domain, l)) = sts_mut(&mut self.lookups, lookup) else {
            return;
        };
        if !matches!(l.stage, Stage::QueryingTxt) {
            return;
        }
        match result {
            TxtResult::Id(id) => {
                let confirmed = l
                    .entry
                    .as_ref()
                    .filter(|e| e.policy_id == id && !e.is_expired(wall_ms))
                    .cloned();
                if let Some(mut entry) = confirmed {
                    // Same fetched_at: an unchanged id never extends the lifetime.
                    entry.checked_at_ms = entry.checked_at_ms.max(wall_ms);
                    let policy = entry.policy.clone();
                    self.keep(domain, entry);
                    self.finish(lookup, Some(policy), Reason::Confirmed);
                } else if self
                    .failures
                    .is_active(&(domain.clone(), id.clone()), wall_ms)
                {
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
                if cache::fallback(l.entry.as_ref(), wall_ms).is_none() {
                    self.index.note_no_policy(domain, wall_ms);
                }
                self.finish_fallback(lookup, Reason::NoPolicy(why));
            }
            TxtResult::Error(why) => self.finish_fallback(lookup, Reason::Fallback(why)),
        }
    }

    /// The result of [`Action::FetchPolicy`] (RFC 8461 §3.3): a policy is
    /// kept and answered (mode `none` too); a failure is remembered for
    /// `retry_after_failure` and falls back to the cache.
    pub fn handle_fetch(
        &mut self,
        lookup: LookupId,
        result: FetchResult,
        now: Instant,
        wall_ms: u64,
    ) {
        self.advance(now, wall_ms);
        let Some((domain, l)) = sts_mut(&mut self.lookups, lookup) else {
            return;
        };
        let Stage::Fetching { policy_id } = &l.stage else {
            return;
        };
        let key = (domain, policy_id.clone());
        match result {
            FetchResult::Policy(policy) => {
                self.failures.forget(&key);
                let (domain, policy_id) = key;
                let entry = CacheEntry {
                    policy_id,
                    policy: policy.clone(),
                    fetched_at_ms: wall_ms,
                    checked_at_ms: wall_ms,
                };
                self.keep(domain, entry);
                self.finish(lookup, Some(policy), Reason::Fetched);
            }
            FetchResult::Error(why) => {
                self.failures.note(key, wall_ms);
                self.finish_fallback(lookup, Reason::Fallback(why));
            }
        }
    }

    /// Process every deadline up to `now`: a request past its deadline gets
    /// the fallback answer and leaves its lookup; a lookup past its deadline
    /// is cancelled and all its waiters get the fallback answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |n| n.max(now)));
        while let Some((at, timer)) = self.lookups.pop_due(now) {
            match timer {
                Timer::Request(Kind::Sts, id, request) => self.expire_request(id, request, at),
                Timer::Lookup(Kind::Sts, id) => self.expire_lookup(id, at),
                Timer::Request(Kind::Dane, id, request) => {
                    self.expire_dane_request(id, request, at)
                }
                Timer::Lookup(Kind::Dane, id) => self.expire_dane_lookup(id, at),
            }
        }
    }

    /// The next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest pending deadline: call [`Resolver::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lookups.next_deadline()
    }

    /// Number of lookups running, of both kinds (for graceful shutdown
    /// and tests).
    pub fn in_flight(&self) -> usize {
        self.lookups.len()
    }

    /// Record the clock and settle deadlines already past, so that a result
    /// arriving after its lookup's deadline is ignored even if the driver
    /// was late calling `handle_timeout`.
    pub(super) fn advance(&mut self, now: Instant, wall_ms: u64) {
        self.wall_ms = wall_ms;
        self.wall_read_at = Some(now);
        self.handle_timeout(now);
    }

    /// The wall clock at monotonic `at`, reckoned from the last one passed
    /// in: a lookup may end well after the last call that had one (its
    /// latest waiter's deadline), and a fetch it cuts off is remembered
    /// from then.
    pub(super) fn wall_at(&self, at: Instant) -> u64 {
        let since = self
            .wall_read_at
            .map_or(Duration::ZERO, |read| at.saturating_duration_since(read));
        self.wall_ms.saturating_add(millis(since))
    }

    fn start(
        &mut self,
        domain: Domain,
        entry: Option<CacheEntry>,
        now: Instant,
        deadline: Instant,
        refresh: bool,
        waiters: Vec<Waiter>,
    ) -> LookupId {
        let stage = if self.settings.persistent {
            Stage::LoadingStore
        } else {
            Stage::QueryingTxt
        };
        let steps = Steps::Sts(StsSteps {
            refresh,
            stage,
            entry,
        });
        let id = self.lookups.start(domain, now, deadline, waiters, steps);
        self.start_queued();
        id
    }

    /// Give queued lookups their first IO while fewer than `max_lookups`
    /// are doing IO (oldest first: requests wait in order).
    pub(super) fn start_queued(&mut self) {
        while let Some((id, run)) = self.lookups.start_next(self.settings.max_lookups, self.now) {
            let domain = run.domain.clone();
            let lookup = id;
            self.actions.push_back(match &run.steps {
                Steps::Sts(StsSteps {
                    stage: Stage::LoadingStore,
                    ..
                }) => Action::LoadStore { lookup, domain },
                Steps::Sts(_) => Action::QueryTxt { lookup, domain },
                Steps::Dane => Action::LookupDane { lookup, domain },
            });
        }
    }

    /// Requests that joined a lookup already running, since the start.
    pub fn coalesced_total(&self) -> u64 {
        self.joined
    }

    /// Lookups of both kinds waiting for a slot (for metrics and tests).
    pub fn queued(&self) -> usize {
        self.lookups.queued()
    }

    /// Make `entry` visible in memory now, and persist it behind.
    fn keep(&mut self, domain: Domain, entry: CacheEntry) {
        self.index.store(domain.clone(), entry.clone());
        if self.settings.persistent {
            self.actions.push_back(Action::Persist { domain, entry });
        }
    }

    /// The MTA-STS answer for `request`: the reply, or the MTA-STS part of
    /// a `dane: true` zone's request.
    fn reply(
        &mut self,
        request: RequestId,
        domain: Domain,
        policy: Option<Policy>,
        reason: Reason,
    ) {
        if self.combined.contains_key(&request) {
            self.sts_part(request, policy, reason);
            return;
        }
        self.actions.push_back(Action::Reply {
            request,
            domain,
            answer: Answer {
                policy,
                reason,
                dane: None,
            },
        });
    }

    /// End a lookup, answering every waiter with `policy`.
    fn finish(&mut self, id: LookupId, policy: Option<Policy>, reason: Reason) {
        let Some(run) = self.lookups.finish(id) else {
            return;
        };
        for w in run.waiters {
            self.reply(
                w.request,
                run.domain.clone(),
                policy.clone(),
                reason.clone(),
            );
        }
        self.start_queued();
    }

    /// End a lookup with the cached policy while unexpired, else no policy.
    fn finish_fallback(&mut self, id: LookupId, reason: Reason) {
        let policy = self.fallback_policy(id);
        self.finish(id, policy, reason);
    }

    fn fallback_policy(&self, id: LookupId) -> Option<Policy> {
        let Steps::Sts(steps) = &self.lookups.get(id)?.steps else {
            return None;
        };
        cache::fallback(steps.entry.as_ref(), self.wall_ms).map(|e| e.policy.clone())
    }

    fn expire_request(&mut self, id: LookupId, request: RequestId, deadline: Instant) {
        let policy = self.fallback_policy(id);
        let Some(run) = self.lookups.expire_waiter(id, request, deadline) else {
            return;
        };
        let domain = run.domain.clone();
        let reason = if run.queued {
            Reason::Fallback(Failure::Local(OVERLOADED.into()))
        } else {
            Reason::Timeout
        };
        self.reply(request, domain, policy, reason);
    }

    fn expire_lookup(&mut self, id: LookupId, at: Instant) {
        let Some(run) = self.lookups.get(id) else {
            return;
        };
        if run.queued {
            // No IO was started: a local overload, not a slow network.
            self.finish_fallback(id, Reason::Fallback(Failure::Local(OVERLOADED.into())));
            return;
        }
        // A fetch cut off by the deadline counts as a failed fetch: the
        // deadline is the latest its waiters allow (`joined_deadline`).
        if let Steps::Sts(StsSteps {
            stage: Stage::Fetching { policy_id },
            ..
        }) = &run.steps
        {
            let key = (run.domain.clone(), policy_id.clone());
            let wall = self.wall_at(at);
            self.failures.note(key, wall);
        }
        self.actions.push_back(Action::Cancel { lookup: id });
        self.finish_fallback(id, Reason::Timeout);
    }
}

/// The domain and steps of MTA-STS lookup `id` once it does IO.
fn sts_mut(lookups: &mut Joined<Steps>, id: LookupId) -> Option<(Domain, &mut StsSteps)> {
    let run = lookups.active_mut(id)?;
    match &mut run.steps {
        Steps::Sts(steps) => Some((run.domain.clone(), steps)),
        Steps::Dane => None,
    }
}
