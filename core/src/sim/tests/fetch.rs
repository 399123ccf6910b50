//! The policy fetch over several addresses of the policy host (RFC 8461
//! §3.3): an address that cannot be reached must not keep the policy from
//! being fetched from the others.

use super::{enforce, ms, ok_reply, text};
use crate::dns::QueryType;
use crate::sim::{DnsAnswer, Harness, HostBehaviour, HttpsReply};
use std::net::IpAddr;
use std::time::Duration;

const DNS_LATENCY: Duration = Duration::from_millis(5);

/// example.com whose policy host resolves to `first`, then its real
/// address (answering after `latency`).
fn two_addresses(first: IpAddr, latency: Duration) -> Harness {
    let h = Harness::new("");
    h.world.dns.set_default_latency(DNS_LATENCY);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        latency,
    );
    let live = h.world.https.addr_of("mta-sts.example.com");
    h.world.dns.set(
        "mta-sts.example.com",
        QueryType::A,
        DnsAnswer::Addrs(vec![first, live]),
    );
    h
}

fn dead() -> IpAddr {
    "192.0.2.7".parse().expect("address")
}

#[test]
fn a_refused_address_goes_on_to_the_next_at_once() {
    // Nothing listens at the first address: refused at once.
    let h = two_addresses(dead(), ms(20));
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    assert_eq!(h.world.fetches("example.com"), 2);
    assert_eq!(h.sim.elapsed(), DNS_LATENCY * 2 + ms(20));
}

#[test]
fn a_blackholed_address_does_not_hide_the_next() {
    // The first address drops every packet: its connection never completes.
    let h = two_addresses(dead(), ms(20));
    h.world.https.blackhole(dead());
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    let log = h.world.https.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].addr, dead());
    // Well within the zone timeout (4 s).
    assert!(
        h.sim.elapsed() < Duration::from_secs(3),
        "{:?}",
        h.sim.elapsed()
    );
}

#[test]
fn the_last_address_gets_the_rest_of_the_lookup_time() {
    // After a blackholed first address, a slow (2.5 s) but working second
    // one is still waited for until the zone timeout.
    let h = two_addresses(dead(), Duration::ZERO);
    h.world.https.blackhole(dead());
    let slow = HttpsReply::ok(enforce("mx.example.com", 86400), ms(2500));
    h.world
        .set_policy("example.com", HostBehaviour::Serve(slow));
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    assert!(h.sim.elapsed() > ms(2500));
}
