//! The hermetic test world of the end-to-end suites (docs/ARCHITECTURE.md "Testing"): a DNS server and
//! HTTPS policy servers on loopback with a CA generated at test time (RFC 8461 §3.1, §3.3),
//! plus handles on real Postfix (`postmap`, and whole instances for the delivery tests),
//! `redis-server` and the daemon process.
//!
//! Everything listens on 127.0.0.0/8 only and uses std threads (no async runtime), so both
//! the smol and the tokio daemon's suites can use it.
//!
//! Certificates: the main policy server's certificate is re-issued (and its TLS acceptor
//! replaced) every time a domain is added, so it always covers `mta-sts.<d>` for every
//! domain added so far; no wildcard and no SNI-based selection is needed. Many domains at
//! once ([`World::add_policy_domains`], the benchmark's thousands) are published with one
//! certificate per call, on a policy server of their own.

#![warn(missing_docs)]

pub mod ca;
pub mod cases;
pub mod daemon;
pub mod delivery;
pub mod dns;
pub mod https;
pub mod netns;
pub mod postfix;
pub mod postgres;
pub mod postmap;
pub mod python;
pub mod redis;
pub mod smtp_sink;
pub mod socketmap_client;
mod suite;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use ca::{TestCa, Validity};
pub use daemon::{activated_command, child_setup, run_query, Daemon, Listen};
pub use dns::DnsServer;
pub use https::{Behaviour, Encoding, PolicyServer};
pub use postgres::PgServer;
pub use postmap::{postmap_query, PostmapOutcome, PostmapResult};
pub use python::PythonDaemon;
pub use redis::{RedisServer, SentinelSet};
pub use socketmap_client::{ReadOutcome, SocketmapClient};

/// A certificate problem served by one of the extra policy servers (RFC 8461 §3.3: each must
/// make the policy fetch fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertProblem {
    /// Valid and trusted, but only for `wrong-name.invalid` (on 127.0.0.2).
    WrongName,
    /// Right names, signed by a CA the daemon does not trust (on 127.0.0.3).
    Untrusted,
    /// Right names, trusted CA, expired (on 127.0.0.4).
    Expired,
}

/// The name on the wrong-name server's certificate.
pub const WRONG_NAME: &str = "wrong-name.invalid";

/// One policy server and the names its certificate must cover.
struct HostServer {
    server: PolicyServer,
    names: Mutex<Vec<String>>,
    problem: Option<CertProblem>,
}

/// One DNS server, the test CA (and an untrusted one), a temp dir holding the CA file, and
/// four policy servers sharing one port: the main one on 127.0.0.1 (valid certificate) and
/// one per [`CertProblem`] on 127.0.0.2..4.
pub struct World {
    /// The DNS server (use it directly for split TXT strings, CNAMEs, faults, counters).
    pub dns: DnsServer,
    /// The CA the daemon trusts (`ca_file`).
    pub ca: TestCa,
    /// A CA nobody trusts.
    pub untrusted_ca: TestCa,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    port: u16,
    servers: Vec<HostServer>,
    /// Servers of [`World::add_policy_domains`], one per call.
    bulk: Mutex<Vec<PolicyServer>>,
}

/// First loopback address of the servers of [`World::add_policy_domains`] (127.1.0.1, then
/// upwards), clear of the four fixed servers on 127.0.0.1..4.
const BULK_FIRST: u32 = u32::from_be_bytes([127, 1, 0, 1]);

/// `mta-sts.<domain>`, or `host` unchanged if it already is a policy host name.
pub fn policy_host(domain_or_host: &str) -> String {
    let d = domain_or_host.trim_end_matches('.').to_ascii_lowercase();
    if d.starts_with("mta-sts.") {
        d
    } else {
        format!("mta-sts.{d}")
    }
}

/// A policy file (RFC 8461 §3.2) with LF line ends: version, mode, one `mx` line per entry,
/// max_age.
pub fn policy_body(mode: &str, max_age: u64, mx: &[&str]) -> String {
    let mut s = format!("version: STSv1\nmode: {mode}\n");
    for m in mx {
        s.push_str(&format!("mx: {m}\n"));
    }
    s.push_str(&format!("max_age: {max_age}\n"));
    s
}

impl World {
    /// Starts the DNS server and the four policy servers (no domains yet) and writes the CA file.
    pub fn new() -> World {
        World::on_ports(0, 0)
    }

    /// As [`World::new`] with the DNS server on `127.0.0.1:<dns_port>` and the policy servers
    /// on `<policy_port>` (0: any free port). Fixed ports are for a private network namespace,
    /// where 53 and 443 let programs with no `resolver` settings (the Python original) use the
    /// world through /etc/resolv.conf; panics if a fixed port is taken.
    pub fn on_ports(dns_port: u16, policy_port: u16) -> World {
        let ca = TestCa::new("mta-sts test CA");
        let untrusted_ca = TestCa::new("mta-sts untrusted CA");
        let dir = tempfile::tempdir().expect("world temp dir");
        let ca_file = ca.write_ca_file(dir.path());
        let problems = [
            None,
            Some(CertProblem::WrongName),
            Some(CertProblem::Untrusted),
            Some(CertProblem::Expired),
        ];
        let (port, servers) = bind_same_port(problems.len(), policy_port, |i| {
            let (issuer, validity) = match problems.get(i).copied().flatten() {
                Some(CertProblem::Untrusted) => (&untrusted_ca, Validity::Valid),
                Some(CertProblem::Expired) => (&ca, Validity::Expired),
                _ => (&ca, Validity::Valid),
            };
            let first = if i == 1 {
                WRONG_NAME
            } else {
                "placeholder.invalid"
            };
            issuer.identity(&[first], validity)
        });
        let servers = servers
            .into_iter()
            .zip(problems)
            .map(|(server, problem)| HostServer {
                server,
                names: Mutex::new(Vec::new()),
                problem,
            })
            .collect();
        let dns = if dns_port == 0 {
            DnsServer::start()
        } else {
            DnsServer::start_on(SocketAddr::from(([127, 0, 0, 1], dns_port)))
                .unwrap_or_else(|e| panic!("bind the DNS server on 127.0.0.1:{dns_port}: {e}"))
        };
        World {
            dns,
            ca,
            untrusted_ca,
            dir,
            ca_file,
            port,
            servers,
            bulk: Mutex::new(Vec::new()),
        }
    }

    /// The temp dir (CA file, configs; free for the test's own files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA file the daemon must trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The port shared by every policy server (`policy_port`).
    pub fn policy_port(&self) -> u16 {
        self.port
    }

    /// The loopback address serving `problem` (`None`: the main, valid server).
    pub fn server_ip(&self, problem: Option<CertProblem>) -> Ipv4Addr {
        let i = self
            .servers
            .iter()
            .position(|s| s.problem == problem)
            .unwrap_or(0);
        match self.servers.get(i).map(|s| s.server.addr().ip()) {
            Some(IpAddr::V4(ip)) => ip,
            _ => Ipv4Addr::LOCALHOST,
        }
    }

    fn server(&self, problem: Option<CertProblem>) -> Option<&HostServer> {
        self.servers.iter().find(|s| s.problem == problem)
    }

    /// Adds `host` to the certificate of the server for `problem` (re-issuing it), unless the
    /// problem is a wrong name.
    fn cover(&self, problem: Option<CertProblem>, host: &str) {
        let Some(hs) = self.server(problem) else {
            return;
        };
        if problem == Some(CertProblem::WrongName) {
            return;
        }
        let mut names = lock(&hs.names);
        if names.iter().any(|n| n == host) {
            return;
        }
        names.push(host.to_string());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let identity = match problem {
            Some(CertProblem::Untrusted) => self.untrusted_ca.identity(&refs, Validity::Valid),
            Some(CertProblem::Expired) => self.ca.identity(&refs, Validity::Expired),
            _ => self.ca.identity(&refs, Validity::Valid),
        };
        hs.server.set_identity(identity);
    }

    /// Publishes a policy domain: TXT `_mta-sts.<domain>` = `txt` (one record, one string),
    /// A `mta-sts.<domain>` = 127.0.0.1, the main certificate covering `mta-sts.<domain>`, and
    /// `behaviour` for that host (on every server, see [`World::set_behaviour`]).
    pub fn add_policy_domain(&self, domain: &str, txt: &str, behaviour: Behaviour) {
        let host = policy_host(domain);
        self.set_txt(domain, &[txt]);
        self.dns.set_a(&host, &[Ipv4Addr::LOCALHOST]);
        self.cover(None, &host);
        self.set_behaviour(&host, behaviour);
    }

    /// Publishes many policy domains at once, as [`World::add_policy_domain`] does for one, but
    /// with one certificate issued for all of them (issuing one per domain, re-covering every
    /// earlier name, is quadratic): a new policy server on its own loopback address (127.1.x.y,
    /// same port) serves `behaviour` with a certificate for exactly these `mta-sts.<domain>`
    /// names, and their A records point there. Callers publishing thousands split them into
    /// calls of a realistic certificate size (tens of names).
    pub fn add_policy_domains(&self, domains: &[String], txt: &str, behaviour: Behaviour) {
        let hosts: Vec<String> = domains.iter().map(|d| policy_host(d)).collect();
        let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let identity = self.ca.identity(&names, Validity::Valid);
        let mut bulk = lock(&self.bulk);
        let server = (0..1000)
            .find_map(|skip| {
                let n = u32::try_from(bulk.len() + skip).ok()?;
                let ip = Ipv4Addr::from(BULK_FIRST.checked_add(n)?);
                PolicyServer::bind(SocketAddr::from((ip, self.port)), identity.clone()).ok()
            })
            .expect("bind a bulk policy server on 127.1.x.y");
        let ip = match server.addr().ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        };
        for (domain, host) in domains.iter().zip(&hosts) {
            self.set_txt(domain, &[txt]);
            self.dns.set_a(host, &[ip]);
            server.set(host, behaviour.clone());
        }
        bulk.push(server);
    }

    /// Replaces the TXT records of `_mta-sts.<domain>`, one single-string record per entry
    /// (an empty slice leaves the name with no TXT: NODATA). For split strings or CNAMEs use
    /// [`World::dns`] directly.
    pub fn set_txt(&self, domain: &str, records: &[&str]) {
        let name = format!("_mta-sts.{}", domain.trim_end_matches('.'));
        let recs: Vec<&[&str]> = records.iter().map(std::slice::from_ref).collect();
        self.dns.set_txt(&name, &recs);
    }

    /// Sets what every policy server does for `host` (`mta-sts.<d>`, or just `<d>`), and the
    /// [`World::add_policy_domains`] server that serves it.
    pub fn set_behaviour(&self, host: &str, behaviour: Behaviour) {
        let host = policy_host(host);
        for s in &self.servers {
            s.server.set(&host, behaviour.clone());
        }
        for s in lock(&self.bulk).iter() {
            if s.get(&host).is_some() {
                s.set(&host, behaviour.clone());
            }
        }
    }

    /// Moves `mta-sts.<domain>` (A record) to the server with certificate problem `problem`,
    /// which serves the same behaviour; call after [`World::add_policy_domain`].
    pub fn policy_host_with_cert(&self, domain: &str, problem: CertProblem) {
        let host = policy_host(domain);
        self.cover(Some(problem), &host);
        self.dns.set_a(&host, &[self.server_ip(Some(problem))]);
    }

    /// Moves `mta-sts.<domain>` back to the main server (valid certificate).
    pub fn policy_host_valid(&self, domain: &str) {
        let host = policy_host(domain);
        self.cover(None, &host);
        self.dns.set_a(&host, &[Ipv4Addr::LOCALHOST]);
    }

    /// Complete HTTP requests received for `host` (`mta-sts.<d>` or `<d>`) by all servers.
    pub fn requests(&self, host: &str) -> usize {
        let host = policy_host(host);
        let bulk: usize = lock(&self.bulk).iter().map(|s| s.requests(&host)).sum();
        bulk + self
            .servers
            .iter()
            .map(|s| s.server.requests(&host))
            .sum::<usize>()
    }

    /// The head of the last request for `host` seen by the main server.
    pub fn last_request(&self, host: &str) -> Option<String> {
        self.server(None)
            .and_then(|s| s.server.last_request(&policy_host(host)))
    }

    /// The `resolver:` section pointing the daemon at this world, followed by `extra`:
    /// ```yaml
    /// resolver:
    ///   nameservers: ["127.0.0.1:<dns port>"]
    ///   ca_file: "<dir>/mta-sts_test_CA.pem"
    ///   policy_port: <port>
    /// ```
    pub fn config_yaml(&self, extra: &str) -> String {
        format!(
            "resolver:\n  nameservers: [\"{}\"]\n  ca_file: {}\n  policy_port: {}\n{}{}",
            self.dns.addr(),
            daemon::yaml_str(&self.ca_file.display().to_string()),
            self.port,
            extra,
            if extra.ends_with('\n') || extra.is_empty() {
                ""
            } else {
                "\n"
            },
        )
    }

    /// Writes [`World::config_yaml`] to `<dir>/config.yml` and returns its path.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("config.yml");
        std::fs::write(&path, self.config_yaml(extra)).expect("write config");
        path
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// Locks `m`, taking the data of a poisoned lock (a panicking test thread must not hide the
/// state from the assertions that follow).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds `count` policy servers on 127.0.0.1, 127.0.0.2, ... all on one port (`port`, or a
/// free one when 0), retrying with a new free port when one of the addresses is taken.
fn bind_same_port(
    count: usize,
    port: u16,
    identity: impl Fn(usize) -> native_tls::Identity,
) -> (u16, Vec<PolicyServer>) {
    let tries = if port == 0 { 50 } else { 1 };
    'retry: for _ in 0..tries {
        let first = PolicyServer::bind(SocketAddr::from(([127, 0, 0, 1], port)), identity(0))
            .unwrap_or_else(|e| panic!("bind policy server on 127.0.0.1:{port}: {e}"));
        let port = first.addr().port();
        let mut servers = vec![first];
        for i in 1..count {
            let Ok(last) = u8::try_from(i + 1) else {
                break 'retry;
            };
            match PolicyServer::bind(SocketAddr::from(([127, 0, 0, last], port)), identity(i)) {
                Ok(s) => servers.push(s),
                Err(_) => continue 'retry,
            }
        }
        return (port, servers);
    }
    panic!("could not bind {count} policy servers on one port");
}

/// A currently free TCP port on 127.0.0.1 (free when checked; the caller binds it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port on 127.0.0.1")
}

/// `chown owner path` (`owner` as chown(1) takes it: `user`, `user:group`, `user:`); panics
/// if it fails.
pub fn chown(owner: &str, path: &Path) {
    let out = Command::new("chown")
        .arg(owner)
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown {owner} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finds `name` in `PATH`, then in the sbin/bin directories (Postfix lives in /usr/sbin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Polls `check` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` with captured output, killing it after `timeout`:
/// (exit code or -1, stdout, stderr).
pub fn run_bounded(cmd: Command, timeout: Duration) -> (i32, String, String) {
    run_bounded_with_input(cmd, &[], timeout)
}

/// As [`run_bounded`], writing `input` to the command's stdin.
pub fn run_bounded_with_input(
    mut cmd: Command,
    input: &[u8],
    timeout: Duration,
) -> (i32, String, String) {
    let mut child = cmd
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // From a thread, so a child that does not read cannot block us past the timeout; a child
    // that exits without reading gets EPIPE there, and its exit status tells.
    let feed = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        })
    });
    // Drain both pipes in threads so a chatty child cannot block on a full pipe.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
        }
    };
    if let Some(feed) = feed {
        let _ = feed.join();
    }
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}
