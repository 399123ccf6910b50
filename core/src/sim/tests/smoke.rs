//! The sim itself: one request end to end.

use crate::sim::{policy_text, reply_text, Harness};
use std::time::Duration;

#[test]
fn one_request_fetches_once() {
    let h = Harness::new("cache_grace: 60");
    let body = policy_text("enforce", &["mx.example.com"], 86400);
    h.world
        .publish("example.com", "id1", &body, Duration::from_millis(500));
    let reply = h.answer("example.com");
    assert_eq!(
        reply_text(&reply),
        "OK secure match=mx.example.com servername=hostname"
    );
    assert_eq!(h.world.fetches("example.com"), 1);
    assert_eq!(h.world.txt_queries("example.com"), 1);
    assert_eq!(h.sim.elapsed(), Duration::from_millis(500));
}
