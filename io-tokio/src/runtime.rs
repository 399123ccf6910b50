//! [`Runtime`] on tokio: a runtime handle's tasks, blocking pool and timers.

use futures::future::BoxFuture;
use futures::FutureExt;
use mta_sts_core::service::Runtime;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// A tokio runtime, by handle (so it can be created outside the runtime).
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: Handle,
}

impl TokioRuntime {
    /// Tasks and timers on `handle`'s runtime.
    pub fn new(handle: Handle) -> Self {
        TokioRuntime { handle }
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        self.handle.spawn(fut);
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        self.handle.spawn_blocking(work);
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        // A Sleep registers with the runtime's timer when created.
        let _context = self.handle.enter();
        tokio::time::sleep(d).boxed()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        mta_sts_host::unix_ms()
    }
}
