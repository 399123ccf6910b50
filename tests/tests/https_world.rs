//! Self-tests of the World's HTTPS policy servers with a plain native-tls client.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mta_sts_tests::{policy_body, Behaviour, CertProblem, Encoding, World};
use native_tls::{Certificate, TlsConnector, TlsStream};

fn connector(world: &World) -> TlsConnector {
    TlsConnector::builder()
        .add_root_certificate(Certificate::from_pem(world.ca.ca_pem().as_bytes()).unwrap())
        .disable_built_in_roots(true)
        .build()
        .unwrap()
}

fn connect(world: &World, ip: Ipv4Addr, host: &str) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(SocketAddr::from((ip, world.policy_port()))).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    connector(world)
        .connect(host, tcp)
        .map_err(|e| e.to_string())
}

fn get(world: &World, host: &str) -> String {
    let mut tls = connect(world, Ipv4Addr::LOCALHOST, host).unwrap();
    write!(
        tls,
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn policy_is_served_with_content_type_and_framings() {
    let world = World::new();
    let body = policy_body("enforce", 86400, &["mx1.example.com", "*.example.net"]);
    world.add_policy_domain("example.com", "v=STSv1; id=1;", Behaviour::policy(&body));
    let resp = get(&world, "mta-sts.example.com");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Content-Type: text/plain\r\n"));
    assert!(resp.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert!(resp.ends_with(&format!("\r\n\r\n{body}")));
    assert_eq!(world.requests("example.com"), 1);
    let head = world.last_request("mta-sts.example.com").unwrap();
    assert!(head.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1"));

    world.set_behaviour(
        "example.com",
        Behaviour::Policy {
            body: body.clone(),
            content_type: Some("text/html; charset=utf-8".into()),
            encoding: Encoding::Chunked,
        },
    );
    let resp = get(&world, "mta-sts.example.com");
    assert!(resp.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(resp.contains("Transfer-Encoding: chunked\r\n\r\n10\r\nversion: STSv1\nm\r\n"));
    assert!(resp.ends_with("\r\n0\r\n\r\n"));

    world.set_behaviour(
        "example.com",
        Behaviour::Policy {
            body: body.clone(),
            content_type: None,
            encoding: Encoding::Close,
        },
    );
    let resp = get(&world, "mta-sts.example.com");
    assert!(!resp.contains("Content-Length") && resp.ends_with(&body));
    assert_eq!(world.requests("mta-sts.example.com"), 3);
}

#[test]
fn status_redirect_raw_and_unknown_host() {
    let world = World::new();
    world.add_policy_domain(
        "a.example",
        "v=STSv1; id=1;",
        Behaviour::Status(404, "gone".into()),
    );
    assert!(get(&world, "mta-sts.a.example").starts_with("HTTP/1.1 404 Not Found\r\n"));
    world.set_behaviour(
        "a.example",
        Behaviour::Redirect("https://elsewhere/".into()),
    );
    let resp = get(&world, "mta-sts.a.example");
    assert!(resp.starts_with("HTTP/1.1 301") && resp.contains("Location: https://elsewhere/\r\n"));
    world.set_behaviour("a.example", Behaviour::Raw(b"garbage\r\n".to_vec()));
    assert_eq!(get(&world, "mta-sts.a.example"), "garbage\r\n");
    // The certificate covers every domain added so far, even after re-issuing.
    world.add_policy_domain("b.example", "v=STSv1; id=2;", Behaviour::policy("x"));
    assert!(get(&world, "mta-sts.a.example").starts_with("garbage"));
    assert!(get(&world, "mta-sts.b.example").ends_with("\r\n\r\nx"));
}

#[test]
fn dns_records_are_published() {
    let world = World::new();
    world.add_policy_domain("example.org", "v=STSv1; id=7;", Behaviour::policy("x"));
    world.policy_host_with_cert("example.org", CertProblem::Expired);
    world.set_txt("other.example", &["v=STSv1; id=1;", "v=STSv1; id=2;"]);
    let cfg = world.config_yaml("cache_grace: 0");
    assert!(cfg.contains(&format!("nameservers: [\"{}\"]", world.dns.addr())));
    assert!(cfg.contains(&format!("policy_port: {}\n", world.policy_port())));
    assert!(cfg.contains(&format!("ca_file: \"{}\"", world.ca_file().display())));
    assert!(cfg.ends_with("cache_grace: 0\n"));
    assert_eq!(
        std::fs::read_to_string(world.write_config("")).unwrap(),
        world.config_yaml("")
    );
    assert!(std::fs::read_to_string(world.ca_file())
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert_eq!(
        world.server_ip(Some(CertProblem::Expired)),
        Ipv4Addr::new(127, 0, 0, 4)
    );
}

#[test]
fn bad_certificates_fail_validation() {
    let world = World::new();
    world.add_policy_domain("good.example", "v=STSv1; id=1;", Behaviour::policy("x"));
    for problem in [
        CertProblem::WrongName,
        CertProblem::Untrusted,
        CertProblem::Expired,
    ] {
        world.add_policy_domain("bad.example", "v=STSv1; id=1;", Behaviour::policy("x"));
        world.policy_host_with_cert("bad.example", problem);
        let ip = world.server_ip(Some(problem));
        let err = connect(&world, ip, "mta-sts.bad.example").err();
        assert!(err.is_some(), "{problem:?} must fail validation");
        // The same server with the problem removed from the client side proves it is the
        // certificate that fails, not the server.
        let lax = TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let tcp = TcpStream::connect(SocketAddr::from((ip, world.policy_port()))).unwrap();
        let mut tls = lax.connect("mta-sts.bad.example", tcp).unwrap();
        write!(tls, "GET / HTTP/1.1\r\nHost: mta-sts.bad.example\r\n\r\n").unwrap();
        let mut out = String::new();
        tls.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("\r\n\r\nx"), "{problem:?}: {out}");
    }
    assert!(connect(&world, Ipv4Addr::LOCALHOST, "mta-sts.good.example").is_ok());
    world.policy_host_valid("bad.example");
    assert!(connect(&world, Ipv4Addr::LOCALHOST, "mta-sts.bad.example").is_ok());
}

#[test]
fn hang_really_hangs_and_reset_resets() {
    let world = World::new();
    world.add_policy_domain("slow.example", "v=STSv1; id=1;", Behaviour::Hang);
    let mut tls = connect(&world, Ipv4Addr::LOCALHOST, "mta-sts.slow.example").unwrap();
    tls.get_ref()
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    write!(tls, "GET / HTTP/1.1\r\nHost: mta-sts.slow.example\r\n\r\n").unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let err = tls.read(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert!(start.elapsed() >= Duration::from_millis(350));
    assert_eq!(world.requests("slow.example"), 1);

    world.set_behaviour("slow.example", Behaviour::Reset);
    let mut tls = connect(&world, Ipv4Addr::LOCALHOST, "mta-sts.slow.example").unwrap();
    write!(tls, "GET / HTTP/1.1\r\nHost: mta-sts.slow.example\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let r = tls.read_to_end(&mut out);
    assert!(out.is_empty());
    assert!(
        r.is_err(),
        "RST surfaces as an error, not a clean close: {r:?}"
    );
}

#[test]
fn dropping_the_world_closes_everything() {
    let world = World::new();
    world.add_policy_domain("slow.example", "v=STSv1; id=1;", Behaviour::Hang);
    let port = world.policy_port();
    let mut tls = connect(&world, Ipv4Addr::LOCALHOST, "mta-sts.slow.example").unwrap();
    write!(tls, "GET / HTTP/1.1\r\nHost: mta-sts.slow.example\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    drop(world);
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut buf = [0u8; 8];
    assert!(matches!(tls.read(&mut buf), Ok(0) | Err(_)));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// The A record of `host` in the world's DNS.
fn a_record(world: &World, host: &str) -> Option<Ipv4Addr> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii(format!("{host}.")).unwrap(),
        RecordType::A,
    ));
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&q.to_vec().unwrap(), world.dns.addr()).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    Message::from_vec(&buf[..n])
        .unwrap()
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
}

fn get_at(world: &World, ip: Ipv4Addr, host: &str) -> Result<String, String> {
    let mut tls = connect(world, ip, host)?;
    write!(
        tls,
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).unwrap();
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn many_domains_share_one_certificate_on_their_own_address() {
    let world = World::new();
    let first: Vec<String> = (0..3).map(|i| format!("bulk{i}.example")).collect();
    world.add_policy_domains(&first, "v=STSv1; id=9;", Behaviour::policy("first batch\n"));
    let second = vec!["other.example".to_string()];
    world.add_policy_domains(
        &second,
        "v=STSv1; id=9;",
        Behaviour::policy("second batch\n"),
    );

    let ip = a_record(&world, "mta-sts.bulk0.example").expect("A record");
    assert_ne!(ip, Ipv4Addr::LOCALHOST, "a server of its own");
    for d in &first {
        let host = format!("mta-sts.{d}");
        assert_eq!(a_record(&world, &host), Some(ip), "one server per batch");
        let reply = get_at(&world, ip, &host).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("first batch\n"), "{reply}");
    }
    assert_eq!(world.requests("bulk1.example"), 1);

    let other = a_record(&world, "mta-sts.other.example").expect("A record");
    assert_ne!(other, ip, "each batch on its own address");
    assert!(get_at(&world, other, "mta-sts.other.example")
        .unwrap()
        .ends_with("second batch\n"));
    let err = get_at(&world, ip, "mta-sts.other.example").unwrap_err();
    assert!(!err.is_empty(), "the first certificate does not cover it");

    world.set_behaviour("bulk2.example", Behaviour::Status(503, "down\n".into()));
    let reply = get_at(&world, ip, "mta-sts.bulk2.example").unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
}
