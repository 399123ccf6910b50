//! The file layout: the Python original's schema, created when missing,
//! our added column, and the newer-entry-wins upsert.

use rusqlite::{Connection, TransactionBehavior};

/// The Python original's schema (postfix-mta-sts-resolver 1.5,
/// `sqlite_cache.py`), created when missing.
pub(super) const PYTHON_SCHEMA: &str = "
    create table if not exists sts_policy_cache (domain text, ts integer, pol_id text, pol_body text);
    create unique index if not exists sts_policy_domain on sts_policy_cache (domain);
    create index if not exists sts_policy_domain_ts on sts_policy_cache (domain, ts);
    create table if not exists proactive_fetch_ts (id integer primary key, last_fetch_ts integer);
";

/// Store an entry unless the stored one is newer by `(fetched_at, ts)`
/// (`CacheEntry::is_newer_at`), in one statement so concurrent writers
/// cannot interleave between the comparison and the write. Rows written by
/// the Python original have no `fetched_at`: they count as fetched at `ts`.
/// A stored time beyond `?6` (`cache::latest_believed`, float seconds)
/// counts as 0, so a future-dated row never keeps a write out
/// (docs/ARCHITECTURE.md "Time").
pub(super) const UPSERT: &str = "
    insert into sts_policy_cache (domain, ts, pol_id, pol_body, fetched_at)
    values (?1, ?2, ?3, ?4, ?5)
    on conflict (domain) do update set
        ts = excluded.ts, pol_id = excluded.pol_id,
        pol_body = excluded.pol_body, fetched_at = excluded.fetched_at
    where (
        case when coalesce(sts_policy_cache.fetched_at, sts_policy_cache.ts) > ?6 then 0
            else coalesce(sts_policy_cache.fetched_at, sts_policy_cache.ts) end,
        case when sts_policy_cache.ts > ?6 then 0 else sts_policy_cache.ts end
    ) <= (excluded.fetched_at, excluded.ts)
";

/// Switch the file to WAL, check it, create or migrate the schema and take
/// the write lock once, so every start-up problem surfaces now.
pub(super) fn prepare_file(conn: &mut Connection) -> rusqlite::Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("sqlite cache: journal mode is {mode}, not WAL");
    }
    // A garbled page would otherwise show up as errors on some lookups only.
    let check: String = conn.query_row("pragma quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        let first = check.lines().next().unwrap_or_default();
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("integrity check failed: {first}")),
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
