//! TLS client streams over any futures-io byte stream, all made by one
//! `native_tls::TlsConnector` built at start-up.
//!
//! Why not async-native-tls: its `TlsConnector::connect` builds a new
//! OpenSSL context, re-reading the system roots, on every call, and each
//! policy fetch (RFC 8461 §3.3) is one call; profiles of cold lookups spent
//! about 40% of their CPU there. A built `native_tls::TlsConnector` is
//! cheap to use many times and safe to share across tasks.
//!
//! How: native-tls speaks blocking `Read + Write`. `Bridge` implements
//! those over an `AsyncRead + AsyncWrite` stream by polling it with the
//! waker of the task that is polling us, and turns `Pending` into
//! `WouldBlock`. native-tls hands `WouldBlock` back (as a
//! `MidHandshakeTlsStream` during the handshake), we return `Pending`, and
//! the inner stream has registered the task's waker to be woken when the
//! socket is ready. The waker is kept (not a raw `Context` pointer) so no
//! `unsafe` is needed; `Waker::clone_from` makes re-storing the same task's
//! waker cheap.

use futures::io::{AsyncRead, AsyncWrite};
use native_tls::{HandshakeError, MidHandshakeTlsStream, TlsConnector};
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Trust every certificate of the PEM bundle `pem` in `builder`: a bundle
/// holds several (a CA being rolled over, or an intermediate with its
/// root), and `Certificate::from_pem` would read only the first. A bundle
/// without any certificate is an error.
pub(crate) fn add_pem_roots(
    builder: &mut native_tls::TlsConnectorBuilder,
    pem: &[u8],
) -> Result<(), String> {
    let certs = native_tls::Certificate::stack_from_pem(pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate found".to_owned());
    }
    for cert in certs {
        builder.add_root_certificate(cert);
    }
    Ok(())
}

/// A blocking-style view of an async stream for native-tls: each call
/// polls `inner` once with the stored waker.
struct Bridge<S> {
    inner: S,
    waker: Waker,
}

impl<S: Unpin> Bridge<S> {
    /// Poll `inner` once; `Pending` becomes `WouldBlock`, which native-tls
    /// passes back up to the poll that set the waker.
    fn poll_once<T>(
        &mut self,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T> {
        let mut cx = Context::from_waker(&self.waker);
        match op(Pin::new(&mut self.inner), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> Read for Bridge<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll_once(|inner, cx| inner.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> Write for Bridge<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll_once(|inner, cx| inner.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll_once(|inner, cx| inner.poll_flush(cx))
    }
}

/// `WouldBlock` from native-tls means the inner stream returned `Pending`
/// and holds the task's waker: we are pending too.
fn ready<T>(result: io::Result<T>) -> Poll<io::Result<T>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// Where a handshake is between polls.
enum Handshake<S> {
    /// Not started: native-tls has not seen the stream yet.
    Start(Bridge<S>),
    /// Waiting for the socket (native-tls said `WouldBlock`).
    Mid(MidHandshakeTlsStream<Bridge<S>>),
    /// Finished or failed (only seen if polled again after that).
    Done,
}

/// Run a TLS client handshake on `stream` with SNI and certificate checks
/// for `server_name`, using `connector` (built once, shared by every
/// connection). Failures are `io::Error`s whose message is native-tls's
/// (for example "certificate verify failed"), so the log line of a failed
/// policy fetch says why.
pub async fn connect<S>(
    connector: &TlsConnector,
    server_name: &str,
    stream: S,
) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = Handshake::Start(Bridge {
        inner: stream,
        waker: Waker::noop().clone(),
    });
    poll_fn(|cx| {
        let step = match std::mem::replace(&mut state, Handshake::Done) {
            Handshake::Start(mut bridge) => {
                bridge.waker.clone_from(cx.waker());
                connector.connect(server_name, bridge)
            }
            Handshake::Mid(mut mid) => {
                mid.get_mut().waker.clone_from(cx.waker());
                mid.handshake()
            }
            Handshake::Done => {
                return Poll::Ready(Err(io::Error::other("TLS handshake polled after it ended")))
            }
        };
        match step {
            Ok(tls) => Poll::Ready(Ok(TlsStream {
                tls,
                close_notify_sent: false,
            })),
            Err(HandshakeError::WouldBlock(mid)) => {
                state = Handshake::Mid(mid);
                Poll::Pending
            }
            Err(HandshakeError::Failure(e)) => Poll::Ready(Err(io::Error::other(e))),
        }
    })
    .await
}

/// An established TLS client connection over `S`, as a futures-io stream.
pub struct TlsStream<S> {
    tls: native_tls::TlsStream<Bridge<S>>,
    /// Our close_notify is out: `poll_close` must not call native-tls's
    /// `shutdown` again (a second call waits for the peer's close_notify).
    close_notify_sent: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Run one native-tls call with the polling task's waker in place.
    fn with_waker<T>(
        &mut self,
        cx: &Context<'_>,
        op: impl FnOnce(&mut native_tls::TlsStream<Bridge<S>>) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        self.tls.get_mut().waker.clone_from(cx.waker());
        ready(op(&mut self.tls))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().with_waker(cx, |tls| tls.read(buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().with_waker(cx, |tls| tls.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().with_waker(cx, |tls| tls.flush())
    }

    /// Send our close_notify (native-tls `shutdown`), then close the inner
    /// stream's write side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            match this.with_waker(cx, |tls| tls.shutdown()) {
                Poll::Ready(Ok(())) => this.close_notify_sent = true,
                other => return other,
            }
        }
        Pin::new(&mut this.tls.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use mta_sts_core::config::Config;
    use mta_sts_tests::{TestCa, Validity};
    use smol::net::TcpStream;
    use std::net::{SocketAddr, TcpListener};
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// Long enough for a loaded 2-core machine, short enough that a hung
    /// handshake fails the test rather than the whole run.
    const LIMIT: Duration = Duration::from_secs(20);

    /// What the echo server did with one connection: the bytes it echoed,
    /// or its error (handshake refused, read failed).
    type Served = Result<Vec<u8>, String>;

    /// The test CA's file and the connector the daemon would build from a
    /// config naming it (`resolver.ca_file`).
    struct Client {
        connector: TlsConnector,
        _dir: tempfile::TempDir,
    }

    fn client(ca: &TestCa) -> Client {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.resolver.ca_file = Some(ca.write_ca_file(dir.path()));
        let connector = crate::policy_tls_roots(&config)
            .and_then(|roots| roots.connector())
            .expect("connector");
        Client {
            connector,
            _dir: dir,
        }
    }

    /// A TLS echo server for `localhost` on 127.0.0.1 serving `connections`
    /// connections one after the other; each thread result is what that
    /// connection echoed, or the server-side handshake error.
    fn echo_server(ca: &TestCa, connections: usize) -> (SocketAddr, JoinHandle<Vec<Served>>) {
        let identity = ca.identity(&["localhost"], Validity::Valid);
        let acceptor = native_tls::TlsAcceptor::new(identity).expect("acceptor");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = std::thread::spawn(move || {
            (0..connections)
                .map(|_| {
                    let (tcp, _) = listener.accept().expect("accept");
                    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
                    let mut tls = acceptor.accept(tcp).map_err(|e| e.to_string())?;
                    let mut echoed = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        // The client's close_notify reads as end of stream.
                        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
                        if n == 0 {
                            break;
                        }
                        tls.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                        echoed.extend_from_slice(&buf[..n]);
                    }
                    Ok(echoed)
                })
                .collect()
        });
        (addr, server)
    }

    /// Run `fut` on smol, failing the test if it takes longer than LIMIT.
    fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        smol::block_on(smol::future::or(fut, async {
            smol::Timer::after(LIMIT).await;
            panic!("timed out after {LIMIT:?}")
        }))
    }

    /// Connect, send `message`, read it back, close.
    async fn echo_once(connector: &TlsConnector, addr: SocketAddr, message: &[u8]) -> Vec<u8> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let mut tls = connect(connector, "localhost", tcp)
            .await
            .expect("handshake");
        tls.write_all(message).await.expect("write");
        tls.flush().await.expect("flush");
        let mut back = vec![0u8; message.len()];
        tls.read_exact(&mut back).await.expect("read echo");
        tls.close().await.expect("close");
        back
    }

    #[test]
    fn handshake_then_echo_then_close() {
        let ca = TestCa::new("tls test CA");
        let client = client(&ca);
        let (addr, server) = echo_server(&ca, 1);
        let back = run(echo_once(
            &client.connector,
            addr,
            b"GET / HTTP/1.1\r\n\r\n",
        ));
        assert_eq!(back, b"GET / HTTP/1.1\r\n\r\n");
        // The server saw our close_notify as a clean end of stream.
        let served = server.join().expect("server thread");
        assert_eq!(served, vec![Ok(b"GET / HTTP/1.1\r\n\r\n".to_vec())]);
    }

    #[test]
    fn one_connector_serves_many_connections() {
        let ca = TestCa::new("tls test CA");
        let client = client(&ca);
        let (addr, server) = echo_server(&ca, 4);
        run(async {
            // One after the other, as successive policy fetches.
            assert_eq!(echo_once(&client.connector, addr, b"first").await, b"first");
            assert_eq!(
                echo_once(&client.connector, addr, b"second").await,
                b"second"
            );
            // At the same time, as fetches for different domains.
            let (third, fourth) = futures::join!(
                echo_once(&client.connector, addr, b"third"),
                echo_once(&client.connector, addr, b"fourth"),
            );
            assert_eq!((third, fourth), (b"third".to_vec(), b"fourth".to_vec()));
        });
        let mut served = server.join().expect("server thread");
        served.sort();
        let expected: Vec<Served> = ["first", "fourth", "second", "third"]
            .iter()
            .map(|m| Ok(m.as_bytes().to_vec()))
            .collect();
        assert_eq!(served, expected);
    }

    #[test]
    fn name_mismatch_fails_with_a_readable_error() {
        let ca = TestCa::new("tls test CA");
        let client = client(&ca);
        let (addr, server) = echo_server(&ca, 1);
        let error = run(async {
            let tcp = TcpStream::connect(addr).await.expect("tcp connect");
            match connect(&client.connector, "mta-sts.example.com", tcp).await {
                Ok(_) => panic!("a certificate for localhost passed for mta-sts.example.com"),
                Err(e) => e,
            }
        });
        let message = error.to_string();
        assert!(
            message.contains("certificate verify failed"),
            "unreadable error: {message}"
        );
        // The server saw the handshake aborted.
        let served = server.join().expect("server thread");
        assert!(served[0].is_err(), "{served:?}");
    }

    #[test]
    fn peer_closing_mid_handshake_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().expect("accept");
            tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
            // Take the whole ClientHello record (so the kernel sends a
            // clean FIN, not a reset for unread data), then hang up
            // without answering.
            let mut header = [0u8; 5];
            tcp.read_exact(&mut header).expect("client hello header");
            let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
            tcp.read_exact(&mut body).expect("client hello body");
            drop(tcp);
            header
        });
        let ca = TestCa::new("tls test CA");
        let client = client(&ca);
        let result = run(async {
            let tcp = TcpStream::connect(addr).await.expect("tcp connect");
            connect(&client.connector, "localhost", tcp).await
        });
        let header = server.join().expect("server thread");
        assert_eq!(header[0], 22, "not a TLS handshake record");
        match result {
            Ok(_) => panic!("handshake succeeded against a peer that hung up"),
            // OpenSSL words it "unexpected EOF" or "unexpected eof while
            // reading" depending on the version.
            Err(e) => assert!(
                e.to_string().to_lowercase().contains("eof"),
                "unreadable error: {e}"
            ),
        }
    }
}
