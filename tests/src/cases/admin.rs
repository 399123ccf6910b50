//! Operations (README.md "Metrics", "Cache administration", "Programs"): the metrics
//! endpoint, `mta-sts-query --cache`, SIGHUP (log reopened, config reloaded without
//! dropping connections or the cache) and `mta-sts-daemon --check-config`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::persist::sqlite_cache;
use super::{expect, pause, publish_enforce, secure, start, Bins};
use crate::{run_bounded, run_query, World};

/// `metrics: {path: ...}` in the daemon's own dir.
pub(super) fn metrics_yaml(dir: &Path) -> String {
    format!(
        "metrics:\n  path: {}\n",
        crate::daemon::yaml_str(&dir.join("metrics.sock").display().to_string())
    )
}

/// The status and body of a raw HTTP answer.
fn status_and_body(raw: &str) -> (u16, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// A GET or DELETE on the daemon's metrics socket: status and body.
pub(super) fn http(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect metrics socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    status_and_body(&raw)
}

/// One raw request (head and body as given) to the TCP metrics listener at `port`:
/// status and body; status 0 if no answer came within 5 s.
fn tcp_http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    status_and_body(&String::from_utf8_lossy(&raw))
}

/// `metrics: {listen: 127.0.0.1:PORT}`, with `path` too if given; the port.
fn tcp_metrics_yaml(socket: Option<&Path>) -> (String, u16) {
    let port = crate::free_port();
    let path = socket.map_or(String::new(), |p| {
        format!(
            "  path: {}\n",
            crate::daemon::yaml_str(&p.display().to_string())
        )
    });
    (
        format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n{path}"),
        port,
    )
}

/// An export line for `domain`: `mode` with `mx`, checked and fetched at `at_secs`.
fn export_line(domain: &str, id: &str, mode: &str, mx: &[String], at_secs: u64) -> String {
    let mx: Vec<String> = mx.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "{{\"domain\":\"{domain}\",\"ts\":{at_secs},\"pol_id\":\"{id}\",\"pol_body\":{{\"version\":\"STSv1\",\"mode\":\"{mode}\",\"mx\":[{}],\"max_age\":86400}},\"fetched_at\":{at_secs}}}",
        mx.join(",")
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The metrics endpoint counts lookups by zone and outcome, answers by source, fetches by
/// result, and shows the cache size; it listens only where configured.
pub fn metrics_endpoint_counts(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "m.example", "1", &["mx.m.example"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = start(bins, &world, &metrics_yaml(dir.path()));
    expect(&d, "postfix", "m.example", &secure("mx.m.example"));
    expect(&d, "postfix", "m.example", &secure("mx.m.example"));
    let mut c = d.client();
    c.send_raw(b"x:bad");
    assert!(c.wait_closed());
    // A connection served and still open is counted (earlier ones may
    // still be closing).
    let mut held = d.client();
    assert_eq!(held.query("postfix", "1.2.3.4"), "NOTFOUND ");
    let (status, text) = http(&dir.path().join("metrics.sock"), "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let open: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("mta_sts_open_connections "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(open >= 1, "open connections not counted:\n{text}");
    for line in [
        "mta_sts_lookups_total{zone=\"default\",outcome=\"secure\"} 2",
        "mta_sts_lookups_total{zone=\"\",outcome=\"perm\"} 1",
        "mta_sts_answers_total{source=\"fetched\"} 1",
        "mta_sts_answers_total{source=\"fresh\"} 1",
        "mta_sts_policy_fetches_total{result=\"ok\"} 1",
        "mta_sts_cache_entries 1",
        "mta_sts_policy_fetch_seconds_count 1",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(
        text.contains("mta_sts_dns_queries_total{type=\"TXT\",rcode=\"NOERROR\"} 1"),
        "{text}"
    );
    assert_eq!(
        http(&dir.path().join("metrics.sock"), "GET", "/nope").0,
        404
    );
}

/// `mta-sts-query --cache` on the internal cache, through the running daemon: list,
/// show, export, purge (takes effect at once: the next request fetches again), import.
pub fn cache_admin_through_the_daemon(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "a1.example", "1", &["mx.a1.example"]);
    publish_enforce(&world, "a2.example", "7", &["mx.a2.example"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = start(
        bins,
        &world,
        &format!("cache_grace: 3600\n{}", metrics_yaml(dir.path())),
    );
    expect(&d, "postfix", "a1.example", &secure("mx.a1.example"));
    expect(&d, "postfix", "a2.example", &secure("mx.a2.example"));
    let cfg = d.config_path().display().to_string();
    let q = |args: &[&str]| {
        let mut all = vec!["-c", cfg.as_str()];
        all.extend_from_slice(args);
        run_query(bins.query, &all)
    };
    let (code, out, err) = q(&["--cache", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("a1.example enforce id=1") && out.contains("a2.example enforce id=7"),
        "{out}"
    );
    let (code, out, _) = q(&["--cache", "show", "A2.example"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("a2.example enforce id=7"), "{out}");
    let (code, exported, _) = q(&["--cache", "export"]);
    assert_eq!(code, 0);
    assert_eq!(exported.lines().count(), 2, "{exported}");
    // Purge: the running daemon forgets at once.
    assert_eq!(world.requests("a1.example"), 1);
    let (code, out, err) = q(&["--cache", "purge", "a1.example"]);
    assert_eq!(code, 0, "{out}{err}");
    expect(&d, "postfix", "a1.example", &secure("mx.a1.example"));
    assert_eq!(
        world.requests("a1.example"),
        2,
        "purge did not reach the daemon"
    );
    let (code, _, _) = q(&["--cache", "purge", "never.example"]);
    assert_eq!(code, 1);
    // Purge everything, then import the export: answered with no traffic.
    let (code, _, _) = q(&["--cache", "purge", "--all"]);
    assert_eq!(code, 0);
    let (_, out, _) = q(&["--cache", "list"]);
    assert!(out.trim().is_empty(), "{out}");
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &exported).expect("write export");
    let (code, out, err) = q(&["--cache", "import", &file.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 2"), "{out}");
    let fetched = world.requests("a2.example");
    expect(&d, "postfix", "a2.example", &secure("mx.a2.example"));
    assert_eq!(
        world.requests("a2.example"),
        fetched,
        "imported entry not used"
    );
}

/// With a persistent store and no endpoint, `--cache` acts on the store itself.
pub fn cache_admin_on_the_store(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "s1.example", "1", &["mx.s1.example"]);
    let file = world.dir().join("cache.db");
    let mut d = start(bins, &world, &sqlite_cache(&file));
    expect(&d, "postfix", "s1.example", &secure("mx.s1.example"));
    pause(300);
    d.terminate();
    let cfg = world
        .write_config(&sqlite_cache(&file))
        .display()
        .to_string();
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "--cache", "list", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"domain\":\"s1.example\""), "{out}");
    let (code, _, err) = run_query(bins.query, &["-c", &cfg, "--cache", "purge", "s1.example"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_query(bins.query, &["-c", &cfg, "--cache", "list"]);
    assert!(out.trim().is_empty(), "{out}");
    // The internal cache has nothing to act on without a daemon endpoint.
    let plain = world.write_config("").display().to_string();
    let (code, _, err) = run_query(bins.query, &["-c", &plain, "--cache", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("metrics"), "{err}");
}

/// SIGHUP reopens the log file (after rotation) and reloads the config on the same
/// connection with the cache kept: a zone added by it answers, and is counted under its
/// own label; a changed port and `resolver.ca_file` are logged as needing a restart, and
/// policies are still fetched with the CA bundle read at start (the new path does not
/// exist).
pub fn sighup_reloads_and_reopens_the_log(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "h.example", "1", &["mx.h.example"]);
    publish_enforce(&world, "h2.example", "1", &["mx.h2.example"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let logfile = dir.path().join("daemon.log");
    let (metrics_yaml, metrics_port) = tcp_metrics_yaml(None);
    let d = super::start_with(
        bins,
        &world,
        &format!("cache_grace: 3600\n{metrics_yaml}"),
        &["-l", &logfile.display().to_string()],
    );
    let mut conn = d.client();
    assert_eq!(conn.query("postfix", "h.example"), secure("mx.h.example"));
    // Rotate the log, change the config: idle_timeout, a zone without SNI,
    // another port and CA file.
    std::fs::rename(&logfile, dir.path().join("daemon.log.1")).expect("rotate");
    let config = std::fs::read_to_string(d.config_path()).expect("read config");
    let changed = format!("{config}idle_timeout: 1\nzones:\n  nosni:\n    require_sni: false\n")
        .replacen("\nport:", "\nport: 1\nold_port:", 1)
        .replacen(
            "\n  ca_file:",
            "\n  ca_file: /nonexistent/new-ca.pem\n  old_ca_file:",
            1,
        );
    std::fs::write(d.config_path(), changed).expect("write config");
    d.signal(libc::SIGHUP);
    let reloaded = super::persist::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&logfile).is_ok_and(|log| log.contains("configuration reloaded"))
    });
    let log = std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(reloaded, "new log file:\n{log}\n{}", d.log());
    // Same connection, new zone, no new fetch (the cache survived).
    assert_eq!(
        conn.query("nosni", "h.example"),
        "OK secure match=mx.h.example",
        "log:\n{log}"
    );
    assert_eq!(world.requests("h.example"), 1);
    for needed in [
        "the listen address (host, port, path, mode, reuse_port) changed; it takes effect after a restart",
        "resolver (nameservers, ca_file, policy_port, user_agent) changed; it takes effect after a restart",
    ] {
        assert!(log.contains(needed), "{needed:?} not in\n{log}");
    }
    // The reloaded limits apply to a connection accepted after the
    // reload: idle_timeout 1 s closes it (the one above keeps its 60 s).
    let mut fresh = d.client();
    assert_eq!(fresh.query("postfix", "1.2.3.4"), "NOTFOUND ");
    fresh.set_timeout(Duration::from_secs(5));
    assert!(
        fresh.wait_closed(),
        "idle_timeout of the reload not applied"
    );
    // The CA bundle read at start still validates a new fetch.
    assert_eq!(
        conn.query("nosni", "h2.example"),
        "OK secure match=mx.h2.example"
    );
    let (status, body) = tcp_http(
        metrics_port,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("mta_sts_lookups_total{zone=\"nosni\",outcome=\"secure\"} 2"),
        "{body}"
    );
}

/// `--check-config`: 0 and "ok" for a good file; 1 and every problem with its key path.
pub fn check_config_reports_every_problem(bins: &Bins) {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.yml");
    std::fs::write(&good, "port: 8461\ncache_grace: 30\n").expect("write");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "port: abc\nzones:\n  z:\n    timeout: soon\nunknown_key: 1\n",
    )
    .expect("write");
    let run = |path: &Path| {
        let mut cmd = std::process::Command::new(bins.daemon);
        cmd.arg("--check-config").arg("-c").arg(path);
        run_bounded(cmd, Duration::from_secs(20))
    };
    let (code, out, err) = run(&good);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"), "{out}");
    let (code, out, err) = run(&bad);
    assert_eq!(code, 1, "{out}{err}");
    for needle in ["port", "zones.z.timeout", "unknown_key"] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
}

/// Over TCP, `/cache` is not served: an import of a forged `mode: none` entry, a purge
/// and the reading of the cache are refused and change nothing (the enforce policy is
/// still answered from the cache); `mta-sts-query --cache` does not try TCP either.
pub fn cache_refused_over_tcp(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "t.example", "1", &["mx.t.example"]);
    let (yaml, port) = tcp_metrics_yaml(None);
    let d = start(bins, &world, &format!("cache_grace: 3600\n{yaml}"));
    expect(&d, "postfix", "t.example", &secure("mx.t.example"));
    let later = unix_now() + 10 * 365 * 86400;
    let forged = export_line("t.example", "evil", "none", &[], later) + "\n";
    let requests = [
        format!(
            "POST /cache HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{forged}",
            forged.len()
        ),
        "DELETE /cache/t.example HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        "DELETE /cache HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        "GET /cache HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        "GET /cache/t.example HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
    ];
    for request in &requests {
        let (status, body) = tcp_http(port, request);
        assert_eq!(status, 404, "{request}\n{body}");
        assert!(!body.contains("t.example"), "{body}");
    }
    let cfg = d.config_path().display().to_string();
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "--cache", "purge", "t.example"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("metrics: {path"), "{err}");
    // Still the cached enforce policy, not fetched again: nothing was purged or imported.
    expect(&d, "postfix", "t.example", &secure("mx.t.example"));
    assert_eq!(world.requests("t.example"), 1);
    let (status, text) = tcp_http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("mta_sts_cache_entries 1"), "{text}");
}

/// On TCP, `Host` must name loopback: a page on another name that resolves to
/// 127.0.0.1 (DNS rebinding) gets no metrics.
pub fn foreign_host_refused_over_tcp(bins: &Bins) {
    let world = World::new();
    let (yaml, port) = tcp_metrics_yaml(None);
    let _d = start(bins, &world, &yaml);
    let get = |host: &str| {
        tcp_http(
            port,
            &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
    };
    for host in ["evil.example", &format!("evil.example:{port}"), "10.1.2.3"] {
        let (status, body) = get(host);
        assert_eq!(status, 421, "{host}: {body}");
        assert!(!body.contains("mta_sts_"), "{body}");
    }
    let (status, _) = tcp_http(port, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 400);
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_owned(),
    ] {
        let (status, body) = get(&host);
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("mta_sts_build_info"), "{body}");
    }
}

/// `listen` and `path` at once: Prometheus on TCP, metrics and administration on the
/// socket (mode 0600), which `mta-sts-query --cache` uses.
pub fn metrics_on_tcp_and_administration_on_the_socket(bins: &Bins) {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    publish_enforce(&world, "b.example", "1", &["mx.b.example"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("admin.sock");
    let (yaml, port) = tcp_metrics_yaml(Some(&socket));
    let d = start(bins, &world, &format!("cache_grace: 3600\n{yaml}"));
    expect(&d, "postfix", "b.example", &secure("mx.b.example"));
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, text) = tcp_http(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("mta_sts_cache_entries 1"), "{text}");
    let (status, text) = http(&socket, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let cfg = d.config_path().display().to_string();
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "--cache", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("b.example enforce id=1"), "{out}");
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "--cache", "purge", "b.example"]);
    assert_eq!(code, 0, "{out}{err}");
    expect(&d, "postfix", "b.example", &secure("mx.b.example"));
    assert_eq!(
        world.requests("b.example"),
        2,
        "the purge did not reach the daemon"
    );
}

/// Clients that connect to the TCP listener and send half a request, more of them
/// than it serves at once, do not keep another from `/metrics`: the oldest is closed
/// for the newcomer, without waiting for its deadline (before, four threads each
/// waited out 10 s for a stalled client, and 40 of them held a scraper off for 100 s).
pub fn stalled_client_does_not_block_metrics(bins: &Bins) {
    let world = World::new();
    let (yaml, port) = tcp_metrics_yaml(None);
    let _d = start(bins, &world, &yaml);
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /metr").expect("write");
            s
        })
        .collect();
    pause(200);
    // Answered while the others wait (tcp_http gives up after 5 s).
    let (status, text) = tcp_http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 200, "{text}");
    // The oldest was closed without an answer: shut for a newcomer, not timed out
    // (a deadline would have answered 408).
    let oldest = &mut stalled[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    match oldest.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the oldest stalled client is still open: {e}"),
    }
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "",
        "the oldest was answered"
    );
    drop(stalled);
}

/// A full export of the configured cache (`cache_size` domains with a realistic policy
/// each) is imported through the socket, exported, purged and imported again.
pub fn import_of_a_full_export_through_the_socket(bins: &Bins) {
    const SIZE: usize = 20_000;
    let world = World::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = start(
        bins,
        &world,
        &format!(
            "cache:\n  type: internal\n  options:\n    cache_size: {SIZE}\n{}",
            metrics_yaml(dir.path())
        ),
    );
    let now = unix_now();
    let lines: String = (0..SIZE)
        .map(|i| {
            let mx: Vec<String> = (0..8)
                .map(|m| format!("mx{m}.mail-exchangers.domain-{i}.example"))
                .collect();
            export_line(
                &format!("domain-{i}.example"),
                &format!("id{i}"),
                "enforce",
                &mx,
                now,
            ) + "\n"
        })
        .collect();
    let file = dir.path().join("full.jsonl");
    std::fs::write(&file, &lines).expect("write export");
    let cfg = d.config_path().display().to_string();
    let q = |args: &[&str]| {
        let mut all = vec!["-c", cfg.as_str()];
        all.extend_from_slice(args);
        run_query(bins.query, &all)
    };
    let path = file.display().to_string();
    let (code, out, err) = q(&["--cache", "import", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("imported {SIZE}"));
    // The index may evict a little before it holds cache_size domains (shards).
    let (code, exported, err) = q(&["--cache", "export"]);
    assert_eq!(code, 0, "{err}");
    let held = exported.lines().count();
    assert!(held > SIZE * 9 / 10, "{held}");
    let (code, _, err) = q(&["--cache", "purge", "--all"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&file, &exported).expect("write export");
    let (code, out, err) = q(&["--cache", "import", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("imported {held}"));
    let (_, again, _) = q(&["--cache", "export"]);
    assert_eq!(again, exported);
}
