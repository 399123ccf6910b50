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
    let threads = thread_count(
        std::env::var("SMOL_THREADS").ok().as_deref(),
        std::thread::available_parallelism().ok().map(usize::from),
    );
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

/// `SMOL_THREADS` when it is a positive number, else one per core.
fn thread_count(setting: Option<&str>, cores: Option<usize>) -> usize {
    setting
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or(cores)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn thread_count_follows_the_setting_else_the_cores() {
        assert_eq!(thread_count(None, Some(4)), 4);
        assert_eq!(thread_count(Some("3"), Some(4)), 3);
        assert_eq!(thread_count(Some("0"), Some(4)), 4);
        assert_eq!(thread_count(Some("many"), Some(2)), 2);
        assert_eq!(thread_count(None, None), 1);
    }

    /// Two tasks that each block until the other runs finish only if
    /// they run on two threads at once (the machine has two cores or
    /// more; CI's has two).
    #[test]
    fn tasks_run_on_more_than_one_thread() {
        if std::thread::available_parallelism().map_or(1, usize::from) < 2
            && std::env::var_os("SMOL_THREADS").is_none()
        {
            eprintln!("one core: the executor runs one thread, nothing to check");
            return;
        }
        let barrier = Arc::new(Barrier::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let (barrier, tx) = (Arc::clone(&barrier), tx.clone());
            SmolRuntime.spawn(Box::pin(async move {
                barrier.wait();
                let _ = tx.send(());
            }));
        }
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("both tasks ran at once");
        }
    }
}
