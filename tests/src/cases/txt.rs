//! The `_mta-sts` TXT record (RFC 8461 §3.1) and DNS failures (RFC 8461 §3.1).

use std::time::{Duration, Instant};

use super::{expect, expect_notfound, publish_enforce, secure, start, sts_txt, Bins, NOTFOUND};
use crate::World;

/// NXDOMAIN at `_mta-sts.<d>`: no policy, and no policy fetch.
pub fn no_txt_nxdomain(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "nxdomain.example", "1", &["mx.nxdomain.example"]);
    world.dns.remove("_mta-sts.nxdomain.example");
    let d = start(bins, &world, "");
    expect_notfound(&d, "nxdomain.example");
    assert!(world.dns.queries("_mta-sts.nxdomain.example") >= 1);
    assert_eq!(world.requests("nxdomain.example"), 0);
}

/// TXT records but none beginning with `v=STSv1`: no policy, no fetch.
pub fn txt_without_sts_record(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "other.example", "1", &["mx.other.example"]);
    world.set_txt("other.example", &["v=spf1 -all", "hello world"]);
    let d = start(bins, &world, "");
    expect_notfound(&d, "other.example");
    assert_eq!(world.requests("other.example"), 0);
}

/// Two `v=STSv1` records: exactly one must remain, so no policy.
pub fn two_sts_records(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "two.example", "1", &["mx.two.example"]);
    world.set_txt("two.example", &[&sts_txt("1"), &sts_txt("2")]);
    let d = start(bins, &world, "");
    expect_notfound(&d, "two.example");
    assert_eq!(world.requests("two.example"), 0);
}

/// `v=STSv2`: not an STS record.
pub fn bad_version(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "v2.example", "1", &["mx.v2.example"]);
    world.set_txt("v2.example", &["v=STSv2; id=1"]);
    let d = start(bins, &world, "");
    expect_notfound(&d, "v2.example");
    assert_eq!(world.requests("v2.example"), 0);
}

/// `v=STSv1` without `id`: invalid record.
pub fn missing_id(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "noid.example", "1", &["mx.noid.example"]);
    world.set_txt("noid.example", &["v=STSv1;"]);
    let d = start(bins, &world, "");
    expect_notfound(&d, "noid.example");
    assert_eq!(world.requests("noid.example"), 0);
}

/// An `id` with characters other than letters and digits: invalid record.
pub fn bad_id_characters(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "badid.example", "1", &["mx.badid.example"]);
    world.set_txt("badid.example", &["v=STSv1; id=2024-01-01"]);
    let d = start(bins, &world, "");
    expect_notfound(&d, "badid.example");
}

/// Extension fields and extra whitespace around `;` are accepted.
pub fn extension_fields_accepted(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "ext.example", "1", &["mx.ext.example"]);
    world.set_txt("ext.example", &["v=STSv1 ;  id=abc123 ; ext=foo;"]);
    let d = start(bins, &world, "");
    expect(&d, "postfix", "ext.example", &secure("mx.ext.example"));
}

/// `_mta-sts.<d>` is a CNAME to the record of a hosting provider: followed.
pub fn cname_txt_followed(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "alias.example", "1", &["mx.alias.example"]);
    world.dns.remove("_mta-sts.alias.example");
    world
        .dns
        .set_cname("_mta-sts.alias.example", "sts.provider.example");
    world
        .dns
        .set_txt("sts.provider.example", &[&[&sts_txt("7")]]);
    let d = start(bins, &world, "");
    expect(&d, "postfix", "alias.example", &secure("mx.alias.example"));
}

/// An unrelated TXT record beside the STS one is ignored.
pub fn unrelated_txt_beside_sts(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "mixed.example", "1", &["mx.mixed.example"]);
    world.set_txt(
        "mixed.example",
        &["site-verification=abcdef", &sts_txt("1"), "v=spf1 -all"],
    );
    let d = start(bins, &world, "");
    expect(&d, "postfix", "mixed.example", &secure("mx.mixed.example"));
}

/// One TXT record made of several character-strings is concatenated.
pub fn txt_split_in_several_strings(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "split.example", "1", &["mx.split.example"]);
    world.dns.set_txt(
        "_mta-sts.split.example",
        &[&["v=STS", "v1; id=2024", "0101;"]],
    );
    let d = start(bins, &world, "");
    expect(&d, "postfix", "split.example", &secure("mx.split.example"));
}

/// The nameserver is down: `NOTFOUND ` within the zone timeout, no hang.
pub fn dns_server_down(bins: &Bins) {
    let mut world = World::new();
    publish_enforce(&world, "down.example", "1", &["mx.down.example"]);
    world.dns.stop();
    let d = start(bins, &world, "default_zone:\n  timeout: 1\n");
    let t = Instant::now();
    expect_notfound(&d, "down.example");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(world.requests("down.example"), 0);
}

/// SERVFAIL for the TXT name: a fetch error, answered `NOTFOUND `.
pub fn dns_servfail(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "servfail.example", "1", &["mx.servfail.example"]);
    world.dns.servfail("_mta-sts.servfail.example");
    let d = start(bins, &world, "default_zone:\n  timeout: 2\n");
    let t = Instant::now();
    expect_notfound(&d, "servfail.example");
    assert!(t.elapsed() < Duration::from_millis(3500));
    assert_eq!(world.requests("servfail.example"), 0);
}

/// A truncated UDP answer is retried over TCP (RFC 7766) and the policy found.
pub fn tcp_fallback_on_truncation(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "trunc.example", "1", &["mx.trunc.example"]);
    world.dns.truncate_udp("_mta-sts.trunc.example");
    let d = start(bins, &world, "");
    expect(&d, "postfix", "trunc.example", &secure("mx.trunc.example"));
    assert!(
        world.dns.queries("_mta-sts.trunc.example") >= 2,
        "UDP then TCP"
    );
}

/// A very long TXT record (over 512 bytes, more than one 255-byte string) is read whole.
pub fn long_txt_record(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "long.example", "1", &["mx.long.example"]);
    let padding = "x".repeat(700);
    world.set_txt("long.example", &[&format!("v=STSv1; id=42; ext={padding}")]);
    let d = start(bins, &world, "");
    let reply = super::lookup(&d, "postfix", "long.example");
    assert_ne!(reply, NOTFOUND, "log:\n{}", d.log());
    assert_eq!(reply, secure("mx.long.example"));
}
