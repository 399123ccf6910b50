//! An in-memory persistent [`Store`] with scripted latency and failure,
//! counting its reads and writes: it stands for SQLite or Redis behind the
//! index (docs/ARCHITECTURE.md "Cache").

use super::Sim;
use crate::cache::{latest_believed, CacheEntry, Store, StoreError};
use crate::domain::Domain;
use crate::service::Runtime;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Default)]
struct State {
    entries: BTreeMap<String, CacheEntry>,
    proactive_ts: Option<u64>,
    latency: Duration,
    failing: bool,
    reads: usize,
    writes: usize,
    lists: usize,
    ops: usize,
}

/// The sim's store. Every operation waits the scripted latency, then fails
/// if the failure switch is on, else acts like a real store: `set` keeps
/// the newer entry at the sim's now ([`CacheEntry::is_newer_at`]), and
/// `get` hands back what it holds, future-dated or not.
#[derive(Clone)]
pub struct SimStore {
    sim: Sim,
    state: Arc<Mutex<State>>,
}

impl SimStore {
    /// An empty store answering at once.
    pub fn new(sim: &Sim) -> Self {
        SimStore {
            sim: sim.clone(),
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every operation waits `latency` from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Every operation fails (after its latency) while `on`.
    pub fn set_failing(&self, on: bool) {
        self.state().failing = on;
    }

    /// Put `entry` in directly (another daemon sharing the store).
    pub fn insert(&self, domain: &str, entry: CacheEntry) {
        self.state().entries.insert(domain.to_owned(), entry);
    }

    /// The stored entry for `domain`.
    pub fn entry(&self, domain: &str) -> Option<CacheEntry> {
        self.state().entries.get(domain).cloned()
    }

    /// `get` calls so far (failed ones too).
    pub fn reads(&self) -> usize {
        self.state().reads
    }

    /// `set` calls so far (failed ones too).
    pub fn writes(&self) -> usize {
        self.state().writes
    }

    /// `checked_before` calls so far.
    pub fn lists(&self) -> usize {
        self.state().lists
    }

    /// Calls of any kind so far.
    pub fn ops(&self) -> usize {
        self.state().ops
    }

    /// The recorded proactive round time.
    pub fn proactive_time(&self) -> Option<u64> {
        self.state().proactive_ts
    }

    /// Wait the latency, then fail if the switch is on.
    async fn act(&self) -> Result<(), StoreError> {
        let latency = {
            let mut st = self.state();
            st.ops += 1;
            st.latency
        };
        if !latency.is_zero() {
            self.sim.sleep(latency).await;
        }
        if self.state().failing {
            return Err(StoreError::Backend("sim store is down".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for SimStore {
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError> {
        self.state().reads += 1;
        self.act().await?;
        Ok(self.state().entries.get(domain.as_str()).cloned())
    }

    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        self.state().writes += 1;
        self.act().await?;
        let now_ms = self.sim.unix_ms();
        let mut st = self.state();
        let keep_old = st
            .entries
            .get(domain.as_str())
            .is_some_and(|old| old.is_newer_at(entry, now_ms));
        if !keep_old {
            st.entries.insert(domain.as_str().to_owned(), entry.clone());
        }
        Ok(())
    }

    async fn checked_before(&self, before_ms: u64, now_ms: u64) -> Result<Vec<Domain>, StoreError> {
        self.state().lists += 1;
        self.act().await?;
        let limit = latest_believed(now_ms);
        let st = self.state();
        Ok(st
            .entries
            .iter()
            .filter(|(_, e)| e.checked_at_ms < before_ms || e.checked_at_ms > limit)
            .filter_map(|(d, _)| Domain::new(d).ok())
            .collect())
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
        self.act().await?;
        Ok(self.state().proactive_ts)
    }

    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError> {
        self.act().await?;
        self.state().proactive_ts = Some(ts_ms);
        Ok(())
    }
}
