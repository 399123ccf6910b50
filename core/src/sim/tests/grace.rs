//! `cache_grace` holds to the millisecond: within it a cached policy (or a
//! remembered "no policy") is served with no traffic; at its end exactly
//! one TXT query re-checks the id, and an unchanged id fetches nothing
//! (RFC 8461 §5.1; docs/ARCHITECTURE.md "Time").

use super::{enforce, ms, ok_reply, text};
use crate::dns::QueryType;
use crate::service::Runtime;
use crate::sim::DnsAnswer;
use crate::sim::{Harness, DEFAULT_UNIX_MS};
use std::time::Duration;

const DNS_LATENCY: Duration = Duration::from_millis(7);

fn harness(yaml: &str, with_store: bool) -> Harness {
    let h = if with_store {
        Harness::with_store(yaml)
    } else {
        Harness::new(yaml)
    };
    h.world.dns.set_default_latency(DNS_LATENCY);
    h
}

fn policy_within_grace(yaml: &str, grace: Duration, with_store: bool) {
    let h = harness(yaml, with_store);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(40),
    );
    let want = ok_reply("mx.example.com");

    assert_eq!(text(&h.answer("example.com")), want);
    // The policy was fetched (and checked) when the lookup answered.
    let t = h.sim.elapsed();
    let entry = h.cached("example.com").expect("cached after the fetch");
    let t_ms = u64::try_from(t.as_millis()).expect("small");
    assert_eq!(entry.fetched_at_ms, DEFAULT_UNIX_MS + t_ms);
    assert_eq!(entry.checked_at_ms, DEFAULT_UNIX_MS + t_ms);
    assert_eq!(
        (
            h.world.txt_queries("example.com"),
            h.world.fetches("example.com")
        ),
        (1, 1)
    );

    h.sim.advance_to(t + grace - ms(1));
    assert_eq!(text(&h.answer("example.com")), want);
    assert_eq!(h.sim.elapsed(), t + grace - ms(1), "answered with no wait");
    assert_eq!(h.world.dns.total(), 3, "no DNS query within cache_grace");

    h.sim.advance_to(t + grace);
    assert_eq!(text(&h.answer("example.com")), want);
    assert_eq!(
        h.world.txt_queries("example.com"),
        2,
        "one TXT query at cache_grace"
    );
    assert_eq!(
        h.world.fetches("example.com"),
        1,
        "the id is unchanged: no fetch"
    );
    assert_eq!(h.sim.elapsed(), t + grace + DNS_LATENCY);
    let entry = h.cached("example.com").expect("still cached");
    assert_eq!(
        entry.fetched_at_ms,
        DEFAULT_UNIX_MS + t_ms,
        "lifetime not extended"
    );
    assert_eq!(h.sim.unix_ms(), entry.checked_at_ms, "checked now");
    if let Some(store) = &h.store {
        assert_eq!(store.entry("example.com"), Some(entry));
        // The miss at cache_grace read the store once more.
        assert_eq!((store.reads(), store.writes()), (2, 2));
    }
}

fn no_policy_within_grace(yaml: &str, grace: Duration) {
    let h = harness(yaml, false);
    h.world
        .dns
        .set("_mta-sts.none.example", QueryType::Txt, DnsAnswer::NxDomain);
    assert_eq!(text(&h.answer("none.example")), "NOTFOUND ");
    let t = h.sim.elapsed();
    assert_eq!(t, DNS_LATENCY);
    h.sim.advance_to(t + grace - ms(1));
    assert_eq!(text(&h.answer("none.example")), "NOTFOUND ");
    assert_eq!(
        h.world.txt_queries("none.example"),
        1,
        "remembered within cache_grace"
    );
    h.sim.advance_to(t + grace);
    assert_eq!(text(&h.answer("none.example")), "NOTFOUND ");
    assert_eq!(
        h.world.txt_queries("none.example"),
        2,
        "asked again at cache_grace"
    );
}

#[test]
fn grace_of_two_seconds() {
    for with_store in [false, true] {
        policy_within_grace("cache_grace: 2", Duration::from_secs(2), with_store);
    }
    no_policy_within_grace("cache_grace: 2", Duration::from_secs(2));
}

#[test]
fn grace_of_half_a_second() {
    for with_store in [false, true] {
        policy_within_grace("cache_grace: 0.5", ms(500), with_store);
    }
    no_policy_within_grace("cache_grace: 0.5", ms(500));
}
