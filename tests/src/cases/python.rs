//! Interoperation with the Python original itself (`postfix-mta-sts-resolver` 1.5.1, README.md
//! "Caches shared with the Python original"): on one Redis, one Redis behind Sentinel and
//! one PostgreSQL database, a policy fetched by one daemon is answered by the other with the
//! policy host down and no DNS or HTTPS traffic, in both directions. The Python daemon
//! writes its cache before ours starts, as at a switch-over.

use super::persist::{expect_no_traffic, host_down, redis_cache, stop, wait_redis_id, LONG_GRACE};
use super::shared::{postgres_cache, sentinel_cache, wait_pg_id};
use super::{expect, publish_enforce, secure, start, Bins};
use crate::{PgServer, PythonDaemon, RedisServer, SentinelSet, World};

/// Our daemon fetches a policy into the shared cache (`stored` checks it got there) and
/// stops; with the policy host down, the Python daemon answers it from the cache.
fn ours_then_python(bins: &Bins, world: &World, cache: &str, stored: impl Fn() -> bool) {
    publish_enforce(world, "ours.example", "1", &["mx.ours.example"]);
    let mut ours = start(bins, world, &format!("{LONG_GRACE}{cache}"));
    expect(&ours, "postfix", "ours.example", &secure("mx.ours.example"));
    assert!(stored(), "not in the shared cache; log:\n{}", ours.log());
    stop(&mut ours);

    host_down(world, "ours.example");
    let python = PythonDaemon::start(world, &format!("{LONG_GRACE}{cache}"));
    expect_no_traffic(
        world,
        &python.daemon,
        "ours.example",
        &secure("mx.ours.example"),
    );
    assert_eq!(world.requests("ours.example"), 1, "log:\n{}", python.log());
}

/// The Python daemon fetches a policy (through the test world) into the shared cache
/// (`stored` checks it got there) and is stopped; with the policy host down, our daemon
/// answers it from the cache.
fn python_then_ours(bins: &Bins, world: &World, cache: &str, stored: impl Fn() -> bool) {
    publish_enforce(world, "py.example", "7", &["mx.py.example"]);
    let python = PythonDaemon::start(world, &format!("{LONG_GRACE}{cache}"));
    expect(
        &python.daemon,
        "postfix",
        "py.example",
        &secure("mx.py.example"),
    );
    assert_eq!(world.requests("py.example"), 1, "log:\n{}", python.log());
    assert!(stored(), "not in the shared cache; log:\n{}", python.log());
    drop(python);

    host_down(world, "py.example");
    let ours = start(bins, world, &format!("{LONG_GRACE}{cache}"));
    expect_no_traffic(world, &ours, "py.example", &secure("mx.py.example"));
    assert_eq!(world.requests("py.example"), 1, "log:\n{}", ours.log());
}

/// Ours, then the Python daemon, on one Redis.
pub fn redis_ours_then_python(bins: &Bins) {
    let world = World::new();
    let redis = RedisServer::start();
    ours_then_python(bins, &world, &redis_cache(&redis), || {
        wait_redis_id(&redis, "ours.example", "1")
    });
}

/// The Python daemon, then ours, on one Redis; the record is Python's own (random seed).
pub fn redis_python_then_ours(bins: &Bins) {
    let world = World::new();
    let redis = RedisServer::start();
    python_then_ours(bins, &world, &redis_cache(&redis), || {
        wait_redis_id(&redis, "py.example", "7")
            && redis
                .policy_record("py.example")
                .is_some_and(|(_, _, ours)| !ours)
    });
}

/// Ours, then the Python daemon, on Redis found through Sentinel.
pub fn sentinel_ours_then_python(bins: &Bins) {
    let world = World::new();
    let set = SentinelSet::start();
    ours_then_python(bins, &world, &sentinel_cache(&set), || {
        wait_redis_id(set.master(), "ours.example", "1")
    });
}

/// The Python daemon, then ours, on Redis found through Sentinel.
pub fn sentinel_python_then_ours(bins: &Bins) {
    let world = World::new();
    let set = SentinelSet::start();
    python_then_ours(bins, &world, &sentinel_cache(&set), || {
        wait_redis_id(set.master(), "py.example", "7")
    });
}

/// Ours, then the Python daemon, on one PostgreSQL database (ours creates the tables).
pub fn postgres_ours_then_python(bins: &Bins) {
    let world = World::new();
    let pg = PgServer::start();
    ours_then_python(bins, &world, &postgres_cache(&pg), || {
        wait_pg_id(&pg, "ours.example", "1")
    });
}

/// The Python daemon, then ours, on one PostgreSQL database (Python creates the tables;
/// ours adds its columns and reads Python's row).
pub fn postgres_python_then_ours(bins: &Bins) {
    let world = World::new();
    let pg = PgServer::start();
    python_then_ours(bins, &world, &postgres_cache(&pg), || {
        wait_pg_id(&pg, "py.example", "7")
    });
    assert_eq!(
        pg.psql("select ts is not null, checked_at_ms is null from sts_policy_cache where domain = 'py.example'"),
        "t|t"
    );
}
