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
