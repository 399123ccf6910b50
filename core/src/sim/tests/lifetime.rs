//! Hours of cache life through the service: hourly requests over 50 hours
//! for a policy with `max_age` 86400. Every request past `cache_grace`
//! checks the TXT id; an unchanged id never extends the policy's lifetime,
//! so it is fetched again once `max_age` has run out since the last fetch
//! (RFC 8461 §3.2, §5.1).

use super::{enforce, hours, ok_reply, text};
use crate::sim::Harness;
use std::time::Duration;

/// Hourly requests for 50 hours; returns the virtual times of the fetches.
fn fifty_hours(latency: Duration, with_store: bool) -> (Harness, Vec<Duration>) {
    let yaml = "cache_grace: 60";
    let h = if with_store {
        Harness::with_store(yaml)
    } else {
        Harness::new(yaml)
    };
    h.world.dns.set_default_latency(latency);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        latency,
    );
    for hour in 0..50 {
        h.sim.advance_to(hours(hour));
        assert_eq!(
            text(&h.answer("example.com")),
            ok_reply("mx.example.com"),
            "hour {hour}"
        );
    }
    assert_eq!(
        h.world.txt_queries("example.com"),
        50,
        "one TXT check an hour"
    );
    let fetches = h.world.fetch_times("example.com");
    (h, fetches)
}

#[test]
fn instant_network_fetches_every_24_hours() {
    for with_store in [false, true] {
        let (h, fetches) = fifty_hours(Duration::ZERO, with_store);
        assert_eq!(fetches, vec![hours(0), hours(24), hours(48)]);
        if let Some(store) = &h.store {
            let stored = store.entry("example.com").expect("persisted");
            assert_eq!(Some(stored), h.cached("example.com"));
            // A write per lookup: 3 fetches and 47 confirmations.
            assert_eq!(store.writes(), 50);
        }
    }
}

#[test]
fn max_age_counts_from_the_fetch() {
    // With 10 ms per exchange the first fetch completes at 30 ms (TXT, then A and AAAA at once, then the fetch): the
    // 24 h request (answered at 24 h + 10 ms) still confirms the unexpired
    // policy, and the next fetch is at 25 h.
    let ms10 = Duration::from_millis(10);
    let (h, fetches) = fifty_hours(ms10, false);
    assert_eq!(fetches, vec![ms10 * 2, hours(25) + ms10 * 2]);
    let entry = h.cached("example.com").expect("cached");
    assert_eq!(
        entry.fetched_at_ms,
        crate::sim::DEFAULT_UNIX_MS + (hours(25) + ms10 * 3).as_millis() as u64
    );
}
