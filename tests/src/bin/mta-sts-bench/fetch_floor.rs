//! The cold mode's floor, `bare-fetch`: the network work of a cold lookup with as little code
//! as possible, no cache and no socketmap. The bench runs it as its own child
//! (`--bare-fetch DNS_ADDR POLICY_PORT DOMAINS CONNECTIONS`, [`child_main`]) so its CPU is a
//! separate process's, and [`measure`] turns the one JSON line the child prints into a load
//! phase's [`Outcome`], reduced to a row like any target's.
//!
//! The child builds one `native_tls::TlsConnector` (default settings: it trusts
//! `SSL_CERT_FILE`), starts `CONNECTIONS` threads, each with its own UDP socket, and only then
//! starts the clock and reads its CPU time. Each thread takes the next domain from a shared
//! counter until all `DOMAINS` are done, one lookup at a time (Postfix's one request in flight
//! per connection): TXT `_mta-sts.<domain>` (an answer with `v=STSv1` must come back), then A
//! and AAAA of `mta-sts.<domain>` sent together and both awaited, then TCP to the A address on
//! the policy port, a TLS handshake with SNI `mta-sts.<domain>`, `GET
//! /.well-known/mta-sts.txt` with `Connection: close`, and the response read to its end (status
//! 200, a body with `mode: enforce`). It then prints its wall time, its CPU time (utime+stime
//! of /proc/self/stat), every lookup's latency and its failures.

use crate::bare::die_with_parent;
use crate::load::Outcome;
use crate::{procstat, workload};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use native_tls::TlsConnector;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The first argument that makes this program the floor.
pub const ARG: &str = "--bare-fetch";
/// How long one DNS attempt waits for its answers.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// DNS attempts (the unanswered queries are sent again) before a lookup fails.
const DNS_ATTEMPTS: u32 = 3;
/// How long a TCP connect to a policy host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read or write of the policy fetch may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest DNS answer read.
const DNS_BUFFER: usize = 4096;
/// Wrong answers kept as examples per thread (errors are all kept).
const EXAMPLES: usize = 3;
/// Problems the child reports.
const REPORTED: usize = 20;

/// What the floor is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Job {
    /// The world's DNS server (UDP).
    pub dns: SocketAddr,
    /// The policy hosts' HTTPS port.
    pub policy_port: u16,
    /// Domains `0..domains` of [`workload::domain`], each looked up once.
    pub domains: usize,
    /// Threads, each with one lookup in flight.
    pub conns: usize,
}

impl Job {
    /// Parses the arguments after [`ARG`].
    fn parse(args: &[String]) -> Result<Job, String> {
        let [dns, port, domains, conns] = args else {
            return Err(format!(
                "usage: {ARG} DNS_ADDR POLICY_PORT DOMAINS CONNECTIONS"
            ));
        };
        let bad = |what: &str, v: &str| format!("{ARG}: {what} {v:?}");
        Ok(Job {
            dns: dns.parse().map_err(|_| bad("DNS address", dns))?,
            policy_port: port.parse().map_err(|_| bad("policy port", port))?,
            domains: domains.parse().map_err(|_| bad("domain count", domains))?,
            conns: conns
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| bad("connection count", conns))?,
        })
    }

    /// The arguments after [`ARG`] that [`Job::parse`] reads back.
    fn args(&self) -> [String; 4] {
        [
            self.dns.to_string(),
            self.policy_port.to_string(),
            self.domains.to_string(),
            self.conns.to_string(),
        ]
    }
}

/// Runs the floor as a child of `program` (this bench) with `trust` as `SSL_CERT_FILE` and
/// returns its timed work.
pub fn measure(program: &Path, trust: &Path, job: &Job) -> Result<Outcome, String> {
    let output = Command::new(program)
        .arg(ARG)
        .args(job.args())
        .env("SSL_CERT_FILE", trust)
        .output()
        .map_err(|e| format!("start {}: {e}", program.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{} ({}): {}", ARG, output.status, stderr.trim()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    outcome_from(line).map_err(|e| format!("{ARG} printed {line:?}: {e}"))
}

/// `--bare-fetch ...`: the child. Exit status 0 when it ran (its failures are in its output),
/// 2 on bad arguments, 1 when it could not start.
pub fn child_main(args: &[String]) -> i32 {
    die_with_parent();
    let job = match Job::parse(args) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("mta-sts-bench {e}");
            return 2;
        }
    };
    // Built before the clock starts: a daemon builds its connector once at start-up.
    let connector = match TlsConnector::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mta-sts-bench {ARG}: TLS connector: {e}");
            return 1;
        }
    };
    let outcome = run(job, connector);
    println!("{}", result_line(&outcome));
    0
}

/// What the threads share.
struct Shared {
    job: Job,
    connector: TlsConnector,
    next: AtomicUsize,
    start: Barrier,
}

/// Looks up every domain of `job` and measures it.
fn run(job: Job, connector: TlsConnector) -> Outcome {
    let conns = job.conns;
    let shared = Arc::new(Shared {
        job,
        connector,
        next: AtomicUsize::new(0),
        start: Barrier::new(conns + 1),
    });
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .spawn(move || worker(&shared))
                .expect("spawn a fetch thread")
        })
        .collect();
    shared.start.wait();
    let started = Instant::now();
    let cpu_before = procstat::cpu(std::process::id());
    let mut out = Outcome::default();
    for t in threads {
        out.absorb(t.join().unwrap_or_else(|_| Outcome {
            errors: 1,
            problems: vec!["a fetch thread panicked".into()],
            ..Outcome::default()
        }));
    }
    out.elapsed = started.elapsed();
    out.cpu = cpu_before
        .zip(procstat::cpu(std::process::id()))
        .map(|(a, b)| b.saturating_sub(a));
    out
}

/// Why a lookup failed.
enum Failure {
    /// An answer came back but was not the expected one (a "wrong reply").
    Wrong(String),
    /// No answer: a socket error or a timeout (a "failed connection").
    Io(String),
}

/// One thread: lookups until every domain is taken.
fn worker(shared: &Shared) -> Outcome {
    let mut out = Outcome::default();
    let socket = dns_socket(shared.job.dns);
    shared.start.wait();
    let mut dns = match socket {
        Ok(socket) => Dns { socket, next_id: 1 },
        Err(e) => {
            out.errors += 1;
            out.problems.push(format!("UDP socket: {e}"));
            return out;
        }
    };
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.job.domains {
            break;
        }
        let domain = workload::domain(i);
        let sent = Instant::now();
        let result = lookup(shared, &mut dns, &domain);
        out.replies += 1;
        out.latencies_ns
            .push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
        match result {
            Ok(()) => {}
            Err(Failure::Wrong(what)) => {
                out.mismatches += 1;
                if out.problems.len() < EXAMPLES {
                    out.problems.push(format!("{domain}: {what}"));
                }
            }
            Err(Failure::Io(what)) => {
                out.errors += 1;
                out.problems.push(format!("{domain}: {what}"));
            }
        }
    }
    out
}

/// A UDP socket connected to the DNS server (it then receives from that server only).
fn dns_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    if !server.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "{server} is not on loopback, not contacted"
        )));
    }
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(DNS_TIMEOUT))?;
    Ok(socket)
}

/// One cold lookup of `domain`: TXT, A+AAAA, policy fetch.
fn lookup(shared: &Shared, dns: &mut Dns, domain: &str) -> Result<(), Failure> {
    let txt = dns.ask(&[(&format!("_mta-sts.{domain}"), RecordType::TXT)])?;
    if !txt.iter().any(has_sts_record) {
        return Err(Failure::Wrong("no v=STSv1 TXT record".into()));
    }
    let host = format!("mta-sts.{domain}");
    let addrs = dns.ask(&[(&host, RecordType::A), (&host, RecordType::AAAA)])?;
    let ip = addrs
        .iter()
        .find_map(first_ipv4)
        .ok_or_else(|| Failure::Wrong(format!("no A record for {host}")))?;
    let addr = SocketAddr::from((ip, shared.job.policy_port));
    fetch(&shared.connector, addr, &host)
}

/// A thread's DNS client.
struct Dns {
    socket: UdpSocket,
    next_id: u16,
}

impl Dns {
    /// Sends every question at once and waits for all the answers (NOERROR), in the order
    /// asked; unanswered questions are sent again after [`DNS_TIMEOUT`].
    fn ask(&mut self, questions: &[(&str, RecordType)]) -> Result<Vec<Message>, Failure> {
        let mut pending = Vec::with_capacity(questions.len());
        for &(name, rtype) in questions {
            let id = self.next_id;
            self.next_id = id.wrapping_add(1);
            pending.push((id, query(id, name, rtype)?));
        }
        let mut answers: Vec<Option<Message>> = vec![None; questions.len()];
        for _ in 0..DNS_ATTEMPTS {
            for ((_, bytes), answer) in pending.iter().zip(&answers) {
                if answer.is_none() {
                    self.socket
                        .send(bytes)
                        .map_err(|e| Failure::Io(format!("DNS send: {e}")))?;
                }
            }
            self.receive(&pending, &mut answers)?;
            if answers.iter().all(Option::is_some) {
                return Ok(answers.into_iter().flatten().collect());
            }
        }
        Err(Failure::Io(format!(
            "no DNS answer to {questions:?} in {DNS_ATTEMPTS} attempts"
        )))
    }

    /// Fills `answers` (one per `pending` query) until all are in or a read times out.
    fn receive(
        &self,
        pending: &[(u16, Vec<u8>)],
        answers: &mut [Option<Message>],
    ) -> Result<(), Failure> {
        let mut buf = [0u8; DNS_BUFFER];
        while answers.iter().any(Option::is_none) {
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(())
                }
                Err(e) => return Err(Failure::Io(format!("DNS receive: {e}"))),
            };
            let Some(msg) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
                continue;
            };
            let slot = pending
                .iter()
                .position(|(id, _)| *id == msg.metadata.id)
                .and_then(|i| answers.get_mut(i));
            // Anything else is a late answer to an earlier attempt.
            if let Some(slot) = slot {
                if msg.metadata.response_code != ResponseCode::NoError {
                    return Err(Failure::Wrong(format!(
                        "DNS {}",
                        msg.metadata.response_code
                    )));
                }
                *slot = Some(msg);
            }
        }
        Ok(())
    }
}

/// A recursive query for `name` (absolute) of type `rtype`, on the wire.
fn query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>, Failure> {
    let fqdn = Name::from_ascii(format!("{name}."))
        .map_err(|e| Failure::Wrong(format!("DNS name {name:?}: {e}")))?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(fqdn, rtype));
    msg.to_vec()
        .map_err(|e| Failure::Wrong(format!("DNS query for {name}: {e}")))
}

/// Whether `msg` answers with an MTA-STS TXT record (RFC 8461 §3.1).
fn has_sts_record(msg: &Message) -> bool {
    msg.answers.iter().any(|r| match &r.data {
        RData::TXT(txt) => txt.txt_data.concat().starts_with(b"v=STSv1"),
        _ => false,
    })
}

/// The first IPv4 address answered in `msg`.
fn first_ipv4(msg: &Message) -> Option<Ipv4Addr> {
    msg.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

/// The HTTPS policy fetch from `addr` (loopback only) with SNI and `Host:` `host`.
fn fetch(connector: &TlsConnector, addr: SocketAddr, host: &str) -> Result<(), Failure> {
    if !addr.ip().is_loopback() {
        return Err(Failure::Wrong(format!(
            "{host} at {addr}: not on loopback, not contacted"
        )));
    }
    let io = |what: &str, e: &dyn std::fmt::Display| Failure::Io(format!("{what} {addr}: {e}"));
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| io("connect", &e))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| io("socket options", &e))?;
    let mut tls = connector
        .connect(host, tcp)
        .map_err(|e| io("TLS handshake", &e))?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| io("write to", &e))?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        // A server closing without close_notify: the end all the same (what was read is kept).
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(io("read from", &e)),
    }
    check_response(&response).map_err(Failure::Wrong)
}

/// A `200` response whose body holds an `enforce` policy.
fn check_response(response: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("status {status:?}"));
    }
    if !body.contains("mode: enforce") {
        return Err(format!("body without \"mode: enforce\": {body:?}"));
    }
    Ok(())
}

/// The child's result, one line of JSON.
fn result_line(o: &Outcome) -> String {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    json!({
        "lookups": o.replies,
        "wrong": o.mismatches,
        "errors": o.errors,
        "wall_ns": ns(o.elapsed),
        "cpu_ns": o.cpu.map(ns),
        "latencies_ns": o.latencies_ns,
        "problems": o.problems.iter().take(REPORTED).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Reads [`result_line`] back.
fn outcome_from(line: &str) -> Result<Outcome, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let count = |key: &str| {
        v.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no {key}"))
    };
    let mut latencies_ns: Vec<u64> = v
        .get("latencies_ns")
        .and_then(Value::as_array)
        .ok_or("no latencies_ns")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    latencies_ns.sort_unstable();
    Ok(Outcome {
        replies: count("lookups")?,
        elapsed: Duration::from_nanos(count("wall_ns")?),
        cpu: v
            .get("cpu_ns")
            .and_then(Value::as_u64)
            .map(Duration::from_nanos),
        latencies_ns,
        mismatches: count("wrong")?,
        errors: count("errors")?,
        problems: v
            .get("problems")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned))
            .into_iter()
            .flatten()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_arguments_round_trip() {
        let job = Job {
            dns: SocketAddr::from(([127, 0, 0, 1], 53)),
            policy_port: 443,
            domains: 2000,
            conns: 16,
        };
        assert_eq!(Job::parse(&job.args()), Ok(job));
        assert!(Job::parse(&["127.0.0.1:53".into(), "443".into(), "10".into()]).is_err());
        let zero = ["127.0.0.1:53", "443", "10", "0"].map(String::from);
        assert!(Job::parse(&zero).is_err());
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nversion: STSv1\nmode: enforce\n";
        assert_eq!(check_response(ok), Ok(()));
        assert!(check_response(b"HTTP/1.1 404 Not Found\r\n\r\nmode: enforce").is_err());
        assert!(check_response(b"HTTP/1.1 200 OK\r\n\r\nmode: testing\n").is_err());
        assert!(check_response(b"HTTP/1.1 200 OK\r\nContent-Len").is_err());
    }

    #[test]
    fn result_line_round_trip() {
        let o = Outcome {
            replies: 3,
            elapsed: Duration::from_millis(1500),
            cpu: Some(Duration::from_millis(20)),
            latencies_ns: vec![5, 1, 3],
            mismatches: 1,
            errors: 1,
            problems: vec!["x".into()],
        };
        let back = outcome_from(&result_line(&o)).expect("parses");
        assert_eq!(
            (back.replies, back.elapsed, back.cpu, back.latencies_ns),
            (3, o.elapsed, o.cpu, vec![1, 3, 5])
        );
        assert_eq!(
            (back.mismatches, back.errors, back.problems),
            (1, 1, o.problems)
        );
    }

    #[test]
    fn queries_parse_back() {
        let bytes = query(7, "_mta-sts.d1.bench.test", RecordType::TXT).ok();
        let msg = bytes.and_then(|b| Message::from_vec(&b).ok());
        let q = msg.as_ref().and_then(|m| m.queries.first());
        assert_eq!(msg.as_ref().map(|m| m.metadata.id), Some(7));
        assert_eq!(q.map(|q| q.query_type()), Some(RecordType::TXT));
    }
}
