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
//! it and one for writing the answer, on a few threads per listener, so a
//! client that stalls holds one thread until its deadline and no more.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_sts_core::admin::{
    refusal_response, response, Command, Listener, Progress, Request, RequestParser, TEXT,
};
use mta_sts_core::config::MetricsListen;
use mta_sts_core::metrics::Metrics;
use mta_sts_core::service::{export_line, CacheAdmin};

/// A client gets this long to send its whole request, and again to take
/// the whole answer: an administrator's import of a full export over a
/// Unix socket takes well under a second.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Threads answering each TCP listener: a scraper is served while up to
/// this many less one clients stall, each for at most [`DEADLINE`].
const TCP_WORKERS: usize = 4;
/// Threads answering the Unix socket (the administrator and a scraper);
/// each may hold an import of up to `import_limit` bytes.
const UNIX_WORKERS: usize = 2;
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
        spawn_workers(listener, TCP_WORKERS, &place, Listener::Tcp, &state)?;
        places.push(format!("{place} (GET /metrics)"));
    }
    if let Some((listener, place)) = bound.unix {
        spawn_workers(listener, UNIX_WORKERS, &place, Listener::Unix, &state)?;
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

/// A listener the workers share: each accepts on its own clone.
trait Accepting: Sized + Send + 'static {
    type Stream: Timed;
    fn clone_listener(&self) -> io::Result<Self>;
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Accepting for TcpListener {
    type Stream = TcpStream;
    fn clone_listener(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Accepting for UnixListener {
    type Stream = UnixStream;
    fn clone_listener(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
}

/// `count` threads accepting on `listener`, each answering one connection
/// at a time.
fn spawn_workers<L: Accepting>(
    listener: L,
    count: usize,
    place: &str,
    kind: Listener,
    state: &Arc<AdminState>,
) -> Result<(), String> {
    for _ in 0..count {
        let listener = listener
            .clone_listener()
            .map_err(|e| format!("metrics: {place}: {e}"))?;
        let state = state.clone();
        spawn(move || {
            accept_loop(
                std::iter::repeat_with(|| listener.accept_one()),
                |s| handle(s, kind, &state),
                std::thread::sleep,
            )
        })?;
    }
    Ok(())
}

fn spawn(f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name("mta-sts-admin".into())
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("metrics: cannot start its thread: {e}"))
}

/// A connection whose reads and writes can be bounded in time.
trait Timed: Read + Write {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
}

impl Timed for TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Timed for UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
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

fn handle<S: Timed>(mut stream: S, listener: Listener, state: &AdminState) {
    let parser = RequestParser::new(listener, state.import_limit);
    let answer = match read_request(&mut stream, parser, Instant::now() + DEADLINE) {
        Ok(request) => route(&request, state),
        Err(ReadFailure::Refused(refusal)) => refusal_response(refusal),
        Err(ReadFailure::Deadline) => response(408, TEXT, b"request not sent in time\n"),
        Err(ReadFailure::Gone) => return,
    };
    let _ = write_all(&mut stream, &answer, Instant::now() + DEADLINE);
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
