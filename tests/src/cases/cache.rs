//! The cache and its refresh rules (RFC 8461 §3.3, §5.1; docs/ARCHITECTURE.md "Cache"),
//! through the real daemon once: each rule is checked to the millisecond on the virtual
//! clock in `core/src/sim/tests` (`grace`, `cache_rules`, `retry`, `lifetime`,
//! `dns_client`, `eviction`); here one daemon and one wait past `cache_grace` show them
//! all on real sockets and time.

use std::sync::{Arc, Barrier};

use super::{expect, expect_notfound, pause, publish_enforce, secure, start, sts_txt, Bins};
use crate::{policy_body, Behaviour, World};

/// `cache_grace: 1.5` (fractional), then one wait of 1.7 s. Within the grace, a changed id,
/// a policy host gone down and a domain with no policy cause no DNS query and no fetch.
/// After it: a changed id is fetched and served; an unchanged id is checked, not fetched;
/// a new id whose host fails (500, or a reset), a TXT record gone and a SERVFAIL all leave
/// the cached policy answering; a policy past its `max_age` (1 s) whose host fails is not
/// served; a fetch that failed is not retried for its id (5 minutes). Were the grace
/// rounded to 2 s, nothing after the wait would be checked again.
pub fn after_cache_grace_smoke(bins: &Bins) {
    let world = World::new();
    let domains = [
        "change", "same", "flaky", "reset", "gone", "sf", "short", "broken",
    ];
    for name in domains {
        let domain = format!("{name}.example");
        let max_age = if name == "short" { 1 } else { 86400 };
        let mx = format!("mx.{domain}");
        world.add_policy_domain(
            &domain,
            &sts_txt("1"),
            Behaviour::policy(&policy_body("enforce", max_age, &[&mx])),
        );
    }
    world.set_behaviour("broken.example", Behaviour::Status(500, "down\n".into()));
    let d = start(bins, &world, "cache_grace: 1.5\n");
    // First requests; each repeated at once (within the grace): no traffic.
    for name in domains {
        let domain = format!("{name}.example");
        let want = if name == "broken" {
            super::NOTFOUND.to_owned()
        } else {
            secure(&format!("mx.{domain}"))
        };
        expect(&d, "postfix", &domain, &want);
        let queries = world.dns.total_queries();
        if name == "change" {
            world.set_txt(&domain, &[&sts_txt("2")]);
            world.set_behaviour(
                &domain,
                Behaviour::policy(&policy_body("enforce", 86400, &["mx2.change.example"])),
            );
        }
        expect(&d, "postfix", &domain, &want);
        if name != "broken" {
            // (A failed lookup is not remembered as "no policy": its id is checked again.)
            assert_eq!(
                world.dns.total_queries(),
                queries,
                "{domain}: traffic within grace"
            );
        }
        assert_eq!(world.requests(&domain), 1, "{domain}");
    }
    expect_notfound(&d, "nothing.example");
    let queries = world.dns.total_queries();
    expect_notfound(&d, "nothing.example");
    assert_eq!(
        world.dns.total_queries(),
        queries,
        "no policy is remembered"
    );

    world.set_txt("flaky.example", &[&sts_txt("2")]);
    world.set_behaviour("flaky.example", Behaviour::Status(500, "down\n".into()));
    world.set_txt("reset.example", &[&sts_txt("2")]);
    world.set_behaviour("reset.example", Behaviour::Reset);
    world.dns.remove("_mta-sts.gone.example");
    world.dns.servfail("_mta-sts.sf.example");
    world.set_behaviour("short.example", Behaviour::Status(500, "down\n".into()));
    pause(1700);

    expect(
        &d,
        "postfix",
        "change.example",
        &secure("mx2.change.example"),
    );
    assert_eq!(world.requests("change.example"), 2, "the new id is fetched");
    for name in ["same", "flaky", "reset", "gone", "sf"] {
        let domain = format!("{name}.example");
        expect(&d, "postfix", &domain, &secure(&format!("mx.{domain}")));
        // (A SERVFAIL is asked again: two attempts.)
        assert!(
            world.dns.queries(&format!("_mta-sts.{domain}")) >= 2,
            "{domain}: the id is checked after the grace"
        );
    }
    assert_eq!(world.requests("same.example"), 1, "unchanged id, no fetch");
    assert_eq!(world.requests("flaky.example"), 2, "the new id is fetched");
    assert_eq!(world.requests("reset.example"), 2, "the new id is fetched");
    expect_notfound(&d, "short.example");
    assert_eq!(world.requests("short.example"), 2, "refetched once expired");
    expect_notfound(&d, "broken.example");
    assert_eq!(
        world.requests("broken.example"),
        1,
        "retried within 5 minutes"
    );
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
