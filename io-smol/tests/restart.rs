//! Restarts without a gap (README.md "Deploy", systemd): a daemon stops
//! promptly while a standby shares its TCP port (SO_REUSEPORT) or has taken
//! its Unix socket path over, the standby answers meanwhile, and a
//! socket-activated listener stays open across a stop for the next daemon.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mta_sts_tests::{activated_command, child_setup, free_port, Daemon, Listen, SocketmapClient};

const DAEMON: &str = env!("CARGO_BIN_EXE_mta-sts-daemon");
/// A stop with nothing in flight takes milliseconds; this bounds a hang.
const STOP_LIMIT: Duration = Duration::from_secs(10);
const CONFIG: &str = "shutdown_timeout: 5\n";
/// An address literal: answered NOTFOUND with no lookup (no network).
const KEY: &str = "[192.0.2.1]";

/// Wait until the daemon logged that it serves: with a standby on the
/// same address, answering a probe does not show this daemon is up.
fn wait_logged_ready(log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log().lines().any(|l| l.ends_with(" ready")) {
        assert!(Instant::now() < deadline, "not ready; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(listen: Listen) -> Daemon {
    let d = Daemon::start_on(Path::new(DAEMON), listen, CONFIG, &[]);
    wait_logged_ready(|| d.log());
    d
}

fn stop_promptly(d: &mut Daemon, what: &str) {
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(STOP_LIMIT);
    assert!(status.success(), "{what}: {status}; log:\n{}", d.log());
}

fn answer(mut client: SocketmapClient) -> String {
    client.set_timeout(Duration::from_secs(10));
    client.query("postfix", KEY)
}

fn tcp_client(port: u16) -> SocketmapClient {
    SocketmapClient::connect_tcp(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect")
}

/// With several daemons on one port, a stop must not rely on a connection
/// to that port reaching its own listener: the kernel spreads connections
/// over all of them.
#[test]
fn a_daemon_stops_while_standbys_share_its_port() {
    let port = free_port();
    let mut standbys: Vec<Daemon> = (0..3).map(|_| start(Listen::Tcp(port))).collect();
    for round in 0..3 {
        let mut main = start(Listen::Tcp(port));
        assert_eq!(answer(tcp_client(port)), "NOTFOUND ");
        stop_promptly(&mut main, &format!("round {round}"));
        // The standbys go on answering on the port.
        assert_eq!(answer(tcp_client(port)), "NOTFOUND ");
    }
    for (i, s) in standbys.iter_mut().enumerate() {
        stop_promptly(s, &format!("standby {i}"));
    }
}

/// A standby started on the same Unix socket path takes the path over; the
/// daemon it replaces must still stop.
#[test]
fn a_daemon_stops_after_a_standby_took_its_unix_socket_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mta-sts.sock");
    let mut main = start(Listen::Unix(path.clone()));
    let mut standby = start(Listen::Unix(path.clone()));
    stop_promptly(&mut main, "replaced daemon");
    let client = SocketmapClient::connect_unix(&path).expect("connect to the standby");
    assert_eq!(answer(client), "NOTFOUND ");
    stop_promptly(&mut standby, "standby");
}

/// `bin -c config` with `listener` as descriptor 3 and `LISTEN_FDS=1`, as
/// systemd starts a socket-activated service.
fn spawn_activated(listener: &TcpListener, config: &Path, log: &Path) -> Child {
    let mut cmd = activated_command(Path::new(DAEMON));
    cmd.arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    child_setup(&mut cmd, Some(listener.as_raw_fd()), None);
    cmd.spawn().expect("spawn the daemon")
}

fn stop_child(child: &mut Child, log: &Path) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no stop; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Socket activation: the service manager keeps the listening socket (here
/// the test does); a stopped daemon must leave it listening, so that a
/// request made while no daemon runs waits in the backlog and the next
/// daemon answers it.
#[test]
fn an_activated_listener_outlives_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yml");
    std::fs::write(&config, CONFIG).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let first_log = dir.path().join("first.log");
    let mut first = spawn_activated(&listener, &config, &first_log);
    wait_logged_ready(|| std::fs::read_to_string(&first_log).unwrap_or_default());
    assert_eq!(answer(tcp_client(port)), "NOTFOUND ");
    stop_child(&mut first, &first_log);
    // No daemon runs: the connection waits in the kept socket's backlog.
    let mut waiting = tcp_client(port);
    waiting.send_request("postfix", KEY);
    let second_log = dir.path().join("second.log");
    let mut second = spawn_activated(&listener, &config, &second_log);
    wait_logged_ready(|| std::fs::read_to_string(&second_log).unwrap_or_default());
    waiting.set_timeout(Duration::from_secs(10));
    let reply = waiting.read_reply();
    assert_eq!(reply.as_deref(), Some("NOTFOUND "));
    stop_child(&mut second, &second_log);
}
