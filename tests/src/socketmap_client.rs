//! A blocking Postfix socketmap client (socketmap_table(5)): netstring-framed `name key`
//! requests and replies, with read timeouts so a test never hangs.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Default bound on waiting for one reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Encodes `payload` as a netstring (`<len>:<payload>,`).
pub fn netstring(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.push(b',');
    out
}

/// Decodes one netstring from the start of `buf`: `Ok(Some((payload, consumed)))`, `Ok(None)`
/// when more bytes are needed, `Err(())` when malformed.
#[allow(clippy::result_unit_err)]
pub fn parse_netstring(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        return if buf.len() > 10 || !buf.iter().all(u8::is_ascii_digit) {
            Err(())
        } else {
            Ok(None)
        };
    };
    let digits = buf.get(..colon).ok_or(())?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    let len: usize = std::str::from_utf8(digits)
        .map_err(|_| ())?
        .parse()
        .map_err(|_| ())?;
    let end = colon + 1 + len;
    match (buf.get(colon + 1..end), buf.get(end)) {
        (Some(payload), Some(b',')) => Ok(Some((payload.to_vec(), end + 1))),
        (Some(_), Some(_)) => Err(()),
        _ => Ok(None),
    }
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(buf),
            Conn::Unix(s) => s.write_all(buf),
        }
    }
}

/// What waiting for a reply produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// One complete reply payload.
    Reply(String),
    /// The server closed the connection (clean EOF, or reset).
    Closed,
    /// Nothing complete arrived within the timeout.
    Timeout,
    /// The bytes received are not a netstring.
    Malformed(Vec<u8>),
}

/// One connection to a socketmap server.
pub struct SocketmapClient {
    conn: Conn,
    buf: Vec<u8>,
    timeout: Duration,
}

impl SocketmapClient {
    /// Connects over TCP.
    pub fn connect_tcp(addr: SocketAddr) -> std::io::Result<SocketmapClient> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Ok(Self::new(Conn::Tcp(s)))
    }

    /// Connects to a Unix socket.
    pub fn connect_unix(path: &Path) -> std::io::Result<SocketmapClient> {
        Ok(Self::new(Conn::Unix(UnixStream::connect(path)?)))
    }

    fn new(conn: Conn) -> SocketmapClient {
        SocketmapClient {
            conn,
            buf: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long [`Self::read_reply`] waits (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one request `name key` and returns its reply; panics on timeout, close or error.
    pub fn query(&mut self, name: &str, key: &str) -> String {
        self.send_request(name, key);
        match self.read_outcome() {
            ReadOutcome::Reply(r) => r,
            other => panic!("socketmap query {name:?} {key:?}: no reply: {other:?}"),
        }
    }

    /// Sends one request without waiting (for pipelining); panics if the write fails.
    pub fn send_request(&mut self, name: &str, key: &str) {
        self.send_raw(&netstring(format!("{name} {key}").as_bytes()));
    }

    /// Sends arbitrary bytes; panics if the write fails.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).expect("socketmap write");
    }

    /// Sends arbitrary bytes, reporting a write error (e.g. the server already closed).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.write_all(bytes)
    }

    /// Sends all requests at once, then reads one reply per request, in order.
    pub fn pipeline(&mut self, requests: &[(&str, &str)]) -> Vec<String> {
        let mut bytes = Vec::new();
        for (name, key) in requests {
            bytes.extend(netstring(format!("{name} {key}").as_bytes()));
        }
        self.send_raw(&bytes);
        requests
            .iter()
            .map(|(n, k)| self.expect_reply(n, k))
            .collect()
    }

    fn expect_reply(&mut self, name: &str, key: &str) -> String {
        match self.read_outcome() {
            ReadOutcome::Reply(r) => r,
            other => panic!("socketmap pipelined {name:?} {key:?}: no reply: {other:?}"),
        }
    }

    /// The next reply, or `None` on close, timeout or malformed bytes.
    pub fn read_reply(&mut self) -> Option<String> {
        match self.read_outcome() {
            ReadOutcome::Reply(r) => Some(r),
            _ => None,
        }
    }

    /// Waits for the next reply and says exactly what happened.
    pub fn read_outcome(&mut self) -> ReadOutcome {
        let deadline = Instant::now() + self.timeout;
        let mut chunk = [0u8; 8192];
        loop {
            match parse_netstring(&self.buf) {
                Ok(Some((payload, used))) => {
                    self.buf.drain(..used);
                    return ReadOutcome::Reply(String::from_utf8_lossy(&payload).into_owned());
                }
                Ok(None) => {}
                Err(()) => return ReadOutcome::Malformed(std::mem::take(&mut self.buf)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.conn.set_timeout(left).is_err() {
                return ReadOutcome::Timeout;
            }
            match self.conn.read(&mut chunk) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return ReadOutcome::Timeout
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// True if the server closes the connection within the timeout (after any pending
    /// replies, which are discarded).
    pub fn wait_closed(&mut self) -> bool {
        loop {
            match self.read_outcome() {
                ReadOutcome::Closed => return true,
                ReadOutcome::Reply(_) => {}
                ReadOutcome::Malformed(_) => {}
                ReadOutcome::Timeout => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstring_round_trip_and_partial() {
        let enc = netstring(b"pol example.com");
        assert_eq!(enc, b"15:pol example.com,");
        assert_eq!(
            parse_netstring(&enc),
            Ok(Some((b"pol example.com".to_vec(), 19)))
        );
        assert_eq!(parse_netstring(b"15:pol"), Ok(None));
        assert_eq!(parse_netstring(b"1"), Ok(None));
        assert_eq!(parse_netstring(b"2:abX"), Err(()));
        assert_eq!(parse_netstring(b"x:"), Err(()));
    }
}
