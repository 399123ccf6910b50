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

/// A connection keeps answering with the zones in force: after a reload
/// its next request sees the new ones, the cached policy still serving.
#[test]
fn a_reload_reaches_an_open_connection() {
    use crate::sim::{config, ZONE};
    let h = Harness::new("cache_grace: 60");
    let body = policy_text("enforce", &["mx.example.com"], 86400);
    h.world
        .publish("example.com", "id1", &body, Duration::from_millis(5));
    let service = h.stack.service.clone();
    let mut view = service.config_view();
    h.answer("example.com");
    let now = |view: &mut _| match service.answer_now(view, ZONE, "example.com") {
        Ok(reply) => reply_text(&reply),
        Err(miss) => panic!("a cached policy missed: {miss:?}"),
    };
    assert_eq!(
        now(&mut view),
        "OK secure match=mx.example.com servername=hostname"
    );
    service.reload(config(&format!(
        "cache_grace: 60\nzones:\n  {ZONE}:\n    require_sni: false\n"
    )));
    assert_eq!(now(&mut view), "OK secure match=mx.example.com");
    assert_eq!(h.world.fetches("example.com"), 1);
}
