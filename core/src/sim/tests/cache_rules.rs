//! The cache rules the end-to-end suite checks once in a smoke case
//! (`cache::after_cache_grace_smoke`), each here on the virtual clock: a
//! changed id is fetched only after `cache_grace`, a failing policy host
//! leaves the unexpired policy answering, an expired one is not served, and
//! the 5-minute pause after a failed fetch holds for its id only
//! (RFC 8461 §3.3, §5.1; docs/ARCHITECTURE.md "Cache").

use super::{enforce, ms, ok_reply, text};
use crate::sim::{Harness, HostBehaviour, HttpsReply};
use std::time::Duration;

const LATENCY: Duration = Duration::from_millis(5);

fn harness() -> Harness {
    let h = Harness::new("cache_grace: 60");
    h.world.dns.set_default_latency(LATENCY);
    h
}

fn status_500() -> HostBehaviour {
    HostBehaviour::Serve(HttpsReply {
        status: 500,
        content_type: Some("text/plain".into()),
        body: "down".into(),
        latency: ms(10),
    })
}

/// A new id published within `cache_grace` is not seen (no traffic at
/// all); the first request after it checks the id and fetches the new
/// policy, which answers from then on.
#[test]
fn a_changed_id_is_fetched_after_grace() {
    let h = harness();
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx1.example.com", 86400),
        ms(10),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx1.example.com"));
    let t = h.sim.elapsed();
    let queries = h.world.dns.total();
    h.world.dns.set_sts_id("example.com", "id2");
    h.world.set_policy(
        "example.com",
        HostBehaviour::Serve(HttpsReply::ok(enforce("mx2.example.com", 86400), ms(10))),
    );
    h.sim.advance_to(t + Duration::from_secs(60) - ms(1));
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx1.example.com"));
    assert_eq!(
        h.world.dns.total(),
        queries,
        "no DNS query within the grace"
    );
    assert_eq!(h.world.fetches("example.com"), 1);

    h.sim.advance(ms(1));
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx2.example.com"));
    assert_eq!(h.world.txt_queries("example.com"), 2);
    assert_eq!(h.world.fetches("example.com"), 2);
    assert_eq!(
        h.cached("example.com").map(|e| e.policy_id),
        Some("id2".into())
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx2.example.com"));
    assert_eq!(
        h.world.fetches("example.com"),
        2,
        "the new policy is cached"
    );
}

/// The id changes while the policy host answers 500, then while it refuses
/// connections: each time the new id is fetched, fails, and the cached,
/// unexpired policy answers (RFC 8461 §5.1).
#[test]
fn an_unexpired_policy_answers_while_its_host_fails() {
    let h = harness();
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(10),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    let failures = [
        ("id2", status_500()),
        ("id3", HostBehaviour::TlsFailure("connection reset".into())),
    ];
    for (i, (id, behaviour)) in failures.into_iter().enumerate() {
        h.world.dns.set_sts_id("example.com", id);
        h.world.set_policy("example.com", behaviour);
        h.sim.advance(Duration::from_secs(61));
        assert_eq!(
            text(&h.answer("example.com")),
            ok_reply("mx.example.com"),
            "{id}"
        );
        assert_eq!(h.world.fetches("example.com"), i + 2, "{id} is fetched");
        assert_eq!(
            h.cached("example.com").map(|e| e.policy_id),
            Some("id1".into())
        );
    }
}

/// A policy whose `max_age` has run out is not served when its host fails:
/// NOTFOUND, after one fetch attempt (RFC 8461 §3.2, §5.1).
#[test]
fn an_expired_policy_is_not_served_when_its_host_fails() {
    let h = harness();
    h.world.publish(
        "short.example",
        "id1",
        &enforce("mx.short.example", 100),
        ms(10),
    );
    assert_eq!(
        text(&h.answer("short.example")),
        ok_reply("mx.short.example")
    );
    h.world.set_policy("short.example", status_500());
    // Past the grace, within max_age: the id is unchanged, no fetch.
    h.sim.advance(Duration::from_secs(61));
    assert_eq!(
        text(&h.answer("short.example")),
        ok_reply("mx.short.example")
    );
    assert_eq!(h.world.fetches("short.example"), 1);
    // Past max_age (100 s from the fetch): fetched again, failing.
    h.sim.advance(Duration::from_secs(40));
    assert_eq!(text(&h.answer("short.example")), "NOTFOUND ");
    assert_eq!(
        h.world.fetches("short.example"),
        2,
        "refetched once expired"
    );
}

/// A failed fetch pauses fetches of its id for 5 minutes, not of the
/// domain: a new id published two minutes later is fetched at once.
#[test]
fn a_new_id_is_fetched_within_the_pause_of_a_failed_one() {
    let h = harness();
    h.world.publish_host("broken.example", "id1", status_500());
    assert_eq!(text(&h.answer("broken.example")), "NOTFOUND ");
    h.sim.advance(Duration::from_secs(61));
    assert_eq!(text(&h.answer("broken.example")), "NOTFOUND ");
    assert_eq!(h.world.fetches("broken.example"), 1, "id1 is not retried");
    h.world.dns.set_sts_id("broken.example", "id2");
    h.world.set_policy(
        "broken.example",
        HostBehaviour::Serve(HttpsReply::ok(enforce("mx.broken.example", 86400), ms(10))),
    );
    h.sim.advance(Duration::from_secs(61));
    assert_eq!(
        text(&h.answer("broken.example")),
        ok_reply("mx.broken.example")
    );
    assert_eq!(h.world.fetches("broken.example"), 2);
}
