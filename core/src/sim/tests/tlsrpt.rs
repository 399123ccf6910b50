//! The TLSRPT attributes of Postfix 3.10+ (RFC 8460 §4.4) through the real
//! service stack: sent only in a zone with `tlsrpt: true`, whether the
//! policy was just fetched or came from the cache (Postfix 3.7 to 3.9
//! reject them as unknown), and never `policy_failure`: a failed fetch is
//! counted and answered without a policy (RFC 8461 §3.3;
//! docs/ARCHITECTURE.md "Replies").

use super::{answer_in, enforce, ms, ok_reply};
use crate::sim::{Harness, HostBehaviour, HttpsReply};

const ZONES: &str = "zones:\n  plain: {}\n  rpt: {tlsrpt: true}\n";

#[test]
fn only_tlsrpt_zones_send_the_attributes_fetched_or_cached() {
    let h = Harness::new(ZONES);
    for domain in ["example.com", "example.org"] {
        h.world.publish(
            domain,
            "id1",
            &enforce(&format!("mx.{domain}"), 86400),
            ms(5),
        );
    }
    let rpt = |domain: &str| {
        format!(
            "{} policy_type=sts policy_domain={domain} mx_host_pattern=mx.{domain} \
             {{ policy_string = version: STSv1 }} {{ policy_string = mode: enforce }} \
             {{ policy_string = mx: mx.{domain} }} {{ policy_string = max_age: 86400 }}",
            ok_reply(&format!("mx.{domain}"))
        )
    };
    // Fetched for the plain zone, then cached for both.
    assert_eq!(
        answer_in(&h, "plain", "example.com"),
        ok_reply("mx.example.com")
    );
    assert_eq!(
        answer_in(&h, "plain", "example.com"),
        ok_reply("mx.example.com")
    );
    assert_eq!(answer_in(&h, "rpt", "example.com"), rpt("example.com"));
    // Fetched for the TLSRPT zone, then cached for both.
    assert_eq!(answer_in(&h, "rpt", "example.org"), rpt("example.org"));
    assert_eq!(
        answer_in(&h, "plain", "example.org"),
        ok_reply("mx.example.org")
    );
    assert_eq!(answer_in(&h, "rpt", "example.org"), rpt("example.org"));
    assert_eq!(
        h.world.fetches("example.com") + h.world.fetches("example.org"),
        2
    );
}

#[test]
fn a_failed_fetch_is_counted_not_sent() {
    let h = Harness::new(ZONES);
    h.world.publish_host(
        "example.com",
        "id1",
        HostBehaviour::Serve(HttpsReply {
            status: 500,
            content_type: Some("text/plain".into()),
            body: "down".into(),
            latency: ms(5),
        }),
    );
    assert_eq!(answer_in(&h, "rpt", "example.com"), "NOTFOUND ");
    let encoded = h.stack.service.metrics().encode(0, 0);
    assert!(
        encoded.contains("mta_sts_policy_fetches_total{result=\"http_status\"} 1"),
        "{encoded}"
    );
}
