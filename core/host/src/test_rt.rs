//! A runtime made of std threads for the stores' own tests: enough to drive
//! the blocking pool, timeouts and redis-rs (smol-comp runs its own reactor).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use futures::executor::block_on;
use futures::future::BoxFuture;
use mta_sts_core::service::Runtime;

/// Every task a thread of its own.
#[derive(Clone)]
pub(crate) struct ThreadRt;

impl Runtime for ThreadRt {
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        std::thread::spawn(move || block_on(fut));
    }
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        std::thread::spawn(work);
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            let _ = tx.send(());
        });
        Box::pin(async move {
            let _ = rx.await;
        })
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
