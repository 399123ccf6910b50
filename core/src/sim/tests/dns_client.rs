//! The stub resolver over the sim's network (RFC 1035 §4.2, RFC 7766):
//! TCP after a truncated UDP answer, nameservers tried in turn for
//! `attempts` rounds of `try_timeout` each, and SERVFAIL as a lookup error,
//! never "no policy" (RFC 8461 §3.1).

use super::{enforce, ms, ok_reply, text};
use crate::dns::{Answer, DnsError, QueryType};
use crate::domain::Domain;
use crate::resolve::TxtResult;
use crate::service::{lookup_txt, DnsClient, DnsLookupError};
use crate::sim::{DnsAnswer, Harness, Sim, Via, World, NAMESERVER};
use std::net::SocketAddr;
use std::time::Duration;

const LATENCY: Duration = Duration::from_millis(4);

fn second_ns() -> SocketAddr {
    "10.0.0.54:53".parse().expect("address")
}

fn client(
    sim: &Sim,
    world: &World,
    servers: Vec<SocketAddr>,
    attempts: u32,
    try_timeout: Duration,
) -> DnsClient<Sim> {
    world.dns.set_default_latency(LATENCY);
    DnsClient::new(
        sim.clone(),
        world.transport(),
        servers,
        attempts,
        try_timeout,
    )
}

fn domain(s: &str) -> Domain {
    Domain::new(s).expect("valid domain")
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    let sim = Sim::new();
    let world = World::new(&sim);
    let dns = client(&sim, &world, vec![NAMESERVER], 2, Duration::from_secs(1));
    let name = "_mta-sts.big.example";
    let filler = "x".repeat(3000);
    world.dns.set(
        name,
        QueryType::Txt,
        DnsAnswer::Txt(vec!["v=STSv1; id=big;".into(), filler.clone()]),
    );
    world.dns.set_truncate_udp(name, QueryType::Txt, true);
    let answer = sim
        .block_on(dns.query(name, QueryType::Txt))
        .expect("answered over TCP");
    let Answer::Txt(records) = answer else {
        panic!("TXT answer expected, got {answer:?}");
    };
    assert_eq!(records.len(), 2);
    assert!(records.contains(&filler.into_bytes()));
    assert_eq!(world.dns.queries_via(name, QueryType::Txt, Via::Udp), 1);
    assert_eq!(world.dns.queries_via(name, QueryType::Txt, Via::Tcp), 1);
    assert_eq!(sim.elapsed(), LATENCY * 2);
    // The same through the TXT lookup of a policy domain.
    let txt = sim.block_on(lookup_txt(&dns, &domain("big.example")));
    assert_eq!(txt, TxtResult::Id("big".into()));
}

#[test]
fn silent_servers_time_out_after_every_attempt() {
    let sim = Sim::new();
    let world = World::with_nameservers(&sim, vec![NAMESERVER, second_ns()]);
    let dns = client(&sim, &world, vec![NAMESERVER, second_ns()], 3, ms(1500));
    world
        .dns
        .set("_mta-sts.silent.example", QueryType::Txt, DnsAnswer::Drop);
    let got = sim.block_on(dns.query("_mta-sts.silent.example", QueryType::Txt));
    assert!(matches!(got, Err(DnsLookupError::Timeout)), "{got:?}");
    // 3 rounds over 2 servers, 1.5 s each.
    assert_eq!(sim.elapsed(), ms(9000));
    assert_eq!(
        world.dns.queries("_mta-sts.silent.example", QueryType::Txt),
        6
    );
    // A timeout is a lookup error, not "no policy".
    let txt = sim.block_on(lookup_txt(&dns, &domain("silent.example")));
    assert!(matches!(txt, TxtResult::Error(_)), "{txt:?}");
}

#[test]
fn a_dead_first_server_costs_one_try_timeout() {
    let sim = Sim::new();
    let world = World::new(&sim);
    // Nothing answers at the first address: its datagrams are lost.
    let dns = client(&sim, &world, vec![second_ns(), NAMESERVER], 2, ms(800));
    world.dns.set_sts_id("example.com", "id1");
    let txt = sim.block_on(lookup_txt(&dns, &domain("example.com")));
    assert_eq!(txt, TxtResult::Id("id1".into()));
    assert_eq!(sim.elapsed(), ms(800) + LATENCY);
}

#[test]
fn servfail_is_an_error_not_no_policy() {
    let sim = Sim::new();
    let world = World::with_nameservers(&sim, vec![NAMESERVER, second_ns()]);
    let dns = client(
        &sim,
        &world,
        vec![NAMESERVER, second_ns()],
        2,
        Duration::from_secs(1),
    );
    let name = "_mta-sts.broken.example";
    world.dns.set(name, QueryType::Txt, DnsAnswer::ServFail);
    let got = sim.block_on(dns.query(name, QueryType::Txt));
    assert!(
        matches!(got, Err(DnsLookupError::Server(DnsError::ServFail))),
        "{got:?}"
    );
    // Every server is asked in every round before giving up.
    assert_eq!(world.dns.queries(name, QueryType::Txt), 4);
    assert_eq!(sim.elapsed(), LATENCY * 4);
    let txt = sim.block_on(lookup_txt(&dns, &domain("broken.example")));
    assert!(
        matches!(&txt, TxtResult::Error(why) if why.to_string().contains("SERVFAIL")),
        "{txt:?}"
    );
    // NXDOMAIN, by contrast, is "no policy".
    world
        .dns
        .set("_mta-sts.gone.example", QueryType::Txt, DnsAnswer::NxDomain);
    let txt = sim.block_on(lookup_txt(&dns, &domain("gone.example")));
    assert!(matches!(txt, TxtResult::NoPolicy(_)), "{txt:?}");
}

#[test]
fn servfail_through_the_service_keeps_the_cached_policy_and_is_not_remembered() {
    let h = Harness::new("cache_grace: 60");
    h.world.dns.set_default_latency(LATENCY);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(10),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    let entry = h.cached("example.com").expect("cached");

    // After cache_grace the TXT check fails: the cached policy is served,
    // unchanged (not re-checked, not evicted).
    h.sim.advance(Duration::from_secs(120));
    h.world
        .dns
        .set("_mta-sts.example.com", QueryType::Txt, DnsAnswer::ServFail);
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    assert_eq!(h.cached("example.com"), Some(entry));
    assert_eq!(h.world.fetches("example.com"), 1);

    // Without a cached policy: NOTFOUND, but not remembered as "no policy":
    // the next request asks again, unlike after NXDOMAIN.
    h.world
        .dns
        .set("_mta-sts.fail.example", QueryType::Txt, DnsAnswer::ServFail);
    h.world
        .dns
        .set("_mta-sts.none.example", QueryType::Txt, DnsAnswer::NxDomain);
    for d in ["fail.example", "none.example"] {
        assert_eq!(text(&h.answer(d)), "NOTFOUND ");
        h.sim.advance(Duration::from_secs(1));
        assert_eq!(text(&h.answer(d)), "NOTFOUND ");
    }
    // 2 attempts per lookup on the one server.
    assert_eq!(h.world.txt_queries("fail.example"), 4);
    assert_eq!(h.world.txt_queries("none.example"), 1);
}
