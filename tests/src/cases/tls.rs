//! Certificate validation of the policy host (RFC 8461 §3.3: a valid PKIX certificate for
//! `mta-sts.<d>`); every problem makes the fetch fail.

use super::{expect, expect_notfound, publish_enforce, secure, start, Bins};
use crate::{CertProblem, World};

fn bad_certificate(bins: &Bins, domain: &str, problem: CertProblem) {
    let world = World::new();
    publish_enforce(&world, domain, "1", &[&format!("mx.{domain}")]);
    world.policy_host_with_cert(domain, problem);
    let d = start(bins, &world, "");
    expect_notfound(&d, domain);
}

/// A certificate for another name (no `mta-sts.<d>`): rejected.
pub fn wrong_name_certificate(bins: &Bins) {
    bad_certificate(bins, "wrongname.example", CertProblem::WrongName);
}

/// A certificate from a CA the daemon does not trust: rejected.
pub fn untrusted_certificate(bins: &Bins) {
    bad_certificate(bins, "untrusted.example", CertProblem::Untrusted);
}

/// An expired certificate: rejected.
pub fn expired_certificate(bins: &Bins) {
    bad_certificate(bins, "expired.example", CertProblem::Expired);
}

/// The control: the same set-up with a valid certificate is accepted (the failures above are
/// about the certificates, not the plumbing).
pub fn valid_certificate(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "valid.example", "1", &["mx.valid.example"]);
    world.policy_host_with_cert("valid.example", CertProblem::Expired);
    world.policy_host_valid("valid.example");
    let d = start(bins, &world, "");
    expect(&d, "postfix", "valid.example", &secure("mx.valid.example"));
}
