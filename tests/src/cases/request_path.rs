//! The request path (docs/ARCHITECTURE.md "The path of one request"): what a lookup learns
//! is in memory before any request is answered, so a burst of requests for one domain
//! makes one TXT query and one fetch whatever their arrival schedule, on every cache
//! backend; and `cache_grace` holds to the millisecond (RFC 8461 §5.1).

use std::time::{Duration, Instant};

use super::persist::{redis_cache, sqlite_cache};
use super::{expect, pause, publish_enforce, secure, start, sts_txt, Bins};
use crate::redis::RedisServer;
use crate::{policy_body, Behaviour, World};

/// 40 requests, each on its own connection, arriving every 25 ms (over about 1 s) for a
/// domain whose policy host answers after 500 ms: the early ones join the running lookup,
/// the late ones find its result in memory.
fn staggered_burst(bins: &Bins, world: &World, cache: &str) {
    world.add_policy_domain(
        "burst.example",
        &sts_txt("1"),
        Behaviour::Delayed(
            Duration::from_millis(500),
            Box::new(Behaviour::policy(&policy_body(
                "enforce",
                86400,
                &["mx.burst.example"],
            ))),
        ),
    );
    let d = start(bins, world, cache);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..40u64)
        .map(|i| {
            let mut client = d.client();
            std::thread::spawn(move || {
                let at = t0 + Duration::from_millis(25 * i);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                client.query("postfix", "burst.example")
            })
        })
        .collect();
    for t in threads {
        let reply = t.join().unwrap_or_default();
        assert_eq!(reply, secure("mx.burst.example"), "log:\n{}", d.log());
    }
    assert_eq!(
        world.dns.queries("_mta-sts.burst.example"),
        1,
        "TXT queries; log:\n{}",
        d.log()
    );
    assert_eq!(
        world.requests("burst.example"),
        1,
        "fetches; log:\n{}",
        d.log()
    );
}

/// [`staggered_burst`] on the internal cache.
pub fn staggered_burst_internal(bins: &Bins) {
    staggered_burst(bins, &World::new(), "");
}

/// [`staggered_burst`] on SQLite.
pub fn staggered_burst_sqlite(bins: &Bins) {
    let world = World::new();
    let file = world.dir().join("cache.db");
    staggered_burst(bins, &world, &sqlite_cache(&file));
}

/// [`staggered_burst`] on Redis.
pub fn staggered_burst_redis(bins: &Bins) {
    let redis = RedisServer::start();
    staggered_burst(bins, &World::new(), &redis_cache(&redis));
}

/// `cache_grace: 2`: a policy checked at t causes no DNS query until t + 2 s, and one
/// right after. The policy is checked before its first answer arrives, so "1.2 s after the
/// answer" is within the grace and "2.4 s after" is past it, whatever the lookup took.
pub fn grace_ends_to_the_millisecond(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "grace.example", "1", &["mx.grace.example"]);
    let d = start(bins, &world, "cache_grace: 2\n");
    expect(&d, "postfix", "grace.example", &secure("mx.grace.example"));
    let answered = Instant::now();
    let txt = world.dns.queries("_mta-sts.grace.example");
    let until = |ms: u64| {
        let at = answered + Duration::from_millis(ms);
        pause(at.saturating_duration_since(Instant::now()).as_millis() as u64);
    };
    until(1200);
    expect(&d, "postfix", "grace.example", &secure("mx.grace.example"));
    assert_eq!(
        world.dns.queries("_mta-sts.grace.example"),
        txt,
        "a TXT query within cache_grace; log:\n{}",
        d.log()
    );
    until(2400);
    expect(&d, "postfix", "grace.example", &secure("mx.grace.example"));
    assert_eq!(
        world.dns.queries("_mta-sts.grace.example"),
        txt + 1,
        "no TXT query right after cache_grace; log:\n{}",
        d.log()
    );
    // Unchanged id: no second fetch.
    assert_eq!(world.requests("grace.example"), 1);
}

/// A fractional `cache_grace` (0.5 s) is accepted and honoured: a request 1.5 s after the
/// first answer re-checks the TXT id (with whole seconds it would have been rounded).
pub fn fractional_grace(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "half.example", "1", &["mx.half.example"]);
    let d = start(bins, &world, "cache_grace: 0.5\n");
    expect(&d, "postfix", "half.example", &secure("mx.half.example"));
    let txt = world.dns.queries("_mta-sts.half.example");
    pause(1500);
    expect(&d, "postfix", "half.example", &secure("mx.half.example"));
    assert_eq!(world.dns.queries("_mta-sts.half.example"), txt + 1);
}
