//! One socketmap connection under pipelining (socketmap_table(5);
//! docs/ARCHITECTURE.md "Connections"): whatever the mix of cached,
//! uncached, slow and failing domains and however the input is split in
//! time, every request gets exactly one reply, in request order.

use super::{enforce, ms};
use crate::dns::QueryType;
use crate::sim::{decode_replies, request, DnsAnswer, Harness, HostBehaviour, ZONE};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use std::time::Duration;

const NOSNI: &str = "nosni";

/// What each key is, and so what it must be answered.
const KEYS: &[&str] = &[
    "cached.example",
    "fresh.example",
    "slow.example",
    "hang.example",
    "servfail.example",
    "dnsdrop.example",
    "none.example",
    "badcert.example",
    "bad..key",
    "[192.0.2.1]",
];

fn world(h: &Harness) {
    let w = &h.world;
    w.dns.set_default_latency(ms(3));
    for (d, latency) in [
        ("cached.example", ms(0)),
        ("fresh.example", ms(20)),
        ("slow.example", ms(1500)),
    ] {
        w.publish(d, "id1", &enforce(&format!("mx.{d}"), 86400), latency);
    }
    // Never answers: the zone timeout (4 s) answers.
    w.publish_host("hang.example", "id1", HostBehaviour::Hang);
    w.publish_host(
        "badcert.example",
        "id1",
        HostBehaviour::TlsFailure("unknown issuer".into()),
    );
    w.dns.set(
        "_mta-sts.servfail.example",
        QueryType::Txt,
        DnsAnswer::ServFail,
    );
    w.dns
        .set("_mta-sts.dnsdrop.example", QueryType::Txt, DnsAnswer::Drop);
    w.dns
        .set("_mta-sts.none.example", QueryType::Txt, DnsAnswer::NxDomain);
    // Warm the cache for one of them.
    let _ = h.answer("cached.example");
}

fn expected(zone: &str, key: &str) -> String {
    match key {
        "cached.example" | "fresh.example" | "slow.example" if zone == NOSNI => {
            format!("OK secure match=mx.{key}")
        }
        "cached.example" | "fresh.example" | "slow.example" => {
            format!("OK secure match=mx.{key} servername=hostname")
        }
        _ => "NOTFOUND ".into(),
    }
}

/// Send `requests` on one connection, cut into chunks of `sizes` (cycled)
/// with `gaps` (cycled) of virtual time between them, and check the replies.
fn pipelined(requests: &[(bool, usize)], sizes: &[usize], gaps: &[u64]) {
    let h = Harness::new("zones:\n  nosni:\n    require_sni: false\n");
    world(&h);
    let mut input = Vec::new();
    let mut want = Vec::new();
    for &(nosni, k) in requests {
        let zone = if nosni { NOSNI } else { ZONE };
        input.extend(request(zone, KEYS[k]));
        want.push(expected(zone, KEYS[k]));
    }
    let (mut rd, mut wr) = h.connect().split();
    let sim = h.sim.clone();
    let (sizes, gaps) = (sizes.to_vec(), gaps.to_vec());
    let writer = h.sim.spawn_task(async move {
        let mut rest = input.as_slice();
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            wr.write_all(chunk)
                .await
                .expect("the server reads every request");
            rest = tail;
            sim.sleep_for(ms(gaps[i % gaps.len()])).await;
            i += 1;
        }
        wr.close().await.expect("close");
    });
    let replies = h.sim.block_on(async move {
        let mut bytes = Vec::new();
        rd.read_to_end(&mut bytes).await.expect("read");
        decode_replies(&bytes)
    });
    assert!(writer.is_finished());
    assert_eq!(replies.len(), want.len(), "one reply per request");
    for (i, (got, want)) in replies.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "reply {i} of {requests:?}");
    }
    // Each uncached domain was looked up at most once, however often asked
    // (failures are not cached, but each is at most one lookup at a time).
    assert!(h.world.fetches("fresh.example") <= 1);
    assert!(h.world.fetches("slow.example") <= 1);
    assert_eq!(h.world.fetches("cached.example"), 1);
}

#[test]
fn every_kind_in_one_write() {
    let requests: Vec<(bool, usize)> = (0..KEYS.len())
        .flat_map(|k| [(false, k), (true, k)])
        .collect();
    pipelined(&requests, &[usize::MAX], &[0]);
}

#[test]
fn every_kind_byte_by_byte() {
    let requests: Vec<(bool, usize)> = (0..KEYS.len()).rev().map(|k| (k % 2 == 0, k)).collect();
    pipelined(&requests, &[1], &[7]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replies_are_in_request_order(
        requests in proptest::collection::vec((any::<bool>(), 0..KEYS.len()), 1..25),
        sizes in proptest::collection::vec(1usize..60, 1..12),
        gaps in proptest::collection::vec(0u64..700, 1..12),
    ) {
        pipelined(&requests, &sizes, &gaps);
    }
}

/// The timings the mix relies on, so the property covers what it claims.
#[test]
fn the_mix_has_fast_slow_and_timed_out_lookups() {
    let h = Harness::new("");
    world(&h);
    let started = h.sim.elapsed();
    let handles: Vec<_> = KEYS
        .iter()
        .map(|k| h.spawn_answer(Duration::ZERO, k))
        .collect();
    h.sim.advance(Duration::from_secs(10));
    let took: Vec<Duration> = handles
        .iter()
        .map(|t| t.take().expect("answered").1 - started)
        .collect();
    assert_eq!(took[0], Duration::ZERO, "cached");
    assert_eq!(took[1], ms(3 * 2 + 20), "fresh");
    assert_eq!(took[2], ms(3 * 2 + 1500), "slow");
    assert_eq!(took[3], Duration::from_secs(4), "zone timeout");
    assert_eq!(took[5], Duration::from_secs(2), "2 DNS attempts of 1 s");
}

/// The library loop under a client that pipelines hundreds of requests for
/// a domain whose reply is 40 KB and does not read: what the connection
/// holds (the `queued_reply_bytes` gauge) stays within 256 KiB plus one
/// reply, though one read brings them all; once the client reads, every
/// request is answered, in order.
#[test]
fn a_client_that_does_not_read_holds_a_bounded_output() {
    let h = Harness::new("");
    let mx: Vec<String> = (0..2000)
        .map(|i| format!("mx{i:04}.long.example"))
        .collect();
    let mx: Vec<&str> = mx.iter().map(String::as_str).collect();
    let body = crate::sim::policy_text("enforce", &mx, 86400);
    h.world.publish("long.example", "id1", &body, ms(0));
    let want = String::from_utf8_lossy(&h.answer("long.example").payload()).into_owned();
    assert!(want.len() > 35_000, "a reply of {} bytes", want.len());
    let n = 300;
    let input: Vec<u8> = (0..n).flat_map(|_| request(ZONE, "long.example")).collect();
    assert!(input.len() < 8192, "one read's worth");
    let (mut rd, mut wr) = h.connect().split();
    h.sim.block_on(async move {
        wr.write_all(&input).await.expect("write");
        wr.close().await.expect("close");
    });
    h.sim.advance(ms(100));
    let metrics = h.stack.service.metrics().encode(0, 0);
    let queued: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mta_sts_queued_reply_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("the gauge");
    assert!(
        queued > 0 && queued <= 256 * 1024 + 100_008,
        "{queued} bytes queued"
    );
    let replies = h.sim.block_on(async move {
        let mut bytes = Vec::new();
        rd.read_to_end(&mut bytes).await.expect("read");
        decode_replies(&bytes)
    });
    assert_eq!(replies.len(), n);
    assert!(replies.iter().all(|r| *r == want));
}

/// After a framing error the library loop sends `PERM`, ends its output,
/// then lingers: it still takes (and discards) input, so closing does not
/// reset a connection whose client is still sending, until the client
/// closes or a second has passed.
#[test]
fn framing_error_lingers_before_closing() {
    let h = Harness::new("");
    let (mut rd, mut wr) = h.connect().split();
    let sim = h.sim.clone();
    let (replies, later) = h.sim.block_on(async move {
        wr.write_all(b"20000:postfix ").await.expect("write");
        let mut bytes = Vec::new();
        rd.read_to_end(&mut bytes).await.expect("read");
        wr.write_all(&[b'a'; 30_000])
            .await
            .expect("the connection lingers, reading");
        sim.sleep_for(ms(1100)).await;
        (decode_replies(&bytes), wr.write_all(b"a").await)
    });
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("PERM "), "{replies:?}");
    assert!(later.is_err(), "closed after the linger");
}
