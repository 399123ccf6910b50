//! In-memory transports: a duplex byte pipe (what `tcp_connect` and
//! `tls_connect` hand out, and what a socketmap client talks over) and a
//! connected datagram socket whose peer is a scripted server.

use crate::service::Datagram;
use futures::io::{AsyncRead, AsyncWrite};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One direction of a pipe.
#[derive(Default)]
struct Buffer {
    data: VecDeque<u8>,
    capacity: usize,
    /// The writer closed (or dropped) its side: EOF after `data`.
    closed: bool,
    /// The reader is gone: writes fail.
    reader_gone: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// One end of an in-memory duplex byte stream (see [`duplex`]). Dropping
/// it or closing it (`AsyncWriteExt::close`) is EOF for the other end.
pub struct PipeEnd {
    rx: Arc<Mutex<Buffer>>,
    tx: Arc<Mutex<Buffer>>,
}

/// A connected pair of pipe ends; each direction buffers at most
/// `capacity` bytes (writes wait for the reader beyond that).
pub fn duplex(capacity: usize) -> (PipeEnd, PipeEnd) {
    let a = Arc::new(Mutex::new(Buffer {
        capacity: capacity.max(1),
        ..Buffer::default()
    }));
    let b = Arc::new(Mutex::new(Buffer {
        capacity: capacity.max(1),
        ..Buffer::default()
    }));
    (
        PipeEnd {
            rx: a.clone(),
            tx: b.clone(),
        },
        PipeEnd { rx: b, tx: a },
    )
}

/// Default pipe capacity: large enough that no test waits on it.
pub const PIPE_CAPACITY: usize = 1 << 20;

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rx = lock(&self.rx);
        if rx.data.is_empty() {
            if rx.closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            rx.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(rx.data.len());
        for (dst, src) in buf.iter_mut().zip(rx.data.drain(..n)) {
            *dst = src;
        }
        let waker = rx.write_waker.take();
        drop(rx);
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut tx = lock(&self.tx);
        if tx.reader_gone || tx.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = tx.capacity.saturating_sub(tx.data.len());
        if room == 0 {
            tx.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        tx.data.extend(buf.iter().take(n));
        let waker = tx.read_waker.take();
        drop(tx);
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        close_side(&self.tx);
        Poll::Ready(Ok(()))
    }
}

fn close_side(tx: &Mutex<Buffer>) {
    let waker = {
        let mut tx = lock(tx);
        tx.closed = true;
        tx.read_waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        close_side(&self.tx);
        let waker = {
            let mut rx = lock(&self.rx);
            rx.reader_gone = true;
            rx.data.clear();
            rx.write_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The receiving queue of a [`SimDatagram`]; servers push replies into it.
#[derive(Default)]
pub struct Inbox {
    queue: VecDeque<Vec<u8>>,
    waker: Option<Waker>,
    closed: bool,
}

/// Where a [`SimDatagram`] hands what it sends: the scripted server, which
/// answers (or not) by pushing into the socket's [`Inbox`] later.
pub type DatagramPeer = Arc<dyn Fn(Vec<u8>, InboxHandle) + Send + Sync>;

/// A weak handle to a socket's inbox: a reply to a closed socket is lost,
/// as it would be on a real network.
#[derive(Clone)]
pub struct InboxHandle(std::sync::Weak<Mutex<Inbox>>);

impl InboxHandle {
    /// Deliver `datagram` to the socket, if it is still open.
    pub fn deliver(&self, datagram: Vec<u8>) {
        let Some(inbox) = self.0.upgrade() else {
            return;
        };
        let waker = {
            let mut inbox = lock(&inbox);
            if inbox.closed {
                return;
            }
            inbox.queue.push_back(datagram);
            inbox.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A connected UDP socket in memory: `send` hands the datagram to its peer
/// (or to nowhere: a black hole never answers).
pub struct SimDatagram {
    peer: Option<DatagramPeer>,
    inbox: Arc<Mutex<Inbox>>,
}

impl SimDatagram {
    /// A socket whose datagrams go to `peer` (`None`: lost).
    pub fn new(peer: Option<DatagramPeer>) -> Self {
        SimDatagram {
            peer,
            inbox: Arc::new(Mutex::new(Inbox::default())),
        }
    }
}

impl Drop for SimDatagram {
    fn drop(&mut self) {
        lock(&self.inbox).closed = true;
    }
}

#[async_trait::async_trait]
impl Datagram for SimDatagram {
    async fn send(&self, buf: &[u8]) -> io::Result<()> {
        if let Some(peer) = &self.peer {
            peer(buf.to_vec(), InboxHandle(Arc::downgrade(&self.inbox)));
        }
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let datagram = poll_fn(|cx| {
            let mut inbox = lock(&self.inbox);
            match inbox.queue.pop_front() {
                Some(d) => Poll::Ready(d),
                None => {
                    inbox.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        // Like recv(2) on a datagram socket: the excess is discarded.
        let n = buf.len().min(datagram.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(datagram.get(..n).unwrap_or_default());
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Sim;
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn pipe_carries_bytes_both_ways_and_eof() {
        let sim = Sim::new();
        let (mut a, mut b) = duplex(4);
        let got = sim.block_on(async move {
            let writer = async {
                a.write_all(b"hello world").await.expect("write");
                a.close().await.expect("close");
                let mut back = Vec::new();
                a.read_to_end(&mut back).await.expect("read back");
                back
            };
            let echo = async {
                let mut got = Vec::new();
                b.read_to_end(&mut got).await.expect("read");
                b.write_all(&got).await.expect("echo");
                drop(b);
                got
            };
            futures::join!(writer, echo)
        });
        assert_eq!(got.0, b"hello world");
        assert_eq!(got.1, b"hello world");
    }
}
