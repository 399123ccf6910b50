//! How many connections are open, and the stop flag: the accept threads
//! keep below `max_connections`, a stop waits for the count to reach zero.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Open connections and the stop flag.
#[derive(Default)]
pub struct Registry {
    open: Mutex<usize>,
    closed: Condvar,
    stopping: AtomicBool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a connection.
    pub fn add(&self) {
        *self.lock() += 1;
    }

    /// A connection closed.
    pub fn remove(&self) {
        let mut open = self.lock();
        *open = open.saturating_sub(1);
        self.closed.notify_all();
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        *self.lock()
    }

    /// True once [`Registry::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Set the stop flag (the loops drain their connections when woken).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.closed.notify_all();
    }

    /// Wait while `max` connections are open (more wait in the backlog).
    pub fn wait_below(&self, max: usize) {
        let mut open = self.lock();
        while *open >= max && !self.stopping() {
            open = self
                .closed
                .wait_timeout(open, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Wait until every connection closed, or `limit` passes; true if all did.
    pub fn wait_empty(&self, limit: Duration) -> bool {
        // A limit too far out to add to a clock reading means no limit.
        let deadline = Instant::now().checked_add(limit);
        let mut open = self.lock();
        while *open > 0 {
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
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
