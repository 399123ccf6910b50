//! [`Runtime`] on smol: the global executor, `unblock`'s thread pool and
//! async-io timers.

use futures::future::BoxFuture;
use futures::FutureExt;
use mta_sts_core::service::Runtime;
use std::time::{Duration, Instant};

/// smol's global executor and timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        smol::spawn(fut).detach();
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        smol::spawn(smol::unblock(work)).detach();
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        smol::Timer::after(d).map(|_| ()).boxed()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        mta_sts_host::unix_ms()
    }
}
