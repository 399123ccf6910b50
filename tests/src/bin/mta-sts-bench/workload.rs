//! What every target is asked and must answer: `postfix d<i>.bench.test`, each domain
//! publishing one `enforce` policy with one mx, published in the hermetic world.

use mta_sts_tests::socketmap_client::netstring;
use mta_sts_tests::{policy_body, Behaviour, World};
use std::path::{Path, PathBuf};

/// The one mx of every policy.
pub const MX: &str = "mail.bench.test";

/// The reply to every request, from the daemons (an `enforce` policy, `require_sni` on by
/// default) and, fixed, from the bare servers.
pub const REPLY: &str = "OK secure match=mail.bench.test servername=hostname";

/// Names per certificate: real policy hosts' certificates carry one to a few dozen names,
/// and a certificate for thousands would make every handshake parse a 50 KB certificate.
pub const DOMAINS_PER_CERT: usize = 50;

/// The i-th domain.
pub fn domain(i: usize) -> String {
    format!("d{i}.bench.test")
}

/// The reply's bytes on the wire.
pub fn reply_frame() -> Vec<u8> {
    netstring(REPLY.as_bytes())
}

/// The requests for domains `0..n` on the wire, in order.
pub fn requests(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| netstring(format!("postfix {}", domain(i)).as_bytes()))
        .collect()
}

/// Publishes domains `0..n` (TXT, A, policy) in `world`.
pub fn publish(world: &World, n: usize) {
    let body = policy_body("enforce", 604800, &[MX]);
    let all: Vec<String> = (0..n).map(domain).collect();
    for chunk in all.chunks(DOMAINS_PER_CERT) {
        world.add_policy_domains(chunk, "v=STSv1; id=bench1;", Behaviour::policy(&body));
    }
}

/// A trust bundle as users have it, the system's roots, plus the world's test CA, for
/// `SSL_CERT_FILE` (read by OpenSSL's default paths, hence by Python and by native-tls).
pub fn trust_bundle(world: &World) -> PathBuf {
    let system = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
    .unwrap_or_default();
    let path = world.dir().join("trust-bundle.pem");
    std::fs::write(&path, format!("{system}\n{}", world.ca.ca_pem())).expect("write trust bundle");
    path
}

/// How many certificates `path` holds.
pub fn certificates_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.matches("-----BEGIN CERTIFICATE-----").count())
        .unwrap_or(0)
}
