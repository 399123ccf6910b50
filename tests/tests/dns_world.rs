//! Self-tests of the loopback DNS server with a plain hickory-proto client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use mta_sts_tests::dns::{DnsServer, Rec};

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn udp(addr: SocketAddr, q: &Message) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.send_to(&q.to_vec().unwrap(), addr).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    Some(m)
}

fn tcp(addr: SocketAddr, q: &Message) -> Message {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let bytes = q.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn txts(m: &Message) -> Vec<Vec<String>> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn txt_split_strings_and_several_records() {
    let dns = DnsServer::start();
    dns.set_txt(
        "_mta-sts.example.com",
        &[&["v=STSv1; ", "id=20160831085700Z;"], &["other"]],
    );
    let m = udp(
        dns.addr(),
        &query("_mta-sts.example.com.", RecordType::TXT, None),
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        txts(&m),
        vec![
            vec!["v=STSv1; ".to_string(), "id=20160831085700Z;".to_string()],
            vec!["other".to_string()]
        ]
    );
    // Case-insensitive names, counted per name.
    udp(
        dns.addr(),
        &query("_MTA-STS.Example.COM.", RecordType::TXT, None),
    )
    .unwrap();
    assert_eq!(dns.queries("_mta-sts.example.com"), 2);
    assert_eq!(dns.queries("other.example"), 0);
}

#[test]
fn long_strings_are_split_at_255_bytes() {
    let dns = DnsServer::start();
    let long = "x".repeat(300);
    dns.set_txt("t.example", &[&[&long]]);
    let m = tcp(dns.addr(), &query("t.example.", RecordType::TXT, None));
    let got = txts(&m);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].iter().map(String::len).collect::<Vec<_>>(),
        vec![255, 45]
    );
}

#[test]
fn cname_chain_is_answered_with_target_records() {
    let dns = DnsServer::start();
    dns.set_cname("_mta-sts.alias.example", "_mta-sts.mid.example");
    dns.set_cname("_mta-sts.mid.example", "_mta-sts.real.example");
    dns.set_txt("_mta-sts.real.example", &[&["v=STSv1; id=1;"]]);
    let m = udp(
        dns.addr(),
        &query("_mta-sts.alias.example.", RecordType::TXT, None),
    )
    .unwrap();
    assert_eq!(m.answers.len(), 3);
    assert!(
        matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "_mta-sts.mid.example.")
    );
    assert!(matches!(&m.answers[1].data, RData::CNAME(_)));
    assert_eq!(m.answers[2].name.to_ascii(), "_mta-sts.real.example.");
    assert_eq!(txts(&m), vec![vec!["v=STSv1; id=1;".to_string()]]);
    // A dangling alias is NXDOMAIN with the CNAME kept.
    dns.set_cname("dangling.example", "nowhere.example");
    let m = udp(dns.addr(), &query("dangling.example.", RecordType::A, None)).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn nxdomain_nodata_and_addresses() {
    let dns = DnsServer::start();
    dns.set_a("mta-sts.example.com", &[Ipv4Addr::new(127, 0, 0, 1)]);
    dns.add("mta-sts.example.com", Rec::Aaaa("::1".parse().unwrap()));
    let m = udp(dns.addr(), &query("nope.example.", RecordType::TXT, None)).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = udp(
        dns.addr(),
        &query("mta-sts.example.com.", RecordType::TXT, None),
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "NODATA");
    let m = udp(
        dns.addr(),
        &query("mta-sts.example.com.", RecordType::A, None),
    )
    .unwrap();
    assert!(
        matches!(&m.answers[..], [r] if matches!(r.data, RData::A(a) if a.0 == Ipv4Addr::LOCALHOST))
    );
    let m = udp(
        dns.addr(),
        &query("mta-sts.example.com.", RecordType::AAAA, None),
    )
    .unwrap();
    assert_eq!(m.answers.len(), 1);
    dns.remove("mta-sts.example.com");
    let m = udp(
        dns.addr(),
        &query("mta-sts.example.com.", RecordType::A, None),
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn faults_servfail_refused_silent_and_heal() {
    let dns = DnsServer::start();
    dns.set_txt("_mta-sts.a.example", &[&["v=STSv1; id=1;"]]);
    let q = || query("_mta-sts.a.example.", RecordType::TXT, None);
    dns.servfail("_mta-sts.a.example");
    assert_eq!(
        udp(dns.addr(), &q()).unwrap().metadata.response_code,
        ResponseCode::ServFail
    );
    assert_eq!(
        tcp(dns.addr(), &q()).metadata.response_code,
        ResponseCode::ServFail
    );
    dns.refuse("_mta-sts.a.example");
    assert_eq!(
        udp(dns.addr(), &q()).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    dns.silent("_mta-sts.a.example");
    assert!(udp(dns.addr(), &q()).is_none());
    dns.heal("_mta-sts.a.example");
    assert_eq!(txts(&udp(dns.addr(), &q()).unwrap()).len(), 1);
    assert_eq!(dns.queries("_mta-sts.a.example"), 5);
}

#[test]
fn big_udp_answer_is_truncated_then_whole_over_tcp() {
    let dns = DnsServer::start();
    let records: Vec<String> = (0..8)
        .map(|i| format!("v=STSv1; id={i}{}", "a".repeat(90)))
        .collect();
    let refs: Vec<[&str; 1]> = records.iter().map(|r| [r.as_str()]).collect();
    let recs: Vec<&[&str]> = refs.iter().map(|r| &r[..]).collect();
    dns.set_txt("_mta-sts.big.example", &recs);
    let q = query("_mta-sts.big.example.", RecordType::TXT, None);
    let m = udp(dns.addr(), &q).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let m = tcp(dns.addr(), &q);
    assert!(!m.metadata.truncation);
    assert_eq!(txts(&m).len(), 8);
    // A client announcing a large EDNS payload gets it whole over UDP.
    let m = udp(
        dns.addr(),
        &query("_mta-sts.big.example.", RecordType::TXT, Some(4096)),
    )
    .unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(txts(&m).len(), 8);
    // ...but not when it announces a small one.
    let m = udp(
        dns.addr(),
        &query("_mta-sts.big.example.", RecordType::TXT, Some(512)),
    )
    .unwrap();
    assert!(m.metadata.truncation);
}

#[test]
fn truncate_udp_forces_tcp() {
    let dns = DnsServer::start();
    dns.set_txt("_mta-sts.t.example", &[&["v=STSv1; id=1;"]]);
    dns.truncate_udp("_mta-sts.t.example");
    let q = query("_mta-sts.t.example.", RecordType::TXT, Some(4096));
    let m = udp(dns.addr(), &q).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert_eq!(txts(&tcp(dns.addr(), &q)).len(), 1);
}

#[test]
fn stop_closes_the_port() {
    let mut dns = DnsServer::start();
    let addr = dns.addr();
    dns.set_a("x.example", &[Ipv4Addr::LOCALHOST]);
    assert!(udp(addr, &query("x.example.", RecordType::A, None)).is_some());
    dns.stop();
    assert!(TcpStream::connect(addr).is_err());
    assert!(udp(addr, &query("x.example.", RecordType::A, None)).is_none());
}

#[test]
fn start_on_a_given_address_serves_udp_and_tcp_there() {
    let taken = DnsServer::start();
    assert!(
        DnsServer::start_on(taken.addr()).is_err(),
        "an address in use is an error"
    );
    // A free UDP port whose TCP twin is free too: other tests bind ports meanwhile, so
    // a probed port can be taken by the time it is bound; try a few.
    let (addr, dns) = (0..20)
        .find_map(|_| {
            let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
            let addr = probe.local_addr().ok()?;
            drop(probe);
            DnsServer::start_on(addr).ok().map(|dns| (addr, dns))
        })
        .expect("a free UDP and TCP port pair on 127.0.0.1");
    assert_eq!(dns.addr(), addr);
    dns.set_txt("_mta-sts.fixed.example", &[&["v=STSv1; id=1;"]]);
    let q = query("_mta-sts.fixed.example.", RecordType::TXT, None);
    assert_eq!(txts(&udp(addr, &q).unwrap()), vec![vec!["v=STSv1; id=1;"]]);
    assert_eq!(txts(&tcp(addr, &q)), vec![vec!["v=STSv1; id=1;"]]);
}

/// `query` asking for DNSSEC: the EDNS0 DO bit (`do_bit`) and/or the AD bit (`ad_bit`).
fn dnssec_query(name: &str, rtype: RecordType, do_bit: bool, ad_bit: bool) -> Message {
    let mut m = query(name, rtype, Some(1232));
    m.metadata.authentic_data = ad_bit;
    if let Some(e) = m.edns.as_mut() {
        e.set_dnssec_ok(do_bit);
    }
    m
}

#[test]
fn ad_only_for_secure_answers_and_only_when_asked() {
    let dns = DnsServer::start();
    dns.sign_zone("signed.example");
    dns.set_mx("signed.example", &[(10, "mx.signed.example")], true);
    dns.set_a_with("mx.signed.example", &[Ipv4Addr::LOCALHOST], true);
    dns.set_tlsa(
        "_25._tcp.mx.signed.example",
        &[(3, 1, 1, vec![7; 32])],
        true,
    );
    dns.set_mx("plain.example", &[(10, "mx.plain.example")], false);
    let ad = |name: &str, rtype: RecordType, do_bit: bool, ad_bit: bool| {
        let m = udp(dns.addr(), &dnssec_query(name, rtype, do_bit, ad_bit)).unwrap();
        m.metadata.authentic_data
    };
    // Asked with DO, or with AD (RFC 6840 §5.7): AD on secure answers.
    assert!(ad("signed.example.", RecordType::MX, true, false));
    assert!(ad("signed.example.", RecordType::MX, false, true));
    // Not asked: no AD, even for secure data.
    assert!(!ad("signed.example.", RecordType::MX, false, false));
    assert_eq!(dns.dnssec_queries("signed.example"), 2);
    // Insecure data: never AD.
    assert!(!ad("plain.example.", RecordType::MX, true, true));
    // Negative answers under a signed zone are secure, with an SOA.
    let m = udp(
        dns.addr(),
        &dnssec_query("mx.signed.example.", RecordType::AAAA, true, false),
    )
    .unwrap();
    assert!(m.metadata.authentic_data && m.answers.is_empty());
    assert!(matches!(&m.authorities[..], [r] if matches!(r.data, RData::SOA(_))));
    assert!(ad("nope.signed.example.", RecordType::A, true, false));
    assert!(!ad("nope.plain.example.", RecordType::A, true, false));
    // TLSA and MX records on the wire.
    let m = udp(
        dns.addr(),
        &dnssec_query("_25._tcp.mx.signed.example.", RecordType::TLSA, true, false),
    )
    .unwrap();
    assert!(
        matches!(&m.answers[..], [r] if matches!(&r.data, RData::TLSA(t) if t.cert_data == vec![7; 32]))
    );
    // A resolver that does not validate never sets AD.
    dns.set_validating(false);
    assert!(!ad("signed.example.", RecordType::MX, true, true));
    assert_eq!(dns.queries_of_type(RecordType::MX), 5);
}

#[test]
fn an_insecure_link_in_a_cname_chain_makes_the_answer_insecure() {
    let dns = DnsServer::start();
    dns.sign_zone("example");
    dns.set_cname("mx.example", "real.example");
    dns.set_a_with("real.example", &[Ipv4Addr::LOCALHOST], true);
    let ad = || {
        udp(
            dns.addr(),
            &dnssec_query("mx.example.", RecordType::A, true, false),
        )
        .unwrap()
        .metadata
        .authentic_data
    };
    assert!(!ad(), "the CNAME is not signed");
    dns.set_secure("mx.example", true);
    assert!(ad());
}
