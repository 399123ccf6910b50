//! The async loop of one socketmap connection: it only moves bytes between
//! the stream and the sans-IO [`Connection`], answers fresh hits in this
//! task and runs misses concurrently (docs/ARCHITECTURE.md "Connections").

use super::{Runtime, Service, Shutdown};
use crate::netstring::DEFAULT_MAX_REQUEST;
use crate::socketmap::{Connection, Reply, Seq, LINGER};
use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

/// Requests answered concurrently per connection before reading pauses
/// (back-pressure against a client that never reads its replies).
const MAX_PENDING: usize = 1024;

/// Serve socketmap requests on `stream` until the client closes, a framing
/// error, or `shutdown` (then requests already received are still
/// answered). `rt` times the lingering close after a framing error.
pub async fn serve_connection<R, S>(
    rt: &R,
    stream: S,
    service: &Service,
    shutdown: Shutdown,
) -> io::Result<()>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = futures::io::AsyncReadExt::split(stream);
    let mut conn = Connection::new(DEFAULT_MAX_REQUEST, MAX_PENDING);
    let mut misses: FuturesUnordered<BoxFuture<'_, (Seq, Reply)>> = FuturesUnordered::new();
    let mut shutdown = shutdown;
    let mut buf = vec![0u8; 8192];
    let mut warned = false;
    let mut view = service.config_view();
    let mut queued = service.metrics().queued_replies();
    // Set once the connection lingers: writing is shut down, and the
    // connection closes when it ends.
    let mut linger: Option<BoxFuture<'static, ()>> = None;

    enum Step {
        Reply(Seq, Reply),
        Read(io::Result<usize>),
        Stop,
        LingerOver,
    }

    loop {
        service.answer_ready(&mut view, &mut conn, |seq, miss| {
            misses.push(async move { (seq, service.answer_miss(miss).await) }.boxed())
        });
        if conn.failed() && !warned {
            warned = true;
            log::warn!("malformed request: answering what was queued, then PERM and close");
        }
        if !conn.transmit().is_empty() {
            let bytes = conn.transmit();
            let n = bytes.len();
            queued.set(n);
            wr.write_all(bytes).await?;
            conn.handle_written(n);
            queued.set(conn.transmit().len());
            // Requests held back while the output was full wait in the
            // input, with no read to come for them: answer again.
            continue;
        }
        if conn.is_finished() {
            if linger.is_some() {
                // Writing was shut down when the lingering began.
                return Ok(());
            }
            wr.flush().await?;
            return wr.close().await;
        }
        if conn.is_lingering() && linger.is_none() {
            wr.flush().await?;
            wr.close().await?;
            linger = Some(rt.sleep(LINGER));
        }
        let wants_input = conn.wants_input();
        let step = poll_fn(|cx| {
            if let Poll::Ready(Some((seq, reply))) = misses.poll_next_unpin(cx) {
                return Poll::Ready(Step::Reply(seq, reply));
            }
            if let Some(Poll::Ready(())) = linger.as_mut().map(|l| l.poll_unpin(cx)) {
                return Poll::Ready(Step::LingerOver);
            }
            if wants_input {
                if shutdown.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Step::Stop);
                }
                if let Poll::Ready(r) = Pin::new(&mut rd).poll_read(cx, &mut buf) {
                    return Poll::Ready(Step::Read(r));
                }
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Reply(seq, reply) => {
                conn.handle_reply(seq, reply);
                // Batch whatever else is ready into the same write.
                while let Some(Some((seq, reply))) = misses.next().now_or_never() {
                    conn.handle_reply(seq, reply);
                }
            }
            Step::Read(Ok(0)) | Step::Stop => conn.handle_end_of_input(),
            Step::Read(Ok(n)) => conn.handle_input(buf.get(..n).unwrap_or_default()),
            Step::Read(Err(e)) => return Err(e),
            Step::LingerOver => return Ok(()),
        }
    }
}
