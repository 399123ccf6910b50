//! The database layout: the Python original's tables exactly as its
//! `postgres_cache.py` creates them, our added nullable columns, and the
//! newer-entry-wins upsert (docs/ARCHITECTURE.md "Cache").

/// The Python original's statements (postfix-mta-sts-resolver 1.5,
/// `PostgresCache.setup`), run in one transaction when missing, so either
/// daemon may start first.
pub(super) const PYTHON_SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS proactive_fetch_ts \
     (id serial primary key, last_fetch_ts integer)",
    "CREATE TABLE IF NOT EXISTS sts_policy_cache \
     (id serial primary key, domain text, ts integer, pol_id text, pol_body jsonb)",
    "CREATE UNIQUE INDEX IF NOT EXISTS sts_policy_domain ON sts_policy_cache (domain)",
    "CREATE INDEX IF NOT EXISTS sts_policy_domain_ts ON sts_policy_cache (domain, ts)",
];

/// Our additions: nullable columns the Python original's explicit column
/// lists never name. `checked_at_ms` is the last check in milliseconds
/// (Python's `ts` holds whole seconds); `fetched_at_ms` when the policy was
/// fetched (RFC 8461 §5.1); `policy_lines` the published lines (RFC 8460
/// §4.4), which `jsonb` key order cannot keep. They describe the row only
/// while `ts` is `checked_at_ms` in seconds: a Python write changes `ts`
/// and leaves them behind, and the row then reads as Python's.
pub(super) const OUR_COLUMNS: [&str; 4] = [
    "ALTER TABLE sts_policy_cache ADD COLUMN IF NOT EXISTS fetched_at_ms bigint",
    "ALTER TABLE sts_policy_cache ADD COLUMN IF NOT EXISTS checked_at_ms bigint",
    "ALTER TABLE sts_policy_cache ADD COLUMN IF NOT EXISTS policy_lines jsonb",
    "ALTER TABLE proactive_fetch_ts ADD COLUMN IF NOT EXISTS last_fetch_ms bigint",
];

/// A row's check time in milliseconds: ours while it describes the row,
/// else Python's whole seconds (`t` is the table's alias).
macro_rules! checked_ms {
    ($t:literal) => {
        concat!(
            "(case when ",
            $t,
            ".checked_at_ms / 1000 = ",
            $t,
            ".ts then ",
            $t,
            ".checked_at_ms else ",
            $t,
            ".ts::bigint * 1000 end)"
        )
    };
}

/// A row's fetch time in milliseconds, likewise (Python's rows count as
/// fetched at their check).
macro_rules! fetched_ms {
    ($t:literal) => {
        concat!(
            "(case when ",
            $t,
            ".checked_at_ms / 1000 = ",
            $t,
            ".ts then coalesce(",
            $t,
            ".fetched_at_ms, ",
            $t,
            ".ts::bigint * 1000) else ",
            $t,
            ".ts::bigint * 1000 end)"
        )
    };
}

/// `t`'s fetch and check times as compared by a write: each as it is, or 0
/// beyond `$8` (`cache::latest_believed`, milliseconds), so a future-dated
/// row never keeps a write out (`CacheEntry::is_newer_at`,
/// docs/ARCHITECTURE.md "Time").
macro_rules! believed_times {
    ($t:literal) => {
        concat!(
            "(case when ",
            fetched_ms!($t),
            " > $8 then 0 else ",
            fetched_ms!($t),
            " end, case when ",
            checked_ms!($t),
            " > $8 then 0 else ",
            checked_ms!($t),
            " end)"
        )
    };
}

/// Store an entry unless the stored one is newer by `(fetched, checked)`
/// (`CacheEntry::is_newer_at`), in one statement: the update re-checks
/// its condition on the row it locks, and the insert only runs for a new
/// domain, so no sequence value is spent on an existing one (the `id` is
/// `serial`). `$1` domain, `$2` ts (whole seconds), `$3` pol_id, `$4`
/// pol_body, `$5` fetched ms, `$6` checked ms, `$7` policy lines (JSON),
/// `$8` the latest stored time believed (ms).
pub(super) const UPSERT: &str = concat!(
    "WITH updated AS (UPDATE sts_policy_cache AS c SET ts = $2, pol_id = $3, ",
    "pol_body = $4::text::jsonb, fetched_at_ms = $5, checked_at_ms = $6, ",
    "policy_lines = $7::text::jsonb WHERE c.domain = $1 AND ",
    believed_times!("c"),
    " <= ($5, $6) RETURNING 1) ",
    "INSERT INTO sts_policy_cache AS c ",
    "(domain, ts, pol_id, pol_body, fetched_at_ms, checked_at_ms, policy_lines) ",
    "SELECT $1, $2, $3, $4::text::jsonb, $5, $6, $7::text::jsonb ",
    "WHERE NOT EXISTS (SELECT 1 FROM sts_policy_cache WHERE domain = $1) ",
    "ON CONFLICT (domain) DO UPDATE SET ts = excluded.ts, pol_id = excluded.pol_id, ",
    "pol_body = excluded.pol_body, fetched_at_ms = excluded.fetched_at_ms, ",
    "checked_at_ms = excluded.checked_at_ms, policy_lines = excluded.policy_lines WHERE ",
    believed_times!("c"),
    " <= (excluded.fetched_at_ms, excluded.checked_at_ms)"
);

/// One domain's row: Python's columns and ours.
pub(super) const SELECT: &str = "SELECT ts, pol_id, pol_body::text, fetched_at_ms, checked_at_ms, \
     policy_lines::text FROM sts_policy_cache WHERE domain = $1";

/// Domains last checked before `$1` or beyond `$2` (the latest time
/// believed, `cache::latest_believed`), in milliseconds.
pub(super) const STALE: &str = concat!(
    "SELECT c.domain FROM sts_policy_cache AS c WHERE ",
    checked_ms!("c"),
    " < $1 OR ",
    checked_ms!("c"),
    " > $2"
);

/// The Python original's row `id = 1` of `proactive_fetch_ts`, and ours.
pub(super) const SELECT_PROACTIVE: &str =
    "SELECT last_fetch_ts, last_fetch_ms FROM proactive_fetch_ts WHERE id = 1";

/// Upsert row `id = 1` as Python does, with our milliseconds beside it.
pub(super) const UPSERT_PROACTIVE: &str =
    "INSERT INTO proactive_fetch_ts (id, last_fetch_ts, last_fetch_ms) \
     VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET last_fetch_ts = EXCLUDED.last_fetch_ts, \
     last_fetch_ms = EXCLUDED.last_fetch_ms";

/// Create what is missing, in one transaction. Two daemons creating the
/// same table at once can collide in the catalog; one retry settles it.
pub(super) fn prepare(client: &mut postgres::Client) -> Result<(), postgres::Error> {
    let run = |client: &mut postgres::Client| -> Result<(), postgres::Error> {
        let mut tx = client.transaction()?;
        for statement in PYTHON_SCHEMA.iter().chain(OUR_COLUMNS.iter()) {
            tx.batch_execute(statement)?;
        }
        tx.commit()
    };
    match run(client) {
        Err(e) if e.code().is_some() => {
            log::debug!("postgres cache: creating the schema again after: {e}");
            run(client)
        }
        other => other,
    }
}
