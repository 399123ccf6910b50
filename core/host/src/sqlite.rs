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
//! daemon reads the other's rows.
//!
//! SQLite is blocking: every statement runs inside
//! [`Runtime::spawn_blocking`] on one of a small pool of connections, and
//! the result comes back through a oneshot channel, so the async executor
//! never waits on the disk or on a lock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::oneshot;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use mta_sts_core::cache::{
    f64_secs_to_millis, millis_to_f64_secs, policy_from_json, policy_to_json, CacheEntry, Store,
    StoreError,
};
use mta_sts_core::config::SqliteOptions;
use mta_sts_core::domain::Domain;
use mta_sts_core::service::Runtime;

/// The Python original's schema (postfix-mta-sts-resolver 1.5,
/// `sqlite_cache.py`), created when missing.
const PYTHON_SCHEMA: &str = "
    create table if not exists sts_policy_cache (domain text, ts integer, pol_id text, pol_body text);
    create unique index if not exists sts_policy_domain on sts_policy_cache (domain);
    create index if not exists sts_policy_domain_ts on sts_policy_cache (domain, ts);
    create table if not exists proactive_fetch_ts (id integer primary key, last_fetch_ts integer);
";

/// Store an entry unless the stored one is newer by `(fetched_at, ts)`
/// (`CacheEntry::is_newer_than`), in one statement so concurrent writers
/// cannot interleave between the comparison and the write. Rows written by
/// the Python original have no `fetched_at`: they count as fetched at `ts`.
const UPSERT: &str = "
    insert into sts_policy_cache (domain, ts, pol_id, pol_body, fetched_at)
    values (?1, ?2, ?3, ?4, ?5)
    on conflict (domain) do update set
        ts = excluded.ts, pol_id = excluded.pol_id,
        pol_body = excluded.pol_body, fetched_at = excluded.fetched_at
    where (coalesce(sts_policy_cache.fetched_at, sts_policy_cache.ts), sts_policy_cache.ts)
        <= (excluded.fetched_at, excluded.ts)
";

/// The SQLite cache: a file in the Python original's layout, accessed
/// through a pool of connections on the runtime's blocking pool (DESIGN.md
/// "Cache and refresh"; the stored form is described in the module docs).
pub struct SqliteBackend<R: Runtime> {
    rt: R,
    pool: Arc<Pool>,
}

impl<R: Runtime> SqliteBackend<R> {
    /// Open (or create) `options.filename`: WAL mode, busy timeout
    /// `options.timeout`, schema created or migrated, and a write lock taken
    /// and released once, so an unusable file (a directory, a corrupt,
    /// locked or read-only file) fails here, at start-up, with an error
    /// naming the file and the cause. Opens `options.threads` connections
    /// (at least one).
    pub async fn open(rt: R, options: &SqliteOptions) -> Result<Self, StoreError> {
        let path = options.filename.clone();
        let timeout = options.timeout;
        let threads = options.threads.max(1);
        let pool = run_blocking(&rt, move || Pool::open(&path, timeout, threads)).await?;
        Ok(SqliteBackend {
            rt,
            pool: Arc::new(pool),
        })
    }

    /// Run `job` on a pooled connection off the async executor.
    async fn with_conn<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(&self.pool);
        run_blocking(&self.rt, move || pool.with_conn(job)).await
    }
}

/// Run blocking `work` on the runtime's blocking pool and await its result.
async fn run_blocking<R, T, F>(rt: &R, work: F) -> Result<T, StoreError>
where
    R: Runtime,
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        // The receiver may be gone (the lookup timed out): nothing to do.
        let _ = tx.send(work());
    }));
    rx.await.map_err(|_| {
        StoreError::Backend("sqlite: the blocking task ended without a result".into())
    })?
}

/// Connections of one database file, each used by one blocking job at a
/// time. Jobs run on blocking threads, so waiting here for a free
/// connection never stalls the async executor.
struct Pool {
    idle: Mutex<Vec<Connection>>,
    freed: Condvar,
}

impl Pool {
    fn open(path: &Path, timeout: Duration, threads: usize) -> Result<Pool, StoreError> {
        let fail = |e: rusqlite::Error| {
            StoreError::Backend(format!("sqlite cache file {}: {e}", path.display()))
        };
        let mut first = connect(path, timeout).map_err(fail)?;
        prepare_file(&mut first).map_err(fail)?;
        let mut idle = vec![first];
        for _ in 1..threads {
            idle.push(connect(path, timeout).map_err(fail)?);
        }
        Ok(Pool {
            idle: Mutex::new(idle),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panicking job never holds this lock: the list is always whole.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_conn<T>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut idle = self.lock();
        let conn = loop {
            match idle.pop() {
                Some(conn) => break conn,
                None => idle = self.freed.wait(idle).unwrap_or_else(|p| p.into_inner()),
            }
        };
        drop(idle);
        // Hand the connection back even if the job panics (a transaction
        // it left open is rolled back when its guard unwinds).
        let result = catch_unwind(AssertUnwindSafe(|| job(&conn)));
        self.lock().push(conn);
        self.freed.notify_one();
        result.unwrap_or_else(|_| Err(StoreError::Backend("sqlite: a cache job panicked".into())))
    }
}

/// Open one connection with the settings every pooled connection needs.
fn connect(path: &Path, timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(timeout)?;
    // The first statement reads the file: a non-database or locked file
    // fails here. In WAL mode NORMAL keeps the file consistent without an
    // fsync per commit; losing a cache's last writes on power loss is
    // harmless.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Switch the file to WAL, check it, create or migrate the schema and take
/// the write lock once, so every start-up problem surfaces now.
fn prepare_file(conn: &mut Connection) -> rusqlite::Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("sqlite cache: journal mode is {mode}, not WAL");
    }
    // A garbled page would otherwise show up as errors on some lookups only.
    let check: String = conn.query_row("pragma quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("integrity check failed: {check}")),
        ));
    }
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some("the file is read-only".into()),
        ));
    }
    // An IMMEDIATE transaction takes the write lock up front: a file
    // another process holds locked fails here after `timeout`.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(PYTHON_SCHEMA)?;
    let has_fetched_at = tx
        .prepare("select 1 from pragma_table_info('sts_policy_cache') where name = 'fetched_at'")?
        .exists([])?;
    if !has_fetched_at {
        tx.execute_batch("alter table sts_policy_cache add column fetched_at integer")?;
    }
    tx.commit()
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

    /// Upsert `entry` unless the stored row is newer (one SQL statement).
    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        let domain = domain.clone();
        let body = policy_to_json(&entry.policy);
        let id = entry.policy_id.clone();
        let checked = to_sql_time(entry.checked_at_ms);
        let fetched = to_sql_time(entry.fetched_at_ms);
        self.with_conn(move |conn| {
            conn.prepare_cached(UPSERT)
                .and_then(|mut stmt| {
                    stmt.execute(params![domain.as_str(), checked, id, body, fetched])
                })
                .map(drop)
                .map_err(|e| backend_error(&format!("set {domain}"), e))
        })
        .await
    }

    /// Domains whose `ts` (last TXT check) is before `before_ms`; domain
    /// values that are not valid names are skipped.
    async fn checked_before(&self, before_ms: u64) -> Result<Vec<Domain>, StoreError> {
        let before = to_sql_time(before_ms);
        self.with_conn(move |conn| {
            let names: Vec<Option<String>> = conn
                .prepare_cached("select domain from sts_policy_cache where ts < ?1")
                .and_then(|mut stmt| stmt.query_map([before], |r| r.get(0))?.collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::future::BoxFuture;
    use mta_sts_core::policy::{Mode, Policy};
    use proptest::prelude::*;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    /// A runtime made of std threads: enough to drive the backend.
    #[derive(Clone)]
    struct ThreadRt;

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

    const PYTHON_BODY: &str =
        r#"{"mx": ["mail.example.com"], "version": "STSv1", "mode": "enforce", "max_age": 86400}"#;

    fn options(path: &Path) -> SqliteOptions {
        SqliteOptions {
            filename: path.to_owned(),
            threads: 2,
            timeout: Duration::from_millis(20),
        }
    }

    fn open(path: &Path) -> Result<SqliteBackend<ThreadRt>, StoreError> {
        block_on(SqliteBackend::open(ThreadRt, &options(path)))
    }

    fn d(s: &str) -> Domain {
        Domain::new(s).unwrap()
    }

    fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
        CacheEntry {
            policy_id: id.into(),
            policy: Policy {
                mode: Mode::Testing,
                max_age: 604800,
                mx: vec!["mx1.example.org".into(), "*.example.net".into()],
                lines: vec![
                    "version: STSv1".into(),
                    "mode: testing".into(),
                    "mx: mx1.example.org".into(),
                    "mx: *.example.net".into(),
                    "max_age: 604800".into(),
                ],
            },
            fetched_at_ms,
            checked_at_ms,
        }
    }

    fn columns(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("select name from pragma_table_info('sts_policy_cache')")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    }

    fn open_error(path: &Path) -> String {
        match open(path) {
            Ok(_) => panic!("open of {} succeeded", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn new_file_gets_python_schema_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let backend = open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            columns(&conn),
            ["domain", "ts", "pol_id", "pol_body", "fetched_at"]
        );
        let mode: String = conn
            .query_row("pragma journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let index: String = conn
            .query_row(
                "select sql from sqlite_master where name = 'sts_policy_domain'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index.to_lowercase().contains("unique"));
        assert_eq!(block_on(backend.get(&d("example.com"))).unwrap(), None);
        assert_eq!(block_on(backend.proactive_ts()).unwrap(), None);
        assert!(block_on(backend.checked_before(u64::MAX))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn set_get_round_trip_in_python_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let backend = open(&path).unwrap();
        let e = entry("20240101T000000", 1_700_000_000_000, 1_700_000_005_250);
        block_on(backend.set(&d("example.org"), &e)).unwrap();
        assert_eq!(block_on(backend.get(&d("example.org"))).unwrap(), Some(e));
        assert_eq!(block_on(backend.get(&d("other.example"))).unwrap(), None);
        // What the Python original reads: ts = last check, JSON body.
        let conn = Connection::open(&path).unwrap();
        let (ts, id, body): (f64, String, String) = conn
            .query_row(
                "select ts, pol_id, pol_body from sts_policy_cache where domain = 'example.org'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        // Float seconds, as Python's time.time() writes them.
        assert_eq!((ts, id.as_str()), (1_700_000_005.25, "20240101T000000"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["version"], "STSv1");
        assert_eq!(body["mode"], "testing");
        assert_eq!(body["max_age"], 604800);
        assert_eq!(
            body["mx"],
            serde_json::json!(["mx1.example.org", "*.example.net"])
        );
    }

    #[test]
    fn older_entry_never_replaces_newer() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("cache.db")).unwrap();
        let dom = d("example.com");
        let get = || block_on(backend.get(&dom)).unwrap();
        block_on(backend.set(&dom, &entry("b", 10, 20))).unwrap();
        // Older check of the same fetch, and an older fetch checked later.
        block_on(backend.set(&dom, &entry("x", 10, 15))).unwrap();
        block_on(backend.set(&dom, &entry("y", 9, 99))).unwrap();
        assert_eq!(get(), Some(entry("b", 10, 20)));
        // A later check, then a later fetch, replace it.
        block_on(backend.set(&dom, &entry("b", 10, 30))).unwrap();
        assert_eq!(get(), Some(entry("b", 10, 30)));
        block_on(backend.set(&dom, &entry("c", 11, 11))).unwrap();
        assert_eq!(get(), Some(entry("c", 11, 11)));
    }

    #[test]
    fn lists_domains_checked_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let backend = open(&path).unwrap();
        block_on(backend.set(&d("a.example"), &entry("1", 100, 100))).unwrap();
        block_on(backend.set(&d("b.example"), &entry("1", 100, 200))).unwrap();
        block_on(backend.set(&d("c.example"), &entry("1", 100, 300))).unwrap();
        // A row whose domain is not a valid name is skipped.
        Connection::open(&path)
            .unwrap()
            .execute(
                "insert into sts_policy_cache (domain, ts, pol_id, pol_body) values ('Bad Name', 1, 'x', ?1)",
                [PYTHON_BODY],
            )
            .unwrap();
        let mut stale = block_on(backend.checked_before(300)).unwrap();
        stale.sort();
        assert_eq!(stale, vec![d("a.example"), d("b.example")]);
        assert!(block_on(backend.checked_before(100)).unwrap().is_empty());
    }

    #[test]
    fn proactive_ts_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let backend = open(&path).unwrap();
        block_on(backend.set_proactive_ts(1_700_000_000_000)).unwrap();
        block_on(backend.set_proactive_ts(1_700_000_600_500)).unwrap();
        block_on(backend.set(&d("example.com"), &entry("1", 5, 6))).unwrap();
        drop(backend);
        let backend = open(&path).unwrap();
        assert_eq!(
            block_on(backend.proactive_ts()).unwrap(),
            Some(1_700_000_600_500)
        );
        assert_eq!(
            block_on(backend.get(&d("example.com"))).unwrap(),
            Some(entry("1", 5, 6))
        );
        // One row, id 1, as the Python original keeps it.
        let n: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "select count(*) from proactive_fetch_ts where id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn python_cache_file_is_read_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("python.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(PYTHON_SCHEMA).unwrap();
            conn.execute(
                "insert into sts_policy_cache (domain, ts, pol_id, pol_body) values ('example.com', 1700000000, 'py1', ?1)",
                [PYTHON_BODY],
            )
            .unwrap();
            conn.execute(
                "insert into proactive_fetch_ts (id, last_fetch_ts) values (1, 1699999000)",
                [],
            )
            .unwrap();
        }
        let backend = open(&path).unwrap();
        let got = block_on(backend.get(&d("example.com"))).unwrap().unwrap();
        assert_eq!(got.policy_id, "py1");
        assert_eq!(
            (got.fetched_at_ms, got.checked_at_ms),
            (1_700_000_000_000, 1_700_000_000_000)
        );
        assert_eq!(got.policy.mode, Mode::Enforce);
        assert_eq!(got.policy.max_age, 86400);
        assert_eq!(got.policy.mx, vec!["mail.example.com".to_owned()]);
        assert_eq!(
            block_on(backend.proactive_ts()).unwrap(),
            Some(1_699_999_000_000)
        );
        assert!(columns(&Connection::open(&path).unwrap()).contains(&"fetched_at".to_owned()));
        // The Python row counts as fetched at its ts for the newer rule.
        block_on(backend.set(
            &d("example.com"),
            &entry("old", 1_699_000_000_000, 1_800_000_000_000),
        ))
        .unwrap();
        assert_eq!(
            block_on(backend.get(&d("example.com")))
                .unwrap()
                .unwrap()
                .policy_id,
            "py1"
        );
        block_on(backend.set(
            &d("example.com"),
            &entry("new", 1_700_000_000_000, 1_700_000_100_000),
        ))
        .unwrap();
        assert_eq!(
            block_on(backend.get(&d("example.com")))
                .unwrap()
                .unwrap()
                .policy_id,
            "new"
        );
        // Reopening an already migrated file changes nothing.
        drop(backend);
        let backend = open(&path).unwrap();
        assert_eq!(
            block_on(backend.get(&d("example.com")))
                .unwrap()
                .unwrap()
                .policy_id,
            "new"
        );
    }

    #[test]
    fn undecodable_row_is_corrupt_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let backend = open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "insert into sts_policy_cache (domain, ts, pol_id, pol_body) values ('bad.example', 1, 'x', 'not json')",
            [],
        )
        .unwrap();
        conn.execute(
            "insert into sts_policy_cache (domain, ts, pol_id, pol_body) values ('nots.example', null, 'x', ?1)",
            [PYTHON_BODY],
        )
        .unwrap();
        for name in ["bad.example", "nots.example"] {
            match block_on(backend.get(&d(name))) {
                Err(StoreError::Corrupt { domain, .. }) => assert_eq!(domain, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn python_real_and_text_timestamps_are_read() {
        assert_eq!(from_sql_time(&Value::Integer(5)), Some(5_000));
        assert_eq!(from_sql_time(&Value::Integer(-5)), None);
        assert_eq!(
            from_sql_time(&Value::Real(1.7e9 + 0.5)),
            Some(1_700_000_000_500)
        );
        assert_eq!(from_sql_time(&Value::Real(f64::NAN)), None);
        assert_eq!(from_sql_time(&Value::Text(" 42.25 ".into())), Some(42_250));
        assert_eq!(from_sql_time(&Value::Null), None);
        assert_eq!(
            from_sql_time(&Value::Real(to_sql_time(1_700_000_000_001))),
            Some(1_700_000_000_001)
        );
    }

    #[test]
    fn directory_fails_at_open_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let msg = open_error(dir.path());
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("unable to open"), "{msg}");
    }

    #[test]
    fn garbage_file_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let msg = open_error(&path);
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a database"), "{msg}");
    }

    #[test]
    fn damaged_page_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("pragma page_size = 1024; create table t (x);")
                .unwrap();
            for i in 0..200 {
                conn.execute("insert into t values (?1)", [format!("row {i:0>50}")])
                    .unwrap();
            }
        }
        // Keep the header and schema page, garble the table's pages.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 4096);
        bytes[1024..4096].fill(0xa5);
        std::fs::write(&path, bytes).unwrap();
        let msg = open_error(&path);
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("malformed") || msg.contains("integrity"),
            "{msg}"
        );
    }

    #[test]
    fn locked_file_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("create table t (x); begin exclusive; insert into t values (1);")
            .unwrap();
        let msg = open_error(&path);
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("locked"), "{msg}");
        other.execute_batch("rollback").unwrap();
        assert!(open(&path).is_ok());
    }

    #[test]
    fn failing_write_at_run_time_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let backend = open(&path).unwrap();
        block_on(backend.set(&d("example.com"), &entry("1", 1, 1))).unwrap();
        // Another process holds the write lock longer than our timeout.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("begin immediate").unwrap();
        let err = block_on(backend.set(&d("example.com"), &entry("2", 2, 2))).unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        assert!(block_on(backend.set_proactive_ts(9)).is_err());
        // Readers are not blocked in WAL mode; the old entry is intact.
        assert_eq!(
            block_on(backend.get(&d("example.com"))).unwrap(),
            Some(entry("1", 1, 1))
        );
        other.execute_batch("rollback").unwrap();
        block_on(backend.set(&d("example.com"), &entry("2", 2, 2))).unwrap();
        assert_eq!(
            block_on(backend.get(&d("example.com"))).unwrap(),
            Some(entry("2", 2, 2))
        );
    }

    #[test]
    fn concurrent_jobs_share_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("cache.db")).unwrap();
        let doms: Vec<Domain> = (0..16).map(|i| d(&format!("d{i}.example"))).collect();
        let e = entry("1", 1, 1);
        block_on(futures::future::try_join_all(
            doms.iter().map(|dom| backend.set(dom, &e)),
        ))
        .unwrap();
        let got = block_on(futures::future::try_join_all(
            doms.iter().map(|dom| backend.get(dom)),
        ))
        .unwrap();
        assert!(got.iter().all(|e| e == &Some(entry("1", 1, 1))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever order writes arrive in, the stored entry is the newest.
        #[test]
        fn keeps_the_newest_of_any_write_order(
            stamps in proptest::collection::vec((0u64..5, 0u64..5), 1..8)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let backend = open(&dir.path().join("cache.db")).unwrap();
            let dom = d("example.com");
            let mut best: Option<CacheEntry> = None;
            for (i, (f, c)) in stamps.into_iter().enumerate() {
                let e = entry(&i.to_string(), f, c);
                block_on(backend.set(&dom, &e)).unwrap();
                if !best.as_ref().is_some_and(|b| b.is_newer_than(&e)) {
                    best = Some(e);
                }
            }
            prop_assert_eq!(block_on(backend.get(&dom)).unwrap(), best);
        }
    }
}
