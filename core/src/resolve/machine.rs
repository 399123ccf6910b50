//! The [`Resolver`]: one lookup per domain however many requests wait on it,
//! each request answered exactly once by its deadline (RFC 8461 §3.3, §5.1;
//! docs/ARCHITECTURE.md "The lookup coordinator").

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dane::{Combined, DaneRun};
use super::remembered::Remembered;
use super::{
    Action, Answer, Failure, FetchResult, LookupId, Reason, RequestId, ResolverSettings, TxtResult,
};
use crate::cache::{self, millis, CacheEntry, Held, PolicyIndex, StoreError};
use crate::domain::Domain;
use crate::policy::Policy;

/// Where a lookup is waiting.
#[derive(Debug)]
enum Stage {
    /// Waiting for a free slot under [`ResolverSettings::max_lookups`].
    Queued,
    LoadingStore,
    QueryingTxt,
    Fetching {
        policy_id: String,
    },
}

#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) request: RequestId,
    pub(super) deadline: Instant,
}

/// Remove the waiter of `request` with `deadline` from `waiters`; true if it
/// was there (a request leaves its lookup when its own deadline passes).
pub(super) fn take_waiter(
    waiters: &mut Vec<Waiter>,
    request: RequestId,
    deadline: Instant,
) -> bool {
    match waiters
        .iter()
        .position(|w| w.request == request && w.deadline == deadline)
    {
        Some(pos) => {
            waiters.remove(pos);
            true
        }
        None => false,
    }
}

#[derive(Debug)]
struct Lookup {
    domain: Domain,
    /// When it began, and when it is cut off ([`joined_deadline`]).
    started: Instant,
    deadline: Instant,
    /// A proactive refresh checks the TXT id even within `cache_grace`.
    refresh: bool,
    stage: Stage,
    /// The cached entry, kept for the id comparison and for fallback.
    entry: Option<CacheEntry>,
    waiters: Vec<Waiter>,
}

/// A pending deadline. Every waiting request has one, and so has every
/// lookup. Lookups sort before requests at the same instant: a lookup cut
/// off at its waiters' deadline is cancelled (and a fetch remembered as
/// failed) before they are answered, all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Lookup(LookupId),
    DaneLookup(LookupId),
    Request(LookupId, RequestId),
    DaneRequest(LookupId, RequestId),
}

/// Why a request that waited for a lookup slot until its deadline failed.
pub(super) const OVERLOADED: &str = "too many lookups in flight";

/// Longest deadline honoured; guards `Instant + Duration` against overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The lookup state machine: joins concurrent requests per domain, keeps
/// what it learns in the shared [`PolicyIndex`] (written before any reply),
/// remembers failed fetches in bounded memory, and answers every request
/// exactly once, by its deadline.
#[derive(Debug)]
pub struct Resolver {
    pub(super) settings: ResolverSettings,
    pub(super) index: Arc<PolicyIndex>,
    next_lookup: u64,
    lookups: HashMap<LookupId, Lookup>,
    pub(super) running: HashMap<Domain, LookupId>,
    pub(super) timers: BTreeSet<(Instant, Timer)>,
    pub(super) failures: Remembered<(Domain, String)>,
    /// Lookups doing IO (not queued), of both kinds.
    pub(super) active: usize,
    /// Requests that joined a running lookup, ever.
    joined: u64,
    /// The latest monotonic time passed in.
    now: Option<Instant>,
    /// Lookups of both kinds waiting for a slot, oldest first (ids of
    /// finished ones are skipped).
    queue: VecDeque<LookupId>,
    pub(super) actions: VecDeque<Action>,
    /// The latest wall clock passed in, and the monotonic time it came
    /// with: `handle_timeout` has none, so a deadline's wall time is
    /// reckoned from them ([`Resolver::wall_at`]).
    pub(super) wall_ms: u64,
    wall_read_at: Option<Instant>,
    /// DANE lookups (RFC 7672), by id.
    pub(super) dane_lookups: HashMap<LookupId, DaneRun>,
    /// The running DANE lookup of each domain.
    pub(super) dane_running: HashMap<Domain, LookupId>,
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
            next_lookup: 0,
            lookups: HashMap::new(),
            running: HashMap::new(),
            timers: BTreeSet::new(),
            failures: Remembered::new(millis(settings.retry_after_failure), settings.memory_limit),
            active: 0,
            joined: 0,
            now: None,
            queue: VecDeque::new(),
            actions: VecDeque::new(),
            wall_ms: 0,
            wall_read_at: None,
            dane_lookups: HashMap::new(),
            dane_running: HashMap::new(),
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
        let waiter = Waiter { request, deadline };
        if let Some(&id) = self.running.get(&domain) {
            if let Some(lookup) = self.lookups.get_mut(&id) {
                let due = joined_deadline(lookup.started, lookup.deadline, now, deadline);
                let was = std::mem::replace(&mut lookup.deadline, due);
                lookup.waiters.push(waiter);
                self.move_timer(Timer::Lookup(id), was, due);
                self.timers.insert((deadline, Timer::Request(id, request)));
                self.joined += 1;
                return Some(id);
            }
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
        if self.running.contains_key(&domain) {
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
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        if !matches!(l.stage, Stage::LoadingStore) {
            return;
        }
        let ahead = matches!(&stored, Ok(Some(s)) if s.is_ahead(wall_ms));
        let entry = cache::merge(l.entry.take(), stored, wall_ms);
        let domain = l.domain.clone();
        match &entry {
            // Written back as read: without it every restart or eviction
            // would read the row as "now" again, and it would never expire.
            Some(e) if ahead => self.keep(domain, e.clone()),
            // Another daemon sharing the store may have news: keep it.
            Some(e) => self.index.store(domain, e.clone()),
            None => {}
        }
        let Some(l) = self.lookups.get_mut(&lookup) else {
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
        let domain = l.domain.clone();
        self.actions.push_back(Action::QueryTxt { lookup, domain });
    }

    /// The result of [`Action::QueryTxt`] (RFC 8461 §3.1, §5.1): an unchanged
    /// id confirms an unexpired cached policy; a new id or an expired policy
    /// is fetched unless a fetch for that id failed recently; no policy or an
    /// error falls back to the cached policy while unexpired.
    pub fn handle_txt(&mut self, lookup: LookupId, result: TxtResult, now: Instant, wall_ms: u64) {
        self.advance(now, wall_ms);
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
        let Some(l) = self.lookups.get(&lookup) else {
            return;
        };
        let Stage::Fetching { policy_id } = &l.stage else {
            return;
        };
        let key = (l.domain.clone(), policy_id.clone());
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
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Request(id, request) => self.expire_request(id, request, at),
                Timer::Lookup(id) => self.expire_lookup(id, at),
                Timer::DaneRequest(id, request) => self.expire_dane_request(id, request, at),
                Timer::DaneLookup(id) => self.expire_dane_lookup(id, at),
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

    /// Number of lookups running, of both kinds (for graceful shutdown
    /// and tests).
    pub fn in_flight(&self) -> usize {
        self.lookups.len() + self.dane_lookups.len()
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

    /// A new lookup id (shared by both kinds, so IO and `Cancel` are keyed
    /// by it alone).
    pub(super) fn next_id(&mut self) -> LookupId {
        self.next_lookup += 1;
        LookupId(self.next_lookup)
    }

    /// Queue a lookup for its first IO under `max_lookups`.
    pub(super) fn enqueue(&mut self, id: LookupId) {
        self.queue.push_back(id);
        self.start_queued();
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
        let id = self.next_id();
        self.timers.insert((deadline, Timer::Lookup(id)));
        for w in &waiters {
            self.timers
                .insert((w.deadline, Timer::Request(id, w.request)));
        }
        self.running.insert(domain.clone(), id);
        self.lookups.insert(
            id,
            Lookup {
                domain,
                started: now,
                deadline,
                refresh,
                stage: Stage::Queued,
                entry,
                waiters,
            },
        );
        self.enqueue(id);
        id
    }

    /// Give queued lookups their first IO while fewer than `max_lookups`
    /// are doing IO (oldest first: requests wait in order).
    pub(super) fn start_queued(&mut self) {
        while self.active < self.settings.max_lookups.max(1) {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let action = match self.first_io(id) {
                Some(action) => action,
                None => match self.first_dane_io(id) {
                    Some(action) => action,
                    None => continue,
                },
            };
            self.active += 1;
            self.actions.push_back(action);
        }
    }

    /// Requests that joined a lookup already running, since the start.
    pub fn coalesced_total(&self) -> u64 {
        self.joined
    }

    /// True when a lookup with `deadline` is past it: starting IO now
    /// would only be cancelled.
    pub(super) fn is_past(&self, deadline: Instant) -> bool {
        self.now.is_some_and(|now| deadline <= now)
    }

    /// The first IO of queued MTA-STS lookup `id`, if it is one.
    fn first_io(&mut self, id: LookupId) -> Option<Action> {
        let persistent = self.settings.persistent;
        let past = self.lookups.get(&id).map(|l| self.is_past(l.deadline))?;
        let l = self.lookups.get_mut(&id)?;
        if !matches!(l.stage, Stage::Queued) || past {
            return None;
        }
        let domain = l.domain.clone();
        Some(if persistent {
            l.stage = Stage::LoadingStore;
            Action::LoadStore { lookup: id, domain }
        } else {
            l.stage = Stage::QueryingTxt;
            Action::QueryTxt { lookup: id, domain }
        })
    }

    /// Lookups of both kinds waiting for a slot (for metrics and tests).
    pub fn queued(&self) -> usize {
        self.lookups
            .values()
            .filter(|l| matches!(l.stage, Stage::Queued))
            .count()
            + self.dane_lookups.values().filter(|l| l.queued).count()
    }

    /// Take `request` off MTA-STS lookup `id` (its DANE verdict answered
    /// it); the lookup goes on for the others and for the index.
    pub(super) fn leave_lookup(&mut self, id: LookupId, request: RequestId) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        if let Some(pos) = lookup.waiters.iter().position(|w| w.request == request) {
            let w = lookup.waiters.remove(pos);
            self.timers
                .remove(&(w.deadline, Timer::Request(id, w.request)));
        }
    }

    /// Move `timer` from `from` to `to`.
    pub(super) fn move_timer(&mut self, timer: Timer, from: Instant, to: Instant) {
        if from != to {
            self.timers.remove(&(from, timer));
            self.timers.insert((to, timer));
        }
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
        let Some(lookup) = self.lookups.remove(&id) else {
            return;
        };
        if !matches!(lookup.stage, Stage::Queued) {
            self.active = self.active.saturating_sub(1);
        }
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
        self.start_queued();
    }

    /// End a lookup with the cached policy while unexpired, else no policy.
    fn finish_fallback(&mut self, id: LookupId, reason: Reason) {
        let policy = self.fallback_policy(id);
        self.finish(id, policy, reason);
    }

    fn fallback_policy(&self, id: LookupId) -> Option<Policy> {
        let entry = self.lookups.get(&id)?.entry.as_ref();
        cache::fallback(entry, self.wall_ms).map(|e| e.policy.clone())
    }

    fn expire_request(&mut self, id: LookupId, request: RequestId, deadline: Instant) {
        let policy = self.fallback_policy(id);
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        if !take_waiter(&mut lookup.waiters, request, deadline) {
            return;
        }
        let domain = lookup.domain.clone();
        let reason = match lookup.stage {
            Stage::Queued => Reason::Fallback(Failure::Local(OVERLOADED.into())),
            _ => Reason::Timeout,
        };
        self.reply(request, domain, policy, reason);
    }

    fn expire_lookup(&mut self, id: LookupId, at: Instant) {
        let Some(lookup) = self.lookups.get(&id) else {
            return;
        };
        // A fetch cut off by the deadline counts as a failed fetch: the
        // deadline is the latest its waiters allow (`joined_deadline`).
        if let Stage::Fetching { policy_id } = &lookup.stage {
            let key = (lookup.domain.clone(), policy_id.clone());
            let wall = self.wall_at(at);
            self.failures.note(key, wall);
        }
        if let Stage::Queued = lookup.stage {
            // No IO was started: a local overload, not a slow network.
            self.finish_fallback(id, Reason::Fallback(Failure::Local(OVERLOADED.into())));
            return;
        }
        self.actions.push_back(Action::Cancel { lookup: id });
        self.finish_fallback(id, Reason::Timeout);
    }
}

/// When a lookup begun at `started` and cut off at `due` is cut off once a
/// request that must be answered by `deadline` joins it at `now`
/// (docs/ARCHITECTURE.md "The lookup coordinator"): at that deadline if the
/// request's timeout is longer than the lookup's whole run up to `due`,
/// else still at `due`. Each waiter is answered at its own deadline (it has
/// its own timer), so the lookup is not cut off, and a fetch not counted as
/// failed, while a later waiter still waits; and requests that keep coming
/// with the same timeout never keep a hung lookup from ending (and its
/// fetch from being remembered as failed, RFC 8461 §3.3): a lookup runs
/// less than twice the longest timeout of its requests.
pub(super) fn joined_deadline(
    started: Instant,
    due: Instant,
    now: Instant,
    deadline: Instant,
) -> Instant {
    let timeout = deadline.saturating_duration_since(now);
    if timeout > due.saturating_duration_since(started) {
        due.max(deadline)
    } else {
        due
    }
}

pub(super) fn deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout.min(MAX_TIMEOUT)).unwrap_or(now)
}
