//! A failed fetch for a domain and id is not retried for 5 minutes
//! (`RETRY_AFTER_FAILURE`; RFC 8461 §3.3 leaves the retry policy to the
//! sender): requests meanwhile still check the TXT id but fetch nothing,
//! and answer NOTFOUND or the cached policy (§5.1).

use super::{enforce, ms, ok_reply, text};
use crate::dns::QueryType;
use crate::resolve::RETRY_AFTER_FAILURE;
use crate::sim::{Harness, HostBehaviour, HttpsReply};
use std::time::Duration;

const DNS_LATENCY: Duration = Duration::from_millis(5);

/// Requests at `t_fail + offset` for each offset up to 5 minutes - 1 ms
/// must fetch nothing; the one at exactly 5 minutes fetches again. The TXT
/// answer comes at once here, so each request is decided when it is made.
fn check_backoff(h: &Harness, domain: &str, t_fail: Duration, want: &str) {
    let txt_name = format!("_mta-sts.{domain}");
    h.world
        .dns
        .set_latency(&txt_name, QueryType::Txt, Duration::ZERO);
    let fetches = h.world.fetches(domain);
    let txt = h.world.txt_queries(domain);
    let mut offsets: Vec<Duration> = (1..10).map(|k| Duration::from_secs(30 * k)).collect();
    offsets.push(RETRY_AFTER_FAILURE - ms(1));
    for (i, offset) in offsets.iter().enumerate() {
        h.sim.advance_to(t_fail + *offset);
        assert_eq!(text(&h.answer(domain)), want, "at failure + {offset:?}");
        assert_eq!(h.sim.elapsed(), t_fail + *offset, "answered at once");
        assert_eq!(
            h.world.fetches(domain),
            fetches,
            "no fetch at failure + {offset:?}"
        );
        assert_eq!(
            h.world.txt_queries(domain),
            txt + i + 1,
            "the id is still checked"
        );
    }
    h.sim.advance_to(t_fail + RETRY_AFTER_FAILURE);
    let _ = h.answer(domain);
    assert_eq!(
        h.world.fetches(domain),
        fetches + 1,
        "retried after 5 minutes"
    );
    assert_eq!(
        h.world.fetch_times(domain).last(),
        Some(&(t_fail + RETRY_AFTER_FAILURE + DNS_LATENCY))
    );
    h.world
        .dns
        .set_latency(&txt_name, QueryType::Txt, DNS_LATENCY);
}

#[test]
fn failing_host_is_not_retried_for_five_minutes() {
    let h = Harness::new("cache_grace: 60");
    h.world.dns.set_default_latency(DNS_LATENCY);
    let error = HttpsReply {
        status: 500,
        content_type: Some("text/plain".into()),
        body: "oops".into(),
        latency: ms(100),
    };
    h.world
        .publish_host("broken.example", "id1", HostBehaviour::Serve(error));
    assert_eq!(text(&h.answer("broken.example")), "NOTFOUND ");
    assert_eq!(h.world.fetches("broken.example"), 1);
    let t_fail = h.sim.elapsed();
    assert_eq!(t_fail, DNS_LATENCY * 2 + ms(100));
    check_backoff(&h, "broken.example", t_fail, "NOTFOUND ");
    // Still failing: NOTFOUND, and the new failure starts a new 5 minutes.
    assert_eq!(h.cached("broken.example"), None);
}

#[test]
fn new_id_on_a_failing_host_falls_back_to_the_cached_policy() {
    let h = Harness::new("cache_grace: 60");
    h.world.dns.set_default_latency(DNS_LATENCY);
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx1.example.com", 86400),
        ms(20),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx1.example.com"));

    // An hour later the id changes but the new certificate does not validate.
    h.sim.advance(Duration::from_secs(3600));
    h.world.dns.set_sts_id("example.com", "id2");
    h.world.set_policy(
        "example.com",
        HostBehaviour::TlsFailure("certificate has expired".into()),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx1.example.com"));
    assert_eq!(h.world.fetches("example.com"), 2);
    let t_fail = h.sim.elapsed();
    check_backoff(&h, "example.com", t_fail, &ok_reply("mx1.example.com"));

    // Healed: the next retry (5 minutes after the last failure) gets id2.
    h.world.set_policy(
        "example.com",
        HostBehaviour::Serve(HttpsReply::ok(enforce("mx2.example.com", 86400), ms(20))),
    );
    let t_fail = h.sim.elapsed();
    h.sim.advance_to(t_fail + RETRY_AFTER_FAILURE);
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx2.example.com"));
    assert_eq!(
        h.cached("example.com").map(|e| e.policy_id),
        Some("id2".into())
    );
}
