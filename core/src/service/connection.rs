//! The async loop of one socketmap connection: it only moves bytes between
//! the stream and the sans-IO [`Connection`], answers fresh hits in this
//! task and runs misses concurrently (docs/ARCHITECTURE.md "Connections").

use super::{Service, Shutdown};
use crate::netstring::DEFAULT_MAX_REQUEST;
use crate::socketmap::{Connection, Reply, Seq};
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
/// answered).
pub async fn serve_connection<S>(stream: S, service: &Service, shutdown: Shutdown) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = futures::io::AsyncReadExt::split(stream);
    let mut conn = Connection::new(DEFAULT_MAX_REQUEST, MAX_PENDING);
    let mut misses: FuturesUnordered<BoxFuture<'_, (Seq, Reply)>> = FuturesUnordered::new();
    let mut shutdown = shutdown;
    let mut buf = vec![0u8; 8192];
    let mut warned = false;
    let mut view = service.config_view();

    enum Step {
        Reply(Seq, Reply),
        Read(io::Result<usize>),
        Stop,
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
            wr.write_all(bytes).await?;
            conn.handle_written(n);
        }
        if conn.is_finished() {
            wr.flush().await?;
            return wr.close().await;
        }
        let wants_input = conn.wants_input();
        let step = poll_fn(|cx| {
            if let Poll::Ready(Some((seq, reply))) = misses.poll_next_unpin(cx) {
                return Poll::Ready(Step::Reply(seq, reply));
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
        }
    }
}
