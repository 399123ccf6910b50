//! The policy file (RFC 8461 §3.2) and how each mode is answered (RFC 8461 §3.2,
//! "Replies for a policy").

use super::{expect, expect_notfound, publish, publish_enforce, secure, start, Bins};
use crate::{policy_body, World};

/// `enforce` with several mx, a wildcard and a duplicate: patterns in policy order,
/// `*.x` written `.x`, duplicates dropped.
pub fn enforce_several_mx_and_wildcard(bins: &Bins) {
    let world = World::new();
    publish_enforce(
        &world,
        "enforce.example",
        "20240101",
        &[
            "mx1.enforce.example",
            "*.backup.example",
            "mx2.enforce.example",
            "mx1.enforce.example",
        ],
    );
    let d = start(bins, &world, "");
    expect(
        &d,
        "postfix",
        "enforce.example",
        &secure("mx1.enforce.example:.backup.example:mx2.enforce.example"),
    );
    assert_eq!(world.requests("enforce.example"), 1);
}

/// `testing` is `NOTFOUND ` unless the zone has `strict_testing`.
pub fn testing_without_strict_testing(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "testing.example",
        "1",
        &policy_body("testing", 86400, &["mx.testing.example"]),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "testing.example");
    assert_eq!(
        world.requests("testing.example"),
        1,
        "the policy is fetched"
    );
}

/// `testing` with `strict_testing: true` is answered like `enforce`.
pub fn testing_with_strict_testing(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "testing.example",
        "1",
        &policy_body(
            "testing",
            86400,
            &["mx.testing.example", "*.testing.example"],
        ),
    );
    let d = start(bins, &world, "default_zone:\n  strict_testing: true\n");
    expect(
        &d,
        "postfix",
        "testing.example",
        &secure("mx.testing.example:.testing.example"),
    );
}

/// `mode: none` (no mx needed) is `NOTFOUND `.
pub fn mode_none(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "none.example",
        "1",
        &policy_body("none", 86400, &[]),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "none.example");
    assert_eq!(world.requests("none.example"), 1);
}

/// LF and CRLF line ends are both accepted, with surrounding whitespace trimmed.
pub fn lf_and_crlf_policies(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "lf.example",
        "1",
        "version: STSv1\nmode: enforce\nmx: mx.lf.example\nmax_age: 86400\n",
    );
    publish(
        &world,
        "crlf.example",
        "1",
        "version: STSv1\r\nmode:   enforce  \r\nmx:  mx.crlf.example \r\nmax_age: 86400\r\n",
    );
    let d = start(bins, &world, "");
    expect(&d, "postfix", "lf.example", &secure("mx.lf.example"));
    expect(&d, "postfix", "crlf.example", &secure("mx.crlf.example"));
}

/// Unknown keys are ignored; a policy without a final line end is accepted.
pub fn unknown_keys_ignored(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "unknown.example",
        "1",
        "version: STSv1\nx-extension: whatever: value\nmode: enforce\nfoo: bar\nmx: mx.unknown.example\nmax_age: 86400",
    );
    let d = start(bins, &world, "");
    expect(
        &d,
        "postfix",
        "unknown.example",
        &secure("mx.unknown.example"),
    );
}

/// A `max_age` above the cap (10 digits) is capped, and the policy still served.
pub fn max_age_over_cap_still_served(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "cap.example",
        "1",
        &policy_body("enforce", 9_999_999_999, &["mx.cap.example"]),
    );
    let d = start(bins, &world, "");
    expect(&d, "postfix", "cap.example", &secure("mx.cap.example"));
}

/// No `max_age`: invalid policy.
pub fn missing_max_age(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "noage.example",
        "1",
        "version: STSv1\nmode: enforce\nmx: mx.noage.example\n",
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "noage.example");
    assert_eq!(world.requests("noage.example"), 1);
}

/// `enforce` without any `mx`: invalid policy.
pub fn enforce_without_mx(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "nomx.example",
        "1",
        &policy_body("enforce", 86400, &[]),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "nomx.example");
}

/// A mode outside `enforce|testing|none`: invalid policy.
pub fn bad_mode(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "badmode.example",
        "1",
        &policy_body("strict", 86400, &["mx.badmode.example"]),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "badmode.example");
}

/// A version other than `STSv1` in the policy file: invalid policy.
pub fn bad_policy_version(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "badver.example",
        "1",
        "version: STSv2\nmode: enforce\nmx: mx.badver.example\nmax_age: 86400\n",
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "badver.example");
}

/// An IP literal as `mx` makes the policy invalid.
pub fn ip_literal_mx_invalid(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "ipmx.example", "1", &["192.0.2.1"]);
    let d = start(bins, &world, "");
    expect_notfound(&d, "ipmx.example");
}
