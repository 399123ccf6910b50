//! Key normalisation (docs/ARCHITECTURE.md "The path of one request"): ports, brackets, case, trailing dots,
//! IDNA; keys that are not domain names get `NOTFOUND ` with no network traffic.

use super::{expect, expect_notfound, publish_enforce, secure, start, Bins};
use crate::World;

/// `[host]:port`, `host:port`, uppercase and trailing-dot keys are answered like the plain
/// domain, from one cache entry.
pub fn port_case_and_trailing_dot_keys(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "keys.example", "1", &["mx.keys.example"]);
    let d = start(bins, &world, "");
    let want = secure("mx.keys.example");
    for key in [
        "keys.example",
        "[keys.example]:25",
        "keys.example:587",
        "[keys.example]",
        "KEYS.Example",
        "keys.example.",
        "[KEYS.EXAMPLE.]:25",
    ] {
        expect(&d, "postfix", key, &want);
    }
    assert_eq!(world.dns.queries("_mta-sts.keys.example"), 1);
    assert_eq!(world.requests("keys.example"), 1);
}

/// A leading dot (parent-domain probe) and IP literals: `NOTFOUND ` and no DNS query at all.
pub fn leading_dot_and_ip_literals_no_dns(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "dot.example", "1", &["mx.dot.example"]);
    let d = start(bins, &world, "");
    for key in [
        ".dot.example",
        "[1.2.3.4]",
        "1.2.3.4",
        "[1.2.3.4]:25",
        "[ipv6:2001:db8::1]",
        "[IPv6:2001:db8::1]:25",
    ] {
        expect_notfound(&d, key);
    }
    assert_eq!(world.dns.total_queries(), 0, "log:\n{}", d.log());
    assert_eq!(world.requests("dot.example"), 0);
}

/// Names that are not valid DNS names (empty label, label over 63, name over 253):
/// `NOTFOUND ` with no DNS query.
pub fn invalid_names_no_dns(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    let long_label = format!("{}.example", "a".repeat(64));
    let long_name = format!("{}example", "abcdefghi.".repeat(26));
    for key in ["a..b.example", &long_label, &long_name] {
        expect_notfound(&d, key);
    }
    assert_eq!(world.dns.total_queries(), 0, "log:\n{}", d.log());
}

/// A U-label key is looked up in A-label form (UTS 46).
pub fn idn_key_uses_a_label(bins: &Bins) {
    let world = World::new();
    publish_enforce(
        &world,
        "xn--bcher-kva.example",
        "1",
        &["mx.xn--bcher-kva.example"],
    );
    let d = start(bins, &world, "");
    let want = secure("mx.xn--bcher-kva.example");
    expect(&d, "postfix", "bücher.example", &want);
    expect(&d, "postfix", "xn--bcher-kva.example", &want);
    assert_eq!(world.dns.queries("_mta-sts.xn--bcher-kva.example"), 1);
    assert_eq!(world.requests("xn--bcher-kva.example"), 1);
}
