//! DANE first (RFC 8461 §2, RFC 7672) through the real service stack on
//! the sim: the DANE and MTA-STS lookups of a request run at once (the
//! slower decides the time, not the sum), `dane-only` does not wait for
//! MTA-STS (whose result is kept), a burst is one query set, results are
//! cached for their TTL and failures for the retry delay, and zones
//! without `dane` make no DNSSEC query at all.

use super::{answer_in, enforce, ms, ok_reply, text};
use crate::dane::MIN_TTL;
use crate::dns::{QueryType, TlsaRecord};
use crate::resolve::RETRY_AFTER_FAILURE;
use crate::sim::{exchange, request, DnsAnswer, Harness, ZONE};
use crate::socketmap::Reply;
use std::net::IpAddr;
use std::time::Duration;

const DANE: &str =
    "default_zone:\n  dane: true\nzones:\n  plain: {}\n  rpt: {dane: true, tlsrpt: true}\n";

/// A usable DANE-EE SPKI SHA-256 record (RFC 7672 §3.1).
fn usable() -> TlsaRecord {
    TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![0x42; 32],
    }
}

/// A signed domain whose MX hosts have secure addresses and, per host,
/// secure TLSA records (`None`: none), all with records of `ttl` seconds.
fn publish_dane(h: &Harness, domain: &str, hosts: &[(&str, Option<TlsaRecord>)], ttl: u32) {
    let dns = &h.world.dns;
    dns.sign_zone(domain);
    let mx = hosts
        .iter()
        .enumerate()
        .map(|(i, (host, _))| (10 * i as u16, (*host).to_owned()))
        .collect();
    dns.set_secure(domain, QueryType::Mx, DnsAnswer::Mx(mx), ttl);
    for (host, tlsa) in hosts {
        let addr = DnsAnswer::Addrs(vec![IpAddr::from([192, 0, 2, 25])]);
        dns.set_secure(host, QueryType::A, addr, ttl);
        let name = format!("_25._tcp.{host}");
        match tlsa {
            Some(r) => dns.set_secure(
                &name,
                QueryType::Tlsa,
                DnsAnswer::Tlsa(vec![r.clone()]),
                ttl,
            ),
            None => dns.set_secure(&name, QueryType::Tlsa, DnsAnswer::NoData, ttl),
        }
    }
}

/// DNS queries of the DANE kinds so far.
fn dane_queries(h: &Harness) -> usize {
    [QueryType::Mx, QueryType::Tlsa]
        .into_iter()
        .map(|t| h.world.dns.queries_of(t))
        .sum()
}

#[test]
fn a_burst_is_one_dane_query_set_and_every_query_asks_for_dnssec() {
    let h = Harness::new(DANE);
    h.world.dns.set_default_latency(ms(5));
    publish_dane(
        &h,
        "example.com",
        &[
            ("mx1.example.com", Some(usable())),
            ("mx2.example.com", Some(usable())),
        ],
        300,
    );
    let clients: Vec<_> = (0..40u64)
        .map(|i| {
            let (connector, sim) = (h.connector(), h.sim.clone());
            h.sim.spawn_task(async move {
                sim.sleep_for(ms(i * 25)).await;
                exchange(connector.connect(), request(ZONE, "example.com")).await
            })
        })
        .collect();
    h.sim.advance(Duration::from_secs(5));
    for client in clients {
        let replies = client.take().expect("every client finished");
        assert_eq!(replies, vec!["OK dane-only".to_owned()]);
    }
    let dns = &h.world.dns;
    assert_eq!(dns.queries("example.com", QueryType::Mx), 1);
    for host in ["mx1.example.com", "mx2.example.com"] {
        assert_eq!(dns.queries(host, QueryType::A), 1, "{host}");
        assert_eq!(dns.queries(host, QueryType::Aaaa), 1, "{host}");
        let tlsa = format!("_25._tcp.{host}");
        assert_eq!(dns.queries(&tlsa, QueryType::Tlsa), 1, "{tlsa}");
        assert_eq!(dns.dnssec_queries(&tlsa, QueryType::Tlsa), 1, "DO bit");
        assert_eq!(dns.dnssec_queries(host, QueryType::A), 1, "DO bit");
    }
    assert_eq!(dns.dnssec_queries("example.com", QueryType::Mx), 1);
    // The MTA-STS lookup ran once too, without DNSSEC.
    assert_eq!(h.world.txt_queries("example.com"), 1);
    assert_eq!(
        dns.dnssec_queries("_mta-sts.example.com", QueryType::Txt),
        0
    );
}

#[test]
fn results_are_cached_for_the_smallest_ttl() {
    let h = Harness::new(DANE);
    publish_dane(
        &h,
        "example.com",
        &[("mx.example.com", Some(usable()))],
        300,
    );
    // The TLSA record has the smallest TTL.
    h.world.dns.set_secure(
        "_25._tcp.mx.example.com",
        QueryType::Tlsa,
        DnsAnswer::Tlsa(vec![usable()]),
        30,
    );
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
    let queries = h.world.dns.total();
    h.sim.advance_to(Duration::from_secs(30) - ms(1));
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
    assert_eq!(h.world.dns.total(), queries, "answered from memory");
    h.sim.advance_to(Duration::from_secs(30));
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
    assert_eq!(
        h.world.dns.queries("example.com", QueryType::Mx),
        2,
        "looked up again after 30 s"
    );
}

#[test]
fn a_zero_ttl_is_kept_one_second() {
    let h = Harness::new(DANE);
    publish_dane(&h, "example.com", &[("mx.example.com", Some(usable()))], 0);
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
    h.sim.advance_to(MIN_TTL - ms(1));
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
    assert_eq!(h.world.dns.queries("example.com", QueryType::Mx), 1);
    h.sim.advance_to(MIN_TTL);
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
    assert_eq!(h.world.dns.queries("example.com", QueryType::Mx), 2);
}

#[test]
fn dane_only_does_not_wait_for_mta_sts_whose_result_is_kept() {
    let h = Harness::new(DANE);
    h.world.dns.set_default_latency(ms(5));
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(2000),
    );
    publish_dane(
        &h,
        "example.com",
        &[("mx.example.com", Some(usable()))],
        300,
    );
    let reply = h.answer("example.com");
    assert_eq!(text(&reply), "OK dane-only");
    // MX, then A/AAAA at once, then TLSA: three round trips.
    assert_eq!(h.sim.elapsed(), ms(15));
    assert_eq!(h.cached("example.com"), None, "the fetch is still running");
    h.sim.advance(Duration::from_secs(3));
    let entry = h.cached("example.com").expect("the MTA-STS result is kept");
    assert_eq!(entry.policy_id, "id1");
    // The zone without `dane` answers from it at once.
    let queries = h.world.dns.total();
    assert_eq!(
        answer_in(&h, "plain", "example.com"),
        ok_reply("mx.example.com")
    );
    assert_eq!(h.world.dns.total(), queries);
}

#[test]
fn both_lookups_run_at_once() {
    let h = Harness::new(DANE);
    h.world.dns.set_default_latency(ms(300));
    // MTA-STS: TXT 300 + A 300 + fetch 500 = 1100 ms.
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(500),
    );
    // DANE: MX 300 + A/AAAA 300 + TLSA 300 = 900 ms, and no TLSA: no DANE.
    publish_dane(&h, "example.com", &[("mx.example.com", None)], 300);
    let reply = h.answer("example.com");
    assert_eq!(text(&reply), ok_reply("mx.example.com"));
    assert_eq!(
        h.sim.elapsed(),
        ms(1100),
        "the slower of the two, not the sum"
    );
    // Within both caches' time: from memory.
    let queries = h.world.dns.total();
    assert_eq!(
        answer_in(&h, ZONE, "example.com"),
        ok_reply("mx.example.com")
    );
    assert_eq!(h.world.dns.total(), queries);
}

#[test]
fn a_zone_without_dane_makes_no_dnssec_query() {
    let h = Harness::new(DANE);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(10),
    );
    publish_dane(
        &h,
        "example.com",
        &[("mx.example.com", Some(usable()))],
        300,
    );
    assert_eq!(
        answer_in(&h, "plain", "example.com"),
        ok_reply("mx.example.com")
    );
    assert_eq!(dane_queries(&h), 0);
    assert!(h.world.dns.log().iter().all(|q| !q.dnssec));
    // The same domain in the dane zone: DANE wins.
    assert_eq!(answer_in(&h, ZONE, "example.com"), "OK dane-only");
}

#[test]
fn dane_answers_carry_no_tlsrpt_attributes() {
    let h = Harness::new(DANE);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(10),
    );
    publish_dane(
        &h,
        "example.com",
        &[
            ("mx1.example.com", Some(usable())),
            ("mx2.example.com", None),
        ],
        300,
    );
    assert_eq!(answer_in(&h, "rpt", "example.com"), "OK dane");
    // Once cached, the fast path answers the same.
    assert_eq!(answer_in(&h, "rpt", "example.com"), "OK dane");
}

#[test]
fn a_failure_is_temp_and_not_retried_for_the_retry_delay() {
    let h = Harness::new(DANE);
    publish_dane(
        &h,
        "example.com",
        &[("mx.example.com", Some(usable()))],
        300,
    );
    let tlsa = "_25._tcp.mx.example.com";
    h.world
        .dns
        .set_answer(tlsa, QueryType::Tlsa, DnsAnswer::ServFail);
    let reply = h.answer("example.com");
    let Reply::Temp(why) = &reply else {
        panic!("not TEMP: {reply:?}");
    };
    assert!(why.contains(tlsa) && why.contains("SERVFAIL"), "{why}");
    let mx_queries = h.world.dns.queries("example.com", QueryType::Mx);
    h.world
        .dns
        .set_secure(tlsa, QueryType::Tlsa, DnsAnswer::Tlsa(vec![usable()]), 300);
    h.sim.advance_to(RETRY_AFTER_FAILURE - ms(1));
    assert!(matches!(h.answer("example.com"), Reply::Temp(_)));
    assert_eq!(
        h.world.dns.queries("example.com", QueryType::Mx),
        mx_queries,
        "not retried yet"
    );
    h.sim.advance_to(RETRY_AFTER_FAILURE);
    assert_eq!(text(&h.answer("example.com")), "OK dane-only");
}

#[test]
fn a_dane_lookup_that_times_out_is_temp() {
    let h = Harness::new("default_zone: {dane: true, timeout: 1}");
    publish_dane(
        &h,
        "example.com",
        &[("mx.example.com", Some(usable()))],
        300,
    );
    h.world
        .dns
        .set_answer("_25._tcp.mx.example.com", QueryType::Tlsa, DnsAnswer::Drop);
    let reply = h.answer("example.com");
    assert!(matches!(reply, Reply::Temp(_)), "{reply:?}");
    assert_eq!(h.sim.elapsed(), Duration::from_secs(1));
}

#[test]
fn a_resolver_that_does_not_validate_means_no_dane() {
    let h = Harness::new(DANE);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(10),
    );
    publish_dane(
        &h,
        "example.com",
        &[("mx.example.com", Some(usable()))],
        300,
    );
    h.world.dns.set_not_validating(true);
    assert_eq!(
        answer_in(&h, ZONE, "example.com"),
        ok_reply("mx.example.com")
    );
    // Only the MX was needed to know.
    assert_eq!(h.world.dns.queries_of(QueryType::Tlsa), 0);
}

#[test]
fn null_mx_is_notfound_and_implicit_mx_is_the_domain() {
    let h = Harness::new(DANE);
    let dns = &h.world.dns;
    dns.sign_zone("nomail.example");
    dns.set_secure(
        "nomail.example",
        QueryType::Mx,
        DnsAnswer::Mx(vec![(0, ".".into())]),
        300,
    );
    assert_eq!(answer_in(&h, ZONE, "nomail.example"), "NOTFOUND ");
    // Secure NODATA for MX: the domain is its own host.
    dns.sign_zone("self.example");
    dns.set_secure(
        "self.example",
        QueryType::A,
        DnsAnswer::Addrs(vec![IpAddr::from([192, 0, 2, 1])]),
        300,
    );
    dns.set_secure(
        "_25._tcp.self.example",
        QueryType::Tlsa,
        DnsAnswer::Tlsa(vec![usable()]),
        300,
    );
    assert_eq!(answer_in(&h, ZONE, "self.example"), "OK dane-only");
}
