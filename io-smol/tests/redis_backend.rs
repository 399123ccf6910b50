//! The `redis` cache backend against a real `redis-server` on a loopback
//! port on the smol runtime (docs/ARCHITECTURE.md "Cache"): the real Lua
//! compare-and-set in the Python original's layout, key expiry, and
//! surviving a Redis restart without re-creating the backend.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mta_sts_core::cache::redis::RedisBackend;
use mta_sts_core::cache::{CacheEntry, Store, StoreError};
use mta_sts_core::config::{RedisOptions, RedisTarget, SecretUrl};
use mta_sts_core::domain::Domain;
use mta_sts_core::policy::{Mode, Policy, MAX_AGE_CAP};
use mta_sts_host::{open_redis, RedisConnection};
use mta_sts_smol::SmolRuntime;
use mta_sts_tests::redis::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(500);

/// Unix milliseconds; `S` is a second.
fn now() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    u64::try_from(ms).unwrap()
}

const S: u64 = 1000;

fn options(url: String) -> RedisOptions {
    RedisOptions {
        target: RedisTarget::Url(SecretUrl::new(url)),
        prefix: "mta-sts:".into(),
        socket_timeout: TIMEOUT,
        socket_connect_timeout: TIMEOUT,
        max_connections: Some(8),
        username: None,
        password: None,
        db: None,
    }
}

fn backend(server: &RedisServer) -> RedisBackend<RedisConnection<SmolRuntime>> {
    smol::block_on(open_redis(SmolRuntime, &options(server.url()))).unwrap()
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
    CacheEntry {
        policy_id: id.into(),
        policy: Policy {
            mode: Mode::Testing,
            max_age: 86_400,
            mx: vec!["mx.example.com".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: testing".into(),
                "mx: mx.example.com".into(),
                "max_age: 86400".into(),
            ]
            .into(),
        },
        fetched_at_ms,
        checked_at_ms,
    }
}

/// The integer of a `:N` reply.
fn int_reply(reply: &str) -> i64 {
    reply.strip_prefix(':').unwrap().parse().unwrap()
}

#[test]
fn round_trip_with_expiry() {
    let server = RedisServer::start();
    let b = backend(&server);
    let t = now();
    let e = entry("id1", t, t);
    smol::block_on(async {
        assert_eq!(b.get(&d("example.com")).await.unwrap(), None);
        b.set(&d("example.com"), &e).await.unwrap();
        assert_eq!(b.get(&d("example.com")).await.unwrap(), Some(e));
    });
    let ttl = int_reply(&server.cmd(&["TTL", "mta-sts:example.com"]).unwrap());
    let cap = i64::try_from(MAX_AGE_CAP).unwrap();
    assert!(ttl > cap && ttl <= cap + 86_400, "TTL {ttl}");
}

#[test]
fn lua_keeps_the_newer_entry() {
    let server = RedisServer::start();
    let b = backend(&server);
    let t = now();
    let dom = d("example.com");
    smol::block_on(async {
        let newer = entry("new", t - 10 * S, t - 5 * S);
        b.set(&dom, &newer).await.unwrap();
        b.set(&dom, &entry("old", t - 20 * S, t)).await.unwrap();
        b.set(&dom, &entry("old", t - 10 * S, t - 6 * S))
            .await
            .unwrap();
        assert_eq!(b.get(&dom).await.unwrap(), Some(newer));
        let checked = entry("new", t - 10 * S, t);
        b.set(&dom, &checked).await.unwrap();
        assert_eq!(b.get(&dom).await.unwrap(), Some(checked));
    });
}

#[test]
fn lua_reads_python_records_and_replaces_earlier_strings() {
    let server = RedisServer::start();
    let b = backend(&server);
    let t = now();
    let body = serde_json::json!({"mx": ["mx.example.com"], "version": "STSv1",
        "mode": "enforce", "max_age": 86400});
    server.put_python_record("mta-sts:py.example", "py", &body, (t / S) as f64);
    assert_eq!(
        server
            .cmd(&["SET", "mta-sts:junk.example", "junk"])
            .unwrap(),
        "+OK"
    );
    smol::block_on(async {
        // Python's record: fetched at its score, newer than this write.
        b.set(&d("py.example"), &entry("x", t - S, t + 5 * S))
            .await
            .unwrap();
        assert_eq!(
            b.get(&d("py.example")).await.unwrap().unwrap().policy_id,
            "py"
        );
        // A string (our earlier layout) is a miss, and the next write replaces it.
        assert_eq!(b.get(&d("junk.example")).await.unwrap(), None);
        let e = entry("fixed", t, t);
        b.set(&d("junk.example"), &e).await.unwrap();
        assert_eq!(b.get(&d("junk.example")).await.unwrap(), Some(e));
    });
}

#[test]
fn stale_and_proactive_ts() {
    let server = RedisServer::start();
    let b = backend(&server);
    let t = now();
    smol::block_on(async {
        b.set(&d("old.example"), &entry("a", t - 500 * S, t - 300 * S))
            .await
            .unwrap();
        b.set(&d("new.example"), &entry("a", t - 500 * S, t - 100 * S))
            .await
            .unwrap();
        assert_eq!(b.proactive_ts().await.unwrap(), None);
        b.set_proactive_ts(t).await.unwrap();
        assert_eq!(b.proactive_ts().await.unwrap(), Some(t));
        assert_eq!(
            b.checked_before(t - 200 * S, t).await.unwrap(),
            vec![d("old.example")]
        );
        let mut all = b.checked_before(t, t).await.unwrap();
        all.sort();
        assert_eq!(all, vec![d("new.example"), d("old.example")]);
    });
    // Float Unix seconds in the `_metadata` hash, as Python writes it.
    let raw = server
        .cmd(&["HGET", "mta-sts:_metadata", "proactive_fetch_ts"])
        .unwrap();
    let secs: f64 = raw.split("\r\n").nth(1).unwrap().parse().unwrap();
    assert_eq!((secs * 1000.0).round() as u64, t);
}

/// Retry `op` until it succeeds or `within` runs out.
async fn eventually<T, F, Fut>(within: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("still failing: {e}"),
            Err(_) => smol::Timer::after(Duration::from_millis(50)).await,
        };
    }
}

#[test]
fn survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let b = backend(&server);
    let t = now();
    let dom = d("example.com");
    let e = entry("a", t, t);
    smol::block_on(async {
        b.set(&dom, &e).await.unwrap();
        server.kill();
        for _ in 0..3 {
            let started = Instant::now();
            assert!(b.get(&dom).await.is_err());
            assert!(b.set(&dom, &e).await.is_err());
            assert!(b.checked_before(t, t).await.is_err());
            assert!(started.elapsed() < 3 * TIMEOUT + Duration::from_millis(300));
        }
        server.restart();
        // The restarted server is empty; the same backend reconnects.
        assert_eq!(
            eventually(Duration::from_secs(5), || b.get(&dom)).await,
            None
        );
        b.set(&dom, &e).await.unwrap();
        assert_eq!(b.get(&dom).await.unwrap(), Some(e));
    });
}

#[test]
fn starts_while_redis_is_down() {
    let mut server = RedisServer::start();
    server.kill();
    let started = Instant::now();
    let b = backend(&server);
    let dom = d("example.com");
    smol::block_on(async {
        assert!(b.get(&dom).await.is_err());
        assert!(started.elapsed() < 2 * TIMEOUT + Duration::from_millis(300));
        server.restart();
        let e = entry("a", now(), now());
        eventually(Duration::from_secs(5), || b.set(&dom, &e)).await;
        assert_eq!(b.get(&dom).await.unwrap(), Some(e));
    });
}

#[test]
fn a_slow_redis_times_out() {
    let server = RedisServer::start();
    let b = backend(&server);
    // Holds every client's commands for 1.5 s; ours give up after TIMEOUT.
    assert_eq!(server.cmd(&["CLIENT", "PAUSE", "1500"]).unwrap(), "+OK");
    let dom = d("example.com");
    let started = Instant::now();
    assert!(smol::block_on(b.get(&dom)).is_err());
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(300));
    let got = smol::block_on(eventually(Duration::from_secs(5), || b.get(&dom)));
    assert_eq!(got, None);
}

#[test]
fn an_invalid_url_is_an_error() {
    let err = smol::block_on(open_redis(
        SmolRuntime,
        &options("http://127.0.0.1:1/".into()),
    ))
    .err();
    assert!(matches!(err, Some(StoreError::Backend(_))), "{err:?}");
}
