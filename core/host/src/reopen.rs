//! A persistent store that could not be opened at start (or broke) does not
//! stop the daemon: lookups go on from memory and the network, one error
//! line says why, and the store is opened again at most once a minute when
//! it is next used (README.md "Configuration reference", `cache`).

use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use mta_sts_core::cache::{CacheEntry, Store, StoreError};
use mta_sts_core::domain::Domain;

/// How long after a failed open the next try may come.
pub const RETRY_OPEN_MS: u64 = 60_000;

/// Opens the store once more.
pub type Opener =
    Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Store>, StoreError>> + Send + Sync>;

enum State {
    Open(Arc<dyn Store>),
    Closed { next_try_ms: u64, opening: bool },
}

/// A store opened lazily, retried after failures.
pub struct Reopening {
    what: String,
    open: Opener,
    wall_ms: Box<dyn Fn() -> u64 + Send + Sync>,
    state: Mutex<State>,
}

impl Reopening {
    /// `what` (e.g. "sqlite cache /var/lib/x.db") is not open yet; `open`
    /// tries again, no sooner than [`RETRY_OPEN_MS`] after `now_ms`.
    pub fn closed(what: String, open: Opener, wall_ms: Box<dyn Fn() -> u64 + Send + Sync>) -> Self {
        let next_try_ms = wall_ms().saturating_add(RETRY_OPEN_MS);
        Reopening {
            what,
            open,
            wall_ms,
            state: Mutex::new(State::Closed {
                next_try_ms,
                opening: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open store, opening it if it is time to try.
    async fn store(&self) -> Result<Arc<dyn Store>, StoreError> {
        {
            let mut state = self.lock();
            match &mut *state {
                State::Open(store) => return Ok(store.clone()),
                State::Closed {
                    next_try_ms,
                    opening,
                } => {
                    if *opening || (self.wall_ms)() < *next_try_ms {
                        return Err(StoreError::Backend(format!("{} unavailable", self.what)));
                    }
                    *opening = true;
                }
            }
        }
        let result = (self.open)().await;
        let mut state = self.lock();
        match result {
            Ok(store) => {
                log::info!("{} is available again", self.what);
                *state = State::Open(store.clone());
                Ok(store)
            }
            Err(e) => {
                log::debug!("{} still unavailable: {e}", self.what);
                *state = State::Closed {
                    next_try_ms: (self.wall_ms)().saturating_add(RETRY_OPEN_MS),
                    opening: false,
                };
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for Reopening {
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError> {
        self.store().await?.get(domain).await
    }

    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        self.store().await?.set(domain, entry).await
    }

    async fn checked_before(&self, before_ms: u64, now_ms: u64) -> Result<Vec<Domain>, StoreError> {
        self.store().await?.checked_before(before_ms, now_ms).await
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
        self.store().await?.proactive_ts().await
    }

    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError> {
        self.store().await?.set_proactive_ts(ts_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::FutureExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// A store that knows nothing and accepts everything.
    struct Empty;

    #[async_trait::async_trait]
    impl Store for Empty {
        async fn get(&self, _: &Domain) -> Result<Option<CacheEntry>, StoreError> {
            Ok(None)
        }
        async fn set(&self, _: &Domain, _: &CacheEntry) -> Result<(), StoreError> {
            Ok(())
        }
        async fn checked_before(&self, _: u64, _: u64) -> Result<Vec<Domain>, StoreError> {
            Ok(Vec::new())
        }
        async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        async fn set_proactive_ts(&self, _: u64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn retried_once_a_minute_until_it_opens() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let tries = Arc::new(AtomicUsize::new(0));
        let works = Arc::new(AtomicBool::new(false));
        let (t, w) = (tries.clone(), works.clone());
        let open: Opener = Box::new(move || {
            t.fetch_add(1, Ordering::SeqCst);
            let ok = w.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(Arc::new(Empty) as Arc<dyn Store>)
                } else {
                    Err(StoreError::Backend("no directory".into()))
                }
            }
            .boxed()
        });
        let clock = now.clone();
        let store = Reopening::closed(
            "sqlite cache x".into(),
            open,
            Box::new(move || clock.load(Ordering::SeqCst)),
        );
        let d: Domain = "example.com".parse().unwrap();
        // Within the first minute: no try at all.
        assert!(block_on(store.get(&d)).is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 0);
        now.fetch_add(RETRY_OPEN_MS, Ordering::SeqCst);
        assert!(block_on(store.get(&d)).is_err());
        assert!(block_on(store.get(&d)).is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        works.store(true, Ordering::SeqCst);
        now.fetch_add(RETRY_OPEN_MS, Ordering::SeqCst);
        assert_eq!(block_on(store.get(&d)).unwrap(), None);
        assert_eq!(block_on(store.get(&d)).unwrap(), None);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }
}
