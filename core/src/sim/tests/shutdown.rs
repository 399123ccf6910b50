//! Graceful shutdown (docs/ARCHITECTURE.md "Connections", "Stopping"):
//! after the signal no new connection is taken, a connection takes requests
//! until its client has been quiet for `QUIET`, requests already received
//! are still answered, connections close at the grace period's end, and
//! `serve` reports whether they finished within it.

use super::{enforce, ms, ok_reply};
use crate::service::serve;
use crate::sim::{
    decode_replies, duplex, request, Harness, PipeEnd, TaskHandle, PIPE_CAPACITY, ZONE,
};
use crate::socketmap::QUIET;
use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use std::io;
use std::time::Duration;

/// A client connection through `serve`'s accept loop: its writing half
/// and a task reading every reply until the server closes.
fn connect(
    h: &Harness,
    incoming: &mpsc::UnboundedSender<io::Result<PipeEnd>>,
) -> (futures::io::WriteHalf<PipeEnd>, TaskHandle<Vec<String>>) {
    let (client, server) = duplex(PIPE_CAPACITY);
    incoming
        .unbounded_send(Ok(server))
        .expect("accept loop alive");
    let (mut rd, wr) = client.split();
    let reader = h.sim.spawn_task(async move {
        let mut bytes = Vec::new();
        rd.read_to_end(&mut bytes).await.expect("read");
        decode_replies(&bytes)
    });
    (wr, reader)
}

fn start(
    h: &Harness,
    grace: Duration,
) -> (
    mpsc::UnboundedSender<io::Result<PipeEnd>>,
    TaskHandle<(bool, Duration)>,
) {
    let (tx, incoming) = mpsc::unbounded();
    let (sim, service, shutdown) = (h.sim.clone(), h.stack.service.clone(), h.shutdown.clone());
    let served = h.sim.spawn_task(async move {
        let drained = serve(sim.clone(), incoming, service, shutdown, grace).await;
        (drained, sim.elapsed())
    });
    (tx, served)
}

#[test]
fn in_flight_requests_are_answered() {
    let mut h = Harness::new("");
    for d in ["slow1.example", "slow2.example", "cached.example"] {
        h.world
            .publish(d, "id1", &enforce(&format!("mx.{d}"), 86400), ms(1000));
    }
    let _ = h.answer("cached.example");
    let t0 = h.sim.elapsed();
    let (tx, served) = start(&h, Duration::from_secs(5));
    let (mut wr, reader) = connect(&h, &tx);
    let mut batch = request(ZONE, "slow1.example");
    batch.extend(request(ZONE, "cached.example"));
    batch.extend(request(ZONE, "slow2.example"));
    h.sim.block_on(wr.write_all(&batch)).expect("write");
    h.sim.advance(ms(100));

    h.shut_down();
    h.sim.run_until_idle();
    assert!(tx.is_closed(), "no new connection after the signal");
    // On its way when the signal came: taken, within the quiet period.
    h.sim
        .block_on(wr.write_all(&request(ZONE, "cached.example")))
        .expect("the server end is still open");
    // After the client was quiet for the quiet period: not taken.
    h.sim.advance(QUIET + ms(1));
    h.sim
        .block_on(wr.write_all(&request(ZONE, "cached.example")))
        .expect("the server end is still open");
    h.sim.advance(Duration::from_secs(10));

    let replies = reader.take().expect("the connection closed");
    assert_eq!(
        replies,
        vec![
            ok_reply("mx.slow1.example"),
            ok_reply("mx.cached.example"),
            ok_reply("mx.slow2.example"),
            ok_reply("mx.cached.example"),
        ]
    );
    let (drained, at) = served.take().expect("serve returned");
    assert!(drained, "finished within the grace period");
    assert_eq!(at, t0 + ms(1000), "as soon as the last reply was written");
    assert_eq!(h.world.fetches("slow1.example"), 1);
}

#[test]
fn grace_period_bounds_the_wait() {
    let mut h = Harness::new("");
    h.world.publish(
        "slow.example",
        "id1",
        &enforce("mx.slow.example", 86400),
        ms(3000),
    );
    let (tx, served) = start(&h, Duration::from_secs(1));
    let (mut wr, reader) = connect(&h, &tx);
    h.sim
        .block_on(wr.write_all(&request(ZONE, "slow.example")))
        .expect("write");
    h.sim.advance(ms(100));
    let fired = h.sim.elapsed();
    h.shut_down();
    h.sim.advance(Duration::from_secs(2));
    let (drained, at) = served.take().expect("serve returned");
    assert!(!drained, "a request was still in flight");
    assert_eq!(at, fired + Duration::from_secs(1));
    // The connection closed at the deadline too, its lookup cut short.
    assert_eq!(reader.take(), Some(vec![]));
}
