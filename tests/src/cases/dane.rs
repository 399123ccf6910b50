//! DANE first (RFC 8461 §2, RFC 7672) through Postfix's own `postmap -q`: zones with
//! `dane: true` answer `dane-only` / `dane` for domains with DNSSEC-signed TLSA records,
//! `NOTFOUND ` for a secure null MX, `TEMP` when a lookup fails, and the MTA-STS answer where
//! DANE does not apply; zones without `dane` answer as before. The world's DNS server plays a
//! validating resolver: the AD bit on secure data, only when asked (RFC 6840 §5.7).

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use super::{publish_enforce, secure, start, sts_txt, Bins};
use crate::{postmap_query, run_query, Behaviour, Daemon, PostmapOutcome, World};

/// `default_zone` checks DANE; `plain` does not; `rpt` checks it with TLSRPT attributes on.
const ZONES: &str =
    "default_zone:\n  dane: true\nzones:\n  plain: {}\n  rpt:\n    dane: true\n    tlsrpt: true\n";

/// What an MX host publishes.
#[derive(Clone, Copy, Debug)]
enum Host {
    /// A usable TLSA record (DANE-EE, SPKI, SHA2-256 with 32 bytes), signed.
    Usable,
    /// A signed TLSA record with a usage other than 2 or 3 (PKIX-EE).
    WrongUsage,
    /// A signed DANE-EE SHA2-256 record with a 20-byte digest.
    WrongDigestLength,
    /// No TLSA record (signed NODATA).
    NoTlsa,
    /// A usable TLSA record, but the host's address record is not signed.
    InsecureAddress,
}

fn tlsa(usage: u8, matching: u8, len: usize) -> (u8, u8, u8, Vec<u8>) {
    (usage, 1, matching, vec![0x5a; len])
}

/// A signed `domain` whose MX hosts (`mx1.<domain>`, `mx2.<domain>`, ...) publish `hosts`;
/// with `signed_mx` false the MX records are not signed.
fn dane_domain(world: &World, domain: &str, hosts: &[Host], signed_mx: bool) -> Vec<String> {
    let dns = &world.dns;
    dns.sign_zone(domain);
    let names: Vec<String> = (1..=hosts.len())
        .map(|i| format!("mx{i}.{domain}"))
        .collect();
    let mx: Vec<(u16, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (10 * (i as u16 + 1), n.as_str()))
        .collect();
    dns.set_mx(domain, &mx, signed_mx);
    for (name, host) in names.iter().zip(hosts) {
        let signed_address = !matches!(host, Host::InsecureAddress);
        dns.set_a_with(name, &[Ipv4Addr::LOCALHOST], signed_address);
        let records = match host {
            Host::Usable | Host::InsecureAddress => vec![tlsa(3, 1, 32)],
            Host::WrongUsage => vec![tlsa(1, 1, 32)],
            Host::WrongDigestLength => vec![tlsa(3, 1, 20)],
            Host::NoTlsa => continue,
        };
        dns.set_tlsa(&format!("_25._tcp.{name}"), &records, true);
    }
    names
}

/// `postmap -q key` under `zone` gives `want`; shows the daemon's log if not.
fn postmap(d: &Daemon, zone: &str, key: &str, want: PostmapOutcome) {
    let r = postmap_query(key, &d.map(zone));
    assert_eq!(
        r.outcome(),
        want,
        "{key} in zone {zone}: {r:?}; log:\n{}",
        d.log()
    );
}

fn found(value: &str) -> PostmapOutcome {
    PostmapOutcome::Found(value.to_owned())
}

/// The MTA-STS answer for an enforce policy with `mx` (no `OK `).
fn sts_value(mx: &str) -> String {
    secure(mx).trim_start_matches("OK ").to_owned()
}

/// Every MX host has a usable TLSA record: `dane-only`, logged with each host and why.
pub fn all_hosts_usable(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "dane.example", &[Host::Usable, Host::Usable], true);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "dane.example", found("dane-only"));
    let log = d.log();
    assert!(
        log.contains("dane.example (zone postfix): dane-only")
            && log.contains("mx1.dane.example usable")
            && log.contains("mx2.dane.example usable"),
        "log:\n{log}"
    );
}

/// One host usable, one without TLSA records: `dane`.
pub fn mixed_hosts(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "mixed.example", &[Host::Usable, Host::NoTlsa], true);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "mixed.example", found("dane"));
    assert!(
        d.log().contains("mx2.mixed.example no TLSA records"),
        "log:\n{}",
        d.log()
    );
}

/// Only unusable records (a wrong usage, a wrong digest length): `dane` (Postfix still
/// requires TLS to such hosts), never `dane-only`.
pub fn only_unusable_records(bins: &Bins) {
    let world = World::new();
    dane_domain(
        &world,
        "unusable.example",
        &[Host::WrongUsage, Host::WrongDigestLength],
        true,
    );
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "unusable.example", found("dane"));
}

/// Signed MX records but no TLSA records anywhere: the MTA-STS answer.
pub fn secure_mx_without_tlsa(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "notlsa.example", &[Host::NoTlsa], true);
    publish_enforce(&world, "notlsa.example", "1", &["mx1.notlsa.example"]);
    let d = start(bins, &world, ZONES);
    postmap(
        &d,
        "postfix",
        "notlsa.example",
        found(&sts_value("mx1.notlsa.example")),
    );
    // Without an MTA-STS policy: NOTFOUND (Postfix's own default applies).
    dane_domain(&world, "bare.example", &[Host::NoTlsa], true);
    postmap(&d, "postfix", "bare.example", PostmapOutcome::NotFound);
}

/// Unsigned MX records, TLSA records present (and signed): no DANE, the MTA-STS answer, and
/// no TLSA query at all.
pub fn insecure_mx_with_tlsa(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "insecure.example", &[Host::Usable], false);
    publish_enforce(&world, "insecure.example", "1", &["mx1.insecure.example"]);
    let d = start(bins, &world, ZONES);
    postmap(
        &d,
        "postfix",
        "insecure.example",
        found(&sts_value("mx1.insecure.example")),
    );
    assert_eq!(world.dns.queries_of_type(RecordType::TLSA), 0);
}

/// A host whose address record is not signed has no DANE, whatever its TLSA records: the
/// MTA-STS answer, and its TLSA records are not asked for.
pub fn insecure_host_address(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "addr.example", &[Host::InsecureAddress], true);
    publish_enforce(&world, "addr.example", "1", &["mx1.addr.example"]);
    let d = start(bins, &world, ZONES);
    postmap(
        &d,
        "postfix",
        "addr.example",
        found(&sts_value("mx1.addr.example")),
    );
    assert_eq!(world.dns.queries("_25._tcp.mx1.addr.example"), 0);
    assert!(
        d.log()
            .contains("mx1.addr.example addresses not DNSSEC-signed"),
        "log:\n{}",
        d.log()
    );
}

/// A TLSA lookup that fails (SERVFAIL, as a validating resolver answers bogus data) makes
/// the whole answer `TEMP`, even with an MTA-STS policy; a stalled one too, within the
/// zone's timeout.
pub fn tlsa_servfail_is_temp(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "fail.example", &[Host::Usable, Host::Usable], true);
    publish_enforce(&world, "fail.example", "1", &["*.fail.example"]);
    world.dns.servfail("_25._tcp.mx2.fail.example");
    dane_domain(&world, "stall.example", &[Host::Usable], true);
    world.dns.silent("_25._tcp.mx1.stall.example");
    let d = start(
        bins,
        &world,
        &format!("{ZONES}  slow:\n    dane: true\n    timeout: 1\n"),
    );
    let r = postmap_query("fail.example", &d.map("postfix"));
    match r.outcome() {
        PostmapOutcome::Temp(why) => {
            assert!(why.contains("_25._tcp.mx2.fail.example"), "{why}")
        }
        other => panic!("not TEMP: {other:?}; log:\n{}", d.log()),
    }
    let started = std::time::Instant::now();
    let r = postmap_query("stall.example", &d.map("slow"));
    assert!(
        matches!(r.outcome(), PostmapOutcome::Temp(_)),
        "{r:?}; log:\n{}",
        d.log()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Signed NODATA for MX: the domain itself is the only host (RFC 7672 §2.2.1).
pub fn implicit_mx(bins: &Bins) {
    let world = World::new();
    let dns = &world.dns;
    dns.sign_zone("self.example");
    dns.set_a_with("self.example", &[Ipv4Addr::LOCALHOST], true);
    dns.set_tlsa("_25._tcp.self.example", &[tlsa(3, 1, 32)], true);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "self.example", found("dane-only"));
    assert_eq!(world.dns.queries("self.example"), 3, "MX, A and AAAA");
}

/// A signed null MX (`0 .`, RFC 7505): `NOTFOUND `, even with an MTA-STS policy.
pub fn null_mx(bins: &Bins) {
    let world = World::new();
    world.dns.sign_zone("nomail.example");
    world.dns.set_mx("nomail.example", &[(0, ".")], true);
    publish_enforce(&world, "nomail.example", "1", &["mx.nomail.example"]);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "nomail.example", PostmapOutcome::NotFound);
}

/// A domain with both an MTA-STS enforce policy and DANE: DANE wins in a `dane` zone; the
/// same domain in a zone without `dane` gets the MTA-STS answer; a `tlsrpt: true` zone gets
/// no TLSRPT attributes on a DANE answer.
pub fn dane_wins_over_mta_sts_only_in_dane_zones(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "both.example", &[Host::Usable], true);
    publish_enforce(&world, "both.example", "1", &["mx1.both.example"]);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "both.example", found("dane-only"));
    postmap(&d, "rpt", "both.example", found("dane-only"));
    postmap(
        &d,
        "plain",
        "both.example",
        found(&sts_value("mx1.both.example")),
    );
}

/// A zone without `dane` makes no DNSSEC query at all: a daemon whose zones all lack it
/// answers exactly as before, with no MX or TLSA query and no DO bit.
pub fn zone_without_dane_unchanged(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "both.example", &[Host::Usable], true);
    publish_enforce(&world, "both.example", "1", &["mx1.both.example"]);
    let d = start(bins, &world, "zones:\n  rpt:\n    tlsrpt: true\n");
    postmap(
        &d,
        "postfix",
        "both.example",
        found(&sts_value("mx1.both.example")),
    );
    postmap(&d, "rpt", "both.example", {
        let r = postmap_query("both.example", &d.map("rpt"));
        assert!(r.stdout.contains("policy_type=sts"), "{r:?}");
        r.outcome()
    });
    assert_eq!(world.dns.queries_of_type(RecordType::MX), 0);
    assert_eq!(world.dns.queries_of_type(RecordType::TLSA), 0);
    assert_eq!(world.dns.dnssec_queries("_mta-sts.both.example"), 0);
}

/// 40 requests for one DANE domain over about a second, each on its own connection: one MX
/// query, one A/AAAA pair and one TLSA query per host (joined while running, then from
/// memory for the records' TTL), every reply `dane-only`; then through `postmap` too.
pub fn burst_is_one_query_set(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "burst.example", &[Host::Usable, Host::Usable], true);
    // A slow MTA-STS side: DANE does not wait for it.
    world.add_policy_domain(
        "burst.example",
        &sts_txt("1"),
        Behaviour::Delayed(
            Duration::from_millis(500),
            Box::new(Behaviour::policy(&crate::policy_body(
                "enforce",
                86400,
                &["*.burst.example"],
            ))),
        ),
    );
    let d = start(bins, &world, ZONES);
    let t0 = std::time::Instant::now();
    let threads: Vec<_> = (0..40u64)
        .map(|i| {
            let mut client = d.client();
            std::thread::spawn(move || {
                let at = t0 + Duration::from_millis(25 * i);
                std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
                client.query("postfix", "burst.example")
            })
        })
        .collect();
    for t in threads {
        let reply = t.join().unwrap_or_default();
        assert_eq!(reply, "OK dane-only", "log:\n{}", d.log());
    }
    postmap(&d, "postfix", "burst.example", found("dane-only"));
    let dns = &world.dns;
    assert_eq!(dns.queries_of_type(RecordType::MX), 1, "log:\n{}", d.log());
    assert_eq!(dns.queries_of_type(RecordType::TLSA), 2);
    for host in ["mx1.burst.example", "mx2.burst.example"] {
        assert_eq!(dns.queries(host), 2, "A and AAAA of {host}");
    }
    // The MTA-STS lookup ran once beside it, and its result is kept.
    assert_eq!(dns.queries("_mta-sts.burst.example"), 1);
    assert_eq!(world.requests("burst.example"), 1);
}

/// The daemon's DANE queries ask for DNSSEC (DO and AD), its MTA-STS queries do not; a
/// resolver that does not validate (no AD for anyone) means no DANE: the MTA-STS answer.
pub fn queries_ask_with_do_and_no_ad_means_no_dane(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "do.example", &[Host::Usable], true);
    publish_enforce(&world, "do.example", "1", &["mx1.do.example"]);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "do.example", found("dane-only"));
    let dns = &world.dns;
    for name in ["do.example", "mx1.do.example", "_25._tcp.mx1.do.example"] {
        assert!(dns.queries(name) > 0, "{name}");
        assert_eq!(dns.dnssec_queries(name), dns.queries(name), "{name}");
    }
    assert_eq!(dns.dnssec_queries("_mta-sts.do.example"), 0);
    dane_domain(&world, "nodo.example", &[Host::Usable], true);
    publish_enforce(&world, "nodo.example", "1", &["mx1.nodo.example"]);
    dns.set_validating(false);
    postmap(
        &d,
        "postfix",
        "nodo.example",
        found(&sts_value("mx1.nodo.example")),
    );
}

/// A CNAME'd MX host (RFC 7672 §2.2.2): TLSA records at the expanded name count, and with
/// none there, those at the host's own name.
pub fn cname_host(bins: &Bins) {
    let world = World::new();
    let dns = &world.dns;
    dns.sign_zone("alias.example");
    dns.sign_zone("target.example");
    dns.set_mx("alias.example", &[(10, "mx.alias.example")], true);
    dns.set_cname("mx.alias.example", "real.target.example");
    dns.set_secure("mx.alias.example", true);
    dns.set_a_with("real.target.example", &[Ipv4Addr::LOCALHOST], true);
    dns.set_tlsa("_25._tcp.real.target.example", &[tlsa(3, 1, 32)], true);
    // The original name's TLSA is never needed when the expanded name has records.
    dns.set_tlsa("_25._tcp.mx.alias.example", &[tlsa(1, 1, 32)], true);
    let d = start(bins, &world, ZONES);
    postmap(&d, "postfix", "alias.example", found("dane-only"));
    assert_eq!(dns.queries("_25._tcp.mx.alias.example"), 0);
    // No TLSA at the expanded name: the host's own name decides.
    dns.sign_zone("alias2.example");
    dns.set_mx("alias2.example", &[(10, "mx.alias2.example")], true);
    dns.set_cname("mx.alias2.example", "other.target.example");
    dns.set_secure("mx.alias2.example", true);
    dns.set_a_with("other.target.example", &[Ipv4Addr::LOCALHOST], true);
    dns.set_tlsa("_25._tcp.mx.alias2.example", &[tlsa(3, 1, 32)], true);
    postmap(&d, "postfix", "alias2.example", found("dane-only"));
    assert_eq!(dns.queries("_25._tcp.other.target.example"), 1);
}

/// `mta-sts-query --dane` (or a config whose `default_zone` has `dane: true`) prints the
/// DANE outcome per MX host and the daemon's answer, also in `--json`.
pub fn query_shows_dane(bins: &Bins) {
    let world = World::new();
    dane_domain(&world, "q.example", &[Host::Usable, Host::NoTlsa], true);
    publish_enforce(&world, "q.example", "1", &["*.q.example"]);
    let plain = world.write_config("").display().to_string();
    let (code, out, err) = run_query(bins.query, &["-c", &plain, "--dane", "q.example"]);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "VALID",
        "dane: dane\n",
        "dane_host: mx1.q.example usable",
        "dane_host: mx2.q.example no TLSA records",
        "answer: OK dane\n",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}{err}");
    }
    // Without --dane and without `dane` in the config: the MTA-STS report only.
    let (_, out, _) = run_query(bins.query, &["-c", &plain, "q.example"]);
    assert!(!out.contains("dane"), "{out}");
    let with_dane = world
        .write_config("default_zone:\n  dane: true\n")
        .display()
        .to_string();
    let (code, out, err) = run_query(bins.query, &["-c", &with_dane, "--json", "q.example"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["dane"]["outcome"], "dane", "{v}");
    assert_eq!(v["dane"]["hosts"][0]["host"], "mx1.q.example", "{v}");
    assert_eq!(v["dane"]["hosts"][0]["status"], "usable", "{v}");
    assert_eq!(v["dane"]["hosts"][1]["status"], "no-tlsa", "{v}");
    assert_eq!(v["answer"], "OK dane", "{v}");
    // No DANE: the answer is the MTA-STS one.
    dane_domain(&world, "sts.example", &[Host::NoTlsa], false);
    publish_enforce(&world, "sts.example", "1", &["mx1.sts.example"]);
    let (code, out, err) = run_query(bins.query, &["-c", &with_dane, "--json", "sts.example"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert_eq!(v["dane"]["outcome"], "no-dane", "{v}");
    assert_eq!(v["answer"], secure("mx1.sts.example"), "{v}");
}

/// With `dane: true` somewhere and a nameserver that is not a loopback address, the daemon
/// warns at start (the AD bit is only as good as the path to the resolver); not otherwise.
pub fn warns_about_a_remote_resolver(bins: &Bins) {
    let world = World::new();
    let remote = format!(
        "resolver:\n  nameservers: [\"{}\", \"192.0.2.53\"]\n  ca_file: {}\n  policy_port: {}\n",
        world.dns.addr(),
        crate::daemon::yaml_str(&world.ca_file().display().to_string()),
        world.policy_port(),
    );
    let warning = "is not a loopback address";
    let d = Daemon::start(
        bins.daemon,
        &format!("{remote}default_zone:\n  dane: true\n"),
        &["-v", "debug"],
    );
    assert!(
        d.log().contains("192.0.2.53:53 is not a loopback address"),
        "log:\n{}",
        d.log()
    );
    drop(d);
    let d = Daemon::start(bins.daemon, &remote, &["-v", "debug"]);
    assert!(!d.log().contains(warning), "log:\n{}", d.log());
    drop(d);
    let d = start(bins, &world, ZONES);
    assert!(!d.log().contains(warning), "log:\n{}", d.log());
}
