//! The rules of one connection on the library loop
//! (`service::serve_connection`, `service::serve`; docs/ARCHITECTURE.md
//! "Connections"): each timeout closes the connection when it is due and
//! not before, the stop takes what is on its way and closes after the
//! client's quiet period, a framing error is counted and lingers, and
//! `max_lookups_per_connection` and `max_connections` bound what one
//! client and all of them take.

use super::{enforce, ms, ok_reply};
use crate::service::serve;
use crate::sim::{decode_replies, duplex, request, Harness, PipeEnd, TaskHandle, ZONE};
use crate::socketmap::{LINGER, QUIET};
use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use std::io;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// A connection on the library loop over a pipe of `capacity` bytes each
/// way: the client's writing half, a task reading every reply until the
/// server closes, and the virtual time the server closed it.
fn open(
    h: &Harness,
    capacity: usize,
) -> (
    WriteHalf<PipeEnd>,
    TaskHandle<Vec<String>>,
    TaskHandle<Duration>,
) {
    let (client, closed) = h.connector().connect_with(capacity);
    let (mut rd, wr) = client.split();
    let reader = h.sim.spawn_task(async move {
        let mut bytes = Vec::new();
        rd.read_to_end(&mut bytes).await.expect("read");
        decode_replies(&bytes)
    });
    (wr, reader, closed)
}

/// `serve` on the sim (grace 5 s), taking the server ends sent to the
/// returned channel as accepted connections.
fn serving(h: &Harness) -> mpsc::UnboundedSender<io::Result<PipeEnd>> {
    let (tx, incoming) = mpsc::unbounded::<io::Result<PipeEnd>>();
    let (sim, service, shutdown) = (h.sim.clone(), h.stack.service.clone(), h.shutdown.clone());
    h.sim.spawn_task(async move {
        serve(sim, incoming, service, shutdown, Duration::from_secs(5)).await
    });
    tx
}

/// Write `bytes` as the client, at the current virtual time.
fn send(h: &Harness, wr: &mut WriteHalf<PipeEnd>, bytes: &[u8]) {
    h.sim.block_on(wr.write_all(bytes)).expect("write");
}

/// A client that sends half a request and stops is closed `read_timeout`
/// after its last byte, not before.
#[test]
fn a_half_sent_request_is_closed_after_read_timeout() {
    let h = Harness::new("read_timeout: 3\nidle_timeout: 100\n");
    let (mut wr, reader, closed) = open(&h, 1 << 20);
    h.sim.advance(SEC);
    let half = request(ZONE, "example.com");
    send(&h, &mut wr, &half[..8]);
    let sent = h.sim.elapsed();
    h.sim.advance(3 * SEC - ms(1));
    assert!(!closed.is_finished(), "closed before read_timeout");
    h.sim.advance(ms(1));
    assert_eq!(closed.take(), Some(sent + 3 * SEC));
    h.sim.run_until_idle();
    assert_eq!(reader.take(), Some(vec![]));
}

/// A client that asks, reads its reply and sends nothing more is closed
/// `idle_timeout` after the reply, not before.
#[test]
fn an_idle_client_is_closed_after_idle_timeout() {
    let h = Harness::new("read_timeout: 1\nidle_timeout: 5\n");
    let (mut wr, reader, closed) = open(&h, 1 << 20);
    h.sim.advance(2 * SEC);
    // A key that is no domain: answered at once.
    send(&h, &mut wr, &request(ZONE, "bad..key"));
    let answered = h.sim.elapsed();
    h.sim.advance(5 * SEC - ms(1));
    assert!(!closed.is_finished(), "closed before idle_timeout");
    h.sim.advance(ms(1));
    assert_eq!(closed.take(), Some(answered + 5 * SEC));
    h.sim.run_until_idle();
    assert_eq!(reader.take(), Some(vec!["NOTFOUND ".to_owned()]));
}

/// A client that pipelines requests and never reads its replies is closed
/// `read_timeout` after the socket last took some output, however long
/// `idle_timeout` is; the loop does not block on the write meanwhile.
#[test]
fn a_client_that_never_reads_is_closed_after_read_timeout() {
    let h = Harness::new("read_timeout: 3\nidle_timeout: 100\n");
    h.world
        .publish("a.example", "id1", &enforce("mx.a.example", 86400), ms(0));
    let _ = h.answer("a.example");
    let (client, closed) = h.connector().connect_with(1024);
    let (_rd, mut wr) = client.split();
    let input: Vec<u8> = (0..200).flat_map(|_| request(ZONE, "a.example")).collect();
    // The pipe takes 1 KiB of it; the rest waits for the server to read.
    let writer = h.sim.spawn_task(async move {
        let _ = wr.write_all(&input).await;
        wr
    });
    h.sim.run_until_idle();
    let stalled = h.sim.elapsed();
    h.sim.advance(3 * SEC - ms(1));
    assert!(!closed.is_finished(), "closed before read_timeout");
    h.sim.advance(ms(1));
    assert_eq!(closed.take(), Some(stalled + 3 * SEC));
    drop(writer);
}

/// A stop with a request in flight: requests that come while the client
/// is not yet quiet are still taken and answered, then the connection
/// closes once its client has been quiet for `QUIET`.
#[test]
fn a_stop_answers_what_is_on_its_way_then_closes_after_the_quiet_period() {
    let mut h = Harness::new("");
    h.world.publish(
        "slow.example",
        "id1",
        &enforce("mx.slow.example", 86400),
        SEC,
    );
    h.world
        .publish("a.example", "id1", &enforce("mx.a.example", 86400), ms(0));
    let _ = h.answer("a.example");
    let (mut wr, reader, closed) = open(&h, 1 << 20);
    send(&h, &mut wr, &request(ZONE, "slow.example"));
    h.sim.advance(ms(100));
    h.shut_down();
    h.sim.advance(ms(100));
    send(&h, &mut wr, &request(ZONE, "a.example"));
    let last_input = h.sim.elapsed();
    h.sim.advance(QUIET + ms(1));
    // The client was quiet: this one is not taken.
    send(&h, &mut wr, &request(ZONE, "a.example"));
    h.sim.advance(5 * SEC);
    assert_eq!(
        reader.take(),
        Some(vec![ok_reply("mx.slow.example"), ok_reply("mx.a.example")])
    );
    // Closed when the lookup in flight was answered (it ends after the
    // quiet period).
    let at = closed.take().expect("closed");
    assert!(at > last_input + QUIET && at < 5 * SEC, "closed at {at:?}");

    // A client that is quiet at the stop is closed at the quiet period's
    // end after its last byte.
    let mut h = Harness::new("");
    let (mut wr, reader, closed) = open(&h, 1 << 20);
    send(&h, &mut wr, &request(ZONE, "bad..key"));
    let last_input = h.sim.elapsed();
    h.sim.advance(ms(100));
    h.shut_down();
    h.sim.advance(SEC);
    assert_eq!(closed.take(), Some(last_input + QUIET));
    assert_eq!(reader.take(), Some(vec!["NOTFOUND ".to_owned()]));
}

/// A framing error is answered `PERM` and counted (as the programs count
/// it); the lingering close ends `LINGER` after the reply when the client
/// keeps the connection open.
#[test]
fn a_framing_error_is_counted_and_lingers_until_linger() {
    let h = Harness::new("");
    let (mut wr, reader, closed) = open(&h, 1 << 20);
    send(&h, &mut wr, b"5:ab");
    send(&h, &mut wr, b"cde;");
    let failed = h.sim.elapsed();
    h.sim.advance(LINGER - ms(1));
    assert!(!closed.is_finished(), "closed before LINGER");
    let replies = reader.take().expect("output ended at the PERM");
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("PERM "), "{replies:?}");
    h.sim.advance(ms(1));
    assert_eq!(closed.take(), Some(failed + LINGER));
    let metrics = h.stack.service.metrics().encode(0, 0);
    assert!(
        metrics.contains("mta_sts_lookups_total{zone=\"\",outcome=\"perm\"} 1"),
        "{metrics}"
    );
}

/// `max_lookups_per_connection` bounds the lookups one connection runs at
/// once: reading pauses until one is answered.
#[test]
fn max_lookups_per_connection_pauses_reading() {
    let h = Harness::new("max_lookups_per_connection: 2\n");
    let domains: Vec<String> = (0..5).map(|i| format!("slow{i}.example")).collect();
    for d in &domains {
        h.world
            .publish(d, "id1", &enforce(&format!("mx.{d}"), 86400), SEC);
    }
    let (mut wr, reader, _closed) = open(&h, 1 << 20);
    let input: Vec<u8> = domains.iter().flat_map(|d| request(ZONE, d)).collect();
    send(&h, &mut wr, &input);
    h.sim.advance(ms(500));
    let started: Vec<usize> = domains.iter().map(|d| h.world.fetches(d)).collect();
    assert_eq!(started, vec![1, 1, 0, 0, 0]);
    h.sim.block_on(wr.close()).expect("close");
    h.sim.advance(10 * SEC);
    let want: Vec<String> = domains
        .iter()
        .map(|d| ok_reply(&format!("mx.{d}")))
        .collect();
    assert_eq!(reader.take(), Some(want));
}

/// `serve` keeps at most `max_connections` open: the next one is taken
/// only once one closes.
#[test]
fn max_connections_holds_the_next_until_one_closes() {
    let h = Harness::new("max_connections: 1\n");
    let tx = serving(&h);
    let connect = || {
        let (client, server) = duplex(1 << 20);
        tx.unbounded_send(Ok(server)).expect("accept loop alive");
        let (mut rd, wr) = client.split();
        let sim = h.sim.clone();
        let reader = h.sim.spawn_task(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            // Each reply with the time it came.
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                got.push((decode_replies(&buf[..n]), sim.elapsed()));
            }
            got
        });
        (wr, reader)
    };
    let (mut first, first_replies) = connect();
    let (mut second, second_replies) = connect();
    send(&h, &mut first, &request(ZONE, "bad..key"));
    send(&h, &mut second, &request(ZONE, "bad..key"));
    h.sim.advance(SEC);
    assert!(!second_replies.is_finished());
    h.sim.block_on(first.close()).expect("close");
    h.sim.run_until_idle();
    let closed_first = h.sim.elapsed();
    assert_eq!(
        first_replies.take(),
        Some(vec![(vec!["NOTFOUND ".to_owned()], Duration::ZERO)])
    );
    h.sim.block_on(second.close()).expect("close");
    h.sim.run_until_idle();
    assert_eq!(
        second_replies.take(),
        Some(vec![(vec!["NOTFOUND ".to_owned()], closed_first)]),
        "answered once the first closed"
    );
}

/// A reload's limits apply to the next connection accepted, also when
/// `serve` was already waiting for it when the reload came.
#[test]
fn a_reload_s_limits_apply_to_the_next_connection_accepted() {
    let h = Harness::new("idle_timeout: 100\n");
    let tx = serving(&h);
    // `serve` waits for a connection ...
    h.sim.run_until_idle();
    // ... when the reload shortens idle_timeout.
    h.stack
        .service
        .reload(crate::sim::config("idle_timeout: 2\n"));
    let (client, server) = duplex(1 << 20);
    tx.unbounded_send(Ok(server)).expect("accept loop alive");
    let (mut rd, mut wr) = client.split();
    let sim = h.sim.clone();
    let closed = h.sim.spawn_task(async move {
        let mut bytes = Vec::new();
        let _ = rd.read_to_end(&mut bytes).await;
        sim.elapsed()
    });
    send(&h, &mut wr, &request(ZONE, "bad..key"));
    let answered = h.sim.elapsed();
    h.sim.advance(3 * SEC);
    assert_eq!(
        closed.take(),
        Some(answered + 2 * SEC),
        "the reloaded idle_timeout"
    );
}
