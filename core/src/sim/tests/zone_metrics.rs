//! A zone added by a reload is counted under its own label
//! (docs/ARCHITECTURE.md "Operations"): `Service::reload` registers its
//! counters before the connections answer with it.

use super::{enforce, ms, ok_reply, text};
use crate::metrics::Outcome;
use crate::sim::{config, Harness, ZONE};

#[test]
fn a_zone_added_by_a_reload_has_its_own_counters() {
    let h = Harness::new("cache_grace: 60");
    h.world.publish(
        "example.com",
        "id1",
        &enforce("mx.example.com", 86400),
        ms(5),
    );
    assert_eq!(text(&h.answer("example.com")), ok_reply("mx.example.com"));
    let service = h.stack.service.clone();
    let mut view = service.config_view();
    service.reload(config(&format!(
        "cache_grace: 60\nzones:\n  {ZONE}: {{}}\n  z2:\n    require_sni: false\n"
    )));
    match service.answer_now(&mut view, "z2", "example.com") {
        Ok(reply) => assert_eq!(text(&reply), "OK secure match=mx.example.com"),
        Err(miss) => panic!("a cached policy missed: {miss:?}"),
    }
    let metrics = service.metrics();
    assert_eq!(metrics.lookups("z2", Outcome::Secure), 1);
    let encoded = metrics.encode(0, 0);
    assert!(
        encoded.contains("mta_sts_lookups_total{zone=\"z2\",outcome=\"secure\"} 1"),
        "{encoded}"
    );
}
