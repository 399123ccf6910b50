//! An HTTPS policy server (RFC 8461 §3.3: `GET /.well-known/mta-sts.txt` over HTTPS) that
//! routes by the HTTP `Host` header to a per-host, runtime-changeable [`Behaviour`],
//! including the misbehaviours the daemon must survive.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use native_tls::{HandshakeError, Identity, TlsAcceptor, TlsStream};

use crate::lock;

/// How often blocked threads wake up to check the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Longest wait of an idle accept thread before it looks at the stop flag again (`stop`
/// also wakes it by connecting).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// A connection that has not sent a full request by then is dropped (Hang is exempt).
const CONN_DEADLINE: Duration = Duration::from_secs(15);
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// How a policy body is framed (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, in several chunks.
    Chunked,
    /// No length: the body ends when the connection closes.
    Close,
}

/// What the server does for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// `200 OK` with `body`; `content_type` defaults to `text/plain`.
    Policy {
        /// The policy file (RFC 8461 §3.2).
        body: String,
        /// The `Content-Type` header; `None` means `text/plain`.
        content_type: Option<String>,
        /// The body framing.
        encoding: Encoding,
    },
    /// This status code with a `text/plain` body.
    Status(u16, String),
    /// `301 Moved Permanently` to this location (RFC 8461 §3.3: must not be followed).
    Redirect(String),
    /// Completes the TLS handshake and reads the request, never answers until the server stops.
    Hang,
    /// Resets the TCP connection (RST) right after reading the request.
    Reset,
    /// Writes these bytes as the whole response, then closes.
    Raw(Vec<u8>),
    /// Waits this long after reading the request, then behaves as the inner behaviour
    /// (a slow policy host).
    Delayed(Duration, Box<Behaviour>),
}

impl Behaviour {
    /// The common case: `200 OK`, `text/plain`, `Content-Length`.
    pub fn policy(body: &str) -> Behaviour {
        Behaviour::Policy {
            body: body.to_string(),
            content_type: None,
            encoding: Encoding::Length,
        }
    }
}

struct Shared {
    acceptor: RwLock<Arc<TlsAcceptor>>,
    routes: Mutex<HashMap<String, Behaviour>>,
    requests: Mutex<HashMap<String, usize>>,
    last_request: Mutex<HashMap<String, String>>,
    stop: AtomicBool,
}

/// Host names are matched case-insensitively without port or trailing dot.
fn norm_host(host: &str) -> String {
    let h = host.trim();
    let h = match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// A TLS server on one address with one (replaceable) certificate; a thread per connection,
/// one request per connection. Unknown hosts get `404`. Dropping it stops every thread.
pub struct PolicyServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_thread: Option<JoinHandle<()>>,
}

impl PolicyServer {
    /// Listens on `addr` (port 0 picks one) with `identity`; fails if the address is taken.
    pub fn bind(addr: SocketAddr, identity: Identity) -> std::io::Result<PolicyServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            acceptor: RwLock::new(Arc::new(acceptor(identity))),
            routes: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            last_request: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let accept_thread = Some(std::thread::spawn(move || accept_loop(&s, &listener)));
        Ok(PolicyServer {
            shared,
            addr,
            accept_thread,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the certificate for new connections.
    pub fn set_identity(&self, identity: Identity) {
        let new = Arc::new(acceptor(identity));
        *self
            .shared
            .acceptor
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new;
    }

    /// Sets what the server does for requests with `Host: host`.
    pub fn set(&self, host: &str, behaviour: Behaviour) {
        lock(&self.shared.routes).insert(norm_host(host), behaviour);
    }

    /// The behaviour for `host`, if any.
    pub fn get(&self, host: &str) -> Option<Behaviour> {
        lock(&self.shared.routes).get(&norm_host(host)).cloned()
    }

    /// Removes the route for `host` (it answers 404 again).
    pub fn unset(&self, host: &str) {
        lock(&self.shared.routes).remove(&norm_host(host));
    }

    /// How many complete requests were received for `host`.
    pub fn requests(&self, host: &str) -> usize {
        lock(&self.shared.requests)
            .get(&norm_host(host))
            .copied()
            .unwrap_or(0)
    }

    /// The head (request line and headers) of the last request for `host`.
    pub fn last_request(&self, host: &str) -> Option<String> {
        lock(&self.shared.last_request)
            .get(&norm_host(host))
            .cloned()
    }

    /// Stops accepting and ends every connection (including hanging ones).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread now rather than at its next IDLE_WAKE.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn acceptor(identity: Identity) -> TlsAcceptor {
    TlsAcceptor::builder(identity)
        .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
        .build()
        .expect("build TLS acceptor")
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        // Accept as soon as a connection arrives (no polling delay on the fetch path, and
        // no wake-ups while idle); `stop` connects to wake us.
        if !readable(listener, IDLE_WAKE) {
            conns.retain(|c| !c.is_finished());
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if let Ok((stream, _)) = listener.accept() {
            let s = Arc::clone(shared);
            conns.push(std::thread::spawn(move || serve_conn(&s, stream)));
        }
        conns.retain(|c| !c.is_finished());
    }
    // Connection threads see the flag within one POLL.
    for c in conns {
        let _ = c.join();
    }
}

/// Waits up to `timeout` for a pending connection on `listener`.
fn readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, ms) };
    n > 0 && fds.revents & libc::POLLIN != 0
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn serve_conn(shared: &Shared, stream: TcpStream) {
    let start = Instant::now();
    let alive = || !shared.stop.load(Ordering::SeqCst) && start.elapsed() < CONN_DEADLINE;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let acceptor = Arc::clone(&shared.acceptor.read().unwrap_or_else(|e| e.into_inner()));
    // The short read timeout makes the handshake resumable, so it can notice the stop flag.
    let mut result = acceptor.accept(stream);
    let mut tls = loop {
        match result {
            Ok(tls) => break tls,
            Err(HandshakeError::WouldBlock(mid)) if alive() => result = mid.handshake(),
            Err(_) => return,
        }
    };
    let Some(head) = read_head(&mut tls, &alive) else {
        return;
    };
    let host = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| norm_host(v))
        .unwrap_or_default();
    *lock(&shared.requests).entry(host.clone()).or_default() += 1;
    lock(&shared.last_request).insert(host.clone(), head);
    let mut behaviour = lock(&shared.routes).get(&host).cloned();
    while let Some(Behaviour::Delayed(wait, inner)) = behaviour {
        std::thread::sleep(wait);
        behaviour = Some(*inner);
    }
    let bytes = match behaviour {
        Some(Behaviour::Delayed(..)) => return,
        None => status_response(404, "no route for this host\n"),
        Some(Behaviour::Hang) => {
            let mut sink = [0u8; 1024];
            while !shared.stop.load(Ordering::SeqCst) {
                match tls.read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
            }
            return;
        }
        Some(Behaviour::Reset) => {
            reset(tls.get_ref());
            return;
        }
        Some(Behaviour::Policy {
            body,
            content_type,
            encoding,
        }) => policy_response(&body, content_type.as_deref(), encoding),
        Some(Behaviour::Status(code, body)) => status_response(code, &body),
        Some(Behaviour::Redirect(location)) => format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        Some(Behaviour::Raw(bytes)) => bytes,
    };
    let _ = tls
        .get_ref()
        .set_write_timeout(Some(Duration::from_secs(5)));
    let _ = tls.write_all(&bytes);
    let _ = tls.flush();
    let _ = tls.shutdown();
}

/// Reads until the end of the request head; `None` if the client goes away first.
fn read_head(tls: &mut TlsStream<TcpStream>, alive: &dyn Fn() -> bool) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while alive() && buf.len() < MAX_HEAD {
        match tls.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return None,
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(buf.get(..end)?).into_owned());
        }
    }
    None
}

/// SO_LINGER 0 so the close sends RST instead of FIN.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn status_response(code: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    )
    .into_bytes()
}

fn policy_response(body: &str, content_type: Option<&str>, encoding: Encoding) -> Vec<u8> {
    let ct = content_type.unwrap_or("text/plain");
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nConnection: close\r\n");
    let mut out = head.into_bytes();
    match encoding {
        Encoding::Length => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body.as_bytes());
        }
        Encoding::Chunked => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            // Small chunks so parsers must join several of them.
            for chunk in body.as_bytes().chunks(16) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Encoding::Close => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body.as_bytes());
        }
    }
    out
}
