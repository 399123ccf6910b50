//! The DANE half of the coordinator (RFC 7672; RFC 8461 §2: DANE first):
//! DANE lookups joined per domain, and the requests of `dane: true` zones,
//! which wait on a DANE lookup and an MTA-STS lookup running at once and
//! are answered as soon as their reply is known (docs/ARCHITECTURE.md "The
//! lookup coordinator").

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::joined::{deadline, Kind, Waiter};
use super::machine::Resolver;
use super::outcome::OVERLOADED;
use super::state::{Combined, Steps};
use super::{Action, Answer, DaneAnswer, LookupId, Reason, RequestId};
use crate::cache::millis;
use crate::dane::{DaneFailure, DaneResult, Verdict};
use crate::domain::Domain;
use crate::policy::Policy;

impl Resolver {
    /// A Postfix lookup for `domain` from a zone with `dane: true`, to be
    /// answered by `now + timeout` (RFC 8461 §2, RFC 7672): its DANE part
    /// joins the domain's running DANE lookup, is answered from the index
    /// while a result's TTL lasts, or starts a DANE lookup; its MTA-STS part
    /// goes as [`Resolver::handle_request`] goes, at the same time. A
    /// verdict that decides answers at once; "no DANE" waits for MTA-STS.
    pub fn handle_dane_request(
        &mut self,
        request: RequestId,
        domain: Domain,
        timeout: Duration,
        now: Instant,
        wall_ms: u64,
    ) {
        self.advance(now, wall_ms);
        let deadline = deadline(now, timeout);
        self.combined.insert(
            request,
            Combined {
                domain: domain.clone(),
                sts_lookup: None,
                sts: None,
                dane: None,
            },
        );
        self.request_dane(request, domain.clone(), now, deadline, wall_ms);
        if !self.combined.contains_key(&request) {
            // A decisive DANE result from the index: no MTA-STS needed.
            return;
        }
        let sts_lookup = self.request_sts(request, domain, now, deadline, wall_ms);
        if let Some(c) = self.combined.get_mut(&request) {
            c.sts_lookup = sts_lookup;
        }
    }

    /// The result of [`Action::LookupDane`]: kept in the index for its TTL
    /// (a failure for `retry_after_failure`, a local fault not at all)
    /// before every waiting request gets it.
    pub fn handle_dane(
        &mut self,
        lookup: LookupId,
        result: DaneResult,
        now: Instant,
        wall_ms: u64,
    ) {
        self.advance(now, wall_ms);
        let Some(run) = self.lookups.active_mut(lookup) else {
            return;
        };
        if !matches!(run.steps, Steps::Dane) {
            return;
        }
        let domain = run.domain.clone();
        let result = Arc::new(result);
        self.keep_dane(domain, &result, wall_ms);
        self.finish_dane(lookup, result);
    }

    /// The DANE part of a request made at `now`: joins the domain's DANE
    /// lookup (answered by its own deadline, `joined_deadline`), is
    /// answered from the index, or starts one.
    fn request_dane(
        &mut self,
        request: RequestId,
        domain: Domain,
        now: Instant,
        deadline: Instant,
        wall: u64,
    ) {
        if self
            .lookups
            .join(Kind::Dane, &domain, request, now, deadline)
            .is_some()
        {
            return;
        }
        if let Some(result) = self.index.dane_fresh(domain.as_str(), wall) {
            self.dane_part(
                request,
                DaneAnswer {
                    result,
                    cached: true,
                },
            );
            return;
        }
        let waiter = Waiter { request, deadline };
        self.lookups
            .start(domain, now, deadline, vec![waiter], Steps::Dane);
        self.start_queued();
    }

    /// Keep `result` in the index, visible before any reply: for its TTL, a
    /// failure for `retry_after_failure` (not retried sooner), a local fault
    /// not at all.
    fn keep_dane(&mut self, domain: Domain, result: &Arc<DaneResult>, wall_ms: u64) {
        let keep_for = match &result.verdict {
            Verdict::Temp(failure) if failure.is_local() => return,
            Verdict::Temp(_) => self.settings.retry_after_failure,
            _ => result.ttl,
        };
        let until = wall_ms.saturating_add(millis(keep_for));
        self.index.store_dane(domain, result.clone(), until);
    }

    /// End DANE lookup `id`, giving `result` to every waiting request.
    fn finish_dane(&mut self, id: LookupId, result: Arc<DaneResult>) {
        let Some(run) = self.lookups.finish(id) else {
            return;
        };
        for w in run.waiters {
            let answer = DaneAnswer {
                result: result.clone(),
                cached: false,
            };
            self.dane_part(w.request, answer);
        }
        self.start_queued();
    }

    /// A request's deadline passed while its DANE lookup runs: `TEMP` for
    /// it (RFC 7672 §2.1.1), the lookup goes on for the others.
    pub(super) fn expire_dane_request(&mut self, id: LookupId, request: RequestId, at: Instant) {
        let Some(run) = self.lookups.expire_waiter(id, request, at) else {
            return;
        };
        let failure = if run.queued {
            DaneFailure::Local(OVERLOADED.into())
        } else {
            DaneFailure::Timeout
        };
        let answer = DaneAnswer {
            result: Arc::new(DaneResult::failed(failure)),
            cached: false,
        };
        self.dane_part(request, answer);
    }

    /// A DANE lookup's deadline passed: cancel its IO; `TEMP` for its
    /// requests, remembered like any failure unless the lookup never
    /// started (a local overload).
    pub(super) fn expire_dane_lookup(&mut self, id: LookupId, at: Instant) {
        let Some(run) = self.lookups.get(id) else {
            return;
        };
        let failure = if run.queued {
            DaneFailure::Local(OVERLOADED.into())
        } else {
            self.actions.push_back(Action::Cancel { lookup: id });
            DaneFailure::Timeout
        };
        let domain = run.domain.clone();
        let result = Arc::new(DaneResult::failed(failure));
        let wall = self.wall_at(at);
        self.keep_dane(domain, &result, wall);
        self.finish_dane(id, result);
    }

    /// The DANE part of `request` is known.
    fn dane_part(&mut self, request: RequestId, answer: DaneAnswer) {
        if let Some(c) = self.combined.get_mut(&request) {
            c.dane = Some(answer);
            self.try_complete(request);
        }
    }

    /// The MTA-STS part of `request` is known.
    pub(super) fn sts_part(&mut self, request: RequestId, policy: Option<Policy>, reason: Reason) {
        if let Some(c) = self.combined.get_mut(&request) {
            c.sts = Some((policy, reason));
            c.sts_lookup = None;
            self.try_complete(request);
        }
    }

    /// Reply to `request` once its reply is known: at once for a DANE
    /// verdict that decides, else with both parts.
    fn try_complete(&mut self, request: RequestId) {
        let ready = match self.combined.get(&request) {
            Some(Combined {
                dane: Some(dane),
                sts,
                ..
            }) => dane.result.verdict.decides() || sts.is_some(),
            _ => false,
        };
        if !ready {
            return;
        }
        let Some(c) = self.combined.remove(&request) else {
            return;
        };
        if let Some(lookup) = c.sts_lookup {
            self.lookups.leave(lookup, request);
        }
        let (policy, reason) = c.sts.unwrap_or((None, Reason::DaneDecided));
        self.actions.push_back(Action::Reply {
            request,
            domain: c.domain,
            answer: Answer {
                policy,
                reason,
                dane: c.dane,
            },
        });
    }
}
