//! A staggered burst for one uncached domain is one lookup: requests that
//! arrive while it runs join it, later ones hit the index (docs/ARCHITECTURE.md
//! "The lookup coordinator").

use super::{enforce, ms, ok_reply};
use crate::sim::{exchange, request, Harness, ZONE};
use proptest::prelude::*;
use std::time::Duration;

const DOMAIN: &str = "example.com";
const DNS_LATENCY: Duration = Duration::from_millis(5);
const POLICY_LATENCY: Duration = Duration::from_millis(500);
const STORE_LATENCY: Duration = Duration::from_millis(3);

/// Send one request per arrival offset (ms), each on its own socketmap
/// connection, and check the counts and every reply and its time.
fn burst(offsets: &[u64], with_store: bool) {
    let yaml = "cache_grace: 60";
    let h = if with_store {
        Harness::with_store(yaml)
    } else {
        Harness::new(yaml)
    };
    if let Some(store) = &h.store {
        store.set_latency(STORE_LATENCY);
    }
    h.world.dns.set_default_latency(DNS_LATENCY);
    h.world.publish(
        DOMAIN,
        "id1",
        &enforce("mx.example.com", 86400),
        POLICY_LATENCY,
    );

    let clients: Vec<_> = offsets
        .iter()
        .map(|&at| {
            let (connector, sim) = (h.connector(), h.sim.clone());
            h.sim.spawn_task(async move {
                sim.sleep_for(ms(at)).await;
                let replies = exchange(connector.connect(), request(ZONE, DOMAIN)).await;
                (at, replies, sim.elapsed())
            })
        })
        .collect();
    h.sim.advance(Duration::from_secs(10));

    assert_eq!(h.world.txt_queries(DOMAIN), 1, "one TXT query");
    assert_eq!(h.world.fetches(DOMAIN), 1, "one policy fetch");
    // The lookup's answer comes when the policy server answers.
    let fetched = h.world.fetch_times(DOMAIN)[0] + POLICY_LATENCY;
    let before = if with_store {
        STORE_LATENCY
    } else {
        Duration::ZERO
    };
    let first = ms(*offsets.iter().min().expect("some requests"));
    assert_eq!(fetched, first + before + DNS_LATENCY * 2 + POLICY_LATENCY);
    for client in clients {
        let (at, replies, done) = client.take().expect("every client finished");
        assert_eq!(
            replies,
            vec![ok_reply("mx.example.com")],
            "request at {at} ms"
        );
        // Joined requests are answered with the lookup; later ones at once.
        assert_eq!(done, ms(at).max(fetched), "request at {at} ms");
    }
    if let Some(store) = &h.store {
        assert_eq!(store.reads(), 1, "one store read");
        assert_eq!(store.writes(), 1, "one store write");
        let entry = store.entry(DOMAIN).expect("the policy was persisted");
        assert_eq!(entry.policy_id, "id1");
        assert_eq!(Some(entry), h.cached(DOMAIN));
    }
}

/// 40 requests, one every 25 ms.
fn even_schedule() -> Vec<u64> {
    (0..40).map(|i| i * 25).collect()
}

#[test]
fn fixed_schedule_without_store() {
    burst(&even_schedule(), false);
}

#[test]
fn fixed_schedule_with_store() {
    burst(&even_schedule(), true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_schedule_is_one_lookup(
        offsets in proptest::collection::vec(0u64..1000, 40),
        with_store in any::<bool>(),
    ) {
        burst(&offsets, with_store);
    }
}
