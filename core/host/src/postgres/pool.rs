//! The connections to the server: at most `max_size`, opened on demand
//! (and `min_size` of them eagerly once the server answers), used on the
//! runtime's blocking pool one job at a time. A job waits asynchronously
//! for its turn, up to `timeout` (asyncpg's acquire timeout), so a slow or
//! hung server never holds more than `max_size` blocking threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};

use mta_sts_core::cache::StoreError;
use mta_sts_core::config::redact;

use super::connect::Target;
use super::schema;

/// The open connections and what to open more with.
pub(super) struct Pool {
    target: Target,
    idle: Mutex<Vec<Client>>,
    timeout: Duration,
    schema_ready: AtomicBool,
    /// Whether the last connection attempt failed: an outage is logged once.
    failing: AtomicBool,
}

impl Pool {
    pub(super) fn new(target: Target, timeout: Duration) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
            timeout,
            schema_ready: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    pub(super) fn describe(&self) -> &str {
        &self.target.describe
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections until `count` are idle, stopping at the first
    /// failure (logged; lookups go on without the cache).
    pub(super) fn warm_up(&self, count: usize) {
        while self.idle().len() < count {
            match self.connect() {
                Ok(client) => self.idle().push(client),
                Err(_) => return,
            }
        }
    }

    /// A new connection, with the schema created on the first one.
    fn connect(&self) -> Result<Client, StoreError> {
        let mut config = self.target.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.timeout);
        }
        let connected = match &self.target.tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(NoTls),
        };
        let result = connected.and_then(|mut client| {
            if !self.schema_ready.load(Ordering::Acquire) {
                schema::prepare(&mut client)?;
                self.schema_ready.store(true, Ordering::Release);
            }
            Ok(client)
        });
        match result {
            Ok(client) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!("postgres cache {} reachable again", self.target.describe);
                }
                Ok(client)
            }
            Err(e) => {
                let e = error(&self.target.describe, &e);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!("{e}; going on without the cache until it is back");
                }
                Err(e)
            }
        }
    }

    /// Run `job` on a connection (idle or new), in the calling blocking
    /// thread; the caller holds a turn. A connection the job found
    /// broken is dropped: the next job opens a new one.
    pub(super) fn run<T>(
        &self,
        job: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let held = self.idle().pop().filter(|c| !c.is_closed());
        let mut client = match held {
            Some(client) => client,
            None => self.connect()?,
        };
        let result = job(&mut client);
        if !client.is_closed() {
            self.idle().push(client);
        }
        result.map_err(|e| error(&self.target.describe, &e))
    }
}

impl Drop for Pool {
    /// Closing a `postgres::Client` blocks on a runtime of its own, which
    /// tokio forbids on its worker threads, where the last handle to the
    /// pool may go (at shutdown): the idle connections are closed on a
    /// thread of their own.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle());
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("postgres-close".into())
                .spawn(move || drop(idle));
        }
    }
}

/// A PostgreSQL failure as a store error naming the server, through
/// [`redact`] in case it quotes a connection string (docs/ARCHITECTURE.md
/// "Secrets").
pub(super) fn error(describe: &str, e: &postgres::Error) -> StoreError {
    StoreError::Backend(redact(&format!("postgres cache {describe}: {e}")).into_owned())
}
