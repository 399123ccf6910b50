//! The socketmap protocol and the daemon program (socketmap_table(5), "Replies for a
//! policy", "Configuration", "Programs"): zones, TLSRPT attributes, Unix socket, pipelining,
//! framing errors, signals, config errors, command line options.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::{
    expect, expect_notfound, lookup, pause, publish, publish_enforce, secure, start, start_with,
    Bins, RawProcess, NOTFOUND,
};
use crate::socketmap_client::netstring;
use crate::{policy_body, run_bounded, Behaviour, Daemon, ReadOutcome, World};

/// Zones of the two-zone cases: `plain` without SNI, `rpt` with TLSRPT attributes,
/// `strict` with strict_testing.
const ZONES: &str = "zones:\n  plain:\n    require_sni: false\n  rpt:\n    tlsrpt: true\n  strict:\n    strict_testing: true\n  empty:\n";

/// The same domains answered differently by zones with different options; unknown socketmap
/// names use `default_zone`.
pub fn zones_answer_differently(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "enf.example", "1", &["mx.enf.example"]);
    publish(
        &world,
        "tst.example",
        "1",
        &policy_body("testing", 86400, &["mx.tst.example"]),
    );
    let d = start(bins, &world, ZONES);
    expect(&d, "postfix", "enf.example", &secure("mx.enf.example"));
    expect(&d, "no-such-zone", "enf.example", &secure("mx.enf.example"));
    expect(&d, "empty", "enf.example", &secure("mx.enf.example"));
    expect(&d, "plain", "enf.example", "OK secure match=mx.enf.example");
    expect(
        &d,
        "rpt",
        "enf.example",
        "OK secure match=mx.enf.example servername=hostname policy_type=sts \
         policy_domain=enf.example mx_host_pattern=mx.enf.example \
         { policy_string = version: STSv1 } { policy_string = mode: enforce } \
         { policy_string = mx: mx.enf.example } { policy_string = max_age: 86400 }",
    );
    expect(&d, "postfix", "tst.example", NOTFOUND);
    expect(&d, "plain", "tst.example", NOTFOUND);
    expect(&d, "strict", "tst.example", &secure("mx.tst.example"));
    assert_eq!(world.requests("enf.example"), 1, "zones share the cache");
}

/// The exact TLSRPT attributes (Postfix 3.10+): policy type and domain, each mx pattern as
/// published, each policy line (unknown keys included) as a policy string.
pub fn tlsrpt_output_exact(bins: &Bins) {
    let world = World::new();
    publish(
        &world,
        "rpt.example",
        "1",
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.rpt.example\r\nmx: *.backup.example\r\n\
         mx: mx1.rpt.example\r\nx-note: hello\r\nmax_age: 604800\r\n",
    );
    let d = start(
        bins,
        &world,
        "zones:\n  rpt:\n    tlsrpt: true\n    require_sni: false\n",
    );
    expect(
        &d,
        "rpt",
        "RPT.example.",
        "OK secure match=mx1.rpt.example:.backup.example policy_type=sts \
         policy_domain=rpt.example mx_host_pattern=mx1.rpt.example \
         mx_host_pattern=*.backup.example mx_host_pattern=mx1.rpt.example \
         { policy_string = version: STSv1 } { policy_string = mode: enforce } \
         { policy_string = mx: mx1.rpt.example } { policy_string = mx: *.backup.example } \
         { policy_string = mx: mx1.rpt.example } { policy_string = x-note: hello } \
         { policy_string = max_age: 604800 }",
    );
}

/// A Unix socket with `mode: 0666` (PyYAML octal): permissions set, requests served.
pub fn unix_socket_with_mode(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "unix.example", "1", &["mx.unix.example"]);
    let d = Daemon::start_unix(
        bins.daemon,
        &world.config_yaml("mode: 0666\n"),
        &["-v", "debug"],
    );
    let crate::Listen::Unix(path) = d.listen().clone() else {
        panic!("not a Unix socket daemon");
    };
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o666, "socket mode {mode:o}; log:\n{}", d.log());
    expect(&d, "postfix", "unix.example", &secure("mx.unix.example"));
}

/// More pipelined requests than one read takes (8 KiB), sent in one write
/// and all answered at once (IP literals): no further data or event comes
/// for the requests left in the socket, and each is answered.
pub fn pipelined_requests_beyond_one_read_all_answered(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
        .collect();
    let requests: Vec<(&str, &str)> = keys.iter().map(|k| ("postfix", k.as_str())).collect();
    let mut c = d.client();
    c.set_timeout(Duration::from_secs(10));
    let replies = c.pipeline(&requests);
    assert_eq!(replies, vec![NOTFOUND.to_string(); keys.len()]);
}

/// Ten pipelined requests, some slow (hanging host, zone timeout 1 s) and some fast, are
/// answered in request order, and concurrently (all within about one timeout).
pub fn pipelined_replies_in_order(bins: &Bins) {
    let world = World::new();
    for i in 0..5 {
        let fast = format!("fast{i}.example");
        publish_enforce(&world, &fast, "1", &[&format!("mx.{fast}")]);
        let slow = format!("slow{i}.example");
        world.add_policy_domain(&slow, &super::sts_txt("1"), Behaviour::Hang);
    }
    let d = start(bins, &world, "default_zone:\n  timeout: 1\n");
    let keys: Vec<String> = (0..10)
        .map(|i| match i % 3 {
            0 => format!("slow{}.example", i / 2),
            _ => format!("fast{}.example", i / 2),
        })
        .collect();
    let requests: Vec<(&str, &str)> = keys.iter().map(|k| ("postfix", k.as_str())).collect();
    let t = Instant::now();
    let replies = d.client().pipeline(&requests);
    let took = t.elapsed();
    let want: Vec<String> = keys
        .iter()
        .map(|k| {
            if k.starts_with("slow") {
                NOTFOUND.to_string()
            } else {
                secure(&format!("mx.{k}"))
            }
        })
        .collect();
    assert_eq!(replies, want, "log:\n{}", d.log());
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

/// Sends `bytes` on a new connection and expects `PERM <reason>` then a close, while an
/// already open connection keeps being served.
fn expect_perm_then_close(d: &Daemon, bytes: &[u8]) {
    let mut other = d.client();
    let mut c = d.client();
    c.set_timeout(Duration::from_secs(5));
    let _ = c.try_send_raw(bytes);
    match c.read_outcome() {
        ReadOutcome::Reply(r) => assert!(
            r.starts_with("PERM "),
            "{:?}: got {r:?}",
            String::from_utf8_lossy(bytes)
        ),
        other => panic!(
            "{:?}: no PERM reply: {other:?}; log:\n{}",
            String::from_utf8_lossy(bytes),
            d.log()
        ),
    }
    assert!(c.wait_closed(), "connection not closed after PERM");
    assert_eq!(other.query("postfix", "1.2.3.4"), NOTFOUND);
}

/// Malformed netstrings: `PERM ...` then close; other connections unaffected.
pub fn malformed_netstrings_perm_then_close(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    expect_perm_then_close(&d, b"abc");
    expect_perm_then_close(&d, b"5:hello;");
    expect_perm_then_close(&d, b"1x:hello,");
    expect_perm_then_close(&d, b":hello,");
    expect_notfound(&d, "[1.2.3.4]");
}

/// A request over 10,000 bytes: `PERM ...` then close.
pub fn oversized_request_perm_then_close(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    let mut other = d.client();
    let mut c = d.client();
    c.set_timeout(Duration::from_secs(3));
    let payload = format!("postfix {}", "a".repeat(10_001 - 8));
    assert_eq!(payload.len(), 10_001);
    // The length prefix alone should be enough to refuse it; send the rest only if the
    // daemon waits for it (sending bytes it will never read could turn its close into a
    // reset that loses the PERM reply).
    let _ = c.try_send_raw(b"10001:postfix ");
    let mut outcome = c.read_outcome();
    if outcome == ReadOutcome::Timeout {
        let _ = c.try_send_raw(payload.as_bytes().get(8..).unwrap_or_default());
        let _ = c.try_send_raw(b",");
        outcome = c.read_outcome();
    }
    match outcome {
        ReadOutcome::Reply(r) => assert!(r.starts_with("PERM "), "got {r:?}"),
        other => panic!("no PERM reply: {other:?}; log:\n{}", d.log()),
    }
    assert!(c.wait_closed(), "connection not closed after PERM");
    assert_eq!(other.query("postfix", "[1.2.3.4]"), NOTFOUND);
}

/// A request twice over the 10,000-byte limit sent in one write, then the client reads:
/// the `PERM` reply arrives every time. The daemon stops reading at the length prefix;
/// closing with the rest unread would reset the connection and could destroy the reply,
/// so it shuts down writing and discards input for a while first.
pub fn oversized_request_in_one_write_gets_perm(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    let payload = format!("postfix {}", "a".repeat(20_000));
    let mut bytes = format!("{}:{payload}", payload.len()).into_bytes();
    bytes.push(b',');
    for round in 0..20 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", d.port())).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let sent = c.write_all(&bytes);
        let mut got = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 4096];
            match c.read(&mut chunk) {
                Ok(0) => break "end of file".to_owned(),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => break e.to_string(),
            }
        };
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains(":PERM ") && end == "end of file",
            "round {round}: write {sent:?}, read {text:?} then {end}; log:\n{}",
            d.log()
        );
    }
    expect_notfound(&d, "[1.2.3.4]");
}

/// A request with no space between name and key: `PERM ...` then close.
pub fn request_without_space_perm(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    expect_perm_then_close(&d, &netstring(b"postfixexample.com"));
}

/// Requests queued before a framing error are answered first, then `PERM`, then close.
pub fn queued_replies_before_perm(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "queued.example", "1", &["mx.queued.example"]);
    let d = start(bins, &world, "");
    let mut c = d.client();
    let mut bytes = netstring(b"postfix queued.example");
    bytes.extend(netstring(b"postfix [1.2.3.4]"));
    bytes.extend_from_slice(b"xyz");
    c.send_raw(&bytes);
    assert_eq!(
        c.read_reply().as_deref(),
        Some(secure("mx.queued.example").as_str()),
        "log:\n{}",
        d.log()
    );
    assert_eq!(c.read_reply().as_deref(), Some(NOTFOUND));
    match c.read_outcome() {
        ReadOutcome::Reply(r) => assert!(r.starts_with("PERM "), "got {r:?}"),
        other => panic!("no PERM reply: {other:?}; log:\n{}", d.log()),
    }
    assert!(c.wait_closed());
}

/// Connections stay open across requests.
pub fn connection_reused_for_many_requests(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "reuse.example", "1", &["mx.reuse.example"]);
    let d = start(bins, &world, "");
    let mut c = d.client();
    for _ in 0..5 {
        assert_eq!(
            c.query("postfix", "reuse.example"),
            secure("mx.reuse.example")
        );
        assert_eq!(c.query("postfix", "[192.0.2.1]:25"), NOTFOUND);
    }
}

/// Clients that go away mid-request (half a netstring, or a request still being looked up)
/// do not disturb the daemon.
pub fn client_disconnect_mid_request(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "ok.example", "1", &["mx.ok.example"]);
    world.add_policy_domain("stuck.example", &super::sts_txt("1"), Behaviour::Hang);
    let mut d = start(bins, &world, "default_zone:\n  timeout: 1\n");
    {
        let mut c = d.client();
        c.send_raw(b"30:postfix ok.exa");
    }
    {
        let mut c = d.client();
        c.send_request("postfix", "stuck.example");
    }
    {
        let mut c = d.client();
        c.send_request("postfix", "ok.example");
    }
    pause(1500);
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());
    expect(&d, "postfix", "ok.example", &secure("mx.ok.example"));
    expect_notfound(&d, "stuck.example");
}

/// SIGTERM: exit status 0.
pub fn sigterm_exits_zero(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "term.example", "1", &["mx.term.example"]);
    let mut d = start(bins, &world, "");
    expect(&d, "postfix", "term.example", &secure("mx.term.example"));
    let status = d.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
}

/// SIGTERM during a lookup: the in-flight request is still answered, then exit 0.
pub fn sigterm_finishes_in_flight_requests(bins: &Bins) {
    let world = World::new();
    world.add_policy_domain("slow.example", &super::sts_txt("1"), Behaviour::Hang);
    let mut d = start(bins, &world, "default_zone:\n  timeout: 1\n");
    let mut c = d.client();
    c.send_request("postfix", "slow.example");
    pause(200);
    d.signal(libc::SIGTERM);
    assert_eq!(
        c.read_reply().as_deref(),
        Some(NOTFOUND),
        "log:\n{}",
        d.log()
    );
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
}

/// Runs the daemon with the config text `config` (expected to be refused): exit code and
/// output.
fn run_with_config(bins: &Bins, config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = std::process::Command::new(bins.daemon);
    cmd.arg("-c").arg(&path);
    run_bounded(cmd, Duration::from_secs(15))
}

/// A config error (`port: abc`, `cache: {type: foo}`): non-zero exit, stderr names the key,
/// once.
pub fn config_error_exits_nonzero(bins: &Bins) {
    for (config, key) in [
        ("host: 127.0.0.1\nport: abc\n", "port"),
        ("host: 127.0.0.1\nport: 1\ncache:\n  type: foo\n", "cache"),
        (
            "host: 127.0.0.1\nport: 1\ndefault_zone:\n  timeout: soon\n",
            "timeout",
        ),
    ] {
        let (status, out, err) = run_with_config(bins, config);
        assert!(
            status != 0 && status != -1,
            "{config:?}: exit {status}; {out}{err}"
        );
        assert!(
            err.contains(key),
            "{config:?}: stderr does not name {key}: {err}"
        );
        let lines = err.lines().filter(|l| l.contains(key)).count();
        assert_eq!(lines, 1, "{config:?}: error not said exactly once: {err}");
    }
}

/// Starts the daemon with `args` (it listens on the default 127.0.0.1:8461) and checks it
/// comes up with the defaults: it logs that it listens there, or (port taken by someone
/// else) fails to bind it, but never refuses the config.
fn expect_default_start(bins: &Bins, args: &[&str], needle: Option<&str>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all = vec!["-v", "debug"];
    all.extend_from_slice(args);
    let mut p = RawProcess::spawn(bins.daemon, &all, dir.path());
    let up = p.wait_output("127.0.0.1:8461", Duration::from_secs(15));
    let out = p.output();
    assert!(up, "no sign of the default address; output:\n{out}");
    if let Some(code) = p.exited() {
        assert!(
            out.contains("8461") && !out.contains("ERROR config file"),
            "exit {code}:\n{out}"
        );
    }
    if let Some(needle) = needle {
        assert!(out.contains(needle), "{needle:?} not logged:\n{out}");
    }
}

/// An empty config file means all defaults.
pub fn empty_config_starts(bins: &Bins) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.yml");
    std::fs::write(&path, "").expect("write config");
    expect_default_start(bins, &["-c", &path.display().to_string()], None);
}

/// A missing `-c` file: starts with the defaults, and says so.
pub fn missing_config_file_starts(bins: &Bins) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("does-not-exist.yml");
    expect_default_start(
        bins,
        &["-c", &path.display().to_string()],
        Some("does-not-exist.yml"),
    );
}

/// `--disable-uvloop` is accepted (and ignored).
pub fn disable_uvloop_accepted(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "uv.example", "1", &["mx.uv.example"]);
    let d = start_with(bins, &world, "", &["--disable-uvloop"]);
    expect(&d, "postfix", "uv.example", &secure("mx.uv.example"));
}

/// `-p PIDFILE` receives the daemon's pid.
pub fn pidfile_written(bins: &Bins) {
    let world = World::new();
    let pidfile = world.dir().join("daemon.pid");
    let d = start_with(bins, &world, "", &["-p", &pidfile.display().to_string()]);
    // An answer means start-up is over (the port accepts before the pidfile is written).
    assert_eq!(lookup(&d, "postfix", "[192.0.2.1]"), NOTFOUND);
    let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
    assert_eq!(text.trim().parse::<u32>().ok(), d.pid(), "pidfile {text:?}");
}

/// `-l LOGFILE` receives the log: one info line per lookup that went to the network, with
/// the domain and outcome; answers from memory are logged at debug only.
pub fn logfile_receives_lookups(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "logged.example", "1", &["mx.logged.example"]);
    let logfile = world.dir().join("daemon.log");
    let d = Daemon::start(
        bins.daemon,
        &world.config_yaml(""),
        &["-v", "info", "-l", &logfile.display().to_string()],
    );
    expect(
        &d,
        "postfix",
        "logged.example",
        &secure("mx.logged.example"),
    );
    expect_notfound(&d, "nopolicy.example");
    let _ = lookup(&d, "postfix", "nopolicy.example");
    let log = std::fs::read_to_string(&logfile).unwrap_or_default();
    let lines = |domain: &str| -> Vec<&str> {
        log.lines()
            .filter(|l| l.contains(domain) && l.contains("INFO"))
            .collect()
    };
    assert_eq!(lines("logged.example").len(), 1, "log file:\n{log}");
    // The second request is answered from memory: logged at debug only.
    let notfound = lines("nopolicy.example");
    assert_eq!(notfound.len(), 1, "log file:\n{log}");
    assert!(
        notfound.iter().all(|l| l.contains("NOTFOUND")),
        "log file:\n{log}"
    );
    assert!(
        !d.log().contains("logged.example"),
        "lookups logged to stderr too:\n{}",
        d.log()
    );
}

/// Anything from outside that reaches the log (here a zone name with a newline and an
/// escape sequence) is escaped: no forged log line, no terminal control.
pub fn log_lines_cannot_be_forged(bins: &Bins) {
    let world = World::new();
    let d = start(bins, &world, "");
    let mut c = d.client();
    c.send_raw(&crate::socketmap_client::netstring(
        b"evil\nFORGED-LINE\x1b[31m 1.2.3.4",
    ));
    assert_eq!(c.read_reply().as_deref(), Some("NOTFOUND "));
    let log = d.log();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED-LINE")),
        "forged line in the log:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "raw escape in the log:\n{log}");
    assert!(log.contains("evil\\nFORGED-LINE\\u{1b}[31m"), "{log}");
}
