//! One socketmap connection: pipelined requests are answered concurrently
//! and replied to in request order (DESIGN.md "Socketmap"); a framing error
//! answers what was queued, then `PERM`, then closes.

use super::{Service, Shutdown};
use crate::netstring::DEFAULT_MAX_REQUEST;
use crate::socketmap::{Event, Reply, RequestReader};
use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

/// Requests answered concurrently per connection before reading pauses
/// (back-pressure against a client that never reads its replies).
const MAX_PENDING: usize = 1024;

/// Serve socketmap requests on `stream` until the client closes, a framing
/// error, or `shutdown` (then in-flight requests are still answered).
pub async fn serve_connection<S>(stream: S, service: &Service, shutdown: Shutdown) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = stream.split();
    let mut reader = RequestReader::new(DEFAULT_MAX_REQUEST);
    let mut pending: FuturesOrdered<BoxFuture<'_, Reply>> = FuturesOrdered::new();
    let mut fatal: Option<Reply> = None;
    let mut reading = true;
    let mut shutdown = shutdown;
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::new();

    enum Step {
        Reply(Reply),
        Read(io::Result<usize>),
        Stop,
        Done,
    }

    loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(Some(reply)) = pending.poll_next_unpin(cx) {
                return Poll::Ready(Step::Reply(reply));
            }
            if reading {
                if shutdown.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Step::Stop);
                }
                if pending.len() < MAX_PENDING {
                    if let Poll::Ready(r) = Pin::new(&mut rd).poll_read(cx, &mut buf) {
                        return Poll::Ready(Step::Read(r));
                    }
                }
            } else if pending.is_empty() {
                return Poll::Ready(Step::Done);
            }
            Poll::Pending
        })
        .await;

        match event {
            Step::Reply(reply) => {
                out.extend_from_slice(&reply.to_netstring());
                // Batch whatever else is ready into one write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    out.extend_from_slice(&reply.to_netstring());
                }
                wr.write_all(&out).await?;
                wr.flush().await?;
                out.clear();
            }
            Step::Read(Ok(0)) | Step::Stop => reading = false,
            Step::Read(Ok(n)) => {
                reader.push(buf.get(..n).unwrap_or_default());
                while let Some(event) = reader.next_event() {
                    match event {
                        Event::Request(req) => {
                            pending.push_back(
                                async move { service.answer(&req.name, &req.key).await }.boxed(),
                            );
                        }
                        Event::Fatal(reply) => {
                            log::warn!(
                                "closing connection: {}",
                                String::from_utf8_lossy(&reply.payload())
                            );
                            fatal = Some(reply);
                            reading = false;
                        }
                    }
                }
            }
            Step::Read(Err(e)) => return Err(e),
            Step::Done => {
                if let Some(reply) = fatal.take() {
                    wr.write_all(&reply.to_netstring()).await?;
                }
                wr.flush().await?;
                return wr.close().await;
            }
        }
    }
}
