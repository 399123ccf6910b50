//! A request that joins a running lookup is answered by its own deadline
//! (docs/ARCHITECTURE.md "The path of one request"): a zone with a longer
//! timeout that joins the lookup of a zone with a shorter one still gets
//! the policy the slow host serves, and the fetch is not counted as failed.

use super::{enforce, ms, ok_reply, text};
use crate::service::Runtime;
use crate::sim::{Harness, HttpsReply, ZONE};
use std::time::Duration;

#[test]
fn a_longer_zone_timeout_keeps_the_joined_lookup_going() {
    let h = Harness::new("default_zone: {timeout: 2}\nzones:\n  slow:\n    timeout: 30\n");
    h.world.dns.set_default_latency(ms(5));
    // The policy host takes 10 s.
    let body = enforce("mx.example.com", 86400);
    h.world.publish("example.com", "id1", &body, Duration::ZERO);
    h.world.set_policy(
        "example.com",
        crate::sim::HostBehaviour::Serve(HttpsReply::ok(body, Duration::from_secs(10))),
    );
    let ask = |zone: &'static str, delay: Duration| {
        let (sim, service) = (h.sim.clone(), h.stack.service.clone());
        h.sim.spawn_task(async move {
            sim.sleep(delay).await;
            let reply = service.answer(zone, "example.com").await;
            (text(&reply), sim.elapsed())
        })
    };
    let fast = ask(ZONE, Duration::ZERO);
    let slow = ask("slow", Duration::from_secs(1));
    h.sim.block_on(async {
        let (reply, at) = fast.await;
        assert_eq!((reply.as_str(), at), ("NOTFOUND ", Duration::from_secs(2)));
        let (reply, at) = slow.await;
        assert_eq!(reply, ok_reply("mx.example.com"));
        assert_eq!(
            at,
            Duration::from_secs(10) + ms(10),
            "TXT, A, then the fetch"
        );
    });
    assert_eq!(h.world.fetches("example.com"), 1);
    // Kept: the default zone is answered from memory now.
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    assert_eq!(h.world.txt_queries("example.com"), 1);
}
