//! The persistent store behind the index (docs/ARCHITECTURE.md "Cache"): a
//! slow store costs a lookup at most its read limit (1 s), a failing one
//! costs neither answers nor fetches, and news another daemon wrote to the
//! shared store is used.

use super::{enforce, enforce_entry, ms, ok_reply, text};
use crate::service::Runtime;
use crate::sim::{dns_targets, Harness, HostBehaviour};
use std::time::Duration;

fn harness() -> Harness {
    let h = Harness::with_store("cache_grace: 60");
    h.world.dns.set_default_latency(ms(5));
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(20),
    );
    h
}

#[test]
fn a_slow_store_costs_at_most_its_read_limit() {
    let h = harness();
    let store = h.store.clone().expect("store");
    store.set_latency(Duration::from_secs(30));
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    assert_eq!(h.sim.elapsed(), Duration::from_secs(1) + ms(2 * 5 + 20));
    // The write lands when the store gets to it.
    assert_eq!(store.entry("example.com"), None);
    h.sim.advance(Duration::from_secs(30));
    assert_eq!(store.entry("example.com"), h.cached("example.com"));
}

#[test]
fn a_failing_store_costs_no_answer_and_no_fetch() {
    let h = harness();
    let store = h.store.clone().expect("store");
    store.set_failing(true);
    for _ in 0..5 {
        assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
        h.sim.advance(Duration::from_secs(120));
    }
    assert_eq!(h.world.fetches("example.com"), 1);
    assert_eq!(h.world.txt_queries("example.com"), 5);
    assert_eq!((store.reads(), store.writes()), (5, 5));
    assert_eq!(store.entry("example.com"), None);
}

#[test]
fn news_from_the_shared_store_is_used() {
    let h = harness();
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    let store = h.store.clone().expect("store");
    // Later, another daemon fetched id2 and wrote it to the shared store.
    h.sim.advance(Duration::from_secs(120));
    h.world.dns.set_sts_id("example.com", "id2");
    let now = h.sim.unix_ms();
    store.insert("example.com", enforce_entry("id2", "mx2.example.com", now));
    // Fresh in the store: answered from it with no traffic at all.
    let queries = h.world.dns.total();
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx2.example.com"));
    assert_eq!(h.world.dns.total(), queries);
    assert_eq!(h.world.fetches("example.com"), 1);
    assert_eq!(
        h.cached("example.com").map(|e| e.policy_id),
        Some("id2".into())
    );
}

/// A row another writer dated ten days ahead (a peer whose clock runs
/// fast, a restored backup, a forged row) is read as checked now: fresh for
/// `cache_grace`, then its id is checked and a changed id fetched, and the
/// store takes the new policy (docs/ARCHITECTURE.md "Time").
#[test]
fn a_future_dated_row_is_read_as_now_and_rechecked_after_grace() {
    let h = Harness::with_store("cache_grace: 2");
    h.world.dns.set_default_latency(ms(5));
    h.world.publish(
        "example.com",
        "id2",
        &enforce("mx2.example.com", 86400),
        ms(20),
    );
    let store = h.store.clone().expect("store");
    let now = h.sim.unix_ms();
    let ahead = now + 10 * 86_400_000;
    store.insert(
        "example.com",
        enforce_entry("id1", "mx1.example.com", ahead),
    );
    // Taken as checked now: served with no traffic.
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx1.example.com"));
    assert_eq!(h.world.dns.total(), 0);
    let held = h.cached("example.com").expect("kept in memory");
    assert_eq!((held.fetched_at_ms, held.checked_at_ms), (now, now));
    // Two seconds on, the id is checked, the new one fetched and stored.
    h.sim.advance(Duration::from_secs(2));
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx2.example.com"));
    assert_eq!(h.world.txt_queries("example.com"), 1);
    assert_eq!(h.world.fetches("example.com"), 1);
    h.sim.advance(Duration::from_secs(1));
    assert_eq!(
        store.entry("example.com").map(|e| e.policy_id),
        Some("id2".into())
    );
}

/// A row dated ten days ahead is written back as read (checked and fetched
/// now), so it ages from that first read like any other row: a day later,
/// past its `max_age`, a restarted daemon with the policy host down no
/// longer serves it (docs/ARCHITECTURE.md "Time"). Were it read as now on
/// every start, it would outlive its `max_age` for as long as it lies ahead.
#[test]
fn a_future_dated_row_is_written_back_and_expires_from_its_first_read() {
    let h = Harness::with_store("cache_grace: 60");
    h.world.dns.set_default_latency(ms(5));
    h.world.publish_host(
        "example.com",
        "id1",
        HostBehaviour::TlsFailure("connection refused".into()),
    );
    let store = h.store.clone().expect("store");
    let now = h.sim.unix_ms();
    let ahead = now + 10 * 86_400_000;
    store.insert(
        "example.com",
        enforce_entry("id1", "mx1.example.com", ahead),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx1.example.com"));
    h.sim.advance(Duration::from_secs(1));
    let row = store.entry("example.com").expect("kept");
    assert_eq!((row.fetched_at_ms, row.checked_at_ms), (now, now));
    // Past max_age, a restart over the same store: the row has expired.
    h.sim.advance(Duration::from_secs(86_400));
    let restarted = Harness::build(
        h.sim.clone(),
        h.world.clone(),
        h.config.clone(),
        h.store.clone(),
        dns_targets(),
    );
    assert_eq!(text(&restarted.answer("example.com")), "NOTFOUND ");
    assert_eq!(h.world.fetches("example.com"), 1, "tried, host down");
}
