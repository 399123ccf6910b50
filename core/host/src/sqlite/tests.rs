use super::schema::PYTHON_SCHEMA;
use super::*;
use crate::test_rt::{QueueRt, ThreadRt};
use futures::executor::block_on;
use mta_sts_core::cache::merge;
use mta_sts_core::policy::{Mode, Policy};
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

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
            ]
            .into(),
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
    assert!(block_on(backend.checked_before(u64::MAX, u64::MAX))
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

/// A row dated ten days ahead, ours (float seconds, `fetched_at`) or the
/// Python original's (integer seconds), is read as now, and a real write
/// replaces it in the upsert; within `MAX_SKEW` ahead a row still keeps an
/// older write out.
#[test]
fn future_dated_rows_are_read_as_now_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let backend = open(&path).unwrap();
    let now = crate::unix_ms();
    let ahead = now + 10 * 86_400_000;
    let ours = d("ours.example");
    block_on(backend.set(&ours, &entry("forged", ahead, ahead))).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "insert into sts_policy_cache (domain, ts, pol_id, pol_body) values ('py.example', ?1, 'pyid', ?2)",
            params![(ahead / 1000) as i64, PYTHON_BODY],
        )
        .unwrap();
    let py = d("py.example");
    for dom in [&ours, &py] {
        let read = merge(None, block_on(backend.get(dom)), now).unwrap();
        assert_eq!(
            (read.fetched_at_ms, read.checked_at_ms),
            (now, now),
            "{dom}"
        );
        let real = entry("real", now - 2_000, now - 1_000);
        block_on(backend.set(dom, &real)).unwrap();
        assert_eq!(block_on(backend.get(dom)).unwrap(), Some(real), "{dom}");
    }
    let skewed = entry("skewed", now + 60_000, now + 60_000);
    block_on(backend.set(&ours, &skewed)).unwrap();
    block_on(backend.set(&ours, &entry("older", now, now))).unwrap();
    assert_eq!(block_on(backend.get(&ours)).unwrap(), Some(skewed));
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
    let mut stale = block_on(backend.checked_before(300, 300)).unwrap();
    stale.sort();
    assert_eq!(stale, vec![d("a.example"), d("b.example")]);
    assert!(block_on(backend.checked_before(100, 300))
        .unwrap()
        .is_empty());
}

/// Rows checked beyond now + MAX_SKEW, ours (float seconds) or the Python
/// original's (integer seconds), are on the proactive work list: refreshed
/// in the background, not put off until their date (docs/ARCHITECTURE.md
/// "Time"); a row within the skew is believed.
#[test]
fn lists_domains_checked_beyond_the_believed_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let backend = open(&path).unwrap();
    let now = crate::unix_ms();
    let ahead = now + 10 * 86_400_000;
    block_on(backend.set(&d("ours.example"), &entry("1", ahead, ahead))).unwrap();
    block_on(backend.set(&d("skewed.example"), &entry("1", now, now + 300_000))).unwrap();
    block_on(backend.set(&d("recent.example"), &entry("1", now, now - 1_000))).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "insert into sts_policy_cache (domain, ts, pol_id, pol_body) values ('py.example', ?1, 'pyid', ?2)",
            params![(ahead / 1000) as i64, PYTHON_BODY],
        )
        .unwrap();
    let mut due = block_on(backend.checked_before(now - 60_000, now)).unwrap();
    due.sort();
    assert_eq!(due, vec![d("ours.example"), d("py.example")]);
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

/// 200 calls against a file another process holds locked: the store hands
/// the blocking pool at most `threads` jobs at once, not one per call (the
/// queue runtime finishes jobs only between polls, so its count is exact).
#[test]
fn locked_file_under_load_holds_at_most_threads_blocking_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let rt = QueueRt::default();
    let opts = options(&path);
    let backend = rt.drive(SqliteBackend::open(rt.clone(), &opts)).unwrap();
    let doms: Vec<Domain> = (0..100).map(|i| d(&format!("d{i}.example"))).collect();
    let e = entry("1", 1, 1);
    let other = Connection::open(&path).unwrap();
    other.execute_batch("begin exclusive").unwrap();
    let (writes, reads) = rt.drive(futures::future::join(
        futures::future::join_all(doms.iter().map(|dom| backend.set(dom, &e))),
        futures::future::join_all(doms.iter().map(|dom| backend.get(dom))),
    ));
    assert!(writes.iter().all(|w| w.is_err()), "{writes:?}");
    // In WAL mode readers are not blocked.
    assert!(reads.iter().all(|r| r == &Ok(None)), "{reads:?}");
    assert_eq!(rt.ran(), 201);
    assert!(
        rt.peak() <= opts.threads,
        "{} blocking jobs at once for {} threads",
        rt.peak(),
        opts.threads
    );
    other.execute_batch("rollback").unwrap();
    rt.drive(backend.set(&doms[0], &e)).unwrap();
    assert_eq!(rt.drive(backend.get(&doms[0])).unwrap(), Some(e));
}

/// Writes of one domain waiting for a turn merge: two jobs for five
/// writes, and the newest entry is the one stored.
#[test]
fn pending_writes_of_a_domain_merge_into_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = QueueRt::default();
    let opts = SqliteOptions {
        threads: 1,
        ..options(&dir.path().join("cache.db"))
    };
    let backend = rt.drive(SqliteBackend::open(rt.clone(), &opts)).unwrap();
    let dom = d("example.com");
    let writes = [
        entry("a", 10, 10),
        entry("b", 12, 12),
        // Older than b: never written over it.
        entry("c", 11, 30),
        entry("d", 12, 13),
        entry("e", 12, 12),
    ];
    let before = rt.ran();
    let done = rt.drive(futures::future::join_all(
        writes.iter().map(|e| backend.set(&dom, e)),
    ));
    assert!(done.iter().all(|r| r.is_ok()), "{done:?}");
    // The first write took the turn; the other four waited and merged.
    assert_eq!(rt.ran() - before, 2);
    assert_eq!(
        rt.drive(backend.get(&dom)).unwrap(),
        Some(entry("d", 12, 13))
    );
}
