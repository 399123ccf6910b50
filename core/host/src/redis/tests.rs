//! The Redis store's Lua scripts on a real `redis-server`: the same cases
//! as core's fake, plus records written the way the Python original writes
//! them, and a failover through Sentinel.

use std::time::Duration;

use futures::executor::block_on;
use mta_sts_core::cache::redis::RedisBackend;
use mta_sts_core::cache::{merge, CacheEntry, Store};
use mta_sts_core::config::{RedisOptions, RedisTarget, SecretUrl};
use mta_sts_core::domain::Domain;
use mta_sts_core::policy::{Mode, Policy, MAX_AGE_CAP};
use mta_sts_tests::{RedisServer, SentinelSet};
use proptest::prelude::*;

use super::{open_redis, RedisConnection};
use crate::test_rt::ThreadRt;

const NOW: u64 = 1_700_000_000_000;
const S: u64 = 1000;

fn options(target: RedisTarget, prefix: &str) -> RedisOptions {
    RedisOptions {
        target,
        prefix: prefix.to_owned(),
        socket_timeout: Duration::from_secs(1),
        socket_connect_timeout: Duration::from_secs(1),
        max_connections: None,
        username: None,
        password: None,
        db: None,
    }
}

fn open(redis: &RedisServer, prefix: &str) -> RedisBackend<RedisConnection<ThreadRt>> {
    block_on(open_redis(
        ThreadRt,
        &options(RedisTarget::Url(SecretUrl::new(redis.url())), prefix),
    ))
    .unwrap()
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
    CacheEntry {
        policy_id: id.into(),
        policy: Policy {
            mode: Mode::Enforce,
            max_age: 604_800,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mail.example.com".into(),
                "mx: *.example.net".into(),
                "max_age: 604800".into(),
            ]
            .into(),
        },
        fetched_at_ms,
        checked_at_ms,
    }
}

#[test]
fn python_layout_on_a_real_server() {
    let redis = RedisServer::start();
    let b = open(&redis, "");
    let dom = d("example.com");
    let e = entry("20240101", NOW - 100 * S, NOW - 5 * S + 250);
    block_on(b.set(&dom, &e)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e.clone()));
    let (json, score, ours) = redis.policy_record("example.com").unwrap();
    assert!(ours);
    assert_eq!(score, 1_699_999_995.25);
    assert_eq!(json[0], "20240101");
    assert_eq!(
        json[1],
        serde_json::json!({"version": "STSv1", "mode": "enforce",
            "mx": ["mail.example.com", "*.example.net"], "max_age": 604800})
    );
    let ttl = redis.ttl("example.com");
    assert!(
        ttl > MAX_AGE_CAP as i64 && ttl <= (MAX_AGE_CAP + 86_400) as i64,
        "{ttl}"
    );
    // Older writes lose, inside the script.
    block_on(b.set(&dom, &entry("old", NOW - 200 * S, NOW))).unwrap();
    block_on(b.set(&dom, &entry("old", NOW - 100 * S, NOW - 6 * S))).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e));
    // A newer fetch checked earlier replaces it, as the only member.
    let early = entry("new", NOW - 50 * S, NOW - 50 * S);
    block_on(b.set(&dom, &early)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(early));
    assert_eq!(redis.cmd(&["ZCARD", "example.com"]).unwrap(), ":1");
}

#[test]
fn python_records_metadata_and_stale_listing() {
    let redis = RedisServer::start();
    let b = open(&redis, "");
    let body = serde_json::json!({"mx": ["mx.py.example"], "version": "STSv1",
        "mode": "testing", "max_age": 86400, "x-ext": "kept"});
    redis.put_python_record("py.example", "pyid", &body, 1_700_000_000.5);
    let got = block_on(b.get(&d("py.example"))).unwrap().unwrap();
    assert_eq!(got.policy_id, "pyid");
    assert_eq!(
        (got.fetched_at_ms, got.checked_at_ms),
        (NOW + 500, NOW + 500)
    );
    assert_eq!(got.policy.mode, Mode::Testing);
    assert_eq!(got.policy.lines.last(), Some("x-ext: kept"));
    // Python's entry counts as fetched at its score.
    block_on(b.set(&d("py.example"), &entry("ours", NOW, NOW + 9 * S))).unwrap();
    assert_eq!(
        block_on(b.get(&d("py.example")))
            .unwrap()
            .unwrap()
            .policy_id,
        "pyid"
    );
    // Python's _metadata, then ours.
    redis
        .cmd(&["HSET", "_metadata", "proactive_fetch_ts", "1699999999.5"])
        .unwrap();
    assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(NOW - 500));
    block_on(b.set_proactive_ts(NOW + 1)).unwrap();
    assert_eq!(
        redis
            .cmd(&["HGET", "_metadata", "proactive_fetch_ts"])
            .unwrap(),
        "$14\r\n1700000000.001"
    );
    block_on(b.set(&d("new.example"), &entry("a", NOW, NOW + 100 * S))).unwrap();
    redis.cmd(&["SET", "other-app-key", "x"]).unwrap();
    assert_eq!(
        block_on(b.checked_before(NOW + 50 * S, NOW + 50 * S)).unwrap(),
        vec![d("py.example")]
    );
}

/// Records checked beyond now + MAX_SKEW, ours or the Python original's,
/// are on the proactive work list (the Lua script, docs/ARCHITECTURE.md
/// "Time"); a record within the skew is believed.
#[test]
fn lists_domains_checked_beyond_the_believed_limit() {
    let redis = RedisServer::start();
    let b = open(&redis, "");
    let now = crate::unix_ms();
    let ahead = now + 10 * 86_400 * S;
    block_on(b.set(&d("ours.example"), &entry("a", ahead, ahead))).unwrap();
    block_on(b.set(&d("skewed.example"), &entry("a", now, now + 300 * S))).unwrap();
    block_on(b.set(&d("recent.example"), &entry("a", now, now - S))).unwrap();
    let body = serde_json::json!({"mx": ["mx.py.example"], "version": "STSv1",
        "mode": "none", "max_age": 86400});
    redis.put_python_record("py.example", "pyid", &body, (ahead / S) as f64);
    let mut due = block_on(b.checked_before(now - 60 * S, now)).unwrap();
    due.sort();
    assert_eq!(due, vec![d("ours.example"), d("py.example")]);
}

/// A row dated ten days ahead, ours or the Python original's, is read as
/// now, and a real write replaces it inside the script; a time within
/// `MAX_SKEW` ahead still keeps an older write out.
#[test]
fn future_dated_records_are_read_as_now_and_replaced() {
    let redis = RedisServer::start();
    let b = open(&redis, "");
    let now = crate::unix_ms();
    let ahead = now + 10 * 86_400 * S;
    let read = |dom: &Domain, at: u64| merge(None, block_on(b.get(dom)), at).unwrap();
    let ours = d("ours.example");
    block_on(b.set(&ours, &entry("forged", ahead, ahead))).unwrap();
    let body = serde_json::json!({"mx": ["mx.py.example"], "version": "STSv1",
        "mode": "none", "max_age": 86400});
    redis.put_python_record("py.example", "pyid", &body, (ahead / S) as f64);
    let py = d("py.example");
    for dom in [&ours, &py] {
        let got = read(dom, now);
        assert_eq!((got.fetched_at_ms, got.checked_at_ms), (now, now), "{dom}");
        let real = entry("real", now - 2 * S, now - S);
        block_on(b.set(dom, &real)).unwrap();
        assert_eq!(block_on(b.get(dom)).unwrap(), Some(real), "{dom}");
    }
    // Within the skew the stored row is believed: older writes lose.
    let skewed = entry("skewed", now + 60 * S, now + 60 * S);
    block_on(b.set(&ours, &skewed)).unwrap();
    block_on(b.set(&ours, &entry("older", now, now))).unwrap();
    assert_eq!(block_on(b.get(&ours)).unwrap(), Some(skewed));
}

#[test]
fn earlier_string_records_and_other_types() {
    let redis = RedisServer::start();
    let b = open(&redis, "mta-sts:");
    redis
        .cmd(&["SET", "mta-sts:example.com", "{\"ts\": 1}"])
        .unwrap();
    assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), None);
    let e = entry("a", NOW, NOW);
    block_on(b.set(&d("example.com"), &e)).unwrap();
    assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), Some(e));
    redis
        .cmd(&["HSET", "mta-sts:example.org", "f", "v"])
        .unwrap();
    let err = block_on(b.set(&d("example.org"), &entry("a", NOW, NOW))).unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[test]
fn down_server_is_an_error_then_reconnects() {
    let mut redis = RedisServer::start();
    let b = open(&redis, "");
    redis.kill();
    assert!(block_on(b.get(&d("example.com"))).is_err());
    redis.restart();
    let e = entry("a", NOW, NOW);
    // The first command after a restart may still meet the old connection.
    let _ = block_on(b.set(&d("example.com"), &e));
    block_on(b.set(&d("example.com"), &e)).unwrap();
    assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), Some(e));
}

#[test]
fn sentinel_finds_the_master_and_follows_a_failover() {
    let set = SentinelSet::start();
    let target = RedisTarget::Sentinel {
        sentinels: set
            .sentinels
            .iter()
            .map(|s| ("127.0.0.1".to_owned(), s.port()))
            .collect(),
        master_name: set.name.clone(),
    };
    let b = block_on(open_redis(ThreadRt, &options(target, ""))).unwrap();
    let e = entry("a", NOW, NOW);
    block_on(b.set(&d("one.example"), &e)).unwrap();
    assert!(set.first.policy_record("one.example").is_some());
    set.failover();
    assert_eq!(set.master_port(), Some(set.second.port()));
    // The old master turns replica: writes go to the new one.
    let e2 = entry("b", NOW + S, NOW + S);
    let mut written = false;
    for _ in 0..20 {
        if block_on(b.set(&d("two.example"), &e2)).is_ok() {
            written = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(written, "no write after the failover");
    assert_eq!(
        set.second
            .policy_record("two.example")
            .map(|r| r.0[0].clone()),
        Some(serde_json::json!("b"))
    );
    assert_eq!(block_on(b.get(&d("one.example"))).unwrap(), Some(e));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Whatever order writes arrive in, the real script keeps the newest.
    #[test]
    fn real_script_keeps_the_newest(stamps in proptest::collection::vec((0u64..4, 0u64..4), 1..6)) {
        let redis = RedisServer::start();
        let b = open(&redis, "");
        let dom = d("example.com");
        let mut best: Option<CacheEntry> = None;
        for (i, (f, c)) in stamps.into_iter().enumerate() {
            let e = entry(&i.to_string(), NOW + f * S, NOW + c * S);
            block_on(b.set(&dom, &e)).unwrap();
            if !best.as_ref().is_some_and(|b| b.is_newer_than(&e)) {
                best = Some(e);
            }
        }
        prop_assert_eq!(block_on(b.get(&dom)).unwrap(), best);
    }
}
