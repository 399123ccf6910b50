//! Self-tests of the handles on real programs: redis-server, Postfix postmap, the socketmap
//! client, and the daemon handle (driven with the fake daemon binary of this crate).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mta_sts_tests::postmap::inet_map;
use mta_sts_tests::socketmap_client::{netstring, parse_netstring};
use mta_sts_tests::{
    postmap_query, run_query, Daemon, PostmapOutcome, ReadOutcome, RedisServer, SocketmapClient,
};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-socketmap-daemon");

#[test]
fn redis_starts_pings_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.cmd(&["PING"]).unwrap(), "+PONG");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(redis.cmd(&["SET", "k", "hello"]).unwrap(), "+OK");
    assert_eq!(redis.cmd(&["GET", "k"]).unwrap(), "$5\r\nhello");
    let port = redis.port();
    redis.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cmd(&["PING"]).unwrap(), "+PONG");
    assert_eq!(redis.cmd(&["GET", "k"]).unwrap(), "$-1", "no persistence");
}

/// A tiny socketmap server: `secure.*` gets `OK secure`, `temp.*` `TEMP busy`, `perm.*`
/// `PERM bad`, anything else `NOTFOUND `.
fn tiny_socketmap_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while let Ok(n @ 1..) = c.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some((req, used))) = parse_netstring(&buf) {
                        buf.drain(..used);
                        let req = String::from_utf8(req).unwrap();
                        let (_, key) = req.split_once(' ').unwrap();
                        let reply = match key.split('.').next().unwrap() {
                            "secure" => "OK secure match=mx.example.com",
                            "temp" => "TEMP busy",
                            "perm" => "PERM bad",
                            _ => "NOTFOUND ",
                        };
                        c.write_all(&netstring(reply.as_bytes())).unwrap();
                    }
                }
            });
        }
    });
    port
}

#[test]
fn postmap_reports_each_socketmap_reply() {
    let port = tiny_socketmap_server();
    let map = inet_map(port, "postfix");
    let r = postmap_query("secure.example.com", &map);
    assert_eq!(
        (r.status, r.stdout.as_str()),
        (0, "secure match=mx.example.com\n"),
        "{r:?}"
    );
    assert_eq!(
        r.outcome(),
        PostmapOutcome::Found("secure match=mx.example.com".into())
    );
    let r = postmap_query("other.example.com", &map);
    assert_eq!(
        (r.status, r.stdout.as_str(), r.stderr.as_str()),
        (1, "", "")
    );
    assert_eq!(r.outcome(), PostmapOutcome::NotFound);
    let r = postmap_query("temp.example.com", &map);
    assert_eq!(r.outcome(), PostmapOutcome::Temp("busy".into()), "{r:?}");
    let r = postmap_query("perm.example.com", &map);
    assert_eq!(r.outcome(), PostmapOutcome::Perm("bad".into()), "{r:?}");
    let closed = inet_map(mta_sts_tests::free_port(), "postfix");
    assert!(matches!(
        postmap_query("x", &closed).outcome(),
        PostmapOutcome::Error(_)
    ));
}

#[test]
fn socketmap_client_pipelines_and_times_out() {
    let port = tiny_socketmap_server();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = SocketmapClient::connect_tcp(addr).unwrap();
    assert_eq!(
        c.query("postfix", "secure.a"),
        "OK secure match=mx.example.com"
    );
    let replies = c.pipeline(&[("p", "temp.a"), ("p", "x"), ("p", "perm.b")]);
    assert_eq!(replies, ["TEMP busy", "NOTFOUND ", "PERM bad"]);
    // A request split across writes still works.
    c.send_raw(b"12:p sec");
    c.send_raw(b"ure.abc,");
    assert_eq!(
        c.read_reply().as_deref(),
        Some("OK secure match=mx.example.com")
    );
    c.set_timeout(Duration::from_millis(200));
    c.send_raw(b"5:p x"); // incomplete: no reply
    assert_eq!(c.read_outcome(), ReadOutcome::Timeout);
    assert!(!c.wait_closed());
}

#[test]
fn daemon_starts_answers_and_terminates() {
    let mut d = Daemon::start(FAKE, "cache_grace: 0\n", &["-v", "debug"]);
    let mut c = d.client();
    assert_eq!(c.query("pol", "example.com"), "OK key=example.com");
    assert_eq!(c.query("pol", "none.example"), "NOTFOUND ");
    let r = postmap_query("example.org", &d.map("pol"));
    assert_eq!(r.outcome(), PostmapOutcome::Found("key=example.org".into()));
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    assert_eq!(
        config,
        format!("host: 127.0.0.1\nport: {}\ncache_grace: 0\n", d.port())
    );
    assert!(d.is_running());
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    let log = d.log();
    assert!(
        log.contains("starting with args") && log.contains("\"debug\""),
        "{log}"
    );
    assert!(log.contains("fake daemon stopped"), "{log}");
}

#[test]
fn daemon_on_unix_socket() {
    let d = Daemon::start_unix(FAKE, "", &[]);
    assert_eq!(d.client().query("pol", "a.example"), "OK key=a.example");
    let r = postmap_query("b.example", &d.map("pol"));
    assert_eq!(
        r.outcome(),
        PostmapOutcome::Found("key=b.example".into()),
        "{r:?}"
    );
}

#[test]
#[should_panic(expected = "daemon exited during startup")]
fn daemon_that_exits_is_reported() {
    Daemon::start("/bin/false", "", &[]);
}

#[test]
fn run_query_captures_output() {
    let (status, out, err) = run_query("/bin/sh", &["-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((status, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
}
