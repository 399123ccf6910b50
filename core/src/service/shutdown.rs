//! The stop signal every loop watches (docs/ARCHITECTURE.md
//! "Connections"): the accept loop, each connection, the proactive refresh.

use futures::channel::oneshot;
use futures::future::Shared;
use futures::FutureExt;

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
