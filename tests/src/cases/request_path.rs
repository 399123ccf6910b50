//! The request path (docs/ARCHITECTURE.md "The path of one request"): what a lookup learns
//! is in memory before any request is answered, so a burst of requests for one domain
//! makes one TXT query and one fetch whatever their arrival schedule, on every cache
//! backend. (That `cache_grace` holds to the millisecond is the sim's `grace` tests, and
//! `cache::after_cache_grace_smoke` here.)

use std::time::{Duration, Instant};

use super::persist::{redis_cache, sqlite_cache};
use super::{secure, start, sts_txt, Bins};
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
