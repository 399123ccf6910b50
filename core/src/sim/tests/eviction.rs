//! Lookups of domains that publish no policy never push a cached policy
//! out of the index (docs/ARCHITECTURE.md "Cache"): whoever sends mail
//! through the relay chooses the recipient domains, and a policy evicted
//! by their "no policy" notes would become NOTFOUND the moment its domain
//! stops publishing, where RFC 8461 §3.3 requires the cached policy.

use super::{enforce, ms, ok_reply, text};
use crate::sim::{Harness, HostBehaviour};
use std::time::Duration;

#[test]
fn no_policy_lookups_never_evict_a_cached_policy() {
    let h = Harness::new("cache_grace: 60\ncache: {type: internal, options: {cache_size: 200}}");
    h.world.dns.set_default_latency(ms(1));
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(5),
    );
    let want = ok_reply("mx.example.com");
    assert_eq!(text(&h.answer("example.com")), want);
    // Ten times cache_size recipient domains with no policy (NXDOMAIN).
    for i in 0..2_000 {
        let domain = format!("n{i}.example.net");
        assert_eq!(text(&h.answer(&domain)), "NOTFOUND ", "{domain}");
    }
    assert!(h.cached("example.com").is_some(), "the policy was evicted");
    // The domain stops publishing: TXT gone, policy host down. Past
    // cache_grace the lookup finds no policy and answers the cached one.
    h.world.dns.remove("_mta-sts.example.com");
    h.world.set_policy(
        "example.com",
        HostBehaviour::TlsFailure("connection refused".into()),
    );
    h.sim.advance(Duration::from_secs(61));
    assert_eq!(text(&h.answer("example.com")), want);
    assert_eq!(h.world.txt_queries("example.com"), 2, "checked again");
}
