//! The accept loop and graceful shutdown (docs/ARCHITECTURE.md
//! "Connections").

use super::{serve_connection, with_timeout, Runtime, Service, Shutdown};
use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{FutureExt, Stream, StreamExt};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Counts an open connection until dropped (its task ended or was
/// dropped): `serve` keeps `max_connections` and waits for the last.
struct Open(mpsc::UnboundedSender<()>);

impl Drop for Open {
    fn drop(&mut self) {
        let _ = self.0.unbounded_send(());
    }
}

/// Accept connections from `incoming` until `shutdown`, serving each on its
/// own task under the service's limits in force when it is accepted
/// ([`Service::limits`]): at most `max_connections` open (more wait in the
/// listen backlog; a reload's new bound counts from the next accept or
/// close). After the signal the listener is dropped and each
/// connection answers what its client still sends until it is quiet, and
/// closes `grace` after the signal at the latest; returns false when some
/// were still open then (docs/ARCHITECTURE.md "Connections").
pub async fn serve<R, S, I>(
    rt: R,
    mut incoming: I,
    service: Arc<Service>,
    shutdown: Shutdown,
    grace: Duration,
) -> bool
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    I: Stream<Item = io::Result<S>> + Unpin,
{
    let (ended, mut closed) = mpsc::unbounded::<()>();
    let mut open = 0usize;
    'accept: loop {
        while let Some(Some(())) = closed.next().now_or_never() {
            open = open.saturating_sub(1);
        }
        // Read again each time a connection closes, so a reload that
        // raises the bound takes effect then.
        while open >= service.limits().max_connections.max(1) {
            match select(closed.next(), shutdown.clone()).await {
                Either::Left(_) => open = open.saturating_sub(1),
                Either::Right(_) => break 'accept,
            }
        }
        match select(incoming.next(), shutdown.clone()).await {
            Either::Left((Some(Ok(stream)), _)) => {
                // The limits in force now, not when the wait began.
                let limits = service.limits();
                open += 1;
                let guard = Open(ended.clone());
                let service = service.clone();
                let shutdown = shutdown.clone();
                let rt2 = rt.clone();
                rt.spawn(
                    async move {
                        let served =
                            serve_connection(&rt2, stream, &service, &limits, shutdown, grace);
                        if let Err(e) = served.await {
                            log::debug!("connection ended: {e}");
                        }
                        drop(guard);
                    }
                    .boxed(),
                );
            }
            Either::Left((Some(Err(e)), _)) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                rt.sleep(Duration::from_millis(100)).await;
            }
            Either::Left((None, _)) | Either::Right(_) => break,
        }
    }
    // No new connection after the signal: those waiting are refused.
    drop(incoming);
    let drained = with_timeout(&rt, grace, async {
        while open > 0 && closed.next().await.is_some() {
            open -= 1;
        }
    })
    .await;
    if drained.is_none() {
        log::warn!("shutdown timeout: closing connections with requests in flight");
    }
    drained.is_some()
}
