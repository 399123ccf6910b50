//! The PostgreSQL store against a real server started in a temp dir: the
//! Python original's schema, rows as Python writes them, the newer-wins
//! upsert, and a server that goes away and comes back.

use std::time::Duration;

use futures::executor::block_on;
use mta_sts_core::cache::{merge, CacheEntry, Store};
use mta_sts_core::config::{parse_dsn, PostgresOptions};
use mta_sts_core::domain::Domain;
use mta_sts_core::policy::{Mode, Policy};
use mta_sts_tests::{PgServer, TestCa};

use super::PostgresBackend;
use crate::test_rt::ThreadRt;

const NOW: u64 = 1_700_000_000_000;
const S: u64 = 1000;

fn options(dsn: &str) -> PostgresOptions {
    PostgresOptions {
        dsn: Some(parse_dsn(dsn).unwrap()),
        hosts: Vec::new(),
        ports: Vec::new(),
        user: None,
        password: None,
        database: None,
        min_size: 1,
        max_size: 3,
        timeout: Duration::from_secs(2),
    }
}

fn open(pg: &PgServer) -> PostgresBackend<ThreadRt> {
    block_on(PostgresBackend::open(ThreadRt, &options(&pg.dsn()))).unwrap()
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
    CacheEntry {
        policy_id: id.into(),
        policy: Policy {
            mode: Mode::Enforce,
            max_age: 604_800,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mail.example.com".into(),
                "max_age: 604800".into(),
                "mx: *.example.net".into(),
            ]
            .into(),
        },
        fetched_at_ms,
        checked_at_ms,
    }
}

/// Python's `set`: its columns only, replacing only an older `ts`.
fn python_set(pg: &PgServer, domain: &str, ts: u64, id: &str, body: &str) {
    pg.psql(&format!(
        "INSERT INTO sts_policy_cache (domain, ts, pol_id, pol_body) VALUES ('{domain}', {ts}, '{id}', '{body}') \
         ON CONFLICT (domain) DO UPDATE SET ts = EXCLUDED.ts, pol_id = EXCLUDED.pol_id, \
         pol_body = EXCLUDED.pol_body WHERE sts_policy_cache.ts < EXCLUDED.ts"
    ));
}

const PY_BODY: &str =
    r#"{"mx": ["mx.py.example"], "version": "STSv1", "mode": "testing", "max_age": 86400}"#;

#[test]
fn schema_round_trip_newer_wins_and_python_rows() {
    let pg = PgServer::start();
    let b = open(&pg);
    // The Python original's columns and indexes, then ours.
    assert_eq!(
        pg.psql(
            "select string_agg(column_name || ':' || data_type, ',' order by ordinal_position) \
             from information_schema.columns where table_name = 'sts_policy_cache'"
        ),
        "id:integer,domain:text,ts:integer,pol_id:text,pol_body:jsonb,\
         fetched_at_ms:bigint,checked_at_ms:bigint,policy_lines:jsonb"
    );
    assert_eq!(
        pg.psql("select string_agg(indexname, ',' order by indexname) from pg_indexes where tablename = 'sts_policy_cache'"),
        "sts_policy_cache_pkey,sts_policy_domain,sts_policy_domain_ts"
    );
    let dom = d("example.com");
    let e = entry("20240101", NOW - 100 * S, NOW - 5 * S + 250);
    block_on(b.set(&dom, &e)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e.clone()));
    // What Python reads: whole seconds and its pol_body.
    assert_eq!(
        pg.psql("select ts, pol_id, pol_body->>'mode', pol_body->'max_age' from sts_policy_cache where domain = 'example.com'"),
        "1699999995|20240101|enforce|604800"
    );
    block_on(b.set(&dom, &entry("old", NOW - 200 * S, NOW))).unwrap();
    block_on(b.set(&dom, &entry("old", NOW - 100 * S, NOW - 6 * S))).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e));
    let later = entry("new", NOW - 50 * S, NOW - 50 * S);
    block_on(b.set(&dom, &later)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(later));
    // One row, and no serial value spent on updates.
    assert_eq!(
        pg.psql("select count(*), max(id) from sts_policy_cache"),
        "1|1"
    );

    // A Python row, read in published line order.
    python_set(&pg, "py.example", 1_700_000_000, "pyid", PY_BODY);
    let got = block_on(b.get(&d("py.example"))).unwrap().unwrap();
    assert_eq!(got.policy_id, "pyid");
    assert_eq!((got.fetched_at_ms, got.checked_at_ms), (NOW, NOW));
    assert_eq!(
        got.policy.lines,
        [
            "version: STSv1",
            "mode: testing",
            "mx: mx.py.example",
            "max_age: 86400"
        ]
    );
    // Python rewrites our row: our columns no longer describe it.
    python_set(&pg, "example.com", 1_700_000_100, "pynew", PY_BODY);
    let got = block_on(b.get(&dom)).unwrap().unwrap();
    assert_eq!(got.policy_id, "pynew");
    assert_eq!(
        (got.fetched_at_ms, got.checked_at_ms),
        (NOW + 100 * S, NOW + 100 * S)
    );
    // Python's update rule keeps our newer row.
    block_on(b.set(&dom, &entry("ours", NOW + 200 * S, NOW + 200 * S + 1))).unwrap();
    python_set(&pg, "example.com", 1_700_000_150, "pyold", PY_BODY);
    assert_eq!(block_on(b.get(&dom)).unwrap().unwrap().policy_id, "ours");

    let mut stale = block_on(b.checked_before(NOW + 150 * S, NOW + 150 * S)).unwrap();
    stale.sort();
    assert_eq!(stale, vec![d("py.example")]);

    assert_eq!(block_on(b.proactive_ts()).unwrap(), None);
    block_on(b.set_proactive_ts(NOW + 1234)).unwrap();
    assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(NOW + 1234));
    assert_eq!(
        pg.psql("select id, last_fetch_ts from proactive_fetch_ts"),
        "1|1700000001"
    );
    pg.psql("update proactive_fetch_ts set last_fetch_ts = 1700000500");
    assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(NOW + 500 * S));
}

/// A row dated ten days ahead, ours (milliseconds columns) or the Python
/// original's (integer `ts`), is read as now, and a real write replaces it
/// in the upsert; within `MAX_SKEW` ahead a row still keeps an older write
/// out.
#[test]
fn future_dated_rows_are_read_as_now_and_replaced() {
    let pg = PgServer::start();
    let b = open(&pg);
    let now = crate::unix_ms();
    let ahead = now + 10 * 86_400 * S;
    let ours = d("ours.example");
    block_on(b.set(&ours, &entry("forged", ahead, ahead))).unwrap();
    python_set(&pg, "py.example", ahead / S, "pyid", PY_BODY);
    let py = d("py.example");
    for dom in [&ours, &py] {
        let read = merge(None, block_on(b.get(dom)), now).unwrap();
        assert_eq!(
            (read.fetched_at_ms, read.checked_at_ms),
            (now, now),
            "{dom}"
        );
        let real = entry("real", now - 2 * S, now - S);
        block_on(b.set(dom, &real)).unwrap();
        assert_eq!(block_on(b.get(dom)).unwrap(), Some(real), "{dom}");
    }
    let skewed = entry("skewed", now + 60 * S, now + 60 * S);
    block_on(b.set(&ours, &skewed)).unwrap();
    block_on(b.set(&ours, &entry("older", now, now))).unwrap();
    assert_eq!(block_on(b.get(&ours)).unwrap(), Some(skewed));
}

/// Rows checked beyond now + MAX_SKEW, ours or the Python original's, are
/// on the proactive work list (docs/ARCHITECTURE.md "Time"); a row within
/// the skew is believed.
#[test]
fn lists_domains_checked_beyond_the_believed_limit() {
    let pg = PgServer::start();
    let b = open(&pg);
    let ahead = NOW + 10 * 86_400 * S;
    block_on(b.set(&d("ours.example"), &entry("a", ahead, ahead))).unwrap();
    block_on(b.set(&d("skewed.example"), &entry("a", NOW, NOW + 300 * S))).unwrap();
    block_on(b.set(&d("recent.example"), &entry("a", NOW, NOW - S))).unwrap();
    python_set(&pg, "py.example", ahead / S, "pyid", PY_BODY);
    let mut due = block_on(b.checked_before(NOW - 60 * S, NOW)).unwrap();
    due.sort();
    assert_eq!(due, vec![d("ours.example"), d("py.example")]);
}

#[test]
fn down_server_degrades_and_reconnects() {
    let mut pg = PgServer::start();
    let b = open(&pg);
    let e = entry("a", NOW, NOW);
    block_on(b.set(&d("example.com"), &e)).unwrap();
    pg.stop();
    assert!(block_on(b.get(&d("example.com"))).is_err());
    assert!(block_on(b.set(&d("example.org"), &e)).is_err());
    pg.restart();
    assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), Some(e.clone()));
    // A frozen server: every call gives up within the timeout.
    pg.freeze();
    let t = std::time::Instant::now();
    for _ in 0..5 {
        assert!(block_on(b.get(&d("example.com"))).is_err());
    }
    assert!(t.elapsed() < Duration::from_secs(12), "{:?}", t.elapsed());
    pg.thaw();
    let mut back = false;
    for _ in 0..20 {
        if block_on(b.get(&d("example.com"))).is_ok() {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(back, "no answer after the server thawed");
}

#[test]
fn server_down_at_open_is_not_fatal() {
    let mut pg = PgServer::start();
    let dsn = pg.dsn();
    pg.stop();
    let b = block_on(PostgresBackend::open(ThreadRt, &options(&dsn))).unwrap();
    assert!(block_on(b.get(&d("example.com"))).is_err());
    pg.restart();
    // The schema is created on the first connection.
    block_on(b.set(&d("example.com"), &entry("a", NOW, NOW))).unwrap();
    assert_eq!(pg.psql("select pol_id from sts_policy_cache"), "a");
}

#[test]
fn tls_when_the_dsn_asks_for_it() {
    let ca = TestCa::new("postgres test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let pg = PgServer::start_tls(&ca);
    let port = pg.port();
    let root = ca_file.display();
    // The server refuses TCP clients without TLS.
    let plain = format!("postgresql://mta@127.0.0.1:{port}/mta?sslmode=disable");
    let b = block_on(PostgresBackend::open(ThreadRt, &options(&plain))).unwrap();
    assert!(block_on(b.get(&d("example.com"))).is_err());
    for mode in ["require", "prefer"] {
        let dsn = format!("postgresql://mta@127.0.0.1:{port}/mta?sslmode={mode}");
        let b = block_on(PostgresBackend::open(ThreadRt, &options(&dsn))).unwrap();
        assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), None, "{mode}");
    }
    // Checked against the CA, name included.
    let full = format!(
        "host=localhost port={port} user=mta dbname=mta sslmode=verify-full sslrootcert={root}"
    );
    let b = block_on(PostgresBackend::open(ThreadRt, &options(&full))).unwrap();
    block_on(b.set(&d("example.com"), &entry("tls", NOW, NOW))).unwrap();
    assert_eq!(pg.psql("select pol_id from sts_policy_cache"), "tls");
    // A certificate from another CA is refused.
    let other = TestCa::new("other CA");
    let other_file = other.write_ca_file(dir.path());
    let wrong = format!(
        "host=localhost port={port} user=mta dbname=mta sslmode=verify-ca sslrootcert={}",
        other_file.display()
    );
    let b = block_on(PostgresBackend::open(ThreadRt, &options(&wrong))).unwrap();
    assert!(block_on(b.get(&d("example.com"))).is_err());
}
