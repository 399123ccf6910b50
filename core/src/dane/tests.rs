//! The DANE decision (RFC 7672 §2.2, RFC 8461 §2) step by step, from DNS
//! results to the verdict, the per-host reasons and the TTL.

use super::*;
use crate::dns::DnsFailure;
use crate::dns::{Answer, Answered, DnsError, MxRecord, NoRecordsKind, QueryType, TlsaRecord};
use crate::resolve::{dane_class, Class};
use std::net::IpAddr;
use std::time::Duration;

fn answered(answer: Answer, authentic: bool, ttl: u32) -> steps::Lookup {
    Ok(Answered {
        answer,
        authentic,
        ttl,
        canonical: None,
    })
}

fn secure(answer: Answer, ttl: u32) -> steps::Lookup {
    answered(answer, true, ttl)
}

fn servfail() -> steps::Lookup {
    Err(DnsFailure::Server(DnsError::ServFail))
}

fn mx(list: &[(u16, &str)]) -> Answer {
    Answer::Mx(
        list.iter()
            .map(|(preference, exchange)| MxRecord {
                preference: *preference,
                exchange: (*exchange).to_owned(),
            })
            .collect(),
    )
}

fn addr() -> Answer {
    Answer::Addresses(vec![IpAddr::from([192, 0, 2, 25])])
}

fn nodata() -> Answer {
    Answer::NoRecords(NoRecordsKind::NoData)
}

fn nxdomain() -> Answer {
    Answer::NoRecords(NoRecordsKind::NxDomain)
}

fn tlsa(usage: u8, selector: u8, matching: u8, len: usize) -> TlsaRecord {
    TlsaRecord {
        usage,
        selector,
        matching,
        data: vec![0x5a; len],
    }
}

fn plan(step: MxStep) -> HostPlan {
    match step {
        MxStep::Hosts(plan) => plan,
        MxStep::Done(r) => panic!("decided: {r}"),
    }
}

fn decided(step: MxStep) -> DaneResult {
    match step {
        MxStep::Done(r) => r,
        MxStep::Hosts(p) => panic!("hosts: {p:?}"),
    }
}

#[test]
fn mx_failures_are_temp() {
    for failure in [
        DnsFailure::Server(DnsError::ServFail),
        DnsFailure::Timeout,
        DnsFailure::Transport("refused".into()),
    ] {
        let r = decided(after_mx("example.com", Err(failure.clone())));
        assert_eq!(
            r.verdict,
            Verdict::Temp(DaneFailure::Dns {
                name: "example.com".into(),
                qtype: QueryType::Mx,
                cause: failure,
            })
        );
        assert!(!matches!(r.verdict, Verdict::Temp(ref f) if f.is_local()));
    }
    let local = decided(after_mx("example.com", Err(DnsFailure::NoNameservers)));
    assert!(matches!(local.verdict, Verdict::Temp(ref f) if f.is_local()));
    // An answer of the wrong type is a server fault, not "no DANE".
    let odd = decided(after_mx("example.com", secure(addr(), 60)));
    assert_eq!(odd.verdict.label(), "temp");
}

#[test]
fn insecure_mx_or_nxdomain_is_no_dane() {
    let r = decided(after_mx(
        "example.com",
        answered(mx(&[(10, "mx.example.com")]), false, 300),
    ));
    assert_eq!(r.verdict, Verdict::NoDane(NoDane::MxInsecure));
    assert_eq!(r.ttl, Duration::from_secs(300));
    assert!(!r.verdict.decides());
    for authentic in [true, false] {
        let r = decided(after_mx("example.com", answered(nxdomain(), authentic, 30)));
        assert_eq!(r.verdict, Verdict::NoDane(NoDane::NxDomain));
        assert_eq!(r.ttl, Duration::from_secs(30));
    }
    // An insecure NODATA is no DANE either (no implicit MX without DNSSEC).
    let r = decided(after_mx("example.com", answered(nodata(), false, 60)));
    assert_eq!(r.verdict, Verdict::NoDane(NoDane::MxInsecure));
}

#[test]
fn secure_nodata_is_an_implicit_mx() {
    let p = plan(after_mx("example.com", secure(nodata(), 120)));
    assert_eq!(p.hosts, vec!["example.com".to_owned()]);
    assert!(p.implicit_mx && !p.more_hosts);
    assert_eq!(p.ttl.duration(), Duration::from_secs(120));
}

#[test]
fn secure_null_mx_is_notfound() {
    let r = decided(after_mx("example.com", secure(mx(&[(0, ".")]), 60)));
    assert_eq!(r.verdict, Verdict::NullMx);
    assert!(r.verdict.decides());
    assert_eq!(dane_class(&r.verdict), Some(Class::NullMx));
    // A null MX beside real ones is ignored.
    let p = plan(after_mx(
        "example.com",
        secure(mx(&[(0, "."), (10, "mx.example.com")]), 60),
    ));
    assert_eq!(p.hosts, vec!["mx.example.com".to_owned()]);
}

#[test]
fn hosts_in_preference_order_once_and_bounded() {
    let p = plan(after_mx(
        "example.com",
        secure(
            mx(&[
                (20, "b.example"),
                (10, "a.example"),
                (20, "a.example"),
                (5, "c.example"),
            ]),
            60,
        ),
    ));
    assert_eq!(p.hosts, vec!["c.example", "a.example", "b.example"]);
    assert!(!p.implicit_mx && !p.more_hosts);
    let many: Vec<(u16, String)> = (0..20).map(|i| (i, format!("mx{i}.example"))).collect();
    let refs: Vec<(u16, &str)> = many.iter().map(|(p, h)| (*p, h.as_str())).collect();
    let p = plan(after_mx("example.com", secure(mx(&refs), 60)));
    assert_eq!(p.hosts.len(), MAX_MX_HOSTS);
    assert!(p.more_hosts);
}

#[test]
fn address_failures_are_temp_and_insecure_addresses_no_dane() {
    let mut ttl = Ttl::new();
    let err = after_addresses("mx.example", servfail(), secure(nodata(), 60), &mut ttl);
    assert_eq!(
        err,
        Err(DaneFailure::Dns {
            name: "mx.example".into(),
            qtype: QueryType::A,
            cause: DnsFailure::Server(DnsError::ServFail),
        })
    );
    let err = after_addresses(
        "mx.example",
        secure(addr(), 60),
        Err(DnsFailure::Timeout),
        &mut ttl,
    );
    assert!(matches!(
        err,
        Err(DaneFailure::Dns {
            qtype: QueryType::Aaaa,
            ..
        })
    ));
    for (a, aaaa) in [
        (answered(addr(), false, 60), secure(nodata(), 60)),
        (secure(addr(), 60), answered(nodata(), false, 60)),
    ] {
        let step = after_addresses("mx.example", a, aaaa, &mut ttl);
        assert_eq!(step, Ok(AddressStep::Done(HostDane::AddressesInsecure)));
    }
    let step = after_addresses(
        "mx.example",
        secure(nxdomain(), 60),
        secure(nxdomain(), 60),
        &mut ttl,
    );
    assert_eq!(step, Ok(AddressStep::Done(HostDane::NoAddress)));
}

#[test]
fn secure_addresses_ask_tlsa_at_the_expanded_name_then_the_host() {
    let mut ttl = Ttl::new();
    let step = after_addresses(
        "mx.example",
        secure(addr(), 200),
        secure(nodata(), 100),
        &mut ttl,
    );
    assert_eq!(
        step,
        Ok(AddressStep::Tlsa(vec!["_25._tcp.mx.example".to_owned()]))
    );
    assert_eq!(ttl.duration(), Duration::from_secs(100));
    // A CNAME'd host (RFC 7672 §2.2.2): the expanded name first.
    let cnamed = Ok(Answered {
        answer: addr(),
        authentic: true,
        ttl: 60,
        canonical: Some("real.example.net".into()),
    });
    let step = after_addresses("mx.example", cnamed, secure(nodata(), 60), &mut ttl);
    assert_eq!(
        step,
        Ok(AddressStep::Tlsa(vec![
            "_25._tcp.real.example.net".to_owned(),
            "_25._tcp.mx.example".to_owned()
        ]))
    );
}

#[test]
fn tlsa_answers() {
    let mut ttl = Ttl::new();
    let name = "_25._tcp.mx.example";
    let usable = secure(Answer::Tlsa(vec![tlsa(3, 1, 1, 32), tlsa(0, 0, 1, 32)]), 60);
    assert_eq!(
        after_tlsa(name, usable, true, &mut ttl),
        Ok(TlsaStep::Done(HostDane::Usable {
            tlsa_name: name.into(),
            usable: 1,
            total: 2
        }))
    );
    let unusable = secure(Answer::Tlsa(vec![tlsa(1, 0, 1, 32), tlsa(3, 1, 1, 20)]), 60);
    assert_eq!(
        after_tlsa(name, unusable, true, &mut ttl),
        Ok(TlsaStep::Done(HostDane::Unusable {
            tlsa_name: name.into(),
            total: 2
        }))
    );
    let insecure = answered(Answer::Tlsa(vec![tlsa(3, 1, 1, 32)]), false, 60);
    assert_eq!(
        after_tlsa(name, insecure, true, &mut ttl),
        Ok(TlsaStep::Done(HostDane::TlsaInsecure))
    );
    for none in [nodata(), nxdomain()] {
        assert_eq!(
            after_tlsa(name, secure(none.clone(), 60), true, &mut ttl),
            Ok(TlsaStep::Done(HostDane::NoTlsa))
        );
        // Not the last name: the next one is asked.
        assert_eq!(
            after_tlsa(name, secure(none, 60), false, &mut ttl),
            Ok(TlsaStep::TryNext)
        );
    }
    assert!(matches!(
        after_tlsa(name, servfail(), true, &mut ttl),
        Err(DaneFailure::Dns {
            qtype: QueryType::Tlsa,
            ..
        })
    ));
}

#[test]
fn usable_records() {
    // usage 2 or 3, selector 0 or 1, matching 0 (any data), 1 (32 bytes), 2 (64 bytes).
    for usage in 0..=4u8 {
        for selector in 0..=2u8 {
            for (matching, len, digest_ok) in [
                (0, 300, true),
                (0, 0, false),
                (1, 32, true),
                (1, 31, false),
                (1, 64, false),
                (2, 64, true),
                (2, 32, false),
                (3, 32, false),
            ] {
                let want = matches!(usage, 2 | 3) && selector <= 1 && digest_ok;
                let r = tlsa(usage, selector, matching, len);
                assert_eq!(is_usable(&r), want, "{r:?}");
            }
        }
    }
}

fn host(name: &str, dane: HostDane, ttl_secs: u32) -> (HostReport, Ttl) {
    let mut ttl = Ttl::new();
    ttl.note(ttl_secs);
    (
        HostReport {
            host: name.into(),
            dane,
        },
        ttl,
    )
}

fn usable(host: &str) -> HostDane {
    HostDane::Usable {
        tlsa_name: format!("_25._tcp.{host}"),
        usable: 1,
        total: 1,
    }
}

#[test]
fn verdict_from_the_hosts() {
    let p = plan(after_mx(
        "example.com",
        secure(mx(&[(10, "a.example"), (20, "b.example")]), 600),
    ));
    let all = conclude(
        &p,
        vec![
            host("a.example", usable("a.example"), 300),
            host("b.example", usable("b.example"), 900),
        ],
    );
    assert_eq!(all.verdict, Verdict::DaneOnly);
    assert_eq!(all.ttl, Duration::from_secs(300));
    assert_eq!(
        all.to_string(),
        "dane-only: a.example usable (1 of 1 TLSA records at _25._tcp.a.example); \
         b.example usable (1 of 1 TLSA records at _25._tcp.b.example)"
    );
    assert_eq!(dane_class(&all.verdict), Some(Class::DaneOnly));

    let mixed = conclude(
        &p,
        vec![
            host("a.example", usable("a.example"), 300),
            host("b.example", HostDane::NoTlsa, 300),
        ],
    );
    assert_eq!(mixed.verdict, Verdict::Dane);
    assert!(
        mixed.to_string().contains("b.example no TLSA records"),
        "{mixed}"
    );
    assert_eq!(dane_class(&mixed.verdict), Some(Class::Dane));

    let unusable = HostDane::Unusable {
        tlsa_name: "_25._tcp.a.example".into(),
        total: 2,
    };
    let only_unusable = conclude(
        &p,
        vec![
            host("a.example", unusable.clone(), 300),
            host("b.example", unusable, 300),
        ],
    );
    assert_eq!(only_unusable.verdict, Verdict::Dane);

    let none = conclude(
        &p,
        vec![
            host("a.example", HostDane::AddressesInsecure, 300),
            host("b.example", HostDane::TlsaInsecure, 300),
        ],
    );
    assert_eq!(none.verdict, Verdict::NoDane(NoDane::NoTlsa));
    assert!(!none.verdict.decides());
    assert_eq!(dane_class(&none.verdict), None);

    // Hosts left unchecked: never dane-only.
    let mut more = p.clone();
    more.more_hosts = true;
    let r = conclude(
        &more,
        vec![
            host("a.example", usable("a.example"), 300),
            host("b.example", usable("b.example"), 300),
        ],
    );
    assert_eq!(r.verdict, Verdict::Dane);
}

#[test]
fn ttl_is_the_smallest_within_bounds() {
    let mut t = Ttl::new();
    assert_eq!(t.duration(), MAX_TTL);
    t.note(86_400);
    assert_eq!(t.duration(), MAX_TTL);
    t.note(42);
    t.note(600);
    assert_eq!(t.duration(), Duration::from_secs(42));
    t.note(0);
    assert_eq!(t.duration(), MIN_TTL);
}

#[test]
fn tlsa_names() {
    assert_eq!(
        tlsa_name("mx.example").as_deref(),
        Some("_25._tcp.mx.example")
    );
    assert_eq!(tlsa_name("bad name"), None);
    assert_eq!(
        tlsa_name(&format!("{}.example", "a".repeat(60)).repeat(4)),
        None
    );
}

#[test]
fn warning_for_a_remote_resolver_only_with_dane() {
    use crate::config::Config;
    let on = Config::from_yaml("zones: {d: {dane: true}}")
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let off = Config::default();
    let local: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:53".parse().unwrap_or_else(|e| panic!("{e}")),
        "[::1]:53".parse().unwrap_or_else(|e| panic!("{e}")),
    ];
    let remote: std::net::SocketAddr = "192.0.2.53:53".parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nameserver_warning(&on, &local), None);
    assert_eq!(nameserver_warning(&off, &[remote]), None);
    let w = nameserver_warning(&on, &[local[0], remote]).unwrap_or_default();
    assert!(
        w.contains("192.0.2.53:53") && !w.contains("127.0.0.1"),
        "{w}"
    );
}
