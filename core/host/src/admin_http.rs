//! The metrics and cache administration endpoint (config `metrics`,
//! README.md "Metrics" and "Cache administration"): a small HTTP/1.1
//! server on loopback TCP, a Unix socket, or both. TCP serves `GET
//! /metrics` and nothing else; the Unix socket serves it too and `/cache`:
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /cache` | every entry, one JSON line each (export) |
//! | `GET /cache/DOMAIN` | one entry, or 404 |
//! | `POST /cache` | import JSON lines from the body |
//! | `DELETE /cache/DOMAIN` | purge one domain, or 404 |
//! | `DELETE /cache` | purge everything |
//!
//! The requests are parsed by the sans-IO `mta_sts_core::admin`; this file
//! moves bytes. One request per connection, under one deadline for reading
//! it and one for writing the answer, on a thread per connection up to a
//! cap per listener; at the cap the oldest connection still sending its
//! request is closed for the newcomer, so clients that stall cannot keep a
//! scraper waiting (docs/ARCHITECTURE.md "Operations").

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mta_sts_core::admin::{
    refusal_response, response, Command, Listener, Progress, Request, RequestParser, TEXT,
};
use mta_sts_core::config::MetricsListen;
use mta_sts_core::metrics::Metrics;
use mta_sts_core::service::{export_line, CacheAdmin};

/// How many connections a listener serves at once, and how long each
/// gets to send its whole request, and again to take the whole answer.
#[derive(Clone, Copy, Debug)]
struct Limits {
    connections: usize,
    deadline: Duration,
}

/// TCP: a Prometheus `GET` without a body takes milliseconds; a thread per
/// connection up to the cap, beyond which the oldest still sending its
/// request is closed, so stalled clients cannot hold off a scraper.
const TCP: Limits = Limits {
    connections: 32,
    deadline: Duration::from_secs(2),
};
/// The Unix socket (the administrator and a scraper): an import of a full
/// export (up to `import_limit` bytes) takes well under a second.
const UNIX: Limits = Limits {
    connections: 8,
    deadline: Duration::from_secs(10),
};
/// How long an accept loop waits after a failed accept (out of descriptors
/// or memory) before trying again, so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the endpoint reads and changes.
pub struct AdminState {
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
    /// The caches.
    pub admin: CacheAdmin,
    /// The largest import accepted (`mta_sts_core::admin::import_limit`).
    pub import_limit: usize,
    /// Domains held in memory now.
    pub cache_entries: Box<dyn Fn() -> usize + Send + Sync>,
    /// Socketmap connections open now.
    pub open_connections: Box<dyn Fn() -> usize + Send + Sync>,
}

/// The bound listeners, not served yet (bound before privileges drop).
pub struct Bound {
    tcp: Option<(TcpListener, String)>,
    unix: Option<(UnixListener, String)>,
}

/// Bind `listen`: a loopback address, a Unix socket with its mode, or both.
pub fn bind(listen: &MetricsListen) -> Result<Bound, String> {
    let tcp = match &listen.tcp {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .map(|l| (l, addr.to_string()))
                .map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?,
        ),
    };
    let unix = match &listen.unix {
        None => None,
        Some(socket) => {
            let path = &socket.path;
            let listener = crate::bind_unix(path, Some(socket.mode))?;
            listener
                .set_nonblocking(false)
                .map_err(|e| format!("metrics: {}: {e}", path.display()))?;
            Some((listener, path.display().to_string()))
        }
    };
    Ok(Bound { tcp, unix })
}

/// Serve `bound` on threads of its own for the life of the process; where
/// it listens, for the log.
pub fn serve(bound: Bound, state: AdminState) -> Result<String, String> {
    let state = Arc::new(state);
    let mut places = Vec::new();
    if let Some((listener, place)) = bound.tcp {
        spawn_listener(listener, TCP, Listener::Tcp, &state)?;
        places.push(format!("{place} (GET /metrics)"));
    }
    if let Some((listener, place)) = bound.unix {
        spawn_listener(listener, UNIX, Listener::Unix, &state)?;
        places.push(format!("{place} (/metrics, /cache)"));
    }
    Ok(places.join(" and "))
}

/// Hand each accepted connection to `handle`; after a failed accept (out
/// of descriptors: EMFILE, ENFILE, ENOBUFS, ENOMEM) `pause` before the
/// next, as the failure would repeat at once and the loop spin.
fn accept_loop<S>(
    accepts: impl Iterator<Item = io::Result<S>>,
    mut handle: impl FnMut(S),
    mut pause: impl FnMut(Duration),
) {
    for accepted in accepts {
        match accepted {
            Ok(stream) => handle(stream),
            // The client gave up before it was accepted, or a signal: next.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => pause(ACCEPT_BACKOFF),
        }
    }
}

/// A listener whose connections are served on threads of their own.
trait Accepting: Send + 'static {
    type Stream: Timed;
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

/// TCP and Unix sockets offer the same calls under the same names.
macro_rules! accepting {
    ($listener:ty, $stream:ty) => {
        impl Accepting for $listener {
            type Stream = $stream;
            fn accept_one(&self) -> io::Result<$stream> {
                self.accept().map(|(s, _)| s)
            }
        }

        impl Timed for $stream {
            fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
                self.set_read_timeout(Some(timeout))?;
                self.set_write_timeout(Some(timeout))
            }
            fn duplicate(&self) -> io::Result<Self> {
                self.try_clone()
            }
            fn shut(&self) {
                let _ = self.shutdown(Shutdown::Both);
            }
        }
    };
}

accepting!(TcpListener, TcpStream);
accepting!(UnixListener, UnixStream);

/// A thread accepting on `listener`, and a thread for each connection,
/// at most `limits.connections` at once.
fn spawn_listener<L: Accepting>(
    listener: L,
    limits: Limits,
    kind: Listener,
    state: &Arc<AdminState>,
) -> Result<(), String> {
    let state = state.clone();
    let slots = Arc::new(Slots::new(limits.connections));
    spawn(move || {
        accept_loop(
            std::iter::repeat_with(|| listener.accept_one()),
            |stream| {
                let Some(slot) = slots.admit(&stream) else {
                    // Out of descriptors for the clone: as a failed accept.
                    return std::thread::sleep(ACCEPT_BACKOFF);
                };
                let state = state.clone();
                // If no thread can be started, the connection is closed and
                // its slot given back as the closure is dropped; pause, as
                // after a failed accept.
                if spawn(move || handle(stream, slot, kind, limits.deadline, &state)).is_err() {
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            },
            std::thread::sleep,
        )
    })
}

fn spawn(f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name("mta-sts-admin".into())
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("metrics: cannot start its thread: {e}"))
}

/// The connections of one listener being served: how many, and a clone of
/// each still reading its request, oldest first, by which it can be closed.
struct Slots<S> {
    limit: usize,
    inner: Mutex<Served<S>>,
    freed: Condvar,
}

struct Served<S> {
    open: usize,
    /// Closed for a newcomer and not ended yet.
    leaving: usize,
    next: u64,
    reading: VecDeque<(u64, S)>,
}

/// One connection's hold on its listener's [`Slots`], given back on drop.
struct Slot<S: Timed> {
    slots: Arc<Slots<S>>,
    id: u64,
    /// It took itself off the list of readers, so it was not closed for
    /// a newcomer.
    withdrawn: bool,
}

impl<S: Timed> Slots<S> {
    fn new(limit: usize) -> Self {
        Slots {
            limit,
            inner: Mutex::new(Served {
                open: 0,
                leaving: 0,
                next: 0,
                reading: VecDeque::new(),
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Served<S>> {
        // The data stays consistent whatever panicked while holding it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for `stream`. At the limit, the oldest connection still
    /// reading its request is closed (its thread wakes and ends at once) and
    /// its slot taken; with none reading, wait for one to be answered, which
    /// its deadline bounds. `None` if `stream` cannot be cloned.
    fn admit(self: &Arc<Self>, stream: &S) -> Option<Slot<S>> {
        let clone = stream.duplicate().ok()?;
        let mut served = self.lock();
        while served.open >= self.limit {
            if served.leaving == 0 {
                if let Some((_, oldest)) = served.reading.pop_front() {
                    oldest.shut();
                    served.leaving += 1;
                }
            }
            served = self
                .freed
                .wait(served)
                .unwrap_or_else(PoisonError::into_inner);
        }
        served.open += 1;
        let id = served.next;
        served.next = id.wrapping_add(1);
        served.reading.push_back((id, clone));
        Some(Slot {
            slots: self.clone(),
            id,
            withdrawn: false,
        })
    }
}

impl<S: Timed> Slot<S> {
    /// Reading the request is over: from now on the connection is not
    /// closed for a newcomer (it is answered, under its deadline).
    fn request_read(&mut self) {
        let mut served = self.slots.lock();
        if let Some(at) = served.reading.iter().position(|(id, _)| *id == self.id) {
            served.reading.remove(at);
            self.withdrawn = true;
        }
    }
}

impl<S: Timed> Drop for Slot<S> {
    fn drop(&mut self) {
        let mut served = self.slots.lock();
        if !self.withdrawn {
            match served.reading.iter().position(|(id, _)| *id == self.id) {
                Some(at) => drop(served.reading.remove(at)),
                None => served.leaving = served.leaving.saturating_sub(1),
            }
        }
        served.open = served.open.saturating_sub(1);
        drop(served);
        self.slots.freed.notify_one();
    }
}

/// A connection whose reads and writes can be bounded in time, and which
/// another thread can close through a clone.
trait Timed: Read + Write + Sized + Send + 'static {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
    fn duplicate(&self) -> io::Result<Self>;
    /// Shut both directions: a read blocked on another clone returns.
    fn shut(&self);
}

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
enum ReadFailure {
    /// The request was refused: answer it.
    Refused(mta_sts_core::admin::Refusal),
    /// The deadline passed first.
    Deadline,
    /// The client closed or the connection failed: nothing to answer.
    Gone,
}

fn handle<S: Timed>(
    mut stream: S,
    mut slot: Slot<S>,
    listener: Listener,
    deadline: Duration,
    state: &AdminState,
) {
    let parser = RequestParser::new(listener, state.import_limit);
    let read = read_request(&mut stream, parser, Instant::now() + deadline);
    slot.request_read();
    let answer = match read {
        Ok(request) => route(&request, state),
        Err(ReadFailure::Refused(refusal)) => refusal_response(refusal),
        Err(ReadFailure::Deadline) => response(408, TEXT, b"request not sent in time\n"),
        Err(ReadFailure::Gone) => return,
    };
    let _ = write_all(&mut stream, &answer, Instant::now() + deadline);
}

/// The time left until `deadline`, if any.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Read one request, all of it before `deadline` (not a timeout per read,
/// which a client sending a byte at a time would renew for ever).
fn read_request<S: Timed>(
    stream: &mut S,
    mut parser: RequestParser,
    deadline: Instant,
) -> Result<Request, ReadFailure> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let timeout = left(deadline).ok_or(ReadFailure::Deadline)?;
        stream
            .set_timeouts(timeout)
            .map_err(|_| ReadFailure::Gone)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(ReadFailure::Gone),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadFailure::Deadline)
            }
            Err(_) => return Err(ReadFailure::Gone),
        };
        match parser.feed(chunk.get(..n).unwrap_or_default()) {
            Ok(Progress::Partial) => {}
            Ok(Progress::Complete(request)) => return Ok(request),
            Err(refusal) => return Err(ReadFailure::Refused(refusal)),
        }
    }
}

/// Write `bytes`, all of them before `deadline`.
fn write_all<S: Timed>(stream: &mut S, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let timeout = left(deadline).ok_or(io::ErrorKind::TimedOut)?;
        stream.set_timeouts(timeout)?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.flush()
}

/// Carry out an accepted request; the answer's bytes.
fn route(request: &Request, state: &AdminState) -> Vec<u8> {
    let text = |status: u16, body: String| response(status, TEXT, body.as_bytes());
    let failed = |e: mta_sts_core::service::AdminError| text(500, format!("{e}\n"));
    match &request.command {
        Command::Metrics => response(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state
                .metrics
                .encode((state.cache_entries)(), (state.open_connections)())
                .as_bytes(),
        ),
        Command::Export => match futures::executor::block_on(state.admin.list()) {
            Ok(entries) => text(
                200,
                entries
                    .iter()
                    .map(|(d, e)| export_line(d, e) + "\n")
                    .collect(),
            ),
            Err(e) => failed(e),
        },
        Command::Import => match std::str::from_utf8(&request.body) {
            Err(_) => text(400, "body is not UTF-8\n".into()),
            Ok(lines) => match futures::executor::block_on(state.admin.import(lines)) {
                Ok(n) => text(200, format!("imported {n}\n")),
                Err(e) => text(400, format!("{e}\n")),
            },
        },
        Command::PurgeAll => match futures::executor::block_on(state.admin.purge_all()) {
            Ok(n) => text(200, format!("purged {n}\n")),
            Err(e) => failed(e),
        },
        Command::Show(domain) => match futures::executor::block_on(state.admin.show(domain)) {
            Ok(Some(entry)) => text(200, export_line(domain, &entry) + "\n"),
            Ok(None) => text(404, format!("{domain}: not cached\n")),
            Err(e) => failed(e),
        },
        Command::Purge(domain) => match futures::executor::block_on(state.admin.purge(domain)) {
            Ok(true) => text(200, format!("purged {domain}\n")),
            Ok(false) => text(404, format!("{domain}: not cached\n")),
            Err(e) => failed(e),
        },
    }
}

/// A blocking HTTP/1.1 client for `mta-sts-query --cache`: one request to
/// the daemon's administration socket; the status and body.
pub fn request(socket: &Path, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, String)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = Vec::new();
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    // A refused request is answered and closed before its body is read:
    // the answer says why better than the broken pipe.
    let sent = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        sent?;
        read?;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("not an HTTP response"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_failed_accept_pauses_before_the_next() {
        let emfile = || Err(io::Error::from_raw_os_error(libc::EMFILE));
        let accepts = vec![emfile(), Ok(1), emfile(), emfile(), Ok(2)];
        let (mut handled, mut pauses) = (Vec::new(), 0);
        accept_loop(accepts.into_iter(), |s| handled.push(s), |_| pauses += 1);
        assert_eq!(handled, [1, 2]);
        assert_eq!(pauses, 3);
    }

    /// A connection on `slots` served as `handle` does up to its request:
    /// one read, then its slot given back.
    fn reader(slots: &Arc<Slots<UnixStream>>) -> (UnixStream, std::thread::JoinHandle<usize>) {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut slot = slots.admit(&ours).unwrap();
        let thread = std::thread::spawn(move || {
            let n = ours.read(&mut [0u8; 16]).unwrap_or(0);
            slot.request_read();
            n
        });
        (theirs, thread)
    }

    /// Admit a newcomer on another thread; `None` if not admitted within
    /// 10 s (the test would hang otherwise).
    fn admit_within(slots: &Arc<Slots<UnixStream>>) -> Option<(UnixStream, Slot<UnixStream>)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let slots = slots.clone();
        std::thread::spawn(move || {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let slot = slots.admit(&ours);
            let _ = tx.send(slot.map(|slot| (theirs, slot)));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok().flatten()
    }

    fn still_open(peer: &mut UnixStream) -> bool {
        peer.set_nonblocking(true).unwrap();
        let open =
            matches!(peer.read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        peer.set_nonblocking(false).unwrap();
        open
    }

    #[test]
    fn at_the_cap_the_oldest_still_reading_is_closed_for_a_newcomer() {
        let slots = Arc::new(Slots::new(2));
        let (mut oldest, oldest_thread) = reader(&slots);
        let (mut next, next_thread) = reader(&slots);
        let newcomer = admit_within(&slots);
        assert!(
            newcomer.is_some(),
            "the newcomer waited for a stalled client"
        );
        assert_eq!(oldest.read(&mut [0u8; 1]).unwrap(), 0);
        assert_eq!(oldest_thread.join().unwrap(), 0);
        assert!(still_open(&mut next));
        next.write_all(b"x").unwrap();
        assert_eq!(next_thread.join().unwrap(), 1);
    }

    #[test]
    fn a_connection_being_answered_is_not_closed_for_a_newcomer() {
        let slots = Arc::new(Slots::new(1));
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut answering = slots.admit(&ours).unwrap();
        answering.request_read();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = slots.clone();
        std::thread::spawn(move || {
            let (newcomer, _peer) = UnixStream::pair().unwrap();
            let _ = tx.send(waiting.admit(&newcomer).is_some());
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert!(still_open(&mut theirs));
        drop(answering);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    }

    #[test]
    fn the_client_reads_a_refusal_sent_before_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 64];
            let _ = s.read(&mut head);
            let answer =
                mta_sts_core::admin::refusal_response(mta_sts_core::admin::Refusal::BodyTooLarge);
            s.write_all(&answer).unwrap();
        });
        let body = vec![b'x'; 8 * 1024 * 1024];
        let (status, text) = request(&path, "POST", "/cache", &body).unwrap();
        assert_eq!((status, text.as_str()), (413, "body too large\n"));
        server.join().unwrap();
    }

    #[test]
    fn the_deadline_covers_the_whole_request() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        // A byte at a time, each well within a per-read timeout, for longer
        // than the deadline; then the rest, which must not be waited for.
        let trickle = std::thread::spawn(move || {
            let _ = theirs.write_all(b"GET /metrics HTTP/1.1\r\nX: ");
            for _ in 0..40 {
                if theirs.write_all(b"a").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = theirs.write_all(b"\r\n\r\n");
        });
        let parser = RequestParser::new(Listener::Unix, 0);
        let deadline = Instant::now() + Duration::from_millis(300);
        assert_eq!(
            read_request(&mut ours, parser, deadline),
            Err(ReadFailure::Deadline)
        );
        drop(ours);
        trickle.join().unwrap();
    }
}
