//! The async loop of one socketmap connection: it only moves bytes between
//! the stream and the sans-IO [`Connection`], which holds every rule
//! (limits, order, timeouts, the stop, the lingering close), answers fresh
//! hits in this task, runs misses concurrently, and sleeps until the
//! connection's next deadline (docs/ARCHITECTURE.md "Connections").

use super::{Runtime, Service, Shutdown};
use crate::config::Limits;
use crate::metrics::QueuedReplies;
use crate::socketmap::{capped_after, CloseReason, Connection, ConnectionLimits, Reply, Seq};
use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

impl Service {
    /// What every connection loop does once it has answered and written:
    /// count and log a framing error once, report the unwritten replies to
    /// the `queued_reply_bytes` gauge, and say (logging why) whether the
    /// connection is to close (docs/ARCHITECTURE.md "Connections").
    pub fn settle(&self, conn: &mut Connection, queued: &mut QueuedReplies) -> Option<CloseReason> {
        if conn.poll_failed() {
            self.metrics().perm();
            log::warn!("malformed request: answering what was queued, then PERM and close");
        }
        queued.set(conn.transmit().len());
        let reason = conn.poll_close()?;
        reason.log();
        Some(reason)
    }
}

/// Serve socketmap requests on `stream` under `limits` until the client
/// closes, a framing error (then a lingering close), a timeout, or
/// `shutdown`: then requests keep being answered until the client is quiet,
/// and the connection closes `grace` after the signal at the latest.
pub async fn serve_connection<R, S>(
    rt: &R,
    mut stream: S,
    service: &Service,
    limits: &Limits,
    shutdown: Shutdown,
    grace: Duration,
) -> io::Result<()>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(ConnectionLimits::from(limits), rt.now());
    let mut misses: FuturesUnordered<BoxFuture<'_, (Seq, Reply)>> = FuturesUnordered::new();
    let mut shutdown = Some(shutdown);
    let mut buf = vec![0u8; 8192];
    let mut view = service.config_view();
    let mut queued = service.metrics().queued_replies();
    // The sleep until the connection's next deadline, and that deadline.
    let mut timer: Option<(Instant, BoxFuture<'static, ()>)> = None;
    let mut write_shut = false;

    enum Step {
        Reply(Seq, Reply),
        Read(io::Result<usize>),
        Wrote(io::Result<usize>),
        Stop,
        Deadline,
    }

    loop {
        service.answer_ready(&mut view, &mut conn, |seq, miss| {
            misses.push(async move { (seq, service.answer_miss(miss).await) }.boxed())
        });
        if let Some(reason) = service.settle(&mut conn, &mut queued) {
            if reason == CloseReason::Finished && !write_shut {
                stream.close().await?;
            }
            return Ok(());
        }
        if conn.poll_shutdown_write(rt.now()) {
            write_shut = true;
            stream.close().await?;
        }
        let step = poll_fn(|cx| {
            if let Poll::Ready(Some((seq, reply))) = misses.poll_next_unpin(cx) {
                return Poll::Ready(Step::Reply(seq, reply));
            }
            if !conn.transmit().is_empty() {
                match Pin::new(&mut stream).poll_write(cx, conn.transmit()) {
                    Poll::Ready(r) => return Poll::Ready(Step::Wrote(r)),
                    Poll::Pending => conn.handle_write_blocked(rt.now()),
                }
            }
            if conn.wants_input() {
                if let Poll::Ready(r) = Pin::new(&mut stream).poll_read(cx, &mut buf) {
                    return Poll::Ready(Step::Read(r));
                }
            }
            if let Some(Poll::Ready(())) = shutdown.as_mut().map(|s| s.poll_unpin(cx)) {
                return Poll::Ready(Step::Stop);
            }
            // The deadline may have moved with any of the above. A sleep
            // that ends before it is kept (its wake finds nothing due and
            // sleeps again): most moves are later, one per request.
            if let Some(at) = conn.poll_timeout() {
                if timer.as_ref().is_none_or(|(current, _)| at < *current) {
                    timer = Some((at, rt.sleep(at.saturating_duration_since(rt.now()))));
                }
            }
            if let Some((_, sleep)) = timer.as_mut() {
                if sleep.poll_unpin(cx).is_ready() {
                    timer = None;
                    return Poll::Ready(Step::Deadline);
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
            Step::Wrote(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Step::Wrote(Ok(n)) => conn.handle_written(n, rt.now()),
            Step::Read(Ok(0)) => conn.handle_end_of_input(),
            Step::Read(Ok(n)) => conn.handle_input(buf.get(..n).unwrap_or_default(), rt.now()),
            Step::Wrote(Err(e)) | Step::Read(Err(e)) => return Err(e),
            Step::Stop => {
                shutdown = None;
                conn.begin_stop(capped_after(rt.now(), grace));
            }
            Step::Deadline => conn.handle_timeout(rt.now()),
        }
    }
}
