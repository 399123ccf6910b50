//! The open connections, so a stop can wake every thread blocked in
//! `read(2)` (`shutdown(SHUT_RD)`: Linux still delivers what the client has
//! sent and sends afterwards, then reads return 0 when nothing is left).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Open connections and the stop flag.
#[derive(Default)]
pub struct Registry {
    open: Mutex<HashMap<u64, RawFd>>,
    closed: Condvar,
    next: AtomicU64,
    stopping: AtomicBool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, RawFd>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a connection (its id is given back to [`Registry::remove`]).
    pub fn add(&self, fd: RawFd) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, fd);
        id
    }

    /// The connection closed (its descriptor is about to be).
    pub fn remove(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        self.closed.notify_all();
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True once [`Registry::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Set the stop flag, then wake every reader. A connection added after
    /// the flag is set sees it when it checks [`Registry::stopping`].
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for &fd in self.lock().values() {
            // SAFETY: `fd` is open: it is removed from the map, under this
            // lock, before its owner closes it.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }

    /// Wait while `max` connections are open (more wait in the backlog).
    pub fn wait_below(&self, max: usize) {
        let mut open = self.lock();
        while open.len() >= max && !self.stopping() {
            open = self
                .closed
                .wait_timeout(open, std::time::Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Wait until every connection closed, or `limit` passes; true if all did.
    pub fn wait_empty(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut open = self.lock();
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            open = self
                .closed
                .wait_timeout(open, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }
}
