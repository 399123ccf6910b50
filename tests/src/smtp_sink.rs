//! A loopback SMTP server with STARTTLS (RFC 5321, RFC 3207) standing in for a destination's
//! MX host in the Postfix delivery tests: it accepts every message and records, per
//! connection, whether TLS was negotiated and which recipients it took, so a test can say
//! that nothing reached it. One thread per connection; dropping the sink stops it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::thread::JoinHandle;
use std::time::Duration;

use native_tls::{Identity, TlsAcceptor};

use crate::lock;

/// How often the accept loop checks the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// A client silent this long is dropped (Postfix never is, a stuck test must not hang).
const IDLE: Duration = Duration::from_secs(30);
/// Longest command line or message accepted; more is a broken client.
const MAX_MESSAGE: usize = 1 << 20;

/// One message the sink accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The `RCPT TO` addresses, without angle brackets.
    pub recipients: Vec<String>,
    /// Whether the message came over TLS (after STARTTLS).
    pub tls: bool,
}

struct Shared {
    acceptor: TlsAcceptor,
    received: Mutex<Vec<Received>>,
    stop: AtomicBool,
}

/// The SMTP server on one address (port 25 in the delivery tests' network namespace).
pub struct SmtpSink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Binds `addr` and serves with `identity` as the STARTTLS certificate.
    pub fn bind(addr: SocketAddr, identity: Identity) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let acceptor = TlsAcceptor::new(identity).map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            acceptor,
            received: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || accept_loop(&s, &listener));
        Ok(SmtpSink {
            shared,
            thread: Some(thread),
        })
    }

    /// Every message accepted so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// The message for `recipient`, if one arrived.
    pub fn message_for(&self, recipient: &str) -> Option<Received> {
        self.received().into_iter().find(|m| {
            m.recipients
                .iter()
                .any(|r| r.eq_ignore_ascii_case(recipient))
        })
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = Arc::clone(shared);
                std::thread::spawn(move || {
                    // A client going away mid-session is the client's business (Postfix
                    // hangs up after a failed certificate check).
                    let _ = session(&s, stream);
                });
            }
            // Nothing waiting (or a failed accept): look again after a while.
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// One SMTP session: plain text until STARTTLS, then the rest over TLS.
fn session(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut plain = BufReader::new(stream);
    plain.get_mut().write_all(b"220 sink.test ESMTP\r\n")?;
    if !converse(shared, &mut plain, false)? {
        return Ok(());
    }
    // STARTTLS accepted; the client waited for our 220, so nothing is buffered.
    let stream = plain.into_inner();
    let tls = shared
        .acceptor
        .accept(stream)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut tls = BufReader::new(tls);
    converse(shared, &mut tls, true).map(|_| ())
}

/// Answers commands until QUIT or EOF (false) or an accepted STARTTLS (true).
fn converse<S: Read + Write>(
    shared: &Shared,
    conn: &mut BufReader<S>,
    tls: bool,
) -> io::Result<bool> {
    let mut recipients = Vec::new();
    loop {
        let Some(line) = read_line(conn)? else {
            return Ok(false);
        };
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if tls => b"250-sink.test\r\n250 8BITMIME\r\n",
            "EHLO" => b"250-sink.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "HELO" => b"250 sink.test\r\n",
            "STARTTLS" if !tls => {
                conn.get_mut().write_all(b"220 ready to start TLS\r\n")?;
                return Ok(true);
            }
            "MAIL" | "RSET" => {
                recipients.clear();
                b"250 ok\r\n"
            }
            "RCPT" => {
                recipients.push(address(&line));
                b"250 ok\r\n"
            }
            "DATA" if !recipients.is_empty() => {
                conn.get_mut().write_all(b"354 go ahead\r\n")?;
                read_message(conn)?;
                lock(&shared.received).push(Received {
                    recipients: std::mem::take(&mut recipients),
                    tls,
                });
                b"250 queued\r\n"
            }
            "NOOP" => b"250 ok\r\n",
            "QUIT" => {
                conn.get_mut().write_all(b"221 bye\r\n")?;
                return Ok(false);
            }
            _ => b"503 bad sequence of commands\r\n",
        };
        conn.get_mut().write_all(reply)?;
    }
}

/// The address inside `<...>` of a `MAIL FROM:`/`RCPT TO:` line.
fn address(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(addr, _)| addr.to_string())
        .unwrap_or_default()
}

/// One CRLF line, bounded; `None` at EOF.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(MAX_MESSAGE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string(),
    ))
}

/// Reads the message up to the lone `.` line (RFC 5321 §4.1.1.4), bounded.
fn read_message<R: BufRead>(r: &mut R) -> io::Result<()> {
    let mut total = 0;
    while let Some(line) = read_line(r)? {
        if line == "." {
            return Ok(());
        }
        total += line.len() + 2;
        if total > MAX_MESSAGE {
            break;
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "message not ended by a lone dot",
    ))
}
