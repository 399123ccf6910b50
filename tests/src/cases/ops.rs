//! Operations: systemd readiness, privilege drop, signals (README.md
//! "Programs").

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::{expect, publish_enforce, secure, Bins};
use crate::{Daemon, World};

/// With `NOTIFY_SOCKET` set, the daemon sends `READY=1` once serving and
/// `STOPPING=1` on SIGTERM (sd_notify(3)), then exits 0.
pub fn sd_notify_ready_and_stopping(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "notify.example", "n1", &["mx.notify.example"]);
    let socket_path = world.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let notify = socket_path.display().to_string();
    let mut daemon = Daemon::start_with_env(
        bins.daemon,
        &world.config_yaml(""),
        &[],
        &[("NOTIFY_SOCKET", notify.as_str())],
    );
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 from the daemon");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving.
    expect(
        &daemon,
        "postfix",
        "notify.example",
        &secure("mx.notify.example"),
    );
    let status = daemon.terminate();
    let n = socket.recv(&mut buf).expect("STOPPING=1 from the daemon");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
}

/// `-u nobody`: after binding, the daemon runs as nobody (and its primary
/// group) and still answers, its CA bundle having been read before.
pub fn drops_privileges_to_user(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "priv.example", "p1", &["mx.priv.example"]);
    let mut daemon = Daemon::start(bins.daemon, &world.config_yaml(""), &["-u", "nobody"]);
    // An answer means start-up is over (the port accepts before privileges drop).
    expect(
        &daemon,
        "postfix",
        "priv.example",
        &secure("mx.priv.example"),
    );
    let pid = daemon.pid().expect("pid");
    let (ids, status) = process_ids(pid);
    assert_eq!(ids("Uid:"), "65534 65534 65534 65534", "{status}");
    assert_eq!(ids("Gid:"), "65534 65534 65534 65534", "{status}");
    expect(
        &daemon,
        "postfix",
        "priv.example",
        &secure("mx.priv.example"),
    );
    assert_eq!(daemon.terminate().code(), Some(0), "log:\n{}", daemon.log());
}

/// An unknown `-u` user stops start-up with a message naming it.
pub fn unknown_user_is_an_error(bins: &Bins) {
    let world = World::new();
    let config = world.write_config(&format!("port: {}\n", crate::free_port()));
    let (code, _out, err) = crate::run_query(
        bins.daemon,
        &[
            "-c",
            &config.display().to_string(),
            "-u",
            "no-such-user-xyz",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no-such-user-xyz"), "stderr: {err}");
}

/// SIGINT stops the daemon like SIGTERM: exit status 0.
pub fn sigint_stops_cleanly(bins: &Bins) {
    let world = World::new();
    let mut daemon = Daemon::start(bins.daemon, &world.config_yaml(""), &[]);
    daemon.signal(libc::SIGINT);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
}

/// The ids of process `pid` from /proc (field `Uid:` or `Gid:`: real,
/// effective, saved, filesystem), and the whole status text for messages.
pub(super) fn process_ids(pid: u32) -> (impl Fn(&str) -> String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let text = status.clone();
    let ids = move |field: &str| {
        text.lines()
            .find(|l| l.starts_with(field))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (ids, status)
}
