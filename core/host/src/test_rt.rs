//! Runtimes made of std threads for the stores' own tests: enough to drive
//! the blocking pool, timeouts and redis-rs (smol-comp runs its own reactor).
//! [`QueueRt`] holds blocking jobs until the test runs them and counts how
//! many were handed to it at once (docs/ARCHITECTURE.md "Cache": how
//! blocking store work is bounded).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use futures::executor::block_on;
use futures::future::BoxFuture;
use futures::task::noop_waker_ref;
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

type Job = Box<dyn FnOnce() + Send + 'static>;

/// [`ThreadRt`] whose blocking jobs wait in a queue until the test runs
/// them, so when a job starts is the test's choice.
#[derive(Clone, Default)]
pub(crate) struct QueueRt {
    queue: Arc<Mutex<VecDeque<Job>>>,
    ran: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl QueueRt {
    /// Run the jobs queued so far, in order, on this thread; how many.
    pub(crate) fn run_queued(&self) -> usize {
        let jobs: Vec<Job> = self.queue.lock().unwrap().drain(..).collect();
        let count = jobs.len();
        for job in jobs {
            job();
        }
        self.ran.fetch_add(count, Ordering::SeqCst);
        count
    }
    /// The most jobs queued at once: handed to the blocking pool and not
    /// finished.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    /// How many jobs were queued and run so far.
    pub(crate) fn ran(&self) -> usize {
        self.ran.load(Ordering::SeqCst)
    }
    /// Poll `fut` on this thread, running the queued jobs whenever it
    /// waits, until it is done; panics if it waits with nothing queued.
    pub(crate) fn drive<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(noop_waker_ref());
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            assert!(self.run_queued() > 0, "waits with no blocking job queued");
        }
    }
}

impl Runtime for QueueRt {
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        ThreadRt.spawn(fut);
    }
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        let mut queue = self.queue.lock().unwrap();
        queue.push_back(work);
        self.peak.fetch_max(queue.len(), Ordering::SeqCst);
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        ThreadRt.sleep(d)
    }
    fn now(&self) -> Instant {
        ThreadRt.now()
    }
    fn unix_ms(&self) -> u64 {
        ThreadRt.unix_ms()
    }
}
