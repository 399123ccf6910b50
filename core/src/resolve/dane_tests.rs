//! The coordinator's DANE half (RFC 8461 §2, RFC 7672) driven directly,
//! time as an argument: both lookups start at once, a deciding verdict
//! answers without waiting for MTA-STS, "no DANE" waits for it, results
//! are joined per domain and kept for their TTL, failures for the retry
//! delay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::{Fresh, PolicyIndex};
use crate::dane::{DaneFailure, DaneResult, NoDane, Verdict};
use crate::dns::{DnsError, DnsFailure, QueryType};
use crate::domain::Domain;
use crate::policy::{Mode, Policy};

const W: u64 = 1_700_000_000_000;
const T: Duration = Duration::from_secs(4);

fn d(s: &str) -> Domain {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn resolver() -> Resolver {
    let settings = ResolverSettings::default();
    Resolver::new(
        settings,
        Arc::new(PolicyIndex::new(100, settings.cache_grace)),
    )
}

fn drain(r: &mut Resolver) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn policy() -> Policy {
    Policy {
        mode: Mode::Enforce,
        max_age: 86_400,
        mx: vec!["mx.example.com".into()],
        lines: vec!["version: STSv1".into()].into(),
    }
}

fn decided(verdict: Verdict, secs: u64) -> DaneResult {
    DaneResult::decided(verdict, Duration::from_secs(secs))
}

fn servfail() -> DaneResult {
    DaneResult::failed(DaneFailure::Dns {
        name: "_25._tcp.mx.example.com".into(),
        qtype: QueryType::Tlsa,
        cause: DnsFailure::Server(DnsError::ServFail),
    })
}

/// The lookups a request started: (DANE, MTA-STS TXT), either may be absent.
fn started(actions: &[Action]) -> (Option<LookupId>, Option<LookupId>) {
    let dane = actions.iter().find_map(|a| match a {
        Action::LookupDane { lookup, .. } => Some(*lookup),
        _ => None,
    });
    let txt = actions.iter().find_map(|a| match a {
        Action::QueryTxt { lookup, .. } => Some(*lookup),
        _ => None,
    });
    (dane, txt)
}

fn replies(actions: &[Action]) -> Vec<(RequestId, Answer)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply {
                request, answer, ..
            } => Some((*request, answer.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn dane_only_answers_without_waiting_and_mta_sts_is_still_kept() {
    let mut r = resolver();
    let now = Instant::now();
    r.handle_dane_request(RequestId(1), d("example.com"), T, now, W);
    let actions = drain(&mut r);
    let (Some(dane), Some(txt)) = started(&actions) else {
        panic!("both lookups start at once: {actions:?}");
    };
    assert!(replies(&actions).is_empty());
    r.handle_dane(dane, decided(Verdict::DaneOnly, 300), now, W + 10);
    let got = replies(&drain(&mut r));
    assert_eq!(got.len(), 1);
    let answer = &got[0].1;
    assert_eq!(answer.reason, Reason::DaneDecided);
    assert_eq!(answer.policy, None);
    let dane_answer = answer.dane.as_ref().unwrap_or_else(|| panic!("no DANE"));
    assert_eq!(dane_answer.result.verdict, Verdict::DaneOnly);
    assert!(!dane_answer.cached);
    // Kept for its TTL, visible before the reply.
    assert!(r.index().dane_fresh("example.com", W + 10).is_some());
    assert!(r
        .index()
        .dane_fresh("example.com", W + 10 + 300_000)
        .is_none());
    // The MTA-STS lookup goes on with no one waiting and is kept.
    assert_eq!(r.in_flight(), 1);
    r.handle_txt(txt, TxtResult::Id("id1".into()), now, W + 20);
    let fetch = drain(&mut r);
    assert!(matches!(fetch.as_slice(), [Action::FetchPolicy { .. }]));
    r.handle_fetch(txt, FetchResult::Policy(policy()), now, W + 30);
    assert!(drain(&mut r).is_empty(), "no second reply");
    assert!(matches!(
        r.index().fresh("example.com", W + 30),
        Fresh::Policy(_)
    ));
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn no_dane_waits_for_mta_sts_whichever_comes_first() {
    for dane_first in [true, false] {
        let mut r = resolver();
        let now = Instant::now();
        r.handle_dane_request(RequestId(7), d("example.com"), T, now, W);
        let (Some(dane), Some(txt)) = started(&drain(&mut r)) else {
            panic!("both lookups start");
        };
        let no_dane = decided(Verdict::NoDane(NoDane::MxInsecure), 60);
        if dane_first {
            r.handle_dane(dane, no_dane.clone(), now, W);
            assert!(replies(&drain(&mut r)).is_empty(), "waits for MTA-STS");
        }
        r.handle_txt(txt, TxtResult::Id("id1".into()), now, W);
        drain(&mut r);
        r.handle_fetch(txt, FetchResult::Policy(policy()), now, W);
        if !dane_first {
            assert!(replies(&drain(&mut r)).is_empty(), "waits for DANE");
            r.handle_dane(dane, no_dane, now, W);
        }
        let got = replies(&drain(&mut r));
        assert_eq!(got.len(), 1, "dane_first {dane_first}");
        assert_eq!(got[0].1.policy, Some(policy()));
        assert_eq!(got[0].1.reason, Reason::Fetched);
        let verdict = got[0].1.dane.as_ref().map(|a| a.result.verdict.clone());
        assert_eq!(verdict, Some(Verdict::NoDane(NoDane::MxInsecure)));
    }
}

#[test]
fn a_burst_is_one_dane_lookup_and_later_requests_use_the_index() {
    let mut r = resolver();
    let now = Instant::now();
    for i in 0..20 {
        r.handle_dane_request(RequestId(i), d("example.com"), T, now, W + i);
    }
    let actions = drain(&mut r);
    let lookups = actions
        .iter()
        .filter(|a| matches!(a, Action::LookupDane { .. }))
        .count();
    let txts = actions
        .iter()
        .filter(|a| matches!(a, Action::QueryTxt { .. }))
        .count();
    assert_eq!((lookups, txts), (1, 1));
    let (Some(dane), _) = started(&actions) else {
        panic!("no DANE lookup");
    };
    r.handle_dane(dane, decided(Verdict::Dane, 30), now, W + 100);
    let got = replies(&drain(&mut r));
    assert_eq!(got.len(), 20);
    // Within the TTL: from the index, no lookup.
    r.handle_dane_request(RequestId(100), d("example.com"), T, now, W + 29_000);
    let actions = drain(&mut r);
    assert_eq!(started(&actions).0, None);
    let got = replies(&actions);
    assert!(got[0].1.dane.as_ref().is_some_and(|a| a.cached));
    // After it: a new lookup.
    r.handle_dane_request(RequestId(101), d("example.com"), T, now, W + 30_100);
    assert!(started(&drain(&mut r)).0.is_some());
}

#[test]
fn a_fresh_policy_needs_only_the_dane_lookup() {
    let mut r = resolver();
    let now = Instant::now();
    r.index().store(
        d("example.com"),
        crate::cache::CacheEntry {
            policy_id: "id1".into(),
            policy: policy(),
            fetched_at_ms: W,
            checked_at_ms: W,
        },
    );
    r.handle_dane_request(RequestId(1), d("example.com"), T, now, W + 1);
    let actions = drain(&mut r);
    let (Some(dane), None) = started(&actions) else {
        panic!("only DANE: {actions:?}");
    };
    r.handle_dane(
        dane,
        decided(Verdict::NoDane(NoDane::NoTlsa), 60),
        now,
        W + 2,
    );
    let got = replies(&drain(&mut r));
    assert_eq!(got[0].1.reason, Reason::Cached);
    assert_eq!(got[0].1.policy, Some(policy()));
}

#[test]
fn failures_are_not_retried_for_the_retry_delay_local_ones_at_once() {
    let mut r = resolver();
    let now = Instant::now();
    let retry = RETRY_AFTER_FAILURE.as_millis() as u64;
    r.handle_dane_request(RequestId(1), d("example.com"), T, now, W);
    let (Some(dane), _) = started(&drain(&mut r)) else {
        panic!("no DANE lookup");
    };
    r.handle_dane(dane, servfail(), now, W);
    let got = replies(&drain(&mut r));
    assert!(matches!(
        got[0].1.dane.as_ref().map(|a| &a.result.verdict),
        Some(Verdict::Temp(_))
    ));
    r.handle_dane_request(RequestId(2), d("example.com"), T, now, W + retry - 1);
    let actions = drain(&mut r);
    assert_eq!(started(&actions).0, None, "not retried yet");
    assert!(replies(&actions)[0]
        .1
        .dane
        .as_ref()
        .is_some_and(|a| a.cached));
    r.handle_dane_request(RequestId(3), d("example.com"), T, now, W + retry);
    let (Some(dane), _) = started(&drain(&mut r)) else {
        panic!("retried after the delay");
    };
    // A local fault is not remembered.
    r.handle_dane(
        dane,
        DaneResult::failed(DaneFailure::Local("EMFILE".into())),
        now,
        W + retry,
    );
    drain(&mut r);
    r.handle_dane_request(RequestId(4), d("example.com"), T, now, W + retry + 1);
    assert!(started(&drain(&mut r)).0.is_some());
}

#[test]
fn a_dane_lookup_past_its_deadline_is_cancelled_and_temp() {
    let mut r = resolver();
    let now = Instant::now();
    r.handle_dane_request(RequestId(1), d("example.com"), T, now, W);
    let (Some(dane), Some(txt)) = started(&drain(&mut r)) else {
        panic!("both start");
    };
    r.handle_timeout(now + T);
    let actions = drain(&mut r);
    assert!(actions.contains(&Action::Cancel { lookup: dane }));
    assert!(actions.contains(&Action::Cancel { lookup: txt }));
    let got = replies(&actions);
    assert_eq!(got.len(), 1);
    let verdict = got[0].1.dane.as_ref().map(|a| a.result.verdict.clone());
    assert_eq!(verdict, Some(Verdict::Temp(DaneFailure::Timeout)));
    assert_eq!(r.in_flight(), 0);
    // Remembered like any failure.
    assert!(r.index().dane_fresh("example.com", W + 1).is_some());
}

/// A request that joins a DANE lookup with a later deadline is answered by
/// its own: the first request's deadline gives that one `TEMP`, the lookup
/// goes on, no failure is kept for 5 minutes, and its verdict answers the
/// later request.
#[test]
fn a_joined_dane_request_with_a_longer_timeout_gets_its_own_deadline() {
    let mut r = resolver();
    let t0 = Instant::now();
    r.handle_dane_request(RequestId(1), d("example.com"), T, t0, W);
    let (Some(dane), Some(_txt)) = started(&drain(&mut r)) else {
        panic!("both start");
    };
    let t1 = t0 + Duration::from_secs(1);
    let long = Duration::from_secs(30);
    r.handle_dane_request(RequestId(2), d("example.com"), long, t1, W + 1_000);
    assert!(drain(&mut r).is_empty(), "joins both lookups");
    r.handle_timeout(t0 + T);
    let actions = drain(&mut r);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Cancel { .. })),
        "{actions:?}"
    );
    let got = replies(&actions);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, RequestId(1));
    let verdict = got[0].1.dane.as_ref().map(|a| a.result.verdict.clone());
    assert_eq!(verdict, Some(Verdict::Temp(DaneFailure::Timeout)));
    assert!(r.index().dane_fresh("example.com", W + 4_000).is_none());
    // The verdict comes at 10 s and answers request 2.
    let t2 = t0 + Duration::from_secs(10);
    r.handle_dane(dane, decided(Verdict::DaneOnly, 300), t2, W + 10_000);
    let got = replies(&drain(&mut r));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, RequestId(2));
    let verdict = got[0].1.dane.as_ref().map(|a| a.result.verdict.clone());
    assert_eq!(verdict, Some(Verdict::DaneOnly));
    // A DANE lookup that hangs ends at the latest deadline, kept as a
    // failure from then (for the retry delay).
    r.handle_dane_request(RequestId(3), d("example.org"), T, t2, W + 10_000);
    let (Some(hung), Some(_)) = started(&drain(&mut r)) else {
        panic!("both start");
    };
    r.handle_dane_request(RequestId(4), d("example.org"), long, t2, W + 10_000);
    r.handle_timeout(t2 + T);
    assert_eq!(replies(&drain(&mut r)).len(), 1);
    r.handle_timeout(t2 + long);
    let actions = drain(&mut r);
    assert!(actions.contains(&Action::Cancel { lookup: hung }));
    assert_eq!(replies(&actions)[0].0, RequestId(4));
    let until = W + 40_000 + 300_000;
    assert!(r.index().dane_fresh("example.org", until - 1).is_some());
    assert!(r.index().dane_fresh("example.org", until).is_none());
}
