//! Limits, timeouts and a clean stop (README.md "Configuration reference":
//! `idle_timeout`, `read_timeout`, `max_connections`, `max_lookups`,
//! `shutdown_timeout`): one client cannot hold the daemon, and a stop loses
//! no request that was sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{expect, lookup, pause, publish_enforce, publish_phases, secure, start, sts_txt, Bins};
use crate::socketmap_client::{netstring, ReadOutcome};
use crate::{Behaviour, World};

/// A connection idle between requests is closed after `idle_timeout`; one
/// that keeps asking stays open.
pub fn idle_connection_closed(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "idle_timeout: 1\n");
    let mut idle = d.client();
    let mut busy = d.client();
    assert_eq!(idle.query("postfix", "1.2.3.4"), "NOTFOUND ");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1800) {
        assert_eq!(busy.query("postfix", "1.2.3.4"), "NOTFOUND ");
        pause(300);
    }
    idle.set_timeout(Duration::from_secs(3));
    assert!(
        idle.wait_closed(),
        "idle connection still open; log:\n{}",
        d.log()
    );
    assert_eq!(busy.query("postfix", "1.2.3.4"), "NOTFOUND ");
}

/// A client that sends part of a request and stalls is closed after
/// `read_timeout`, well before `idle_timeout`.
pub fn stalled_partial_request_closed(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "read_timeout: 1\nidle_timeout: 60\n");
    let mut slow = d.client();
    slow.send_raw(b"20:postfix exa");
    slow.set_timeout(Duration::from_secs(4));
    let t0 = Instant::now();
    assert!(
        slow.wait_closed(),
        "stalled connection kept; log:\n{}",
        d.log()
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    // Others are served meanwhile and after.
    assert_eq!(lookup(&d, "postfix", "1.2.3.4"), "NOTFOUND ");
}

/// A client that sends requests and never reads the replies is closed once
/// its replies have waited `read_timeout`; others are served meanwhile.
pub fn client_not_reading_replies_closed(bins: &Bins) {
    let world = World::new();
    // Long replies: the stall comes after few requests.
    let mx: Vec<String> = (0..12)
        .map(|i| format!("mx{i}.a-rather-long-mail-exchanger-name.hog.example"))
        .collect();
    let mx: Vec<&str> = mx.iter().map(String::as_str).collect();
    publish_enforce(&world, "hog.example", "1", &mx);
    let d = start(bins, &world, "read_timeout: 1\nidle_timeout: 60\n");
    let reply = lookup(&d, "postfix", "hog.example");
    assert!(reply.starts_with("OK secure"), "{reply}");
    let mut hog = TcpStream::connect(("127.0.0.1", d.port())).expect("connect");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let batch: Vec<u8> = (0..1000)
        .flat_map(|_| netstring(b"postfix hog.example"))
        .collect();
    // Replies beyond what the socket buffers and the daemon's own bound
    // (256 KiB) hold: the daemon stops reading, then this write blocks.
    let mut sent = 0;
    while sent < 200_000 && hog.write_all(&batch).is_ok() {
        sent += 1000;
    }
    assert_eq!(lookup(&d, "postfix", "hog.example"), reply);
    // The daemon gives up on it once its replies have waited read_timeout (1 s).
    let given_up = super::persist::wait_until(Duration::from_secs(10), || {
        d.log().contains("has not read its replies")
    });
    assert_eq!(lookup(&d, "postfix", "hog.example"), reply);
    // Closed: what was written arrives, then the end, well before every
    // request was answered.
    hog.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let end = loop {
        match hog.read(&mut buf) {
            Ok(0) => break "end of file".to_string(),
            Ok(n) => received += n,
            Err(e) => break e.to_string(),
        }
    };
    let answered = received / netstring(reply.as_bytes()).len();
    let log = d.log();
    assert!(given_up, "no stall reported; log:\n{log}");
    assert!(
        answered * 2 < sent && !end.contains("timed out") && !end.contains("temporarily"),
        "{answered} of {sent} answered, then {end}; log:\n{log}"
    );
}

/// The `queued_reply_bytes` gauge read from `GET /metrics` on the daemon's TCP metrics
/// listener at `port`.
fn queued_reply_bytes(port: u16) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .expect("send metrics request");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("mta_sts_queued_reply_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no queued_reply_bytes gauge in:\n{text}"))
}

/// Clients that pipeline thousands of requests for a domain whose reply is 36 KB and
/// never read: one read brings hundreds of requests whose cached replies are known at
/// once, yet each connection holds at most 256 KiB plus one reply (the bound is checked
/// per request, not per read), as the `queued_reply_bytes` gauge shows; other clients
/// are served meanwhile.
pub fn pipelining_client_that_never_reads_holds_a_bounded_output(bins: &Bins) {
    const HOGS: u64 = 8;
    // 256 KiB plus the largest reply (100,000 bytes and its framing).
    const BOUND: u64 = 256 * 1024 + 100_008;
    let world = World::new();
    let mx: Vec<String> = (0..2000)
        .map(|i| format!("mx{i:04}.long.example"))
        .collect();
    let mx: Vec<&str> = mx.iter().map(String::as_str).collect();
    publish_enforce(&world, "long.example", "1", &mx);
    let port = crate::free_port();
    let d = start(
        bins,
        &world,
        &format!("read_timeout: 60\nmetrics:\n  listen: \"127.0.0.1:{port}\"\n"),
    );
    let reply = lookup(&d, "postfix", "long.example");
    assert!(reply.len() > 35_000, "reply of {} bytes", reply.len());
    let batch: Vec<u8> = (0..2000)
        .flat_map(|_| netstring(b"postfix long.example"))
        .collect();
    let hogs: Vec<TcpStream> = (0..HOGS)
        .map(|_| {
            let mut hog = TcpStream::connect(("127.0.0.1", d.port())).expect("connect");
            hog.set_write_timeout(Some(Duration::from_secs(2)))
                .expect("write timeout");
            // The daemon may stop reading before all of it is sent.
            let _ = hog.write_all(&batch);
            hog
        })
        .collect();
    let mut most = 0;
    for _ in 0..10 {
        most = most.max(queued_reply_bytes(port));
        expect(&d, "postfix", "1.2.3.4", "NOTFOUND ");
        pause(100);
    }
    assert_eq!(lookup(&d, "postfix", "long.example"), reply);
    assert!(
        most >= HOGS * reply.len() as u64,
        "the connections hold only {most} bytes: not stalled?; log:\n{}",
        d.log()
    );
    assert!(
        most <= HOGS * BOUND,
        "{HOGS} connections that never read hold {most} bytes of replies, over {} each",
        BOUND
    );
    drop(hogs);
}

/// A client that pipelines more requests than one read takes (8 KiB) for a
/// 36 KB reply, and reads the replies only later, gets every one: their
/// replies fill the buffers on the way and the daemon holds the rest back,
/// and the requests left in the socket are read once the replies drain,
/// with no new data from the client to announce them (docs/ARCHITECTURE.md
/// "Connections").
pub fn pipelining_client_that_reads_late_gets_every_reply(bins: &Bins) {
    const REQUESTS: usize = 600;
    let world = World::new();
    let mx: Vec<String> = (0..2000)
        .map(|i| format!("mx{i:04}.long.example"))
        .collect();
    let mx: Vec<&str> = mx.iter().map(String::as_str).collect();
    publish_enforce(&world, "long.example", "1", &mx);
    let d = start(bins, &world, "read_timeout: 60\n");
    let reply = lookup(&d, "postfix", "long.example");
    let mut c = d.client();
    c.set_timeout(Duration::from_secs(10));
    let batch: Vec<u8> = (0..REQUESTS)
        .flat_map(|_| netstring(b"postfix long.example"))
        .collect();
    assert!(batch.len() > 8192);
    c.send_raw(&batch);
    // Not a timing condition: the daemon most likely stalls meanwhile.
    pause(300);
    for i in 0..REQUESTS {
        match c.read_outcome() {
            ReadOutcome::Reply(r) => assert!(r == reply, "reply {i} differs"),
            other => panic!("reply {i} of {REQUESTS}: {other:?}; log:\n{}", d.log()),
        }
    }
}

/// With `max_lookups_per_connection: 1`, misses pipelined in one write
/// are looked up one after the other and all answered, in order: each
/// waits for the place the previous one frees.
pub fn pipelined_misses_beyond_the_per_connection_bound(bins: &Bins) {
    let world = World::new();
    let names = ["one", "two", "three"];
    publish_phases(&world, &names);
    let d = start(bins, &world, "max_lookups_per_connection: 1\n");
    let mut c = d.client();
    c.set_timeout(Duration::from_secs(10));
    let domains: Vec<String> = names.iter().map(|n| format!("{n}.example")).collect();
    let requests: Vec<(&str, &str)> = domains.iter().map(|d| ("postfix", d.as_str())).collect();
    let replies = c.pipeline(&requests);
    let want: Vec<String> = names
        .iter()
        .map(|n| secure(&format!("mx.{n}.example")))
        .collect();
    assert_eq!(replies, want, "log:\n{}", d.log());
}

/// Beyond `max_connections` open connections, a new one waits (in the
/// listen backlog) until one closes, then is served.
pub fn max_connections_bounds_open_connections(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "max_connections: 2\n");
    let mut a = d.client();
    let mut b = d.client();
    assert_eq!(a.query("postfix", "1.2.3.4"), "NOTFOUND ");
    assert_eq!(b.query("postfix", "1.2.3.4"), "NOTFOUND ");
    let mut c = d.client();
    c.set_timeout(Duration::from_millis(700));
    c.send_request("postfix", "1.2.3.4");
    assert!(
        matches!(c.read_outcome(), ReadOutcome::Timeout),
        "a third connection was served; log:\n{}",
        d.log()
    );
    drop(a);
    c.set_timeout(Duration::from_secs(5));
    assert_eq!(c.read_reply().as_deref(), Some("NOTFOUND "));
    assert_eq!(b.query("postfix", "1.2.3.4"), "NOTFOUND ");
}

/// SIGTERM: requests sent before the signal, and requests sent on an open
/// connection right after it, are all answered; then the daemon closes the
/// connections and exits 0.
pub fn stop_answers_requests_already_sent(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "stop.example", "1", &["mx.stop.example"]);
    world.add_policy_domain(
        "slowstop.example",
        &sts_txt("1"),
        Behaviour::Delayed(
            Duration::from_millis(400),
            Box::new(Behaviour::policy(&crate::policy_body(
                "enforce",
                86400,
                &["mx.slowstop.example"],
            ))),
        ),
    );
    let mut d = start(bins, &world, "");
    expect(&d, "postfix", "stop.example", &secure("mx.stop.example"));
    let mut clients: Vec<_> = (0..8).map(|_| d.client()).collect();
    for c in &mut clients {
        // One slow lookup and one cached answer in flight on each.
        c.send_request("postfix", "slowstop.example");
        c.send_request("postfix", "stop.example");
    }
    pause(50);
    d.signal(libc::SIGTERM);
    pause(50);
    for c in &mut clients {
        // Sent after the signal, on a connection that is still open.
        c.send_request("postfix", "stop.example");
    }
    for c in &mut clients {
        c.set_timeout(Duration::from_secs(5));
        let replies: Vec<Option<String>> = (0..3).map(|_| c.read_reply()).collect();
        assert_eq!(
            replies,
            vec![
                Some(secure("mx.slowstop.example")),
                Some(secure("mx.stop.example")),
                Some(secure("mx.stop.example")),
            ],
            "log:\n{}",
            d.log()
        );
        assert!(c.wait_closed(), "connection not closed after the stop");
    }
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

/// With `max_lookups: 1`, a lookup waiting for the one slot past its zone's
/// timeout answers `TEMP` (a local overload), not `NOTFOUND`: Postfix
/// retries instead of sending without the policy.
pub fn overload_answers_temp(bins: &Bins) {
    let world = World::new();
    world.add_policy_domain("hang.example", &sts_txt("1"), Behaviour::Hang);
    publish_enforce(&world, "wait.example", "1", &["mx.wait.example"]);
    let d = start(
        bins,
        &world,
        "max_lookups: 1\nzones:\n  slow:\n    timeout: 3\n  fast:\n    timeout: 1\n",
    );
    let mut slow = d.client();
    slow.send_request("slow", "hang.example");
    pause(200);
    let t0 = Instant::now();
    let reply = lookup(&d, "fast", "wait.example");
    assert!(reply.starts_with("TEMP "), "{reply:?}; log:\n{}", d.log());
    assert!(t0.elapsed() < Duration::from_millis(2500));
    slow.set_timeout(Duration::from_secs(5));
    assert_eq!(slow.read_reply().as_deref(), Some("NOTFOUND "));
    // The slot is free again: the waiting domain now resolves.
    expect(&d, "fast", "wait.example", &secure("mx.wait.example"));
}

/// Under a 256-descriptor limit, 25 connections pipelining 2,000 uncached names with the
/// resolver down neither lock other clients out nor run out of descriptors: a cached
/// domain is answered at once meanwhile, every flooded name gets exactly one reply
/// (`NOTFOUND` for the failed lookups, or `TEMP` for a local overload), and the daemon's
/// open descriptors stay under the limit. (Many connections: one connection runs only as
/// many lookups at once as the replies it may hold allow, docs/ARCHITECTURE.md
/// "Connections".)
pub fn flood_under_a_low_descriptor_limit(bins: &Bins) {
    let mut world = World::new();
    publish_enforce(&world, "known.example", "1", &["mx.known.example"]);
    let d = crate::Daemon::start_with_nofile(
        bins.daemon,
        // The flood's lookups give up after 0.5 s; the warm-up fetch, in a
        // zone of its own, has time for a TLS handshake on a busy machine.
        &world.config_yaml(
            "cache_grace: 3600\ndefault_zone:\n  timeout: 0.5\nzones:\n  warm:\n    timeout: 20\n",
        ),
        &["-v", "info"],
        256,
    );
    expect(&d, "warm", "known.example", &secure("mx.known.example"));
    world.dns.stop();
    let names: Vec<String> = (0..2000).map(|i| format!("f{i}.flood.example")).collect();
    let senders: Vec<_> = names
        .chunks(80)
        .map(|chunk| {
            let mut sender = d.client();
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                for name in &chunk {
                    sender.send_request("postfix", name);
                }
                sender.set_timeout(Duration::from_secs(60));
                (0..chunk.len())
                    .map(|_| sender.read_reply())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    pause(300);
    let t0 = Instant::now();
    assert_eq!(
        lookup(&d, "postfix", "known.example"),
        secure("mx.known.example")
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "locked out for {:?}",
        t0.elapsed()
    );
    let pid = d.pid().expect("pid");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(fds > 0 && fds < 256, "{fds} descriptors open");
    let replies: Vec<_> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("flood thread"))
        .collect();
    assert_eq!(replies.len(), 2000);
    for reply in &replies {
        let r = reply.as_deref().unwrap_or("(none)");
        assert!(
            r == "NOTFOUND " || r.starts_with("TEMP "),
            "{r:?}; log:\n{}",
            d.log()
        );
    }
}
