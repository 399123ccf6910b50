//! The metrics and cache administration listener (config `metrics`): a
//! small HTTP/1.1 server on loopback or a Unix socket. `GET /metrics` gives
//! the OpenMetrics text; `/cache` administers the cache (README.md "Cache
//! administration"):
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /cache` | every entry, one JSON line each (export) |
//! | `GET /cache/DOMAIN` | one entry, or 404 |
//! | `POST /cache` | import JSON lines from the body |
//! | `DELETE /cache/DOMAIN` | purge one domain, or 404 |
//! | `DELETE /cache` | purge everything |
//!
//! One request per connection, answered in turn on the listener's thread:
//! it is for an administrator and a scraper, not for load.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use mta_sts_core::config::MetricsListen;
use mta_sts_core::domain::Domain;
use mta_sts_core::metrics::Metrics;
use mta_sts_core::service::{export_line, CacheAdmin};

/// Largest request accepted (an import of many entries).
const MAX_REQUEST: usize = 64 * 1024 * 1024;
/// A client gets this long per read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint reads and changes.
pub struct AdminState {
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
    /// The caches.
    pub admin: CacheAdmin,
    /// Domains held in memory now.
    pub cache_entries: Box<dyn Fn() -> usize + Send + Sync>,
    /// Socketmap connections open now.
    pub open_connections: Box<dyn Fn() -> usize + Send + Sync>,
}

/// A bound listener, not served yet (bound before privileges drop).
pub enum Bound {
    /// TCP on loopback.
    Tcp(TcpListener, String),
    /// A Unix socket.
    Unix(UnixListener, String),
}

/// Bind `listen` (a loopback address, or a Unix socket with its mode).
pub fn bind(listen: &MetricsListen) -> Result<Bound, String> {
    match listen {
        MetricsListen::Tcp(addr) => TcpListener::bind(addr)
            .map(|l| Bound::Tcp(l, addr.to_string()))
            .map_err(|e| format!("metrics: cannot listen on {addr}: {e}")),
        MetricsListen::Unix(path, mode) => {
            let listener = crate::bind_unix(path, Some(*mode))?;
            listener
                .set_nonblocking(false)
                .map_err(|e| format!("metrics: {}: {e}", path.display()))?;
            Ok(Bound::Unix(listener, path.display().to_string()))
        }
    }
}

/// Serve `bound` on a thread of its own for the life of the process;
/// where it listens.
pub fn serve(bound: Bound, state: AdminState) -> Result<String, String> {
    let state = Arc::new(state);
    match bound {
        Bound::Tcp(listener, place) => {
            spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                    handle(stream, &state);
                }
            })?;
            Ok(place)
        }
        Bound::Unix(listener, place) => {
            spawn(move || serve_unix(listener, &state))?;
            Ok(place)
        }
    }
}

fn serve_unix(listener: UnixListener, state: &AdminState) {
    for stream in listener.incoming().flatten() {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        handle(stream, state);
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name("mta-sts-admin".into())
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("metrics: cannot start its thread: {e}"))
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn handle<S: Read + Write>(mut stream: S, state: &AdminState) {
    let response = match read_request(&mut stream) {
        Ok(request) => route(&request, state),
        Err(e) => Response::text(400, &format!("bad request: {e}\n")),
    };
    let _ = stream.write_all(&response.bytes());
    let _ = stream.flush();
}

fn read_request<S: Read>(stream: &mut S) -> Result<Request, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf).map_err(|e| e.to_string())? {
            httparse::Status::Complete(head) => {
                let method = req.method.unwrap_or_default().to_owned();
                let path = req.path.unwrap_or_default().to_owned();
                let length = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(|v| v.trim().parse::<usize>().map_err(|_| "bad Content-Length"))
                    .transpose()?
                    .unwrap_or(0);
                if length > MAX_REQUEST {
                    return Err("body too large".into());
                }
                let mut body = buf.get(head..).unwrap_or_default().to_vec();
                while body.len() < length {
                    let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("body cut short".into());
                    }
                    body.extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
                body.truncate(length);
                return Ok(Request { method, path, body });
            }
            httparse::Status::Partial => {
                if buf.len() > 64 * 1024 {
                    return Err("request head too large".into());
                }
                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".into());
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn route(request: &Request, state: &AdminState) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: state
                .metrics
                .encode((state.cache_entries)(), (state.open_connections)())
                .into_bytes(),
        },
        ("GET", "/cache") => match futures::executor::block_on(state.admin.list()) {
            Ok(entries) => Response::text(
                200,
                &entries
                    .iter()
                    .map(|(d, e)| export_line(d, e) + "\n")
                    .collect::<String>(),
            ),
            Err(e) => Response::text(500, &format!("{e}\n")),
        },
        ("POST", "/cache") => match std::str::from_utf8(&request.body) {
            Err(_) => Response::text(400, "body is not UTF-8\n"),
            Ok(text) => match futures::executor::block_on(state.admin.import(text)) {
                Ok(n) => Response::text(200, &format!("imported {n}\n")),
                Err(e) => Response::text(400, &format!("{e}\n")),
            },
        },
        ("DELETE", "/cache") => match futures::executor::block_on(state.admin.purge_all()) {
            Ok(n) => Response::text(200, &format!("purged {n}\n")),
            Err(e) => Response::text(500, &format!("{e}\n")),
        },
        (method, p) if p.starts_with("/cache/") => {
            let name = p.trim_start_matches("/cache/");
            let Ok(domain) = Domain::new(&name.to_ascii_lowercase()) else {
                return Response::text(400, "not a domain name\n");
            };
            match method {
                "GET" => match futures::executor::block_on(state.admin.show(&domain)) {
                    Ok(Some(entry)) => Response::text(200, &(export_line(&domain, &entry) + "\n")),
                    Ok(None) => Response::text(404, &format!("{domain}: not cached\n")),
                    Err(e) => Response::text(500, &format!("{e}\n")),
                },
                "DELETE" => match futures::executor::block_on(state.admin.purge(&domain)) {
                    Ok(true) => Response::text(200, &format!("purged {domain}\n")),
                    Ok(false) => Response::text(404, &format!("{domain}: not cached\n")),
                    Err(e) => Response::text(500, &format!("{e}\n")),
                },
                _ => Response::text(405, "GET or DELETE\n"),
            }
        }
        (_, "/metrics" | "/cache") => Response::text(405, "method not allowed\n"),
        _ => Response::text(404, "try /metrics or /cache\n"),
    }
}

/// A blocking HTTP/1.1 client for `mta-sts-query --cache`: one request to
/// the daemon's endpoint; the status and body.
pub fn request(
    listen: &MetricsListen,
    method: &str,
    path: &str,
    body: &[u8],
) -> io::Result<(u16, String)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = Vec::new();
    match listen {
        MetricsListen::Tcp(addr) => {
            let mut s = std::net::TcpStream::connect_timeout(addr, IO_TIMEOUT)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            s.write_all(head.as_bytes())?;
            s.write_all(body)?;
            s.read_to_end(&mut raw)?;
        }
        MetricsListen::Unix(path, _) => {
            let mut s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            s.write_all(head.as_bytes())?;
            s.write_all(body)?;
            s.read_to_end(&mut raw)?;
        }
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
