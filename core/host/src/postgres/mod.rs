//! The `postgres` cache store (`cache.type: postgres`, README.md
//! "Configuration reference"): the Python original's tables (its
//! `postgres_cache.py` schema, created when missing), so the two daemons
//! share one database and either takes over the other's cache. What we keep
//! beyond it (fetch time, milliseconds, the policy lines) lives in added
//! nullable columns Python never names ([`schema::OUR_COLUMNS`]). Rows
//! are read as stored; their reader believes their times up to `MAX_SKEW`
//! ahead (`cache::merge`), and so does the upsert.
//!
//! The client is the synchronous `postgres` crate, run on the runtime's
//! blocking pool like SQLite, so the same code serves the smol and the
//! tokio drivers without blocking their executors. A down or slow server
//! costs lookups nothing but the cache: they go on from memory and the
//! network, one log line says so, and the next use reconnects.

mod connect;
mod pool;
mod schema;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use mta_sts_core::cache::{
    latest_believed, policy_from_body, policy_from_json, policy_to_json, CacheEntry, OrderedObject,
    Store, StoreError,
};
use mta_sts_core::config::PostgresOptions;
use mta_sts_core::domain::Domain;
use mta_sts_core::service::{with_timeout, Runtime};
use serde_json::Value;

use crate::blocking::{run_blocking, Jobs};
use pool::Pool;

/// What `mta-sts-daemon --check-config` says of `options`: the warning
/// the daemon would log at start (TLS open to interception), or the error
/// that would stop it (an unreadable `sslrootcert`, ports that do not fit
/// the hosts), with the environment the check runs in.
pub(crate) fn check_options(options: &PostgresOptions) -> Result<Option<String>, StoreError> {
    connect::resolve(options, |k| std::env::var(k).ok()).map(|target| target.warning)
}

/// The PostgreSQL cache: a pool of connections used from the runtime's
/// blocking pool (the stored form is described in the module docs).
pub struct PostgresBackend<R: Runtime> {
    rt: R,
    pool: Arc<Pool>,
    jobs: Jobs<R>,
    options: PostgresOptions,
}

/// A stored row as read: Python's columns and ours.
struct Row {
    ts: Option<i32>,
    pol_id: Option<String>,
    pol_body: Option<String>,
    fetched_at_ms: Option<i64>,
    checked_at_ms: Option<i64>,
    policy_lines: Option<String>,
}

/// Keys of a Python row's `pol_body` in the order a policy publishes them
/// (`jsonb` keeps its own order), for the rebuilt lines.
fn published_rank(key: &str) -> usize {
    ["version", "mode", "mx", "max_age"]
        .iter()
        .position(|k| *k == key)
        .unwrap_or(4)
}

impl Row {
    /// The entry of this row. Our columns count only while `ts` is
    /// `checked_at_ms` in whole seconds; otherwise (a row Python wrote or
    /// rewrote) it is fetched and checked at `ts`.
    fn decode(self) -> Result<CacheEntry, String> {
        let ts = u64::try_from(self.ts.ok_or("no ts")?).map_err(|_| "negative ts")?;
        let ours = self
            .checked_at_ms
            .and_then(|c| u64::try_from(c).ok())
            .filter(|c| c / 1000 == ts);
        let body = self.pol_body.ok_or("no pol_body")?;
        let mut policy = match ours.and(self.policy_lines.as_deref()) {
            Some(_) => policy_from_json(&body).map_err(|e| e.to_string())?,
            None => {
                let mut items: OrderedObject =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                items.0.sort_by_key(|(k, _)| published_rank(k));
                policy_from_body(&items).map_err(|e| e.to_string())?
            }
        };
        if let (Some(_), Some(lines)) = (ours, &self.policy_lines) {
            let lines: Value = serde_json::from_str(lines).map_err(|e| e.to_string())?;
            if let Some(items) = lines.as_array() {
                policy.lines = items
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect();
            }
        }
        let checked_at_ms = ours.unwrap_or(ts.saturating_mul(1000));
        let fetched_at_ms = match ours {
            Some(_) => self
                .fetched_at_ms
                .and_then(|f| u64::try_from(f).ok())
                .unwrap_or(checked_at_ms),
            None => checked_at_ms,
        };
        Ok(CacheEntry {
            policy_id: self.pol_id.ok_or("no pol_id")?,
            policy,
            fetched_at_ms,
            checked_at_ms,
        })
    }
}

/// Milliseconds as the Python original's `integer` seconds column.
fn python_seconds(ms: u64) -> Result<i32, StoreError> {
    i32::try_from(ms / 1000)
        .map_err(|_| StoreError::Backend(format!("time {ms} ms beyond the integer ts column")))
}

fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl<R: Runtime> PostgresBackend<R> {
    /// Set up the cache for `options`: the target is resolved (bad settings
    /// fail here), then `min_size` connections are tried, the first one
    /// creating the schema. A server that does not answer is logged and
    /// tried again on use; the daemon starts all the same.
    pub async fn open(rt: R, options: &PostgresOptions) -> Result<Self, StoreError> {
        let target = connect::resolve(options, |k| std::env::var(k).ok())?;
        if let Some(warning) = &target.warning {
            log::warn!("{warning}");
        }
        let pool = Arc::new(Pool::new(target, options.timeout));
        let warm = Arc::clone(&pool);
        let count = options.min_size.max(1).min(options.max_size);
        // Bounded like any job; a hung server only delays the start by it.
        let _ = with_timeout(
            &rt,
            options.timeout,
            run_blocking(&rt, move || {
                warm.warm_up(count);
                Ok(())
            }),
        )
        .await;
        Ok(PostgresBackend {
            jobs: Jobs::new(rt.clone(), options.max_size),
            rt,
            pool,
            options: options.clone(),
        })
    }

    /// Where the cache connects (`user@hosts:ports/database`), for the log.
    pub fn describe(&self) -> &str {
        self.pool.describe()
    }

    /// Run `job` on a connection off the async executor, in turn.
    async fn with_client<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    {
        let pool = Arc::clone(&self.pool);
        self.bounded(self.jobs.run(move || pool.run(job))).await
    }

    /// A whole call, waiting for a turn included, gives up after `timeout`:
    /// a hung server holds at most `max_size` blocking threads, never a
    /// caller.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        with_timeout(&self.rt, self.options.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.options.timeout)))
    }
}

#[async_trait::async_trait]
impl<R: Runtime> Store for PostgresBackend<R> {
    /// The row of `domain`; an undecodable row is [`StoreError::Corrupt`].
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError> {
        let name = domain.as_str().to_owned();
        let row = self
            .with_client(move |client| {
                let row = client.query_opt(schema::SELECT, &[&name])?;
                row.map(|r| {
                    Ok(Row {
                        ts: r.try_get(0)?,
                        pol_id: r.try_get(1)?,
                        pol_body: r.try_get(2)?,
                        fetched_at_ms: r.try_get(3)?,
                        checked_at_ms: r.try_get(4)?,
                        policy_lines: r.try_get(5)?,
                    })
                })
                .transpose()
            })
            .await?;
        row.map(|r| {
            r.decode().map_err(|reason| StoreError::Corrupt {
                domain: domain.to_string(),
                reason,
            })
        })
        .transpose()
    }

    /// Upsert `entry` unless the stored row is newer (one statement; a
    /// stored time beyond `now + MAX_SKEW` never is); merged with the
    /// domain's writes waiting for a turn.
    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        let pool = Arc::clone(&self.pool);
        let believed = sql_ms(latest_believed(self.rt.unix_ms()));
        let call = self.jobs.write(domain, entry, move |domain, entry| {
            let name = domain.as_str().to_owned();
            let ts = python_seconds(entry.checked_at_ms)?;
            let id = entry.policy_id.clone();
            let body = policy_to_json(&entry.policy);
            let lines = Value::from(entry.policy.lines.iter().collect::<Vec<_>>()).to_string();
            let (fetched, checked) = (sql_ms(entry.fetched_at_ms), sql_ms(entry.checked_at_ms));
            pool.run(move |client| {
                client
                    .execute(
                        schema::UPSERT,
                        &[
                            &name, &ts, &id, &body, &fetched, &checked, &lines, &believed,
                        ],
                    )
                    .map(drop)
            })
        });
        self.bounded(call).await
    }

    /// Domains last checked before `before_ms` or beyond
    /// [`latest_believed`]`(now_ms)`; names that are not valid domains are
    /// skipped.
    async fn checked_before(&self, before_ms: u64, now_ms: u64) -> Result<Vec<Domain>, StoreError> {
        let before = sql_ms(before_ms);
        let believed = sql_ms(latest_believed(now_ms));
        let names: Vec<Option<String>> = self
            .with_client(move |client| {
                client
                    .query(schema::STALE, &[&before, &believed])?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect()
            })
            .await?;
        Ok(names
            .into_iter()
            .flatten()
            .filter_map(|name| Domain::new(&name).ok())
            .collect())
    }

    async fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        let name = domain.as_str().to_owned();
        self.with_client(move |client| {
            client
                .execute("DELETE FROM sts_policy_cache WHERE domain = $1", &[&name])
                .map(|n| n > 0)
        })
        .await
    }

    async fn remove_all(&self) -> Result<u64, StoreError> {
        self.with_client(|client| client.execute("DELETE FROM sts_policy_cache", &[]))
            .await
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
        let row: Option<(Option<i32>, Option<i64>)> = self
            .with_client(|client| {
                client
                    .query_opt(schema::SELECT_PROACTIVE, &[])?
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()
            })
            .await?;
        let Some((Some(secs), ms)) = row else {
            return Ok(None);
        };
        let Ok(secs) = u64::try_from(secs) else {
            return Ok(None);
        };
        let ms = ms
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| m / 1000 == secs);
        Ok(Some(ms.unwrap_or(secs.saturating_mul(1000))))
    }

    /// Upsert row `id = 1`, as the Python original does.
    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError> {
        let secs = python_seconds(ts_ms)?;
        let ms = sql_ms(ts_ms);
        self.with_client(move |client| {
            client
                .execute(schema::UPSERT_PROACTIVE, &[&secs, &ms])
                .map(drop)
        })
        .await
    }
}
