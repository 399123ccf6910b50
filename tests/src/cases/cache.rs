//! The cache and its refresh rules (RFC 8461 §3.3, §5.1; docs/ARCHITECTURE.md "Cache").
//! Wall-clock time is counted in whole seconds, so a case that must stay within
//! `cache_grace` uses `cache_grace: 2` (an immediate second request is always within it),
//! and a case that must pass it sleeps just over the grace.

use std::sync::{Arc, Barrier};

use super::{expect, expect_notfound, pause, publish_enforce, secure, start, sts_txt, Bins};
use crate::{policy_body, Behaviour, World};

/// A changed TXT id is picked up once `cache_grace` has passed (new policy fetched and
/// served); before that the old answer comes with no DNS traffic at all.
pub fn id_change_picked_up_after_grace(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "change.example", "1", &["mx1.change.example"]);
    let d = start(bins, &world, "cache_grace: 2\n");
    expect(
        &d,
        "postfix",
        "change.example",
        &secure("mx1.change.example"),
    );
    let txt_queries = world.dns.queries("_mta-sts.change.example");
    let total = world.dns.total_queries();
    assert_eq!(world.requests("change.example"), 1);

    world.set_txt("change.example", &[&sts_txt("2")]);
    world.set_behaviour(
        "change.example",
        Behaviour::policy(&policy_body("enforce", 86400, &["mx2.change.example"])),
    );
    expect(
        &d,
        "postfix",
        "change.example",
        &secure("mx1.change.example"),
    );
    assert_eq!(world.dns.total_queries(), total, "DNS traffic within grace");
    assert_eq!(world.requests("change.example"), 1);

    pause(2100);
    expect(
        &d,
        "postfix",
        "change.example",
        &secure("mx2.change.example"),
    );
    assert_eq!(
        world.dns.queries("_mta-sts.change.example"),
        txt_queries + 1
    );
    assert_eq!(world.requests("change.example"), 2);
}

/// Same TXT id after `cache_grace`: the id is checked, the policy is not fetched again.
pub fn unchanged_id_after_grace_no_fetch(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "same.example", "1", &["mx.same.example"]);
    let d = start(bins, &world, "cache_grace: 1\n");
    expect(&d, "postfix", "same.example", &secure("mx.same.example"));
    let txt_queries = world.dns.queries("_mta-sts.same.example");
    pause(1100);
    expect(&d, "postfix", "same.example", &secure("mx.same.example"));
    assert_eq!(
        world.dns.queries("_mta-sts.same.example"),
        txt_queries + 1,
        "the id is checked after the grace"
    );
    assert_eq!(world.requests("same.example"), 1, "no second fetch");
}

/// The id changes while the policy host is down (500, then reset): the cached, unexpired
/// policy is still served.
pub fn cached_policy_served_when_host_down(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "flaky.example", "1", &["mx.flaky.example"]);
    let d = start(bins, &world, "cache_grace: 1\n");
    expect(&d, "postfix", "flaky.example", &secure("mx.flaky.example"));

    world.set_behaviour("flaky.example", Behaviour::Status(500, "down\n".into()));
    world.set_txt("flaky.example", &[&sts_txt("2")]);
    pause(1100);
    expect(&d, "postfix", "flaky.example", &secure("mx.flaky.example"));
    assert_eq!(world.requests("flaky.example"), 2, "the new id is fetched");

    world.set_behaviour("flaky.example", Behaviour::Reset);
    world.set_txt("flaky.example", &[&sts_txt("3")]);
    pause(1100);
    expect(&d, "postfix", "flaky.example", &secure("mx.flaky.example"));
    assert_eq!(world.requests("flaky.example"), 3);
}

/// A policy whose `max_age` (1 s) has run out is not served when the host is down.
pub fn expired_policy_not_served(bins: &Bins) {
    let world = World::new();
    world.add_policy_domain(
        "short.example",
        &sts_txt("1"),
        Behaviour::policy(&policy_body("enforce", 1, &["mx.short.example"])),
    );
    let d = start(bins, &world, "cache_grace: 1\n");
    expect(&d, "postfix", "short.example", &secure("mx.short.example"));
    world.set_behaviour("short.example", Behaviour::Status(500, "down\n".into()));
    pause(2100);
    expect_notfound(&d, "short.example");
    assert_eq!(world.requests("short.example"), 2, "refetched once expired");
}

/// A missing TXT record does not evict a cached policy.
pub fn missing_txt_keeps_cached_policy(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "gone.example", "1", &["mx.gone.example"]);
    let d = start(bins, &world, "cache_grace: 1\n");
    expect(&d, "postfix", "gone.example", &secure("mx.gone.example"));
    world.dns.remove("_mta-sts.gone.example");
    pause(1100);
    expect(&d, "postfix", "gone.example", &secure("mx.gone.example"));
    assert_eq!(world.dns.queries("_mta-sts.gone.example"), 2);
}

/// A DNS failure (SERVFAIL) after the grace falls back to the cached policy.
pub fn servfail_falls_back_to_cache(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "sf.example", "1", &["mx.sf.example"]);
    let d = start(bins, &world, "cache_grace: 1\n");
    expect(&d, "postfix", "sf.example", &secure("mx.sf.example"));
    world.dns.servfail("_mta-sts.sf.example");
    pause(1100);
    expect(&d, "postfix", "sf.example", &secure("mx.sf.example"));
    assert!(world.dns.queries("_mta-sts.sf.example") >= 2);
}

/// "No policy" is remembered for `cache_grace`: a second request causes no DNS traffic.
pub fn no_policy_remembered_within_grace(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    expect_notfound(&d, "nothing.example");
    let total = world.dns.total_queries();
    assert!(total >= 1);
    expect_notfound(&d, "nothing.example");
    assert_eq!(world.dns.total_queries(), total);
}

/// A policy within grace is served with no traffic at all.
pub fn cached_within_grace_no_traffic(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "warm.example", "1", &["mx.warm.example"]);
    let d = start(bins, &world, "");
    expect(&d, "postfix", "warm.example", &secure("mx.warm.example"));
    let total = world.dns.total_queries();
    for _ in 0..5 {
        expect(&d, "postfix", "warm.example", &secure("mx.warm.example"));
    }
    assert_eq!(world.dns.total_queries(), total);
    assert_eq!(world.requests("warm.example"), 1);
}

/// Concurrent requests for one domain (8 connections at once, 5 pipelined requests each)
/// share one lookup: one TXT query, one policy fetch.
pub fn concurrent_requests_one_fetch(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "busy.example", "1", &["mx.busy.example"]);
    let d = start(bins, &world, "");
    let clients: Vec<_> = (0..8).map(|_| d.client()).collect();
    let barrier = Arc::new(Barrier::new(clients.len()));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                c.pipeline(&[("postfix", "busy.example"); 5])
            })
        })
        .collect();
    for t in threads {
        let replies = t.join().unwrap_or_default();
        assert_eq!(replies.len(), 5);
        for r in replies {
            assert_eq!(r, secure("mx.busy.example"), "log:\n{}", d.log());
        }
    }
    assert_eq!(world.requests("busy.example"), 1, "log:\n{}", d.log());
    assert_eq!(world.dns.queries("_mta-sts.busy.example"), 1);
}

/// A failed fetch for a domain and id is not retried within 5 minutes, even after
/// `cache_grace` (the id is checked again, the host is not asked); a new id is fetched.
pub fn failed_fetch_not_retried_for_same_id(bins: &Bins) {
    let world = World::new();
    world.add_policy_domain(
        "broken.example",
        &sts_txt("1"),
        Behaviour::Status(500, "down\n".into()),
    );
    let d = start(bins, &world, "cache_grace: 1\n");
    expect_notfound(&d, "broken.example");
    assert_eq!(world.requests("broken.example"), 1);
    pause(1100);
    expect_notfound(&d, "broken.example");
    assert_eq!(
        world.requests("broken.example"),
        1,
        "retried within 5 minutes"
    );
    world.set_txt("broken.example", &[&sts_txt("2")]);
    world.set_behaviour(
        "broken.example",
        Behaviour::policy(&policy_body("enforce", 86400, &["mx.broken.example"])),
    );
    pause(1100);
    expect(
        &d,
        "postfix",
        "broken.example",
        &secure("mx.broken.example"),
    );
    assert_eq!(world.requests("broken.example"), 2);
}
