//! Postfix's kind of load: each connection has one request outstanding, writes it, waits for
//! the reply, checks it, and only then sends the next (a closed loop, no pipelining), like
//! an smtp(8) process querying `smtp_tls_policy_maps`.

use crate::bare::frame_end;
use crate::procstat;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How long one reply may take before the connection counts as failed (a cold lookup is
/// bounded by the daemons' 4 s zone timeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply read.
const BUFFER: usize = 64 * 1024;
/// Mismatched replies kept as examples.
const EXAMPLES: usize = 3;

/// What a load phase sends and expects.
pub struct Work {
    /// One request per domain, on the wire.
    pub requests: Vec<Vec<u8>>,
    /// The expected reply to each, on the wire.
    pub expected: Vec<u8>,
}

impl Work {
    /// The first `at` requests and the rest, as two phases' work.
    pub fn split_at(&self, at: usize) -> (Work, Work) {
        let (first, rest) = self.requests.split_at(at.min(self.requests.len()));
        let part = |requests: &[Vec<u8>]| Work {
            requests: requests.to_vec(),
            expected: self.expected.clone(),
        };
        (part(first), part(rest))
    }
}

/// How long a phase lasts.
#[derive(Clone, Copy)]
pub enum Phase {
    /// Every request exactly once, spread over the connections (a warm-up).
    EachOnce,
    /// Cycle through the requests until this much time has passed.
    Timed(Duration),
}

/// What one phase measured.
#[derive(Default)]
pub struct Outcome {
    /// Replies received (matching or not).
    pub replies: u64,
    /// From the moment every connection was open to the last reply.
    pub elapsed: Duration,
    /// The target's CPU time (utime + stime) over `elapsed`.
    pub cpu: Option<Duration>,
    /// Request-to-reply time of each reply, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Replies that were not the expected one.
    pub mismatches: u64,
    /// Connections that failed (connect, read, write, malformed reply).
    pub errors: u64,
    /// Every error and a few mismatches, described.
    pub problems: Vec<String>,
}

impl Outcome {
    /// Replies per second.
    pub fn rate(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per reply.
    pub fn cpu_us_per_reply(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.replies > 0).then(|| cpu.as_secs_f64() * 1e6 / self.replies as f64)
    }

    /// The `q` quantile (0..=1) of the latencies in microseconds.
    pub fn latency_us(&self, q: f64) -> Option<f64> {
        let n = self.latencies_ns.len();
        let last = n.checked_sub(1)?;
        let i = ((last as f64) * q).round() as usize;
        self.latencies_ns
            .get(i.min(last))
            .map(|&ns| ns as f64 / 1e3)
    }

    /// Mismatches plus connection errors: anything but a correct reply to every request.
    pub fn failures(&self) -> u64 {
        self.mismatches + self.errors
    }

    /// Adds `other` to this outcome as if both were one phase: replies, failures, problems,
    /// latencies (kept sorted), elapsed time and CPU time (known only if known for both).
    pub fn absorb(&mut self, other: Outcome) {
        self.replies += other.replies;
        self.elapsed += other.elapsed;
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
        self.latencies_ns.extend(other.latencies_ns);
        self.latencies_ns.sort_unstable();
        self.mismatches += other.mismatches;
        self.errors += other.errors;
        self.problems.extend(other.problems);
    }
}

struct Shared {
    work: Arc<Work>,
    phase: Phase,
    stop: AtomicBool,
    next: AtomicUsize,
    start: Barrier,
}

#[derive(Default)]
struct Tally {
    replies: u64,
    latencies_ns: Vec<u64>,
    mismatches: u64,
    errors: u64,
    problems: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.problems.push(what);
    }
}

/// Runs `phase` against `127.0.0.1:port` over `connections` connections; `pid` is the
/// target's process, whose CPU time is read at the start and the end.
pub fn run(port: u16, pid: u32, connections: usize, work: &Arc<Work>, phase: Phase) -> Outcome {
    let shared = Arc::new(Shared {
        work: Arc::clone(work),
        phase,
        stop: AtomicBool::new(false),
        next: AtomicUsize::new(0),
        start: Barrier::new(connections + 1),
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let threads: Vec<_> = (0..connections)
        .map(|id| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || connection(addr, id, connections, &shared))
                .expect("spawn a load thread")
        })
        .collect();
    shared.start.wait();
    let started = Instant::now();
    let cpu_before = procstat::cpu(pid);
    if let Phase::Timed(length) = phase {
        std::thread::sleep(length);
        shared.stop.store(true, Ordering::SeqCst);
    }
    let mut out = Outcome::default();
    for t in threads {
        let tally = t.join().unwrap_or_else(|_| {
            let mut t = Tally::default();
            t.error("a load thread panicked".into());
            t
        });
        out.replies += tally.replies;
        out.mismatches += tally.mismatches;
        out.errors += tally.errors;
        out.latencies_ns.extend(tally.latencies_ns);
        out.problems.extend(tally.problems);
    }
    out.elapsed = started.elapsed();
    out.cpu = cpu_before
        .zip(procstat::cpu(pid))
        .map(|(a, b)| b.saturating_sub(a));
    out.latencies_ns.sort_unstable();
    out
}

/// One connection's closed loop.
fn connection(addr: SocketAddr, id: usize, connections: usize, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).and_then(|s| {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(s)
    });
    shared.start.wait();
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            tally.error(format!("connect: {e}"));
            return tally;
        }
    };
    let work = &shared.work;
    let n = work.requests.len();
    if let Phase::Timed(length) = shared.phase {
        // Room for one reply per microsecond would be far too much; a few per 10 us is not.
        let guess = usize::try_from(length.as_millis()).unwrap_or(0) * 100 / connections.max(1);
        tally.latencies_ns.reserve(guess.min(4 << 20));
    }
    let mut buf = vec![0u8; BUFFER];
    // Spread the connections over the domains.
    let mut cursor = id * n / connections.max(1);
    loop {
        let i = match shared.phase {
            Phase::EachOnce => shared.next.fetch_add(1, Ordering::Relaxed),
            Phase::Timed(_) if shared.stop.load(Ordering::Relaxed) => break,
            Phase::Timed(_) => {
                cursor = (cursor + 1) % n;
                cursor
            }
        };
        let Some(request) = work.requests.get(i) else {
            break;
        };
        let sent = Instant::now();
        if let Err(e) = stream.write_all(request) {
            tally.error(format!("write: {e}"));
            break;
        }
        let reply = match read_frame(&mut stream, &mut buf) {
            Ok(end) => buf.get(..end).unwrap_or_default(),
            Err(e) => {
                tally.error(e);
                break;
            }
        };
        let took = sent.elapsed();
        tally.replies += 1;
        tally
            .latencies_ns
            .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        if reply != work.expected.as_slice() {
            tally.mismatches += 1;
            if tally.problems.len() < EXAMPLES {
                tally.problems.push(format!(
                    "reply {:?} to {:?}, expected {:?}",
                    String::from_utf8_lossy(reply),
                    String::from_utf8_lossy(request),
                    String::from_utf8_lossy(&work.expected)
                ));
            }
        }
    }
    tally
}

/// Reads exactly one netstring into the front of `buf`; an extra byte after it (a reply to
/// nothing) is an error.
fn read_frame(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, String> {
    let mut len = 0;
    loop {
        match stream.read(buf.get_mut(len..).unwrap_or_default()) {
            Ok(0) if len == buf.len() => return Err("reply too long".into()),
            Ok(0) => return Err("connection closed by the target".into()),
            Ok(n) => len += n,
            Err(e) => return Err(format!("read: {e}")),
        }
        match buf.get(..len).map(frame_end) {
            Some(Ok(Some(end))) if end == len => return Ok(end),
            Some(Ok(Some(_))) => return Err("more bytes than one reply".into()),
            Some(Ok(None)) => {}
            _ => {
                return Err(format!(
                    "malformed reply {:?}",
                    String::from_utf8_lossy(buf.get(..len).unwrap_or_default())
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Outcome, Work};
    use std::time::Duration;

    #[test]
    fn split_work() {
        let work = Work {
            requests: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            expected: b"ok".to_vec(),
        };
        let (first, rest) = work.split_at(1);
        assert_eq!((first.requests.len(), rest.requests.len()), (1, 2));
        assert_eq!(rest.expected, work.expected);
        let (all, none) = work.split_at(5);
        assert_eq!((all.requests.len(), none.requests.len()), (3, 0));
    }

    #[test]
    fn absorbed_outcomes_add_up() {
        let step = |replies, ms, cpu_ms: Option<u64>, latencies: Vec<u64>| Outcome {
            replies,
            elapsed: Duration::from_millis(ms),
            cpu: cpu_ms.map(Duration::from_millis),
            latencies_ns: latencies,
            errors: 1,
            ..Outcome::default()
        };
        let mut both = step(2, 100, Some(30), vec![1, 9]);
        both.absorb(step(3, 200, Some(60), vec![5, 2, 7]));
        assert_eq!(both.replies, 5);
        assert_eq!(both.elapsed, Duration::from_millis(300));
        assert_eq!(both.cpu, Some(Duration::from_millis(90)));
        assert_eq!(both.latencies_ns, vec![1, 2, 5, 7, 9]);
        assert_eq!(both.failures(), 2);
        both.absorb(step(1, 1, None, vec![]));
        assert_eq!(both.cpu, None);
    }
}
