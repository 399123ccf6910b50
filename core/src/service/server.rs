//! The socketmap service: zones, key normalisation and reply rendering
//! around the engine, the accept loop, and graceful shutdown (DESIGN.md
//! "Socketmap", "Replies for a policy").

use super::{serve_connection, with_timeout, EngineHandle, Runtime};
use crate::config::Config;
use crate::domain::normalize_key;
use crate::policy::render_reply;
use crate::resolve::Answer;
use crate::socketmap::Reply;
use futures::channel::oneshot;
use futures::future::{select, Either, Shared};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{FutureExt, Stream, StreamExt};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Everything a connection needs to answer requests.
pub struct Service {
    config: Arc<Config>,
    engine: EngineHandle,
}

impl Service {
    /// A service answering with `config`'s zones through `engine`.
    pub fn new(config: Arc<Config>, engine: EngineHandle) -> Self {
        Service { config, engine }
    }

    /// Answer one socketmap request `NAME KEY`, logging one line per lookup.
    pub async fn answer(&self, name: &str, key: &str) -> Reply {
        let zone = self.config.zone(name);
        let domain = match normalize_key(key) {
            Ok(domain) => domain,
            Err(why) => {
                log::debug!("{key:?} (zone {name}): NOTFOUND, {why}");
                return Reply::NotFound;
            }
        };
        let Answer { policy, reason } = self.engine.lookup(domain.clone(), zone.timeout).await;
        let Some(policy) = policy else {
            log::info!("{domain} (zone {name}): NOTFOUND, no policy ({reason})");
            return Reply::NotFound;
        };
        match render_reply(&policy, &domain, zone.reply_options()) {
            Some(value) => {
                log::info!("{domain} (zone {name}): {} policy ({reason})", policy.mode);
                Reply::Ok(value)
            }
            None => {
                log::info!(
                    "{domain} (zone {name}): NOTFOUND, {} policy ({reason})",
                    policy.mode
                );
                Reply::NotFound
            }
        }
    }
}

/// Fires when the daemon is asked to stop (SIGTERM/SIGINT).
pub type Shutdown = Shared<futures::future::BoxFuture<'static, ()>>;

/// The sending side of a [`Shutdown`].
pub struct ShutdownTrigger(oneshot::Sender<()>);

impl ShutdownTrigger {
    /// A trigger and the signal it fires.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = oneshot::channel::<()>();
        (ShutdownTrigger(tx), rx.map(|_| ()).boxed().shared())
    }

    /// Ask everything holding the signal to stop.
    pub fn fire(self) {
        let _ = self.0.send(());
    }
}

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
                rt.spawn(
                    async move {
                        if let Err(e) = serve_connection(stream, &service, shutdown).await {
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
