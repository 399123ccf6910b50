//! The accept loop and graceful shutdown (docs/ARCHITECTURE.md
//! "Connections").

use super::{serve_connection, with_timeout, Runtime, Service, Shutdown};
use futures::future::{select, Either};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{FutureExt, Stream, StreamExt};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Accept connections from `incoming` until `shutdown`, serving each on its
/// own task; then wait up to `grace` for open connections to finish their
/// in-flight requests. Returns false when some were still open at the end.
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
    // Each connection task holds a sender; when all are gone, `closed` ends.
    let (alive, mut closed) = futures::channel::mpsc::channel::<()>(0);
    loop {
        match select(incoming.next(), shutdown.clone()).await {
            Either::Left((Some(Ok(stream)), _)) => {
                let service = service.clone();
                let shutdown = shutdown.clone();
                let alive = alive.clone();
                let rt2 = rt.clone();
                rt.spawn(
                    async move {
                        if let Err(e) = serve_connection(&rt2, stream, &service, shutdown).await {
                            log::debug!("connection ended: {e}");
                        }
                        drop(alive);
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
    drop(alive);
    let drained = with_timeout(&rt, grace, async { while closed.next().await.is_some() {} }).await;
    if drained.is_none() {
        log::warn!("shutdown timeout: closing connections with requests in flight");
    }
    drained.is_some()
}
