//! The shared end-to-end cases (README.md): plain functions, grouped by topic,
//! each building its own [`World`] and daemon, so any driver's suite can run them through
//! [`crate::e2e_suite`]. Replies are asserted exactly; "no network traffic" is asserted with
//! the DNS query and HTTPS request counters.

pub mod admin;
pub mod cache;
pub mod dane;
pub mod dnssec;
pub mod fetch;
pub mod keys;
pub mod limits;
pub mod logs;
pub mod ops;
pub mod persist;
pub mod policy;
pub mod postfix;
pub mod protocol;
pub mod python;
pub mod query;
pub mod request_path;
pub mod root;
pub mod secrets;
pub mod shared;
pub mod tls;
pub mod txt;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{policy_body, Behaviour, Daemon, World};

/// The programs under test: paths of `mta-sts-daemon` and `mta-sts-query`.
#[derive(Clone, Copy, Debug)]
pub struct Bins {
    /// The socketmap daemon.
    pub daemon: &'static str,
    /// The one-shot query tool.
    pub query: &'static str,
}

/// The `NOTFOUND ` reply (socketmap_table(5): a trailing space, empty reason).
pub const NOTFOUND: &str = "NOTFOUND ";

/// The `_mta-sts` TXT record `v=STSv1; id=<id>` (RFC 8461 §3.1).
pub fn sts_txt(id: &str) -> String {
    format!("v=STSv1; id={id}")
}

/// Publishes `domain` with TXT id `id` and the policy file `body` served with `200 OK`,
/// `text/plain`, `Content-Length` (RFC 8461 §3.1, §3.3).
pub fn publish(world: &World, domain: &str, id: &str, body: &str) {
    world.add_policy_domain(domain, &sts_txt(id), Behaviour::policy(body));
}

/// Publishes `domain` with an `enforce` policy for `mx`, `max_age` one day.
pub fn publish_enforce(world: &World, domain: &str, id: &str, mx: &[&str]) {
    publish(world, domain, id, &policy_body("enforce", 86400, mx));
}

/// For each of `names`, `<name>.example` with an `enforce` policy for `mx.<name>.example`,
/// ids 1, 2, ... in order (the domains of an outage scenario, one per phase, or of
/// requests that must each be looked up).
pub fn publish_phases(world: &World, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        publish_enforce(
            world,
            &format!("{name}.example"),
            &(i + 1).to_string(),
            &[&format!("mx.{name}.example")],
        );
    }
}

/// `OK secure match=<patterns> servername=hostname`, the default zone's reply for an
/// `enforce` policy (docs/ARCHITECTURE.md "Replies").
pub fn secure(matches: &str) -> String {
    format!("OK secure match={matches} servername=hostname")
}

/// Starts the daemon on a free TCP port with the world's `resolver:` section plus `extra`
/// (more YAML), logging at debug level.
pub fn start(bins: &Bins, world: &World, extra: &str) -> Daemon {
    start_with(bins, world, extra, &[])
}

/// As [`start`] with more command line arguments.
pub fn start_with(bins: &Bins, world: &World, extra: &str, args: &[&str]) -> Daemon {
    let mut all = vec!["-v", "debug"];
    all.extend_from_slice(args);
    Daemon::start(bins.daemon, &world.config_yaml(extra), &all)
}

/// One request on a new connection; panics (with the daemon's log) if no reply comes.
pub fn lookup(daemon: &Daemon, name: &str, key: &str) -> String {
    let mut client = daemon.client();
    client.send_request(name, key);
    match client.read_reply() {
        Some(reply) => reply,
        None => panic!(
            "no reply to {name:?} {key:?}; daemon output:\n{}",
            daemon.log()
        ),
    }
}

/// Asserts that `name key` is answered with exactly `want`, showing the daemon's log if not.
pub fn expect(daemon: &Daemon, name: &str, key: &str, want: &str) {
    let got = lookup(daemon, name, key);
    assert_eq!(
        got,
        want,
        "reply to {name:?} {key:?}; daemon output:\n{}",
        daemon.log()
    );
}

/// Asserts that `key` is answered `NOTFOUND ` in the default zone.
pub fn expect_notfound(daemon: &Daemon, key: &str) {
    expect(daemon, "postfix", key, NOTFOUND);
}

/// Sleeps `ms` milliseconds (only where wall-clock time must pass: cache_grace, max_age).
pub fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A program started by hand (not through [`Daemon`]): for runs expected to fail, or to use
/// the default address; its output goes to files in `dir`. Dropping it kills it.
pub struct RawProcess {
    child: Child,
    dir: PathBuf,
}

impl RawProcess {
    /// Starts `bin args...` with stdout and stderr captured in `dir`.
    pub fn spawn(bin: &str, args: &[&str], dir: &Path) -> RawProcess {
        let file = |name: &str| std::fs::File::create(dir.join(name)).expect("output file");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file("raw-stdout.log"))
            .stderr(file("raw-stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        RawProcess {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Captured stdout then stderr.
    pub fn output(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!("{}{}", read("raw-stdout.log"), read("raw-stderr.log"))
    }

    /// Waits up to `timeout` until the output contains `needle` (true) or the process exits
    /// or time runs out (false).
    pub fn wait_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return self.output().contains(needle);
            }
            pause(20);
        }
        false
    }

    /// The exit code if the process has exited.
    pub fn exited(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }
}

impl Drop for RawProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
