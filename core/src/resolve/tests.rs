//! Tests of the lookup state machine with the shared index as its cache
//! (RFC 8461 §3.3, §5.1). Wall-clock values are Unix milliseconds.

use crate::dns::{DnsError, DnsFailure, NoRecordsKind};
use crate::http::HttpError;
use crate::txt::TxtError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

fn nx() -> NoPolicy {
    NoPolicy::NoRecord(NoRecordsKind::NxDomain)
}

fn no_sts() -> NoPolicy {
    NoPolicy::Record(TxtError::NoStsRecord)
}

fn servfail() -> Failure {
    Failure::Txt(DnsFailure::Server(DnsError::ServFail))
}

fn dns_timeout() -> Failure {
    Failure::Txt(DnsFailure::Timeout)
}

fn http404() -> Failure {
    Failure::Http(HttpError::Status(404))
}

fn connect(reason: &str) -> Failure {
    Failure::Connect {
        host: "mta-sts.example.com".into(),
        reason: reason.into(),
    }
}

use proptest::prelude::*;

use super::remembered::Remembered;
use super::*;
use crate::cache::{millis, Fresh, Held, PolicyIndex, StoreError};
use crate::domain::normalize_key;

/// One second in milliseconds.
const S: u64 = 1000;
/// "Now" on the wall clock (Unix milliseconds).
const W: u64 = 1_700_000_000_000;
/// A day in seconds (a `max_age`).
const DAY: u64 = 86_400;
/// A day in milliseconds.
const DAY_MS: u64 = DAY * S;
/// The zone timeout.
const T: Duration = Duration::from_secs(4);
/// One second.
const S_DUR: Duration = Duration::from_secs(1);
/// `cache_grace` of most tests.
const GRACE: Duration = Duration::from_secs(60);

fn d(s: &str) -> Domain {
    normalize_key(s).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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
        ]
        .into(),
    }
}

fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
    CacheEntry {
        policy_id: id.to_owned(),
        policy: pol(DAY, "mail.example.com"),
        fetched_at_ms,
        checked_at_ms,
    }
}

fn settings(persistent: bool) -> ResolverSettings {
    ResolverSettings {
        cache_grace: GRACE,
        retry_after_failure: RETRY_AFTER_FAILURE,
        memory_limit: 100,
        persistent,
        max_lookups: crate::resolve::DEFAULT_MAX_LOOKUPS,
    }
}

/// A resolver over a fresh index of `capacity` domains with the same grace.
fn resolver_with(settings: ResolverSettings, capacity: usize) -> Resolver {
    let index = PolicyIndex::new(capacity, settings.cache_grace);
    Resolver::new(settings, Arc::new(index))
}

fn resolver() -> Resolver {
    resolver_with(settings(false), 100)
}

fn persistent() -> Resolver {
    resolver_with(settings(true), 100)
}

fn drain(r: &mut Resolver) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn reply(req: u64, dom: &str, policy: Option<Policy>, reason: Reason) -> Action {
    Action::Reply {
        request: RequestId(req),
        domain: d(dom),
        answer: Answer {
            policy,
            reason,
            dane: None,
        },
    }
}

fn query_txt(lookup: LookupId, dom: &str) -> Action {
    Action::QueryTxt {
        lookup,
        domain: d(dom),
    }
}

fn fetch_action(lookup: LookupId, policy_id: &str) -> Action {
    Action::FetchPolicy {
        lookup,
        domain: d("example.com"),
        policy_id: policy_id.to_owned(),
    }
}

fn persist(dom: &str, entry: CacheEntry) -> Action {
    Action::Persist {
        domain: d(dom),
        entry,
    }
}

fn known(r: &Resolver, dom: &str, wall: u64) -> Held {
    r.index().known(dom, wall)
}

/// The entry the index answers with no lookup at `wall`, if any.
fn fresh_entry(r: &Resolver, dom: &str, wall: u64) -> Option<CacheEntry> {
    match r.index().fresh(dom, wall) {
        Fresh::Policy(c) => Some(c.entry().clone()),
        Fresh::NoPolicy | Fresh::Miss => None,
    }
}

fn fresh_no_policy(r: &Resolver, dom: &str, wall: u64) -> bool {
    matches!(r.index().fresh(dom, wall), Fresh::NoPolicy)
}

/// Start a request that must begin a lookup with a TXT query (no store).
fn start(r: &mut Resolver, req: u64, dom: &str, now: Instant, wall: u64) -> LookupId {
    r.handle_request(RequestId(req), d(dom), T, now, wall);
    match drain(r).as_slice() {
        [Action::QueryTxt { lookup, domain }] if *domain == d(dom) => *lookup,
        other => panic!("expected QueryTxt, got {other:?}"),
    }
}

/// Start a request that must begin a lookup by reading the store.
fn start_load(r: &mut Resolver, req: u64, dom: &str, now: Instant, wall: u64) -> LookupId {
    r.handle_request(RequestId(req), d(dom), T, now, wall);
    match drain(r).as_slice() {
        [Action::LoadStore { lookup, domain }] if *domain == d(dom) => *lookup,
        other => panic!("expected LoadStore, got {other:?}"),
    }
}

/// Put `cached` (which must not be fresh) in the index, then start a
/// request for example.com up to its TXT query.
fn to_txt(
    r: &mut Resolver,
    req: u64,
    cached: Option<CacheEntry>,
    now: Instant,
    wall: u64,
) -> LookupId {
    if let Some(e) = cached {
        r.index().store(d("example.com"), e);
    }
    start(r, req, "example.com", now, wall)
}

#[test]
fn fresh_index_entry_needs_no_network() {
    for mut r in [resolver(), persistent()] {
        let now = Instant::now();
        let cached = entry("a", W - 100 * S, W - 59 * S);
        r.index().store(d("example.com"), cached.clone());
        r.handle_request(RequestId(1), d("example.com"), T, now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(1, "example.com", Some(cached.policy), Reason::Cached)]
        );
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.poll_timeout(), None);
    }
}

#[test]
fn grace_passed_same_id_confirms_without_fetch() {
    let mut r = resolver();
    let now = Instant::now();
    let cached = entry("a", W - 1000 * S, W - 60 * S);
    let id = to_txt(&mut r, 1, Some(cached.clone()), now, W);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    // No store: nothing to persist, only the reply.
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            Some(cached.policy.clone()),
            Reason::Confirmed
        )]
    );
    // The index holds the confirmation; fetched_at is unchanged (§5.1).
    let mut confirmed = cached;
    confirmed.checked_at_ms = W;
    assert_eq!(known(&r, "example.com", W), Held::Entry(confirmed));
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn changed_id_fetches() {
    let mut r = resolver();
    let now = Instant::now();
    let id = to_txt(
        &mut r,
        1,
        Some(entry("a", W - 1000 * S, W - 100 * S)),
        now,
        W,
    );
    r.handle_txt(id, TxtResult::Id("b".into()), now, W);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "b")]);
    let new = pol(3600, "mx2.example.com");
    r.handle_fetch(id, FetchResult::Policy(new.clone()), now, W + 1);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", Some(new.clone()), Reason::Fetched)]
    );
    assert_eq!(
        known(&r, "example.com", W + 1),
        Held::Entry(CacheEntry {
            policy_id: "b".into(),
            policy: new,
            fetched_at_ms: W + 1,
            checked_at_ms: W + 1,
        })
    );
}

#[test]
fn expired_policy_with_same_id_fetches() {
    let mut r = resolver();
    let now = Instant::now();
    let id = to_txt(&mut r, 1, Some(entry("a", W - DAY_MS, W - 10 * S)), now, W);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
}

#[test]
fn fetch_failure_falls_back_to_unexpired_cache() {
    let mut r = resolver();
    let now = Instant::now();
    let cached = entry("a", W - 1000 * S, W - 100 * S);
    let id = to_txt(&mut r, 1, Some(cached.clone()), now, W);
    r.handle_txt(id, TxtResult::Id("b".into()), now, W);
    drain(&mut r);
    r.handle_fetch(id, FetchResult::Error(http404()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            Some(cached.policy.clone()),
            Reason::Fallback(http404())
        )]
    );
    assert_eq!(known(&r, "example.com", W), Held::Entry(cached));
}

#[test]
fn fetch_failure_with_expired_cache_gives_no_policy() {
    let mut r = resolver();
    let now = Instant::now();
    let id = to_txt(
        &mut r,
        1,
        Some(entry("a", W - DAY_MS - 5 * S, W - 100 * S)),
        now,
        W,
    );
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    drain(&mut r);
    r.handle_fetch(id, FetchResult::Error(connect("tls")), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            None,
            Reason::Fallback(connect("tls"))
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
    r.handle_fetch(id, FetchResult::Error(connect("refused")), now, W);
    drain(&mut r);

    // Up to the last millisecond of 300 s: the TXT is checked but the fetch
    // is not retried.
    let wall = W + 300 * S - 1;
    let id = to_txt(&mut r, 2, None, now, wall);
    r.handle_txt(id, TxtResult::Id("a".into()), now, wall);
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", None, Reason::FailureBackoff)]
    );
    // A different id is fetched at once.
    let id = to_txt(&mut r, 3, None, now, wall);
    r.handle_txt(id, TxtResult::Id("b".into()), now, wall);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "b")]);
    r.handle_fetch(id, FetchResult::Error(connect("x")), now, wall);
    drain(&mut r);
    // After 300 s the first id is retried.
    let id = to_txt(&mut r, 4, None, now, W + 300 * S);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W + 300 * S);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
}

#[test]
fn no_policy_is_remembered_for_cache_grace() {
    let mut r = resolver();
    let now = Instant::now();
    let id = to_txt(&mut r, 1, None, now, W);
    r.handle_txt(id, TxtResult::NoPolicy(nx()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", None, Reason::NoPolicy(nx()))]
    );
    // Noted in the index, where connections find it too.
    assert!(fresh_no_policy(&r, "example.com", W));
    r.handle_request(RequestId(2), d("example.com"), T, now, W + 60 * S - 1);
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", None, Reason::NoPolicyRemembered)]
    );
    assert_eq!(r.in_flight(), 0);
    // Once cache_grace has passed, it is looked up again.
    start(&mut r, 3, "example.com", now, W + 60 * S);
}

#[test]
fn missing_txt_keeps_unexpired_cached_policy() {
    let mut r = resolver();
    let now = Instant::now();
    let cached = entry("a", W - 1000 * S, W - 100 * S);
    let id = to_txt(&mut r, 1, Some(cached.clone()), now, W);
    r.handle_txt(id, TxtResult::NoPolicy(no_sts()), now, W);
    // No eviction: the cached policy answers.
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            Some(cached.policy.clone()),
            Reason::NoPolicy(no_sts())
        )]
    );
    assert_eq!(known(&r, "example.com", W), Held::Entry(cached));
    // And "no policy" is not remembered: the next request looks up again.
    start(&mut r, 2, "example.com", now, W + 1);
}

#[test]
fn missing_txt_with_expired_policy_is_remembered_as_no_policy() {
    let mut r = resolver();
    let now = Instant::now();
    let expired = entry("a", W - DAY_MS, W - 100 * S);
    let id = to_txt(&mut r, 1, Some(expired), now, W);
    r.handle_txt(id, TxtResult::NoPolicy(nx()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", None, Reason::NoPolicy(nx()))]
    );
    assert_eq!(known(&r, "example.com", W), Held::NoPolicy);
    r.handle_request(RequestId(2), d("example.com"), T, now, W + 1);
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", None, Reason::NoPolicyRemembered)]
    );
}

#[test]
fn dns_error_is_not_remembered_as_no_policy() {
    let mut r = resolver();
    let now = Instant::now();
    let id = to_txt(&mut r, 1, None, now, W);
    r.handle_txt(id, TxtResult::Error(servfail()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", None, Reason::Fallback(servfail()))]
    );
    assert_eq!(known(&r, "example.com", W), Held::Miss);
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
        ]
        .into(),
    };
    r.handle_fetch(id, FetchResult::Policy(none.clone()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", Some(none.clone()), Reason::Fetched)]
    );
    // Stored like any policy: the next request is answered from the index.
    r.handle_request(RequestId(2), d("example.com"), T, now, W + 1);
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", Some(none), Reason::Cached)]
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

    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
    let p = pol(DAY, "mail.example.com");
    r.handle_fetch(id, FetchResult::Policy(p.clone()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![
            reply(1, "example.com", Some(p.clone()), Reason::Fetched),
            reply(2, "example.com", Some(p), Reason::Fetched),
        ]
    );
    assert_eq!(r.in_flight(), 1);
}

#[test]
fn shorter_request_timeout_answers_that_request_only() {
    let mut r = resolver();
    let t0 = Instant::now();
    let cached = entry("a", W - 1000 * S, W - 100 * S);
    r.index().store(d("example.com"), cached.clone());
    r.handle_request(
        RequestId(1),
        d("example.com"),
        Duration::from_secs(10),
        t0,
        W,
    );
    let id = match drain(&mut r).as_slice() {
        [Action::QueryTxt { lookup, .. }] => *lookup,
        other => panic!("{other:?}"),
    };
    // A zone with a 2 s timeout joins at t0 + 1 s.
    let t1 = t0 + Duration::from_secs(1);
    r.handle_request(
        RequestId(2),
        d("example.com"),
        Duration::from_secs(2),
        t1,
        W + S,
    );
    assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    r.handle_timeout(t1 + ms(1999));
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
    r.handle_txt(id, TxtResult::Id("a".into()), t1, W + 3 * S);
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            Some(cached.policy),
            Reason::Confirmed
        )]
    );
    assert_eq!(r.poll_timeout(), None);
}

/// A request that joins a lookup with a later deadline is answered by its
/// own (docs/ARCHITECTURE.md "The path of one request"): the first
/// request's deadline answers only that request, the fetch goes on and is
/// not remembered as failed, and its result answers the later request.
#[test]
fn joined_request_with_longer_timeout_gets_its_own_deadline() {
    let mut r = resolver();
    let t0 = Instant::now();
    let id = start(&mut r, 1, "example.com", t0, W);
    r.handle_txt(id, TxtResult::Id("a".into()), t0, W);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
    // A zone with a 30 s timeout joins at t0 + 1 s.
    let t1 = t0 + Duration::from_secs(1);
    r.handle_request(RequestId(2), d("example.com"), 30 * S_DUR, t1, W + S);
    assert_eq!(drain(&mut r), vec![]);
    assert_eq!(r.poll_timeout(), Some(t0 + T));
    r.handle_timeout(t0 + T);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", None, Reason::Timeout)],
        "no Cancel: the lookup goes on for request 2"
    );
    assert!(r.failures.map.is_empty(), "not a failed fetch");
    assert_eq!(r.poll_timeout(), Some(t1 + 30 * S_DUR));
    let p = pol(DAY, "mail.example.com");
    let t2 = t0 + 10 * S_DUR;
    r.handle_fetch(id, FetchResult::Policy(p.clone()), t2, W + 10 * S);
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", Some(p), Reason::Fetched)]
    );
    assert_eq!(r.in_flight(), 0);
    assert_eq!(r.poll_timeout(), None);
}

/// A policy host that hangs is cut off at the latest deadline of the
/// lookup's waiters, and the fetch is remembered as failed: not tried again
/// for 5 minutes (RFC 8461 §3.3).
#[test]
fn hung_fetch_ends_at_the_latest_deadline_and_is_not_retried() {
    let mut r = resolver();
    let t0 = Instant::now();
    let id = start(&mut r, 1, "example.com", t0, W);
    r.handle_txt(id, TxtResult::Id("a".into()), t0, W);
    drain(&mut r);
    let t1 = t0 + Duration::from_secs(1);
    r.handle_request(RequestId(2), d("example.com"), 30 * S_DUR, t1, W + S);
    r.handle_timeout(t0 + T);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", None, Reason::Timeout)]
    );
    let end = t1 + 30 * S_DUR;
    r.handle_timeout(end - ms(1));
    assert_eq!(drain(&mut r), vec![]);
    r.handle_timeout(end);
    assert_eq!(
        drain(&mut r),
        vec![
            Action::Cancel { lookup: id },
            reply(2, "example.com", None, Reason::Timeout),
        ]
    );
    assert_eq!(r.poll_timeout(), None);
    // Just under 5 minutes later the id is checked, the host not tried.
    let wall = W + 31 * S + millis(RETRY_AFTER_FAILURE) - 1;
    let later = end + RETRY_AFTER_FAILURE - ms(1);
    let id = to_txt(&mut r, 3, None, later, wall);
    r.handle_txt(id, TxtResult::Id("a".into()), later, wall);
    assert_eq!(
        drain(&mut r),
        vec![reply(3, "example.com", None, Reason::FailureBackoff)]
    );
    // At 5 minutes it is.
    let id = to_txt(&mut r, 4, None, later + ms(1), wall + 1);
    r.handle_txt(id, TxtResult::Id("a".into()), later + ms(1), wall + 1);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
}

/// Requests that keep joining with the same timeout do not keep a hung
/// lookup going: it ends one timeout after it began, is remembered as a
/// failed fetch, and later requests are answered at once.
#[test]
fn a_stream_of_requests_does_not_keep_a_hung_fetch_going() {
    let mut r = resolver();
    let t0 = Instant::now();
    let id = start(&mut r, 0, "example.com", t0, W);
    r.handle_txt(id, TxtResult::Id("a".into()), t0, W);
    drain(&mut r);
    // One request every 100 ms, each with the zone timeout.
    for k in 1..40u64 {
        let at = t0 + ms(100 * k);
        r.handle_request(RequestId(k), d("example.com"), T, at, W + 100 * k);
    }
    // The first request's deadline ends the lookup and answers them all.
    r.handle_timeout(t0 + T);
    let actions = drain(&mut r);
    assert_eq!(actions[0], Action::Cancel { lookup: id });
    assert_eq!(actions.len(), 41, "every request answered: {actions:?}");
    let id = to_txt(&mut r, 99, None, t0 + T, W + 4 * S);
    r.handle_txt(id, TxtResult::Id("a".into()), t0 + T, W + 4 * S);
    assert_eq!(
        drain(&mut r),
        vec![reply(99, "example.com", None, Reason::FailureBackoff)]
    );
}

#[test]
fn lookup_deadline_cancels_and_ignores_late_results() {
    for persistent in [false, true] {
        let mut r = resolver_with(settings(persistent), 100);
        let t0 = Instant::now();
        let cached = entry("a", W - 1000 * S, W - 100 * S);
        r.index().store(d("example.com"), cached.clone());
        let id = if persistent {
            start_load(&mut r, 1, "example.com", t0, W)
        } else {
            start(&mut r, 1, "example.com", t0, W)
        };
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
        let later = W + 5 * S;
        r.handle_store_loaded(id, Ok(Some(entry("b", later, later))), t0 + T, later);
        r.handle_txt(id, TxtResult::Id("b".into()), t0 + T, later);
        r.handle_fetch(
            LookupId(999),
            FetchResult::Error(connect("x")),
            t0 + T,
            later,
        );
        assert_eq!(drain(&mut r), vec![]);
        assert_eq!(
            known(&r, "example.com", later),
            Held::Entry(entry("a", W - 1000 * S, W - 100 * S))
        );
    }
}

#[test]
fn late_driver_still_cancels_before_result() {
    // The driver missed poll_timeout: a result after the deadline is ignored.
    let mut r = resolver();
    let t0 = Instant::now();
    let id = to_txt(&mut r, 1, None, t0, W);
    r.handle_txt(id, TxtResult::Id("a".into()), t0 + T, W + 4 * S);
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
    let now = Instant::now();
    // Waiting for TXT: a store result or a fetch result is ignored.
    let mut r = resolver();
    let id = start(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Ok(Some(entry("a", W, W))), now, W);
    r.handle_fetch(id, FetchResult::Error(connect("x")), now, W);
    assert_eq!(drain(&mut r), vec![]);
    assert_eq!(r.in_flight(), 1);
    assert_eq!(known(&r, "example.com", W), Held::Miss);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
    // Waiting for the store: a TXT result or a fetch result is ignored.
    let mut r = persistent();
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    r.handle_fetch(id, FetchResult::Error(connect("x")), now, W);
    assert_eq!(drain(&mut r), vec![]);
    assert_eq!(r.in_flight(), 1);
    assert!(r.failures.map.is_empty());
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
    let id = to_txt(&mut r, 2, None, t1, W + 10 * S);
    r.handle_txt(id, TxtResult::Id("a".into()), t1, W + 10 * S);
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", None, Reason::FailureBackoff)]
    );
}

/// A policy checked at `t` is served from the index until `t + grace - 1`
/// ms and re-checked from `t + grace` on (RFC 8461 §5.1, `cache_grace`);
/// "no policy" likewise.
#[test]
fn grace_boundaries_to_the_millisecond() {
    for grace in [Duration::from_secs(2), Duration::from_millis(500)] {
        for persistent in [false, true] {
            let g = millis(grace);
            let settings = ResolverSettings {
                cache_grace: grace,
                ..settings(persistent)
            };
            let mut r = resolver_with(settings, 100);
            let now = Instant::now();
            let t = W;
            let cached = entry("a", t - 1000 * S, t);
            r.index().store(d("example.com"), cached.clone());

            r.handle_request(RequestId(1), d("example.com"), T, now, t + g - 1);
            assert_eq!(
                drain(&mut r),
                vec![reply(
                    1,
                    "example.com",
                    Some(cached.policy.clone()),
                    Reason::Cached
                )],
                "grace {grace:?}, persistent {persistent}"
            );
            assert_eq!(r.in_flight(), 0);

            let id = if persistent {
                let id = start_load(&mut r, 2, "example.com", now, t + g);
                // The store has nothing newer: memory's entry is stale too.
                r.handle_store_loaded(id, Ok(Some(cached.clone())), now, t + g);
                assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
                id
            } else {
                start(&mut r, 2, "example.com", now, t + g)
            };
            r.handle_txt(id, TxtResult::Id("a".into()), now, t + g);
            let actions = drain(&mut r);
            assert_eq!(
                actions.last(),
                Some(&reply(
                    2,
                    "example.com",
                    Some(cached.policy.clone()),
                    Reason::Confirmed
                ))
            );

            // "No policy" noted at t.
            r.index().note_no_policy(d("none.example"), t);
            r.handle_request(RequestId(3), d("none.example"), T, now, t + g - 1);
            assert_eq!(
                drain(&mut r),
                vec![reply(3, "none.example", None, Reason::NoPolicyRemembered)]
            );
            r.handle_request(RequestId(4), d("none.example"), T, now, t + g);
            let first = drain(&mut r);
            assert!(
                matches!(
                    first.as_slice(),
                    [Action::QueryTxt { .. }] if !persistent
                ) || matches!(first.as_slice(), [Action::LoadStore { .. }] if persistent),
                "{first:?}"
            );

            // A stored entry checked at t, loaded into an empty index.
            if persistent {
                let stored = entry("s", t - 1000 * S, t);
                let id = start_load(&mut r, 5, "stored.example", now, t + g - 1);
                r.handle_store_loaded(id, Ok(Some(stored.clone())), now, t + g - 1);
                assert_eq!(
                    drain(&mut r),
                    vec![reply(
                        5,
                        "stored.example",
                        Some(stored.policy.clone()),
                        Reason::Cached
                    )]
                );
                r.index().remove("stored.example");
                let id = start_load(&mut r, 6, "stored.example", now, t + g);
                r.handle_store_loaded(id, Ok(Some(stored)), now, t + g);
                assert_eq!(drain(&mut r), vec![query_txt(id, "stored.example")]);
            }
        }
    }
}

/// Poll actions one at a time, as a driver does, until the reply to
/// `req`; at that moment the index must already answer `fresh` for
/// example.com. Returns every action polled.
fn poll_checking_index(
    r: &mut Resolver,
    req: u64,
    wall: u64,
    fresh: Option<&Policy>,
) -> Vec<Action> {
    let mut seen = Vec::new();
    while let Some(action) = r.poll_action() {
        if let Action::Reply { request, .. } = &action {
            if *request == RequestId(req) {
                match fresh {
                    Some(p) => assert_eq!(
                        fresh_entry(r, "example.com", wall)
                            .map(|e| e.policy)
                            .as_ref(),
                        Some(p),
                        "not in the index at the reply"
                    ),
                    None => assert!(fresh_no_policy(r, "example.com", wall)),
                }
            }
        }
        seen.push(action);
    }
    seen
}

/// What a lookup learns is in the index before the first reply leaves, so
/// a request that arrives after it needs no lookup (fetch, confirmation,
/// "no policy"; with and without a store).
#[test]
fn result_is_visible_before_the_reply() {
    for persistent in [false, true] {
        let new = pol(DAY, "mx.example.com");
        let now = Instant::now();
        let begin = |r: &mut Resolver, req: u64, wall: u64| {
            if persistent {
                let id = start_load(r, req, "example.com", now, wall);
                r.handle_store_loaded(id, Ok(None), now, wall);
                assert_eq!(drain(r), vec![query_txt(id, "example.com")]);
                id
            } else {
                start(r, req, "example.com", now, wall)
            }
        };

        // Fetched.
        let mut r = resolver_with(settings(persistent), 100);
        let id = begin(&mut r, 1, W);
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
        r.handle_fetch(id, FetchResult::Policy(new.clone()), now, W + 5);
        let seen = poll_checking_index(&mut r, 1, W + 5, Some(&new));
        assert_eq!(
            seen.last(),
            Some(&reply(1, "example.com", Some(new.clone()), Reason::Fetched))
        );
        r.handle_request(RequestId(2), d("example.com"), T, now, W + 5);
        assert_eq!(
            drain(&mut r),
            vec![reply(2, "example.com", Some(new.clone()), Reason::Cached)]
        );
        assert_eq!(r.in_flight(), 0);

        // Confirmed, an hour later.
        let later = W + 3600 * S;
        let id = begin(&mut r, 3, later);
        r.handle_txt(id, TxtResult::Id("a".into()), now, later);
        let seen = poll_checking_index(&mut r, 3, later, Some(&new));
        assert_eq!(
            seen.last(),
            Some(&reply(
                3,
                "example.com",
                Some(new.clone()),
                Reason::Confirmed
            ))
        );
        r.handle_request(RequestId(4), d("example.com"), T, now, later);
        assert_eq!(
            drain(&mut r),
            vec![reply(4, "example.com", Some(new.clone()), Reason::Cached)]
        );

        // No policy.
        let mut r = resolver_with(settings(persistent), 100);
        let id = begin(&mut r, 5, W);
        r.handle_txt(id, TxtResult::NoPolicy(nx()), now, W);
        let seen = poll_checking_index(&mut r, 5, W, None);
        // "No policy" is not persisted.
        assert_eq!(
            seen,
            vec![reply(5, "example.com", None, Reason::NoPolicy(nx()))]
        );
        r.handle_request(RequestId(6), d("example.com"), T, now, W);
        assert_eq!(
            drain(&mut r),
            vec![reply(6, "example.com", None, Reason::NoPolicyRemembered)]
        );
        assert_eq!(r.in_flight(), 0);
    }
}

#[test]
fn newer_store_entry_wins_over_memory() {
    let now = Instant::now();
    let memory = entry("a", W - 1000 * S, W - 100 * S);
    // Another daemon sharing the store fetched "b" and checked it 10 s ago.
    let mut stored = entry("b", W - 500 * S, W - 10 * S);
    stored.policy = pol(DAY, "mx2.example.com");
    let mut r = persistent();
    r.index().store(d("example.com"), memory.clone());
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Ok(Some(stored.clone())), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            Some(stored.policy.clone()),
            Reason::Cached
        )]
    );
    // The index takes the news, and it is not written back.
    assert_eq!(known(&r, "example.com", W), Held::Entry(stored.clone()));

    // A newer but stale stored entry is the one the TXT id is compared with.
    let mut stale = stored;
    stale.checked_at_ms = W - 200 * S;
    let mut r = persistent();
    r.index().store(d("example.com"), memory);
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Ok(Some(stale.clone())), now, W);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
    assert_eq!(known(&r, "example.com", W), Held::Entry(stale.clone()));
    r.handle_txt(id, TxtResult::Id("b".into()), now, W);
    let mut confirmed = stale;
    confirmed.checked_at_ms = W;
    assert_eq!(
        drain(&mut r),
        vec![
            persist("example.com", confirmed.clone()),
            reply(
                1,
                "example.com",
                Some(confirmed.policy.clone()),
                Reason::Confirmed
            ),
        ]
    );
    assert_eq!(known(&r, "example.com", W), Held::Entry(confirmed));
}

#[test]
fn newer_memory_entry_wins_over_store() {
    let now = Instant::now();
    // Newer by fetch time, though the stored one was checked later.
    let mut memory = entry("b", W - 500 * S, W - 200 * S);
    memory.policy = pol(DAY, "mx2.example.com");
    let stored = entry("a", W - 1000 * S, W - 10 * S);
    let mut r = persistent();
    r.index().store(d("example.com"), memory.clone());
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Ok(Some(stored)), now, W);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
    assert_eq!(known(&r, "example.com", W), Held::Entry(memory.clone()));
    r.handle_txt(id, TxtResult::Id("b".into()), now, W);
    let actions = drain(&mut r);
    assert_eq!(
        actions.last(),
        Some(&reply(
            1,
            "example.com",
            Some(memory.policy),
            Reason::Confirmed
        ))
    );
}

#[test]
fn store_error_goes_on_with_memory() {
    let now = Instant::now();
    let memory = entry("a", W - 1000 * S, W - 100 * S);
    let mut r = persistent();
    r.index().store(d("example.com"), memory.clone());
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Err(StoreError::Backend("down".into())), now, W);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
    assert_eq!(known(&r, "example.com", W), Held::Entry(memory.clone()));
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    let mut confirmed = memory.clone();
    confirmed.checked_at_ms = W;
    assert_eq!(
        drain(&mut r),
        vec![
            persist("example.com", confirmed),
            reply(
                1,
                "example.com",
                Some(memory.policy.clone()),
                Reason::Confirmed
            ),
        ]
    );

    // The TXT lookup failing too: memory's policy is the fallback.
    let mut r = persistent();
    r.index().store(d("example.com"), memory.clone());
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Err(StoreError::Timeout(ms(200))), now, W);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
    r.handle_txt(id, TxtResult::Error(servfail()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(
            1,
            "example.com",
            Some(memory.policy),
            Reason::Fallback(servfail())
        )]
    );

    // Nothing in memory and a store error: the TXT id is checked.
    let id = start_load(&mut r, 2, "example.net", now, W);
    r.handle_store_loaded(id, Err(StoreError::Backend("down".into())), now, W);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.net")]);
}

/// With a store, a fetch and a confirmation are written through behind the
/// index: `Persist` comes after the index holds the entry, before the reply.
#[test]
fn persist_follows_fetch_and_confirm_after_the_index() {
    let mut r = persistent();
    let now = Instant::now();
    let p = pol(DAY, "mx.example.com");
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Ok(None), now, W);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W);
    assert_eq!(drain(&mut r), vec![fetch_action(id, "a")]);
    r.handle_fetch(id, FetchResult::Policy(p.clone()), now, W + 1);
    let fetched = CacheEntry {
        policy_id: "a".into(),
        policy: p.clone(),
        fetched_at_ms: W + 1,
        checked_at_ms: W + 1,
    };
    assert_eq!(
        r.poll_action(),
        Some(persist("example.com", fetched.clone()))
    );
    assert_eq!(fresh_entry(&r, "example.com", W + 1), Some(fetched.clone()));
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", Some(p.clone()), Reason::Fetched)]
    );

    // An hour later, the id is confirmed.
    let later = W + 3600 * S;
    let id = start_load(&mut r, 2, "example.com", now, later);
    r.handle_store_loaded(id, Ok(Some(fetched.clone())), now, later);
    assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
    r.handle_txt(id, TxtResult::Id("a".into()), now, later);
    let confirmed = CacheEntry {
        checked_at_ms: later,
        ..fetched
    };
    assert_eq!(
        r.poll_action(),
        Some(persist("example.com", confirmed.clone()))
    );
    assert_eq!(fresh_entry(&r, "example.com", later), Some(confirmed));
    assert_eq!(
        drain(&mut r),
        vec![reply(2, "example.com", Some(p), Reason::Confirmed)]
    );
}

/// A stored entry dated beyond MAX_SKEW ahead is read as now and written
/// back so: from then on it ages from this read (docs/ARCHITECTURE.md
/// "Time"). When memory's entry wins over it, memory's replaces it.
#[test]
fn a_stored_entry_dated_ahead_is_written_back_as_read() {
    let mut r = persistent();
    let now = Instant::now();
    let ahead = entry("forged", W + 10 * DAY_MS, W + 10 * DAY_MS);
    let id = start_load(&mut r, 1, "example.com", now, W);
    r.handle_store_loaded(id, Ok(Some(ahead.clone())), now, W);
    let read = entry("forged", W, W);
    assert_eq!(
        drain(&mut r),
        vec![
            persist("example.com", read.clone()),
            reply(1, "example.com", Some(read.policy), Reason::Cached),
        ]
    );
    // Memory holds an older, believed entry: it goes on, and is written.
    let later = W + 120 * S;
    let id = start_load(&mut r, 2, "example.com", now, later);
    r.handle_store_loaded(id, Ok(Some(ahead)), now, later);
    assert_eq!(
        drain(&mut r),
        vec![
            persist("example.com", entry("forged", W, W)),
            query_txt(id, "example.com"),
        ]
    );
    // A stored time within the skew is believed: nothing to write back.
    let skewed = entry("b", later + 300 * S, later + 300 * S);
    let id = start_load(&mut r, 3, "example.net", now, later);
    r.handle_store_loaded(id, Ok(Some(skewed.clone())), now, later);
    assert_eq!(
        drain(&mut r),
        vec![reply(3, "example.net", Some(skewed.policy), Reason::Cached)]
    );
}

#[test]
fn refresh_checks_id_within_grace() {
    for persistent in [false, true] {
        let mut r = resolver_with(settings(persistent), 100);
        let now = Instant::now();
        let fresh = entry("a", W - 10 * S, W - 10 * S);
        r.index().store(d("example.com"), fresh.clone());
        r.handle_refresh(d("example.com"), T, now, W);
        let id = match drain(&mut r).as_slice() {
            [Action::QueryTxt { lookup, .. }] if !persistent => *lookup,
            [Action::LoadStore { lookup, .. }] if persistent => *lookup,
            other => panic!("{other:?}"),
        };
        // A second refresh while running does nothing.
        r.handle_refresh(d("example.com"), T, now, W);
        assert_eq!(drain(&mut r), vec![]);
        if persistent {
            // A fresh stored entry does not end a refresh.
            r.handle_store_loaded(id, Ok(Some(fresh.clone())), now, W);
            assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
        }
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        let mut confirmed = fresh;
        confirmed.checked_at_ms = W;
        // No Reply: the refresh has no request.
        let expected = if persistent {
            vec![persist("example.com", confirmed.clone())]
        } else {
            vec![]
        };
        assert_eq!(drain(&mut r), expected);
        assert_eq!(known(&r, "example.com", W), Held::Entry(confirmed));
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.poll_timeout(), None);
    }
}

#[test]
fn refresh_does_not_start_beside_a_running_lookup() {
    let mut r = resolver();
    let now = Instant::now();
    let id = start(&mut r, 1, "example.com", now, W);
    r.handle_refresh(d("example.com"), T, now, W);
    assert_eq!(drain(&mut r), vec![]);
    assert_eq!(r.in_flight(), 1);
    r.handle_txt(id, TxtResult::NoPolicy(nx()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(1, "example.com", None, Reason::NoPolicy(nx()))]
    );
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn request_joins_running_refresh() {
    let mut r = resolver();
    let now = Instant::now();
    r.handle_refresh(d("example.com"), T, now, W);
    let id = match drain(&mut r).as_slice() {
        [Action::QueryTxt { lookup, .. }] => *lookup,
        other => panic!("{other:?}"),
    };
    r.handle_request(RequestId(7), d("example.com"), T, now, W);
    assert_eq!(drain(&mut r), vec![]);
    r.handle_txt(id, TxtResult::Error(dns_timeout()), now, W);
    assert_eq!(
        drain(&mut r),
        vec![reply(
            7,
            "example.com",
            None,
            Reason::Fallback(dns_timeout())
        )]
    );

    // Even with a fresh policy in the index, a request joins the refresh:
    // its reply tells the refresher when the TXT id was checked.
    for persistent in [false, true] {
        let mut r = resolver_with(settings(persistent), 100);
        let fresh = entry("a", W - 10 * S, W - 10 * S);
        r.index().store(d("example.com"), fresh.clone());
        r.handle_refresh(d("example.com"), T, now, W);
        r.handle_request(RequestId(8), d("example.com"), T, now, W);
        let id = match drain(&mut r).as_slice() {
            [Action::QueryTxt { lookup, .. }] if !persistent => *lookup,
            [Action::LoadStore { lookup, .. }] if persistent => *lookup,
            other => panic!("{other:?}"),
        };
        if persistent {
            r.handle_store_loaded(id, Ok(Some(fresh.clone())), now, W);
            assert_eq!(drain(&mut r), vec![query_txt(id, "example.com")]);
        }
        r.handle_txt(id, TxtResult::Id("a".into()), now, W);
        let actions = drain(&mut r);
        assert_eq!(
            actions.last(),
            Some(&reply(
                8,
                "example.com",
                Some(fresh.policy.clone()),
                Reason::Confirmed
            ))
        );
        assert_eq!(actions.len(), if persistent { 2 } else { 1 });
    }
}

#[test]
fn memory_maps_stay_bounded() {
    let bounded = ResolverSettings {
        memory_limit: 3,
        ..settings(false)
    };
    let mut r = resolver_with(bounded, 3);
    let now = Instant::now();
    // Failed fetches: at most memory_limit remembered.
    for i in 0..10u64 {
        let dom = format!("d{i}.example");
        let wall = W + i * S;
        let id = start(&mut r, i, &dom, now, wall);
        r.handle_txt(id, TxtResult::Id("a".into()), now, wall);
        drain(&mut r);
        r.handle_fetch(id, FetchResult::Error(connect("refused")), now, wall);
        drain(&mut r);
        assert!(r.failures.map.len() <= 3);
    }
    // The newest are kept, the oldest dropped.
    let id = start(&mut r, 100, "d9.example", now, W + 10 * S);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W + 10 * S);
    assert_eq!(
        drain(&mut r),
        vec![reply(100, "d9.example", None, Reason::FailureBackoff)]
    );
    let id = start(&mut r, 101, "d0.example", now, W + 10 * S);
    r.handle_txt(id, TxtResult::Id("a".into()), now, W + 10 * S);
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::FetchPolicy { .. }]
    ));
    r.handle_fetch(id, FetchResult::Error(connect("refused")), now, W + 10 * S);
    drain(&mut r);
    assert!(r.failures.map.len() <= 3);

    // "No policy" notes: the index holds at most its capacity.
    for i in 0..10u64 {
        let dom = format!("n{i}.example");
        let wall = W + 20 * S + i;
        let id = start(&mut r, 200 + i, &dom, now, wall);
        r.handle_txt(id, TxtResult::NoPolicy(nx()), now, wall);
        drain(&mut r);
        assert!(r.index().len() <= 3);
    }
    let wall = W + 30 * S;
    r.handle_request(RequestId(300), d("n9.example"), T, now, wall);
    assert_eq!(
        drain(&mut r),
        vec![reply(300, "n9.example", None, Reason::NoPolicyRemembered)]
    );
    start(&mut r, 301, "n0.example", now, wall);

    // Lapsed items go first.
    let mut m = Remembered::new(10, 2);
    m.note("old", 0);
    m.note("new", 5);
    m.note("newer", 11);
    assert!(!m.is_active(&"old", 11));
    assert!(m.is_active(&"new", 11) && m.is_active(&"newer", 11));
    assert_eq!(m.map.len(), 2);
}

/// A day and more of requests every hour (RFC 8461 §5.1): the TXT id is
/// re-checked each hour, the policy is re-fetched only once it has expired,
/// never extended by confirmations; within `cache_grace` the index answers.
/// With a store (a map here) behind the index, the daemon also restarts
/// once with an empty index and goes on from the store.
fn hours_of_cache_life(persistent: bool) {
    let settings = settings(persistent);
    let mut r = resolver_with(settings, 100);
    let mut store: HashMap<Domain, CacheEntry> = HashMap::new();
    let t0 = Instant::now();
    let mut fetches = Vec::new();
    for hour in 0..50u64 {
        let wall = W + hour * 3600 * S;
        let now = t0 + Duration::from_secs(hour * 3600);
        if persistent && hour == 30 {
            r = resolver_with(settings, 100);
        }
        r.handle_request(RequestId(hour), d("example.com"), T, now, wall);
        let mut replies = 0;
        while let Some(action) = r.poll_action() {
            match action {
                Action::LoadStore { lookup, domain } => {
                    assert!(persistent);
                    let stored = Ok(store.get(&domain).cloned());
                    r.handle_store_loaded(lookup, stored, now, wall);
                }
                Action::QueryTxt { lookup, .. } => {
                    r.handle_txt(lookup, TxtResult::Id("a".into()), now, wall)
                }
                Action::FetchPolicy { lookup, .. } => {
                    fetches.push(hour);
                    let p = pol(DAY, "mail.example.com");
                    r.handle_fetch(lookup, FetchResult::Policy(p), now, wall)
                }
                Action::Persist { domain, entry } => {
                    assert!(persistent);
                    assert_eq!(
                        r.index().known(domain.as_str(), wall),
                        Held::Entry(entry.clone())
                    );
                    store.insert(domain, entry);
                }
                Action::Reply { answer, .. } => {
                    assert!(answer.policy.is_some());
                    replies += 1;
                }
                Action::Cancel { .. } => panic!("no deadline should pass"),
                Action::LookupDane { .. } => panic!("no DANE without a dane zone"),
            }
        }
        assert_eq!(replies, 1);
        let Held::Entry(e) = known(&r, "example.com", wall) else {
            panic!("nothing in the index at hour {hour}")
        };
        assert_eq!(e.checked_at_ms, wall);
        assert!(!e.is_expired(wall));
        if persistent {
            assert_eq!(store.get(&d("example.com")), Some(&e));
        }
        // Within cache_grace the index answers with no lookup.
        let soon = wall + millis(GRACE) - 1;
        let now = now + GRACE - ms(1);
        r.handle_request(RequestId(1000 + hour), d("example.com"), T, now, soon);
        assert_eq!(
            drain(&mut r),
            vec![reply(
                1000 + hour,
                "example.com",
                Some(e.policy),
                Reason::Cached
            )]
        );
    }
    assert_eq!(fetches, vec![0, 24, 48]);
}

#[test]
fn hours_of_cache_life_in_memory() {
    hours_of_cache_life(false);
}

#[test]
fn hours_of_cache_life_with_store() {
    hours_of_cache_life(true);
}

#[derive(Debug, Clone)]
enum Op {
    Request {
        dom: u8,
        timeout_ms: u64,
    },
    Refresh {
        dom: u8,
        timeout_ms: u64,
    },
    /// A request from a `dane: true` zone.
    DaneRequest {
        dom: u8,
        timeout_ms: u64,
    },
    Advance {
        ms: u64,
        extra_wall_s: u64,
    },
    Deliver {
        pick: usize,
        variant: u8,
        age_s: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u64..3000).prop_map(|(dom, timeout_ms)| Op::Request { dom, timeout_ms }),
        1 => (0u8..3, 0u64..3000).prop_map(|(dom, timeout_ms)| Op::Refresh { dom, timeout_ms }),
        2 => (0u8..3, 0u64..3000).prop_map(|(dom, timeout_ms)| Op::DaneRequest { dom, timeout_ms }),
        2 => (0u64..2000, prop_oneof![Just(0u64), 0u64..400, Just(DAY)])
            .prop_map(|(ms, extra_wall_s)| Op::Advance { ms, extra_wall_s }),
        4 => (any::<usize>(), any::<u8>(), 0u64..2000)
            .prop_map(|(pick, variant, age_s)| Op::Deliver { pick, variant, age_s }),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Io {
    Load,
    Txt,
    Fetch,
    Dane,
}

/// A DANE result for the property tests, by `variant`.
fn dane_result(variant: u8) -> crate::dane::DaneResult {
    use crate::dane::{DaneFailure, DaneResult, NoDane, Verdict};
    let ttl = Duration::from_secs(u64::from(variant % 5));
    match variant % 6 {
        0 => DaneResult::decided(Verdict::DaneOnly, ttl.max(crate::dane::MIN_TTL)),
        1 => DaneResult::decided(Verdict::Dane, crate::dane::MIN_TTL),
        2 => DaneResult::decided(Verdict::NullMx, crate::dane::MIN_TTL),
        3 => DaneResult::failed(DaneFailure::Dns {
            name: "x".into(),
            qtype: crate::dns::QueryType::Tlsa,
            cause: DnsFailure::Server(DnsError::ServFail),
        }),
        4 => DaneResult::failed(DaneFailure::Local("EMFILE".into())),
        _ => DaneResult::decided(Verdict::NoDane(NoDane::MxInsecure), crate::dane::MIN_TTL),
    }
}

/// A test driver: the resolver, the requests not answered yet (with their
/// deadlines), the IO not delivered yet, and a store behind the index.
struct Harness {
    r: Resolver,
    persistent: bool,
    open: HashMap<RequestId, Instant>,
    /// Requests of a `dane: true` zone.
    dane: std::collections::HashSet<RequestId>,
    pending: Vec<(Io, LookupId, Domain)>,
    store: HashMap<Domain, CacheEntry>,
}

impl Harness {
    /// Carry out every action at `now`/`wall`, checking each reply is the
    /// first for its request, timely, and (for answers that come from
    /// what was learnt) already visible in the index.
    fn collect(&mut self, now: Instant, wall: u64) -> Result<(), TestCaseError> {
        while let Some(action) = self.r.poll_action() {
            match action {
                Action::LoadStore { lookup, domain } => {
                    prop_assert!(self.persistent, "LoadStore without a store");
                    self.pending.push((Io::Load, lookup, domain));
                }
                Action::QueryTxt { lookup, domain } => self.pending.push((Io::Txt, lookup, domain)),
                Action::LookupDane { lookup, domain } => {
                    self.pending.push((Io::Dane, lookup, domain))
                }
                Action::FetchPolicy { lookup, domain, .. } => {
                    self.pending.push((Io::Fetch, lookup, domain))
                }
                Action::Persist { domain, entry } => {
                    prop_assert!(self.persistent, "Persist without a store");
                    // Written through behind the index.
                    let held = self.r.index().known(domain.as_str(), wall);
                    prop_assert_eq!(held, Held::Entry(entry.clone()));
                    let newer = self
                        .store
                        .get(&domain)
                        .is_some_and(|s| s.is_newer_than(&entry));
                    if !newer {
                        self.store.insert(domain, entry);
                    }
                }
                // Late results are still delivered: they must be ignored.
                Action::Cancel { .. } => {}
                Action::Reply {
                    request,
                    domain,
                    answer,
                } => {
                    let deadline = self.open.remove(&request);
                    prop_assert!(deadline.is_some(), "unknown or repeated reply {request:?}");
                    prop_assert!(deadline.is_some_and(|d| now <= d), "reply after deadline");
                    let index = self.r.index();
                    let is_dane = self.dane.remove(&request);
                    prop_assert_eq!(answer.dane.is_some(), is_dane, "DANE part of {:?}", request);
                    if let Some(dane) = &answer.dane {
                        let verdict = &dane.result.verdict;
                        let remembered = match verdict {
                            crate::dane::Verdict::Temp(f) => !f.is_local(),
                            _ => true,
                        };
                        // A result learnt from a lookup that decides the
                        // reply is in the index first (a timeout of the
                        // request alone is not a result; "no DANE" may wait
                        // for MTA-STS past its TTL).
                        let own_timeout = matches!(
                            verdict,
                            crate::dane::Verdict::Temp(crate::dane::DaneFailure::Timeout)
                        );
                        if !dane.cached && remembered && !own_timeout && verdict.decides() {
                            let held = index.dane_fresh(domain.as_str(), wall);
                            prop_assert!(held.is_some(), "{} not in the index", dane);
                        }
                        // The MTA-STS part may have come long before this
                        // reply (waiting for DANE), or not at all: what
                        // the index holds now says nothing about it.
                        continue;
                    }
                    match (&answer.reason, &answer.policy) {
                        (Reason::Cached | Reason::Confirmed | Reason::Fetched, Some(p)) => {
                            let fresh = match index.fresh(domain.as_str(), wall) {
                                Fresh::Policy(c) => Some(c.entry().policy.clone()),
                                _ => None,
                            };
                            prop_assert_eq!(fresh.as_ref(), Some(p), "{} not in the index", answer);
                        }
                        (Reason::Cached | Reason::Confirmed | Reason::Fetched, None) => {
                            prop_assert!(false, "{answer} without a policy")
                        }
                        (Reason::NoPolicyRemembered | Reason::NoPolicy(_), None) => {
                            prop_assert!(
                                matches!(index.fresh(domain.as_str(), wall), Fresh::NoPolicy),
                                "{} not in the index",
                                answer
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(t) = self.r.poll_timeout() {
            prop_assert!(t >= now, "a passed deadline was not handled");
        }
        Ok(())
    }
}

/// Random requests, refreshes, clock steps and IO results in any order.
fn run_ops(persistent: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    run_ops_with(settings(persistent), ops)
}

fn run_ops_with(settings: ResolverSettings, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness {
        r: resolver_with(settings, 100),
        persistent: settings.persistent,
        open: HashMap::new(),
        dane: Default::default(),
        pending: Vec::new(),
        store: HashMap::new(),
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut wall = W;
    let mut next_req = 0u64;
    let ids = ["a", "b"];
    let domains = ["a.example", "b.example", "c.example"];

    for op in ops {
        match op {
            Op::Request { dom, timeout_ms } => {
                let req = RequestId(next_req);
                next_req += 1;
                let timeout = ms(timeout_ms);
                h.open.insert(req, now + timeout);
                h.r.handle_request(req, d(domains[usize::from(dom)]), timeout, now, wall);
            }
            Op::Refresh { dom, timeout_ms } => {
                let timeout = ms(timeout_ms);
                h.r.handle_refresh(d(domains[usize::from(dom)]), timeout, now, wall);
            }
            Op::DaneRequest { dom, timeout_ms } => {
                let req = RequestId(next_req);
                next_req += 1;
                let timeout = ms(timeout_ms);
                h.open.insert(req, now + timeout);
                h.dane.insert(req);
                h.r.handle_dane_request(req, d(domains[usize::from(dom)]), timeout, now, wall);
            }
            Op::Advance {
                ms: step,
                extra_wall_s,
            } => {
                // A driver that wakes at every poll_timeout on the way.
                let target = now + ms(step);
                while let Some(t) = h.r.poll_timeout().filter(|t| *t <= target) {
                    now = t;
                    h.r.handle_timeout(now);
                    h.collect(now, wall)?;
                }
                now = target;
                wall += step + extra_wall_s * S;
                h.r.handle_timeout(now);
            }
            Op::Deliver {
                pick,
                variant,
                age_s,
            } => {
                if h.pending.is_empty() {
                    continue;
                }
                let (io, lookup, domain) = h.pending.swap_remove(pick % h.pending.len());
                let id = ids[usize::from(variant / 8 % 2)].to_owned();
                match io {
                    Io::Load => {
                        let stored = match variant % 4 {
                            0 => Ok(None),
                            1 => Ok(h.store.get(&domain).cloned()),
                            2 => Ok(Some(CacheEntry {
                                policy_id: id,
                                policy: pol(1000, "mx.example"),
                                fetched_at_ms: wall.saturating_sub(age_s * S),
                                checked_at_ms: wall.saturating_sub(age_s * S / 2),
                            })),
                            _ => Err(StoreError::Backend("down".into())),
                        };
                        h.r.handle_store_loaded(lookup, stored, now, wall);
                    }
                    Io::Txt => {
                        let res = match variant % 3 {
                            0 => TxtResult::Id(id),
                            1 => TxtResult::NoPolicy(nx()),
                            _ => TxtResult::Error(servfail()),
                        };
                        h.r.handle_txt(lookup, res, now, wall);
                    }
                    Io::Fetch => {
                        let res = if variant % 2 == 0 {
                            FetchResult::Policy(pol(1000, "mx.example"))
                        } else {
                            FetchResult::Error(http404())
                        };
                        h.r.handle_fetch(lookup, res, now, wall);
                    }
                    Io::Dane => h.r.handle_dane(lookup, dane_result(variant), now, wall),
                }
            }
        }
        h.collect(now, wall)?;
        // A zero timeout is due at once: the driver's timer fires now.
        if h.r.poll_timeout().is_some_and(|t| t <= now) {
            h.r.handle_timeout(now);
            h.collect(now, wall)?;
        }
    }
    // Past every deadline, waking at each one: nothing open, nothing in flight.
    while let Some(t) = h.r.poll_timeout() {
        prop_assert!(t <= t0 + Duration::from_secs(3600), "runaway deadline");
        now = t;
        h.r.handle_timeout(now);
        h.collect(now, wall)?;
    }
    prop_assert!(h.open.is_empty(), "requests never answered: {:?}", h.open);
    prop_assert_eq!(h.r.in_flight(), 0);
    prop_assert_eq!(h.r.poll_timeout(), None);
    prop_assert!(h.r.lookups.is_idle());
    prop_assert!(h.r.combined.is_empty());
    prop_assert!(h.dane.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn every_request_gets_exactly_one_timely_reply(ops in proptest::collection::vec(op(), 0..80)) {
        run_ops(false, ops.clone())?;
        // One lookup at a time: the others wait in the queue, and some
        // reach their deadline there.
        run_ops_with(ResolverSettings { max_lookups: 1, ..settings(true) }, ops.clone())?;
        run_ops(true, ops)?;
    }

    /// N requests for one uncached domain arrive before the TXT answer,
    /// between it and the fetch result, and after it: one TXT query and one
    /// fetch in all, every request one reply with the policy, the later
    /// ones straight from the index.
    #[test]
    fn arrivals_around_one_lookup_share_it(
        persistent in any::<bool>(),
        mut offsets in proptest::collection::vec(0u64..400, 1..40),
        (load_delay, txt_delay, fetch_delay) in (0u64..100, 0u64..100, 0u64..100),
        io_first in any::<bool>(),
    ) {
        offsets.sort_unstable();
        let mut r = resolver_with(settings(persistent), 100);
        let t0 = Instant::now();
        let policy = pol(DAY, "mx.example");
        let mut io: Option<(u64, Io, LookupId)> = None;
        let mut next = 0usize;
        let (mut loads, mut txts, mut fetches) = (0, 0, 0);
        let mut fetched = false;
        let mut after_fetch = Vec::new();
        let mut answers: HashMap<RequestId, Answer> = HashMap::new();
        loop {
            let take_io = match (offsets.get(next), io.as_ref().map(|x| x.0)) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(&req_at), Some(io_at)) => io_at < req_at || (io_at == req_at && io_first),
            };
            let clock = if take_io {
                let (at, kind, lookup) = io.take().unwrap_or_else(|| unreachable!());
                let (now, wall) = (t0 + ms(at), W + at);
                match kind {
                    Io::Load => r.handle_store_loaded(lookup, Ok(None), now, wall),
                    Io::Txt => r.handle_txt(lookup, TxtResult::Id("a".into()), now, wall),
                    Io::Fetch => {
                        r.handle_fetch(lookup, FetchResult::Policy(policy.clone()), now, wall);
                        fetched = true;
                    }
                    Io::Dane => prop_assert!(false, "no DANE lookup"),
                }
                at
            } else {
                let at = offsets[next];
                after_fetch.push(fetched);
                r.handle_request(RequestId(next as u64), d("example.com"), T, t0 + ms(at), W + at);
                next += 1;
                at
            };
            while let Some(action) = r.poll_action() {
                match action {
                    Action::LoadStore { lookup, .. } => {
                        loads += 1;
                        prop_assert!(io.is_none());
                        io = Some((clock + load_delay, Io::Load, lookup));
                    }
                    Action::QueryTxt { lookup, .. } => {
                        txts += 1;
                        prop_assert!(io.is_none());
                        io = Some((clock + txt_delay, Io::Txt, lookup));
                    }
                    Action::FetchPolicy { lookup, .. } => {
                        fetches += 1;
                        prop_assert!(io.is_none());
                        io = Some((clock + fetch_delay, Io::Fetch, lookup));
                    }
                    Action::Persist { domain, entry } => {
                        prop_assert!(persistent);
                        prop_assert_eq!(known(&r, domain.as_str(), W + clock), Held::Entry(entry));
                    }
                    Action::Reply { request, answer, .. } => {
                        // Visible before the reply.
                        let fresh = fresh_entry(&r, "example.com", W + clock).map(|e| e.policy);
                        prop_assert_eq!(fresh.as_ref(), Some(&policy));
                        prop_assert!(answers.insert(request, answer).is_none(), "second reply");
                    }
                    Action::Cancel { .. } => prop_assert!(false, "no deadline passes"),
                    Action::LookupDane { .. } => prop_assert!(false, "no DANE lookup"),
                }
            }
        }
        prop_assert_eq!((loads, txts, fetches), (usize::from(persistent), 1, 1));
        prop_assert_eq!(answers.len(), offsets.len());
        for (i, late) in after_fetch.iter().enumerate() {
            let answer = &answers[&RequestId(i as u64)];
            prop_assert_eq!(answer.policy.as_ref(), Some(&policy));
            let reason = if *late { Reason::Cached } else { Reason::Fetched };
            prop_assert_eq!(&answer.reason, &reason);
        }
        prop_assert_eq!(r.in_flight(), 0);
        prop_assert_eq!(r.poll_timeout(), None);
    }
}

/// Beyond `max_lookups` lookups doing IO, new ones wait in order and start
/// as slots free; one that reaches its deadline while waiting answers from
/// the cache or fails as a local overload (`TEMP` for Postfix), with no IO
/// to cancel.
#[test]
fn lookups_beyond_the_bound_wait_in_order() {
    let bounded = ResolverSettings {
        max_lookups: 2,
        ..settings(false)
    };
    let mut r = resolver_with(bounded, 100);
    let now = Instant::now();
    for (i, dom) in ["a.example", "b.example", "c.example", "d.example"]
        .iter()
        .enumerate()
    {
        r.handle_request(RequestId(i as u64), d(dom), T, now, W);
    }
    let first = drain(&mut r);
    let queried: Vec<Domain> = first
        .iter()
        .filter_map(|a| match a {
            Action::QueryTxt { domain, .. } => Some(domain.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(queried, vec![d("a.example"), d("b.example")]);
    assert_eq!(r.queued(), 2);
    // a finishes: c starts, d still waits.
    let Some(Action::QueryTxt { lookup: a, .. }) = first.first().cloned() else {
        panic!("{first:?}")
    };
    r.handle_txt(a, TxtResult::NoPolicy(nx()), now, W);
    let next = drain(&mut r);
    assert!(next.contains(&reply(0, "a.example", None, Reason::NoPolicy(nx()))));
    assert!(next
        .iter()
        .any(|a| matches!(a, Action::QueryTxt { domain, .. } if *domain == d("c.example"))));
    assert_eq!(r.queued(), 1);
    // d reaches its deadline in the queue: a local failure, no Cancel.
    r.handle_timeout(now + T);
    let late = drain(&mut r);
    assert!(late.contains(&reply(
        3,
        "d.example",
        None,
        Reason::Fallback(Failure::Local("too many lookups in flight".into()))
    )));
    assert_eq!(r.queued(), 0);
}
