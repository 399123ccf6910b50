//! The administration endpoint's HTTP/1.1 requests, sans-IO (README.md
//! "Metrics" and "Cache administration", docs/ARCHITECTURE.md
//! "Operations"): request line, headers and body framing (RFC 9112 §2-6)
//! turned into a [`Command`], or a [`Refusal`] with its status code.
//!
//! Where a request arrives decides what it may do: the loopback TCP
//! listener serves `GET /metrics` and nothing else, with no body and a
//! loopback `Host` (DNS rebinding); `/cache` is served only on the Unix
//! socket, whose file mode says who may change the cache.
//!
//! Like the other parsers (docs/ARCHITECTURE.md "Layers"): `Partial` is not
//! an error, the head is bounded before it is parsed and the body's length
//! is checked against the limit before any of it is kept.

use crate::domain::Domain;

#[cfg(test)]
mod tests;

/// Largest request head (request line and headers) accepted, in bytes: the
/// requests are short; a browser's or curl's head fits many times over.
pub const MAX_HEAD: usize = 8 * 1024;

/// Largest number of header fields accepted in a request head.
pub const MAX_HEADERS: usize = 32;

/// Bytes an import may take per entry of the configured cache: about ten
/// times a typical export line (200-400 bytes: domain, id, a few MX
/// patterns), so a full export of `cache_size` entries fits.
pub const IMPORT_BYTES_PER_ENTRY: usize = 4 * 1024;

/// The smallest import limit, whatever the cache size: what the endpoint
/// accepted before the limit followed `cache_size`.
pub const MIN_IMPORT_LIMIT: usize = 64 * 1024 * 1024;

/// The body limit of `POST /cache` for a cache of `cache_size` entries
/// (README.md "Cache administration"): a full export of the configured
/// cache fits, and the limit is never below [`MIN_IMPORT_LIMIT`].
pub fn import_limit(cache_size: usize) -> usize {
    cache_size
        .saturating_mul(IMPORT_BYTES_PER_ENTRY)
        .max(MIN_IMPORT_LIMIT)
}

/// Which listener a request came in on (README.md "Metrics").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Loopback TCP (`metrics.listen`): `GET /metrics` only.
    Tcp,
    /// The Unix socket (`metrics.path`): metrics and `/cache`.
    Unix,
}

/// What a request asks for (README.md "Cache administration").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET /metrics`: the OpenMetrics text.
    Metrics,
    /// `GET /cache`: every entry, one JSON line each.
    Export,
    /// `GET /cache/DOMAIN`: one entry.
    Show(Domain),
    /// `POST /cache`: import the JSON lines of the body.
    Import,
    /// `DELETE /cache`: purge everything.
    PurgeAll,
    /// `DELETE /cache/DOMAIN`: purge one domain.
    Purge(Domain),
}

/// A complete, accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// The body (empty but for [`Command::Import`]).
    pub body: Vec<u8>,
}

/// Why a request is refused; [`Refusal::status`] is the answer's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an HTTP/1.x request head (RFC 9112 §2-5).
    #[error("malformed request")]
    Malformed,
    /// The head is longer than [`MAX_HEAD`].
    #[error("request head too large")]
    HeadTooLarge,
    /// No `Host`, or more than one (RFC 9112 §3.2).
    #[error("one Host header is required")]
    Host,
    /// On TCP, a `Host` that is not a loopback name or address: a page
    /// whose name resolves to 127.0.0.1 (DNS rebinding) is not served.
    #[error("Host is not a loopback name or address")]
    ForeignHost,
    /// Nothing there.
    #[error("not found: try /metrics or /cache")]
    NotFound,
    /// `/cache` asked on TCP: it is served only on the Unix socket.
    #[error("the cache is administered only on the Unix socket (`metrics.path`)")]
    NotOnTcp,
    /// The path exists, not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `/cache/NAME` where NAME is not a domain name.
    #[error("not a domain name")]
    BadDomain,
    /// A body where none is allowed, or an import over the limit.
    #[error("body too large")]
    BodyTooLarge,
    /// An import without `Content-Length`.
    #[error("Content-Length required")]
    LengthRequired,
    /// `Transfer-Encoding` (chunked bodies) is not supported.
    #[error("Transfer-Encoding is not supported")]
    TransferEncoding,
}

impl Refusal {
    /// The status code of the answer (RFC 9110 §15).
    pub fn status(self) -> u16 {
        match self {
            Refusal::Malformed | Refusal::Host | Refusal::BadDomain => 400,
            Refusal::NotFound | Refusal::NotOnTcp => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::LengthRequired => 411,
            Refusal::BodyTooLarge => 413,
            Refusal::ForeignHost => 421,
            Refusal::HeadTooLarge => 431,
            Refusal::TransferEncoding => 501,
        }
    }
}

/// What the parser knows after some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More input is needed; not an error.
    Partial,
    /// The request is complete.
    Complete(Request),
}

/// An accepted head waiting for its body.
#[derive(Debug)]
struct Pending {
    command: Command,
    length: usize,
    body: Vec<u8>,
}

/// The incremental parser of one request (one request per connection).
/// Feed it what the connection reads until it answers `Complete` or a
/// refusal; what follows the body is ignored.
#[derive(Debug)]
pub struct RequestParser {
    listener: Listener,
    import_limit: usize,
    head: Vec<u8>,
    pending: Option<Pending>,
}

impl RequestParser {
    /// A parser for a request on `listener`; imports may be up to
    /// `import_limit` bytes ([`import_limit`]).
    pub fn new(listener: Listener, import_limit: usize) -> Self {
        RequestParser {
            listener,
            import_limit,
            head: Vec::new(),
            pending: None,
        }
    }

    /// Take the next bytes read.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, Refusal> {
        if let Some(pending) = &mut self.pending {
            let want = pending.length - pending.body.len();
            pending
                .body
                .extend_from_slice(data.get(..want.min(data.len())).unwrap_or_default());
            return Ok(self.complete());
        }
        let room = MAX_HEAD - self.head.len();
        let taken = data.len().min(room);
        self.head
            .extend_from_slice(data.get(..taken).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let end = match req.parse(&self.head) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) if self.head.len() >= MAX_HEAD => {
                return Err(Refusal::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(Progress::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
            Err(_) => return Err(Refusal::Malformed),
        };
        let (command, length) = accept(self.listener, self.import_limit, &req)?;
        // The body's first bytes: what followed the head in the buffer, then
        // the rest of this input; never more than the accepted length.
        let after_head = self.head.get(end..).unwrap_or_default();
        let rest = data.get(taken..).unwrap_or_default();
        let mut body = Vec::new();
        for part in [after_head, rest] {
            let want = (length - body.len()).min(part.len());
            body.extend_from_slice(part.get(..want).unwrap_or_default());
        }
        self.head = Vec::new();
        self.pending = Some(Pending {
            command,
            length,
            body,
        });
        Ok(self.complete())
    }

    /// `Complete` once the pending body has its length.
    fn complete(&mut self) -> Progress {
        match self.pending.take() {
            Some(p) if p.body.len() >= p.length => Progress::Complete(Request {
                command: p.command,
                body: p.body,
            }),
            other => {
                self.pending = other;
                Progress::Partial
            }
        }
    }
}

/// Check a complete head: `Host` (TCP), route, body framing and length.
fn accept(
    listener: Listener,
    import_limit: usize,
    req: &httparse::Request<'_, '_>,
) -> Result<(Command, usize), Refusal> {
    let mut host = None;
    let mut length = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host.replace(h.value).is_some() {
                return Err(Refusal::Host);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(Refusal::Malformed)?;
            // Repeated with another value: the framing is ambiguous
            // (RFC 9112 §6.3).
            if length.replace(n).is_some_and(|m| m != n) {
                return Err(Refusal::Malformed);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::TransferEncoding);
        }
    }
    // HTTP/1.1 requires Host (RFC 9112 §3.2); on TCP it must name loopback.
    if listener == Listener::Tcp {
        match host {
            None => return Err(Refusal::Host),
            Some(value) if !is_loopback_host(value) => return Err(Refusal::ForeignHost),
            Some(_) => {}
        }
    }
    let command = route(
        listener,
        req.method.unwrap_or_default(),
        req.path.unwrap_or_default(),
    )?;
    let length = match (&command, length) {
        (Command::Import, None) => return Err(Refusal::LengthRequired),
        (Command::Import, Some(n)) if n > import_limit => return Err(Refusal::BodyTooLarge),
        (_, Some(n)) if n > 0 && command != Command::Import => return Err(Refusal::BodyTooLarge),
        (_, n) => n.unwrap_or(0),
    };
    Ok((command, length))
}

/// `Content-Length`: decimal digits only (RFC 9110 §8.6), no overflow.
fn content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The method and path (any query ignored) to a command for `listener`.
fn route(listener: Listener, method: &str, target: &str) -> Result<Command, Refusal> {
    let path = target.split('?').next().unwrap_or_default();
    let cache = path == "/cache" || path.starts_with("/cache/");
    match (listener, method, path) {
        (_, "GET", "/metrics") => Ok(Command::Metrics),
        (_, _, "/metrics") => Err(Refusal::MethodNotAllowed),
        (Listener::Tcp, _, _) if cache => Err(Refusal::NotOnTcp),
        (Listener::Unix, "GET", "/cache") => Ok(Command::Export),
        (Listener::Unix, "POST", "/cache") => Ok(Command::Import),
        (Listener::Unix, "DELETE", "/cache") => Ok(Command::PurgeAll),
        (Listener::Unix, _, "/cache") => Err(Refusal::MethodNotAllowed),
        (Listener::Unix, method, path) if cache => {
            let name = path.trim_start_matches("/cache/");
            let domain = Domain::new(&name.to_ascii_lowercase()).map_err(|_| Refusal::BadDomain)?;
            match method {
                "GET" => Ok(Command::Show(domain)),
                "DELETE" => Ok(Command::Purge(domain)),
                _ => Err(Refusal::MethodNotAllowed),
            }
        }
        _ => Err(Refusal::NotFound),
    }
}

/// A `Host` value naming loopback, with an optional port: `localhost`,
/// `127.x.y.z`, `[::1]` (RFC 9110 §7.2, RFC 3986
/// §3.2.2; the rule is `domain::is_loopback_host`).
pub fn is_loopback_host(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    // The host (an IPv6 address inside brackets) and the port, if given.
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, after)) => match after.strip_prefix(':') {
                Some(digits) => (v6, Some(digits)),
                None => return false,
            },
            None => return false,
        },
        None => match value.split_once(':') {
            Some((host, digits)) => (host, Some(digits)),
            None => (value, None),
        },
    };
    let port_ok = port.is_none_or(|d| d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()));
    port_ok && crate::domain::is_loopback_host(host)
}

/// An answer: status line, `Content-Type`, `Content-Length`,
/// `Connection: close` (one request per connection), then the body.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The answer to a refused request: its status and the reason as text.
pub fn refusal_response(refusal: Refusal) -> Vec<u8> {
    response(refusal.status(), TEXT, format!("{refusal}\n").as_bytes())
}

/// The content type of the endpoint's plain-text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";
