//! The `sqlite` cache store (`cache.type: sqlite`, options `filename`,
//! `threads`, `timeout`).
//!
//! The file layout is the Python original's (`sts_policy_cache` with a
//! unique index on `domain`, `pol_body` as JSON, `proactive_fetch_ts`), so
//! the new daemon can take over the old daemon's cache file and keep every
//! policy. Our only addition is the nullable column
//! `sts_policy_cache.fetched_at` (RFC 8461 §5.1: a policy's lifetime counts
//! from its fetch, not from the last TXT check `ts`); rows without it are
//! taken as fetched at `ts`. Times are written as float Unix seconds, as
//! Python's `time.time()` writes them: milliseconds survive, and either
//! daemon reads the other's rows. Rows are read as stored; their reader
//! believes their times up to `MAX_SKEW` ahead (`cache::merge`), and so
//! does the upsert.
//!
//! SQLite is blocking: every statement runs inside
//! [`Runtime::spawn_blocking`] on one of a small pool of connections, and
//! the result comes back through a oneshot channel, so the async executor
//! never waits on the disk or on a lock. At most `threads` statements run
//! at once (one per connection); the rest wait for a turn asynchronously,
//! so a locked file holds `threads` blocking threads, not one per lookup
//! (`crate::blocking`).

use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use mta_sts_core::cache::{
    f64_secs_to_millis, latest_believed, millis_to_f64_secs, policy_from_json, policy_to_json,
    CacheEntry, Store, StoreError,
};
use mta_sts_core::config::SqliteOptions;
use mta_sts_core::domain::Domain;
use mta_sts_core::service::Runtime;

mod pool;
mod schema;
#[cfg(test)]
mod tests;

use crate::blocking::{run_blocking, Jobs};
use pool::Pool;

/// Move a corrupt cache file (and its `-wal`/`-shm` companions) aside to
/// `<file>.corrupt-<unix ms>`, so a new one can be made and nothing of the
/// user's is deleted. Returns the new name of the main file.
pub fn move_aside(path: &std::path::Path, now_ms: u64) -> std::io::Result<std::path::PathBuf> {
    let with_suffix = |p: &std::path::Path, suffix: &str| {
        let mut name = p.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let target = with_suffix(path, &format!(".corrupt-{now_ms}"));
    std::fs::rename(path, &target)?;
    for companion in ["-wal", "-shm"] {
        let from = with_suffix(path, companion);
        if from.exists() {
            std::fs::rename(&from, with_suffix(&target, companion))?;
        }
    }
    Ok(target)
}
use schema::UPSERT;

/// The SQLite cache: a file in the Python original's layout, accessed
/// through a pool of connections on the runtime's blocking pool (the stored form
/// is described in the module docs).
pub struct SqliteBackend<R: Runtime> {
    jobs: Jobs<R>,
    pool: Arc<Pool>,
}

impl<R: Runtime> SqliteBackend<R> {
    /// Open (or create) `options.filename`: WAL mode, busy timeout
    /// `options.timeout`, schema created or migrated, and a write lock taken
    /// and released once, so an unusable file (a directory, a corrupt,
    /// locked or read-only file) fails here, at start-up, with an error
    /// naming the file and the cause. Opens `options.threads` connections
    /// (at least one), and runs as many jobs at once.
    pub async fn open(rt: R, options: &SqliteOptions) -> Result<Self, StoreError> {
        let path = options.filename.clone();
        let timeout = options.timeout;
        let threads = options.threads.max(1);
        let pool = run_blocking(&rt, move || Pool::open(&path, timeout, threads)).await?;
        Ok(SqliteBackend {
            jobs: Jobs::new(rt, threads),
            pool: Arc::new(pool),
        })
    }

    /// Run `job` on a pooled connection off the async executor, in turn.
    async fn with_conn<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(&self.pool);
        self.jobs.run(move || pool.with_conn(job)).await
    }
}

/// A Unix time in milliseconds as the float seconds Python writes.
fn to_sql_time(ms: u64) -> f64 {
    millis_to_f64_secs(ms)
}

/// Read a Unix seconds column leniently, in milliseconds: an integer (the
/// Python original's whole seconds), a real, or a numeric string.
fn from_sql_time(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok().map(|s| s.saturating_mul(1000)),
        Value::Real(f) => f64_secs_to_millis(*f),
        Value::Text(s) => s.trim().parse().ok().and_then(f64_secs_to_millis),
        _ => None,
    }
}

/// Decode one `sts_policy_cache` row into an entry.
fn decode_row(
    ts: &Value,
    pol_id: Option<String>,
    pol_body: Option<String>,
    fetched_at: &Value,
) -> Result<CacheEntry, String> {
    let checked_at_ms = from_sql_time(ts).ok_or("bad ts")?;
    let policy_id = pol_id.ok_or("no pol_id")?;
    let policy =
        policy_from_json(pol_body.as_deref().ok_or("no pol_body")?).map_err(|e| e.to_string())?;
    let fetched_at_ms = match fetched_at {
        Value::Null => checked_at_ms,
        v => from_sql_time(v).ok_or("bad fetched_at")?,
    };
    Ok(CacheEntry {
        policy_id,
        policy,
        fetched_at_ms,
        checked_at_ms,
    })
}

fn backend_error(what: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite {what}: {e}"))
}

#[async_trait::async_trait]
impl<R: Runtime> Store for SqliteBackend<R> {
    /// The row for `domain`; an undecodable row is
    /// [`StoreError::Corrupt`] (the engine treats it as a miss).
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError> {
        let domain = domain.clone();
        self.with_conn(move |conn| {
            let row = conn
                .prepare_cached(
                    "select ts, pol_id, pol_body, fetched_at from sts_policy_cache where domain = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row([domain.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()
                })
                .map_err(|e| backend_error(&format!("get {domain}"), e))?;
            let Some((ts, pol_id, pol_body, fetched_at)) = row else {
                return Ok(None);
            };
            decode_row(&ts, pol_id, pol_body, &fetched_at)
                .map(Some)
                .map_err(|reason| StoreError::Corrupt {
                    domain: domain.to_string(),
                    reason,
                })
        })
        .await
    }

    /// Upsert `entry` unless the stored row is newer (one SQL statement;
    /// a stored time beyond `now + MAX_SKEW` never is); merged with the
    /// domain's writes waiting for a turn.
    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        let pool = Arc::clone(&self.pool);
        let believed = to_sql_time(latest_believed(self.jobs.rt().unix_ms()));
        self.jobs
            .write(domain, entry, move |domain, entry| {
                let body = policy_to_json(&entry.policy);
                let id = entry.policy_id.clone();
                let checked = to_sql_time(entry.checked_at_ms);
                let fetched = to_sql_time(entry.fetched_at_ms);
                pool.with_conn(|conn| {
                    conn.prepare_cached(UPSERT)
                        .and_then(|mut stmt| {
                            stmt.execute(params![
                                domain.as_str(),
                                checked,
                                id,
                                body,
                                fetched,
                                believed
                            ])
                        })
                        .map(drop)
                        .map_err(|e| backend_error(&format!("set {domain}"), e))
                })
            })
            .await
    }

    /// Domains whose `ts` (last TXT check) is before `before_ms` or beyond
    /// [`latest_believed`]`(now_ms)`; domain values that are not valid
    /// names are skipped.
    async fn checked_before(&self, before_ms: u64, now_ms: u64) -> Result<Vec<Domain>, StoreError> {
        let before = to_sql_time(before_ms);
        let believed = to_sql_time(latest_believed(now_ms));
        self.with_conn(move |conn| {
            let names: Vec<Option<String>> = conn
                .prepare_cached("select domain from sts_policy_cache where ts < ?1 or ts > ?2")
                .and_then(|mut stmt| stmt.query_map([before, believed], |r| r.get(0))?.collect())
                .map_err(|e| backend_error("stale", e))?;
            Ok(names
                .into_iter()
                .flatten()
                .filter_map(|name| match Domain::new(&name) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        log::debug!("sqlite cache: skipping row: {e}");
                        None
                    }
                })
                .collect())
        })
        .await
    }

    /// Every decodable row; rows that are not valid are skipped (logged).
    async fn entries(&self) -> Result<Vec<(Domain, CacheEntry)>, StoreError> {
        self.with_conn(|conn| {
            let rows: Vec<(Option<String>, Value, Option<String>, Option<String>, Value)> = conn
                .prepare_cached(
                    "select domain, ts, pol_id, pol_body, fetched_at from sts_policy_cache",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect()
                })
                .map_err(|e| backend_error("entries", e))?;
            Ok(rows
                .into_iter()
                .filter_map(|(name, ts, id, body, fetched)| {
                    let domain = Domain::new(name.as_deref()?).ok()?;
                    match decode_row(&ts, id, body, &fetched) {
                        Ok(entry) => Some((domain, entry)),
                        Err(e) => {
                            log::debug!("sqlite cache: skipping row {domain}: {e}");
                            None
                        }
                    }
                })
                .collect())
        })
        .await
    }

    async fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        let domain = domain.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "delete from sts_policy_cache where domain = ?1",
                [domain.as_str()],
            )
            .map(|n| n > 0)
            .map_err(|e| backend_error("remove", e))
        })
        .await
    }

    async fn remove_all(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            conn.execute("delete from sts_policy_cache", [])
                .map(|n| n as u64)
                .map_err(|e| backend_error("remove_all", e))
        })
        .await
    }

    /// The Python original's `proactive_fetch_ts` row `id = 1`.
    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
        self.with_conn(|conn| {
            let v: Option<Value> = conn
                .query_row(
                    "select last_fetch_ts from proactive_fetch_ts where id = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| backend_error("proactive_ts", e))?;
            Ok(v.as_ref().and_then(from_sql_time))
        })
        .await
    }

    /// Upsert the `proactive_fetch_ts` row `id = 1`, as the Python original.
    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError> {
        let ts = to_sql_time(ts_ms);
        self.with_conn(move |conn| {
            conn.execute(
                "insert into proactive_fetch_ts (id, last_fetch_ts) values (1, ?1)
                 on conflict (id) do update set last_fetch_ts = excluded.last_fetch_ts",
                [ts],
            )
            .map(drop)
            .map_err(|e| backend_error("set_proactive_ts", e))
        })
        .await
    }
}
