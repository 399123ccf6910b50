//! The joined-lookup table: one running lookup per (kind, domain) however
//! many requests wait on it, each waiter with its own deadline timer, the
//! lookup cut off at its waiters' latest deadline ([`joined_deadline`]),
//! and the `max_lookups` queue (docs/ARCHITECTURE.md "The lookup
//! coordinator"). Written once for every kind of lookup: a kind brings its
//! steps (`S`), not its bookkeeping.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{LookupId, RequestId};
use crate::domain::Domain;

/// The kinds of lookup. At one instant an MTA-STS timer fires before a
/// DANE one (the order of [`Timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    /// The MTA-STS lookup (RFC 8461 §3).
    Sts,
    /// The DANE lookup (RFC 7672 §2.2).
    Dane,
}

/// The steps a kind of lookup keeps in its [`Run`].
pub(super) trait Steps {
    /// The kind these steps belong to.
    fn kind(&self) -> Kind;
}

/// A request waiting on a lookup, and when it must be answered.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) request: RequestId,
    pub(super) deadline: Instant,
}

/// A running lookup.
#[derive(Debug)]
pub(super) struct Run<S> {
    pub(super) domain: Domain,
    /// When it began, and when it is cut off ([`joined_deadline`]).
    started: Instant,
    pub(super) deadline: Instant,
    /// Waiting for a slot under `max_lookups`: no IO started.
    pub(super) queued: bool,
    pub(super) waiters: Vec<Waiter>,
    /// What the kind of lookup has learnt so far.
    pub(super) steps: S,
}

/// A pending deadline. Every waiting request has one, and so has every
/// lookup. Lookups sort before requests at the same instant: a lookup cut
/// off at its waiters' deadline is cancelled (and a fetch remembered as
/// failed) before they are answered, all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Lookup(Kind, LookupId),
    Request(Kind, LookupId, RequestId),
}

/// Longest deadline honoured; guards `Instant + Duration` against overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The running lookups of every kind, their timers and their queue.
#[derive(Debug)]
pub(super) struct Joined<S> {
    next_id: u64,
    runs: HashMap<LookupId, Run<S>>,
    running: HashMap<(Kind, Domain), LookupId>,
    timers: BTreeSet<(Instant, Timer)>,
    /// Lookups waiting for a slot, oldest first (ids of finished ones are
    /// skipped).
    queue: VecDeque<LookupId>,
    /// Lookups doing IO (not queued).
    active: usize,
}

impl<S: Steps> Joined<S> {
    pub(super) fn new() -> Self {
        Joined {
            next_id: 0,
            runs: HashMap::new(),
            running: HashMap::new(),
            timers: BTreeSet::new(),
            queue: VecDeque::new(),
            active: 0,
        }
    }

    /// The running lookup of `kind` for `domain`, if any.
    pub(super) fn running(&self, kind: Kind, domain: &Domain) -> Option<LookupId> {
        self.running.get(&(kind, domain.clone())).copied()
    }

    /// Join `request` (made at `now`, due at `deadline`) to the running
    /// lookup of `kind` for `domain`; `None` when there is none.
    pub(super) fn join(
        &mut self,
        kind: Kind,
        domain: &Domain,
        request: RequestId,
        now: Instant,
        deadline: Instant,
    ) -> Option<LookupId> {
        let id = self.running(kind, domain)?;
        let run = self.runs.get_mut(&id)?;
        let due = joined_deadline(run.started, run.deadline, now, deadline);
        let was = std::mem::replace(&mut run.deadline, due);
        run.waiters.push(Waiter { request, deadline });
        if was != due {
            self.timers.remove(&(was, Timer::Lookup(kind, id)));
            self.timers.insert((due, Timer::Lookup(kind, id)));
        }
        self.timers
            .insert((deadline, Timer::Request(kind, id, request)));
        Some(id)
    }

    /// A new lookup for `domain`, queued for its first IO, cut off at
    /// `deadline`, with `waiters`.
    pub(super) fn start(
        &mut self,
        domain: Domain,
        now: Instant,
        deadline: Instant,
        waiters: Vec<Waiter>,
        steps: S,
    ) -> LookupId {
        self.next_id += 1;
        let id = LookupId(self.next_id);
        let kind = steps.kind();
        self.timers.insert((deadline, Timer::Lookup(kind, id)));
        for w in &waiters {
            self.timers
                .insert((w.deadline, Timer::Request(kind, id, w.request)));
        }
        self.running.insert((kind, domain.clone()), id);
        self.runs.insert(
            id,
            Run {
                domain,
                started: now,
                deadline,
                queued: true,
                waiters,
                steps,
            },
        );
        self.queue.push_back(id);
        id
    }

    /// Lookup `id`, queued or not.
    pub(super) fn get(&self, id: LookupId) -> Option<&Run<S>> {
        self.runs.get(&id)
    }

    /// Lookup `id` once it does IO: results for it are taken, for a queued
    /// or finished one ignored.
    pub(super) fn active_mut(&mut self, id: LookupId) -> Option<&mut Run<S>> {
        self.runs.get_mut(&id).filter(|r| !r.queued)
    }

    /// The oldest queued lookup that may start its IO now (fewer than `max`
    /// doing IO, its deadline not past at `now`), marked as doing IO.
    pub(super) fn start_next(
        &mut self,
        max: usize,
        now: Option<Instant>,
    ) -> Option<(LookupId, &mut Run<S>)> {
        while self.active < max.max(1) {
            let id = self.queue.pop_front()?;
            let Some(run) = self.runs.get(&id) else {
                continue;
            };
            let past = now.is_some_and(|now| run.deadline <= now);
            if !run.queued || past {
                continue;
            }
            self.active += 1;
            let run = self.runs.get_mut(&id)?;
            run.queued = false;
            return Some((id, run));
        }
        None
    }

    /// End lookup `id`: it and its waiters' timers go; the waiters are
    /// returned in the order they came, to be answered.
    pub(super) fn finish(&mut self, id: LookupId) -> Option<Run<S>> {
        let run = self.runs.remove(&id)?;
        let kind = run.steps.kind();
        if !run.queued {
            self.active = self.active.saturating_sub(1);
        }
        let key = (kind, run.domain.clone());
        if self.running.get(&key) == Some(&id) {
            self.running.remove(&key);
        }
        self.timers.remove(&(run.deadline, Timer::Lookup(kind, id)));
        for w in &run.waiters {
            self.timers
                .remove(&(w.deadline, Timer::Request(kind, id, w.request)));
        }
        Some(run)
    }

    /// The waiter of `request` due at `deadline` leaves lookup `id` (its
    /// own deadline passed); the lookup, if it was there.
    pub(super) fn expire_waiter(
        &mut self,
        id: LookupId,
        request: RequestId,
        deadline: Instant,
    ) -> Option<&Run<S>> {
        let run = self.runs.get_mut(&id)?;
        let pos = run
            .waiters
            .iter()
            .position(|w| w.request == request && w.deadline == deadline)?;
        run.waiters.remove(pos);
        Some(run)
    }

    /// `request` leaves lookup `id` before its deadline (answered
    /// otherwise); the lookup goes on for the others.
    pub(super) fn leave(&mut self, id: LookupId, request: RequestId) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        if let Some(pos) = run.waiters.iter().position(|w| w.request == request) {
            let w = run.waiters.remove(pos);
            let timer = Timer::Request(run.steps.kind(), id, w.request);
            self.timers.remove(&(w.deadline, timer));
        }
    }

    /// The earliest timer, if due by `now`, taken off.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let &(at, _) = self.timers.first()?;
        if at > now {
            return None;
        }
        self.timers.pop_first()
    }

    /// The earliest pending deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Lookups running, of every kind.
    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    /// No lookup runs, none is marked as running.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.runs.is_empty() && self.running.is_empty()
    }

    /// Lookups waiting for a slot, of every kind.
    pub(super) fn queued(&self) -> usize {
        self.runs.values().filter(|r| r.queued).count()
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
fn joined_deadline(started: Instant, due: Instant, now: Instant, deadline: Instant) -> Instant {
    let timeout = deadline.saturating_duration_since(now);
    if timeout > due.saturating_duration_since(started) {
        due.max(deadline)
    } else {
        due
    }
}

/// A request made at `now` with `timeout` is answered by then (bounded).
pub(super) fn deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout.min(MAX_TIMEOUT)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps of no kind in particular: the table needs only the kind.
    struct Any(Kind);

    impl Steps for Any {
        fn kind(&self) -> Kind {
            self.0
        }
    }

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn kinds_join_apart_deadlines_move_and_finishing_clears_every_timer() {
        let t0 = Instant::now();
        let dom = Domain::new("example.com").expect("a domain");
        let waiter = |r, s| Waiter {
            request: RequestId(r),
            deadline: t0 + secs(s),
        };
        let mut t: Joined<Any> = Joined::new();
        let sts = t.start(
            dom.clone(),
            t0,
            t0 + secs(1.0),
            vec![waiter(1, 1.0)],
            Any(Kind::Sts),
        );
        // The same domain's DANE lookup is another run.
        assert_eq!(
            t.join(Kind::Dane, &dom, RequestId(2), t0, t0 + secs(1.0)),
            None
        );
        let dane = t.start(
            dom.clone(),
            t0,
            t0 + secs(1.0),
            vec![waiter(2, 1.0)],
            Any(Kind::Dane),
        );
        assert_ne!(sts, dane);
        // A timeout longer than the run so far moves the cut-off ...
        let joined = t.join(Kind::Sts, &dom, RequestId(3), t0, t0 + secs(3.0));
        assert_eq!(joined, Some(sts));
        assert_eq!(t.get(sts).map(|r| r.deadline), Some(t0 + secs(3.0)));
        // ... a shorter one does not.
        let joined = t.join(
            Kind::Sts,
            &dom,
            RequestId(4),
            t0 + secs(2.0),
            t0 + secs(2.5),
        );
        assert_eq!(joined, Some(sts));
        assert_eq!(t.get(sts).map(|r| r.deadline), Some(t0 + secs(3.0)));
        // One slot: the oldest starts, the other waits.
        assert_eq!(t.start_next(1, Some(t0)).map(|(id, _)| id), Some(sts));
        assert!(t.start_next(1, Some(t0)).is_none());
        assert_eq!(t.queued(), 1);
        assert!(t.active_mut(dane).is_none(), "a queued run takes no result");
        // At one instant: lookups first, then requests, MTA-STS before DANE.
        let due: Vec<Timer> =
            std::iter::from_fn(|| t.pop_due(t0 + secs(1.0)).map(|(_, timer)| timer)).collect();
        assert_eq!(
            due,
            [
                Timer::Lookup(Kind::Dane, dane),
                Timer::Request(Kind::Sts, sts, RequestId(1)),
                Timer::Request(Kind::Dane, dane, RequestId(2)),
            ]
        );
        assert!(t.expire_waiter(sts, RequestId(1), t0 + secs(1.0)).is_some());
        let run = t.finish(sts).expect("running");
        let left: Vec<RequestId> = run.waiters.iter().map(|w| w.request).collect();
        assert_eq!(left, [RequestId(3), RequestId(4)]);
        assert!(t.finish(dane).is_some());
        assert!(t.is_idle());
        assert_eq!(t.next_deadline(), None);
    }
}
