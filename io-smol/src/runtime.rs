//! [`Runtime`] on smol: an executor with a thread per core, `unblock`'s
//! thread pool and async-io timers.

use futures::future::BoxFuture;
use futures::FutureExt;
use mta_sts_core::service::Runtime;
use smol::Executor;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// smol's executor and timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        executor().spawn(fut).detach();
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        executor().spawn(smol::unblock(work)).detach();
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

/// The executor of every spawned task, started at first use with a thread
/// per core (`SMOL_THREADS` overrides the count). smol's global executor
/// runs one thread unless told otherwise, which left the TLS handshakes of
/// concurrent policy fetches (RFC 8461 §3.3), the costly part of a cold
/// lookup, on one core (docs/ARCHITECTURE.md "Layers").
fn executor() -> &'static Executor<'static> {
    static EXECUTOR: OnceLock<Executor<'static>> = OnceLock::new();
    let mut started = false;
    let executor = EXECUTOR.get_or_init(|| {
        started = true;
        Executor::new()
    });
    if started {
        start_threads(executor);
    }
    executor
}

fn start_threads(executor: &'static Executor<'static>) {
    let threads = std::env::var("SMOL_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    for n in 1..=threads {
        let spawned = std::thread::Builder::new()
            .name(format!("smol-{n}"))
            .spawn(move || smol::block_on(executor.run(futures::future::pending::<()>())));
        if let Err(e) = spawned {
            // Tasks still run on the threads that did start; with none,
            // nothing would run, so say so.
            log::error!("executor thread {n} of {threads} not started: {e}");
        }
    }
}
