//! The persistent caches and the proactive refresh (docs/ARCHITECTURE.md "Cache",
//! "Configuration"; RFC 8461 §5.1): real SQLite files (read and written with the `sqlite3`
//! CLI in the Python original's layout) and a real `redis-server` (the Python original's
//! layout: a sorted set per domain, the last refresh round in the `_metadata` hash).
//! Each case has its own world, daemons, Redis and files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{expect, lookup, pause, publish_enforce, publish_phases, secure, start, sts_txt, Bins};
use crate::daemon::yaml_str;
use crate::{
    find_program, free_port, policy_body, run_bounded, Behaviour, Daemon, Listen, PgServer,
    RedisServer, SentinelSet, World,
};

/// Served from cache with no traffic for the whole case.
pub(super) const LONG_GRACE: &str = "cache_grace: 3600\n";

/// Wall clock, Unix seconds.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) use crate::wait_until;

/// `cache:` section for an SQLite file (`timeout: 1` so a locked file fails quickly).
pub(super) fn sqlite_cache(file: &Path) -> String {
    format!(
        "cache:\n  type: sqlite\n  options:\n    filename: {}\n    timeout: 1\n",
        yaml_str(&file.display().to_string())
    )
}

/// `cache:` section for the test Redis with no prefix (the Python original's keys) and 1 s
/// timeouts.
pub(super) fn redis_cache(redis: &RedisServer) -> String {
    redis_cache_url(&redis.url())
}

fn redis_cache_url(url: &str) -> String {
    format!(
        "cache:\n  type: redis\n  options:\n    url: {}\n    \
         socket_timeout: 1\n    socket_connect_timeout: 1\n",
        yaml_str(url),
    )
}

/// `proactive_policy_fetching` enabled with `interval` seconds and `grace_ratio`.
fn proactive(interval: u64, grace_ratio: f64) -> String {
    format!(
        "proactive_policy_fetching:\n  enabled: true\n  interval: {interval}\n  \
         concurrency_limit: 10\n  grace_ratio: {grace_ratio:?}\n"
    )
}

/// Runs the `sqlite3` CLI on `file` with `sql`: its stdout, trimmed. Panics on failure.
fn sqlite3(file: &Path, sql: &str) -> String {
    let program = find_program("sqlite3").unwrap_or_else(|| panic!("sqlite3 CLI not found"));
    let mut cmd = Command::new(program);
    cmd.arg(file).arg(sql);
    let (status, out, err) = run_bounded(cmd, Duration::from_secs(15));
    assert_eq!(status, 0, "sqlite3 {} {sql:?}: {out}{err}", file.display());
    out.trim().to_string()
}

/// The `pol_id` stored for `domain` in the SQLite file, if any.
fn sqlite_pol_id(file: &Path, domain: &str) -> Option<String> {
    let out = sqlite3(
        file,
        &format!("select pol_id from sts_policy_cache where domain = '{domain}'"),
    );
    (!out.is_empty()).then_some(out)
}

/// Waits (up to 5 s) until the SQLite row of `domain` has `pol_id == id`.
fn wait_sqlite_id(file: &Path, domain: &str, id: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        sqlite_pol_id(file, domain).as_deref() == Some(id)
    })
}

/// A `sqlite3` CLI process holding the write lock of a database (`begin immediate`) until
/// dropped: other writers fail after their busy timeout, readers go on (WAL).
struct SqliteLock {
    child: Child,
    _stdin: ChildStdin,
}

impl SqliteLock {
    fn hold(file: &Path) -> SqliteLock {
        let program = find_program("sqlite3").unwrap_or_else(|| panic!("sqlite3 CLI not found"));
        let mut child = Command::new(program)
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sqlite3");
        let mut stdin = child.stdin.take().expect("sqlite3 stdin");
        let stdout = child.stdout.take().expect("sqlite3 stdout");
        // `.bail on`: if the lock cannot be taken the CLI exits and the read below sees EOF.
        stdin
            .write_all(b".bail on\nbegin immediate;\nselect 'locked';\n")
            .expect("write to sqlite3");
        stdin.flush().expect("flush sqlite3 stdin");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        assert_eq!(line.trim(), "locked", "sqlite3 could not lock {file:?}");
        SqliteLock {
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The record of `domain` in Redis: the JSON `[pol_id, pol_body]` of the Python layout.
pub(super) fn redis_entry(redis: &RedisServer, domain: &str) -> Option<serde_json::Value> {
    redis.policy_record(domain).map(|(json, _, _)| json)
}

/// Waits (up to 5 s) until the Redis record of `domain` has `pol_id == id`.
pub(super) fn wait_redis_id(redis: &RedisServer, domain: &str, id: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        redis_entry(redis, domain).is_some_and(|e| e[0] == id)
    })
}

/// Stops `d` with SIGTERM and asserts exit 0.
pub(super) fn stop(d: &mut Daemon) {
    let status = d.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
}

/// Takes the policy host of `domain` down (500) while its TXT record stays as it is.
pub(super) fn host_down(world: &World, domain: &str) {
    world.set_behaviour(domain, Behaviour::Status(500, "down\n".into()));
}

/// Asserts that `d` answers `domain` with `want` and no DNS or HTTPS traffic at all.
pub(super) fn expect_no_traffic(world: &World, d: &Daemon, domain: &str, want: &str) {
    let (dns, https) = (world.dns.total_queries(), world.requests(domain));
    expect(d, "postfix", domain, want);
    assert_eq!(
        world.dns.total_queries(),
        dns,
        "DNS traffic; log:\n{}",
        d.log()
    );
    assert_eq!(
        world.requests(domain),
        https,
        "HTTPS fetch; log:\n{}",
        d.log()
    );
}

/// A policy fetched by one daemon is served by the next one on the same SQLite file, with
/// the policy host down and no DNS or HTTPS traffic.
pub fn sqlite_survives_restart(bins: &Bins) {
    let world = World::new();
    let file = world.dir().join("cache.db");
    let config = format!("{LONG_GRACE}{}", sqlite_cache(&file));
    survives_restart(bins, &world, &config, |first| {
        assert!(
            wait_sqlite_id(&file, "keep.example", "1"),
            "no row written; log:\n{}",
            first.log()
        );
    });
}

/// As [`sqlite_survives_restart`] with a Redis cache.
pub fn redis_survives_restart(bins: &Bins) {
    let world = World::new();
    let redis = RedisServer::start();
    let config = format!("{LONG_GRACE}{}", redis_cache(&redis));
    survives_restart(bins, &world, &config, |first| {
        assert!(
            wait_redis_id(&redis, "keep.example", "1"),
            "no key written; log:\n{}",
            first.log()
        );
        let entry = redis_entry(&redis, "keep.example").unwrap_or_default();
        assert_eq!(entry[1]["mx"], serde_json::json!(["mx.keep.example"]));
        assert_eq!(entry[1]["mode"], "enforce");
    });
}

/// The first daemon on `config` fetches a policy (`stored` checks it reached the cache) and
/// stops; with the policy host down, the next daemon on the same cache answers it with no
/// DNS or HTTPS traffic.
pub(super) fn survives_restart(bins: &Bins, world: &World, config: &str, stored: impl Fn(&Daemon)) {
    publish_enforce(world, "keep.example", "1", &["mx.keep.example"]);
    let mut first = start(bins, world, config);
    expect(
        &first,
        "postfix",
        "keep.example",
        &secure("mx.keep.example"),
    );
    stored(&first);
    stop(&mut first);

    host_down(world, "keep.example");
    let second = start(bins, world, config);
    expect_no_traffic(world, &second, "keep.example", &secure("mx.keep.example"));
    assert_eq!(world.requests("keep.example"), 1);
}

/// Daemon A fetches a policy; daemon B on the same Redis answers it with no traffic.
pub fn two_daemons_share_redis(bins: &Bins) {
    let world = World::new();
    let redis = RedisServer::start();
    publish_enforce(&world, "shared.example", "1", &["mx.shared.example"]);
    let config = format!("{LONG_GRACE}{}", redis_cache(&redis));
    let a = start(bins, &world, &config);
    let b = start(bins, &world, &config);
    expect(
        &a,
        "postfix",
        "shared.example",
        &secure("mx.shared.example"),
    );
    assert!(
        wait_redis_id(&redis, "shared.example", "1"),
        "no key written; log:\n{}",
        a.log()
    );
    expect_no_traffic(&world, &b, "shared.example", &secure("mx.shared.example"));
    assert_eq!(world.requests("shared.example"), 1);
}

/// Redis killed mid-run: lookups still answer from the network within the zone timeout and
/// the daemon stays up; once Redis is back (empty, same port) new entries are written again.
pub fn redis_killed_and_restarted(bins: &Bins) {
    let world = World::new();
    let mut redis = RedisServer::start();
    publish_phases(&world, &["before", "during", "after1", "after2", "after3"]);
    let config = format!("default_zone:\n  timeout: 2\n{}", redis_cache(&redis));
    let mut d = start(bins, &world, &config);
    expect(
        &d,
        "postfix",
        "before.example",
        &secure("mx.before.example"),
    );
    assert!(wait_redis_id(&redis, "before.example", "1"), "{}", d.log());

    redis.kill();
    let t = Instant::now();
    expect(
        &d,
        "postfix",
        "during.example",
        &secure("mx.during.example"),
    );
    let took = t.elapsed();
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(world.requests("during.example"), 1);
    // Already known: still answered (from the daemon's memory or the network).
    expect(
        &d,
        "postfix",
        "before.example",
        &secure("mx.before.example"),
    );
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());

    redis.restart();
    // The reconnect may cost the first command after the restart; a later lookup's
    // write must land.
    let mut written = None;
    for (i, name) in ["after1", "after2", "after3"].iter().enumerate() {
        let domain = format!("{name}.example");
        expect(&d, "postfix", &domain, &secure(&format!("mx.{domain}")));
        if wait_redis_id(&redis, &domain, &(i + 3).to_string()) {
            written = Some(domain);
            break;
        }
    }
    assert_eq!(
        written.as_deref(),
        Some("after1.example"),
        "first write after Redis came back; log:\n{}",
        d.log()
    );
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());
    stop(&mut d);
}

/// Redis not running when the daemon starts: it starts, lookups work, nothing crashes.
pub fn redis_down_at_start(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "nored.example", "1", &["mx.nored.example"]);
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let config = format!("default_zone:\n  timeout: 2\n{}", redis_cache_url(&url));
    let mut d = start(bins, &world, &config);
    let t = Instant::now();
    expect(&d, "postfix", "nored.example", &secure("mx.nored.example"));
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
    expect(&d, "postfix", "nored.example", &secure("mx.nored.example"));
    expect(&d, "postfix", "[127.0.0.1]", super::NOTFOUND);
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());
    stop(&mut d);
}

/// Starts the daemon on an SQLite cache at `file` that cannot be used: it starts anyway,
/// logs one error line naming the file, and answers from the network.
fn expect_sqlite_degraded_start(bins: &Bins, world: &World, file: &Path, what: &str) -> Daemon {
    let d = start(bins, world, &sqlite_cache(file));
    expect(
        &d,
        "postfix",
        "degraded.example",
        &secure("mx.degraded.example"),
    );
    let log = d.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&file.display().to_string()))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{what}: want one error line naming the file:\n{log}"
    );
    assert!(
        log.lines().filter(|l| l.contains("ERROR")).count() == 1,
        "{what}: more than one error line:\n{log}"
    );
    d
}

/// An unusable SQLite cache file does not stop the daemon: a directory that does not exist,
/// a directory instead of a file, a file another process holds locked; each gives one error
/// line and lookups go on. A garbage file is moved aside (kept) and a new cache made.
pub fn sqlite_file_unusable(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "degraded.example", "1", &["mx.degraded.example"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    drop(expect_sqlite_degraded_start(
        bins,
        &world,
        &d.join("no-such-dir").join("cache.db"),
        "nodir",
    ));
    let subdir = d.join("a-directory");
    std::fs::create_dir(&subdir).expect("mkdir");
    drop(expect_sqlite_degraded_start(
        bins,
        &world,
        &subdir,
        "directory",
    ));
    let locked = d.join("locked.db");
    sqlite3(&locked, "create table t (x)");
    let lock = SqliteLock::hold(&locked);
    drop(expect_sqlite_degraded_start(
        bins, &world, &locked, "locked",
    ));
    drop(lock);

    let garbage = d.join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write garbage");
    let daemon = start(bins, &world, &sqlite_cache(&garbage));
    expect(
        &daemon,
        "postfix",
        "degraded.example",
        &secure("mx.degraded.example"),
    );
    let moved: Vec<PathBuf> = std::fs::read_dir(d)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.display().to_string().contains("garbage.db.corrupt-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "corrupt file not moved aside; log:\n{}",
        daemon.log()
    );
    assert_eq!(
        std::fs::read(&moved[0]).expect("read moved"),
        vec![0x5a; 8192]
    );
    // The new file holds the policy just fetched.
    assert!(
        wait_until(Duration::from_secs(3), || sqlite3(
            &garbage,
            "select pol_id from sts_policy_cache where domain = 'degraded.example'"
        ) == "1"),
        "policy not written to the new cache; log:\n{}",
        daemon.log()
    );
}

/// The cache file becomes unwritable at run time (another process holds its write lock):
/// answers stay correct (network, memory) and the log shows the failed write; once the lock
/// is gone, writes land again.
pub fn sqlite_locked_at_run_time(bins: &Bins) {
    let world = World::new();
    let file = world.dir().join("cache.db");
    publish_enforce(&world, "one.example", "1", &["mx.one.example"]);
    publish_enforce(&world, "two.example", "1", &["mx.two.example"]);
    publish_enforce(&world, "three.example", "1", &["mx.three.example"]);
    let mut d = start(bins, &world, &sqlite_cache(&file));
    expect(&d, "postfix", "one.example", &secure("mx.one.example"));
    assert!(wait_sqlite_id(&file, "one.example", "1"));

    let lock = SqliteLock::hold(&file);
    expect(&d, "postfix", "two.example", &secure("mx.two.example"));
    expect(&d, "postfix", "one.example", &secure("mx.one.example"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            d.log().contains("two.example: cache write failed")
        }),
        "no write failure logged; log:\n{}",
        d.log()
    );
    // Still correct, and from the copy in memory: the failed write does not send every
    // lookup back to the network.
    expect(&d, "postfix", "two.example", &secure("mx.two.example"));
    assert_eq!(world.requests("two.example"), 1);
    assert_eq!(sqlite_pol_id(&file, "two.example"), None);
    drop(lock);

    expect(&d, "postfix", "three.example", &secure("mx.three.example"));
    assert!(
        wait_sqlite_id(&file, "three.example", "1"),
        "no write after the lock was released; log:\n{}",
        d.log()
    );
    assert!(d.is_running());
    stop(&mut d);
}

/// A cache file made by the Python original (its exact schema, one row) is served with no
/// DNS or HTTPS traffic, and stays readable in the old layout afterwards.
pub fn python_layout_cache_read(bins: &Bins) {
    let world = World::new();
    let file = world.dir().join("python.db");
    let body =
        r#"{"mx": ["mail.example.com"], "version": "STSv1", "mode": "enforce", "max_age": 86400}"#;
    python_cache_file(&file, "example.com", now_secs(), "pyid20240101", body);
    let config = format!("{LONG_GRACE}{}", sqlite_cache(&file));
    let mut d = start(bins, &world, &config);
    expect(&d, "postfix", "example.com", &secure("mail.example.com"));
    expect(&d, "postfix", "example.com", &secure("mail.example.com"));
    assert_eq!(world.dns.total_queries(), 0, "log:\n{}", d.log());
    assert_eq!(world.requests("example.com"), 0);
    let select = "select domain, pol_id from sts_policy_cache";
    assert_eq!(sqlite3(&file, select), "example.com|pyid20240101");
    stop(&mut d);
    assert_eq!(sqlite3(&file, select), "example.com|pyid20240101");
    let stored_body = sqlite3(
        &file,
        "select pol_body from sts_policy_cache where domain = 'example.com'",
    );
    let stored: serde_json::Value = serde_json::from_str(&stored_body).unwrap_or_default();
    assert_eq!(stored["mode"], "enforce", "{stored_body}");
}

/// A row of the Python original's layout dated ten days ahead (a relay whose clock runs
/// fast, a restored backup, a forged row) is served as checked now for `cache_grace` (2 s),
/// then its id is checked, the changed policy fetched, and the row replaced: before, it
/// stayed fresh for ten days and no write could replace it (docs/ARCHITECTURE.md "Time").
pub fn sqlite_row_ahead_of_the_clock(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "ahead.example", "2", &["mx2.ahead.example"]);
    let file = world.dir().join("ahead.db");
    let body =
        r#"{"mx": ["mx1.ahead.example"], "version": "STSv1", "mode": "enforce", "max_age": 86400}"#;
    python_cache_file(
        &file,
        "ahead.example",
        now_secs() + 10 * 86_400,
        "forged",
        body,
    );
    let config = format!("cache_grace: 2\n{}", sqlite_cache(&file));
    let d = start(bins, &world, &config);
    expect_no_traffic(&world, &d, "ahead.example", &secure("mx1.ahead.example"));
    pause(2_500);
    expect(&d, "postfix", "ahead.example", &secure("mx2.ahead.example"));
    assert_eq!(world.requests("ahead.example"), 1);
    assert!(
        wait_sqlite_id(&file, "ahead.example", "2"),
        "the row was not replaced; log:\n{}",
        d.log()
    );
}

/// Fetch once, change the TXT id and the policy, and wait for a refresh round (1 s
/// interval; `cache_grace` 3600 so a request alone would not re-check): the refresh fetches
/// the new policy with no client request, and the daemon then answers it.
fn proactive_refresh_case(bins: &Bins, world: &World, cache: &str) {
    publish_enforce(world, "pro.example", "1", &["mx1.pro.example"]);
    let config = format!("{LONG_GRACE}{}{cache}", proactive(1, 2.0));
    let d = start(bins, world, &config);
    expect(&d, "postfix", "pro.example", &secure("mx1.pro.example"));
    assert_eq!(world.requests("pro.example"), 1);

    world.set_txt("pro.example", &[&sts_txt("2")]);
    world.set_behaviour(
        "pro.example",
        Behaviour::policy(&policy_body("enforce", 86400, &["mx2.pro.example"])),
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            world.requests("pro.example") >= 2
        }),
        "no refresh fetch within 5 s; log:\n{}",
        d.log()
    );
    // The server counts the request before the daemon has the answer: poll (the cached
    // policy is served meanwhile, within cache_grace), then no new fetch happens.
    let served = wait_until(Duration::from_secs(2), || {
        lookup(&d, "postfix", "pro.example") == secure("mx2.pro.example")
    });
    assert!(served, "new policy not served; log:\n{}", d.log());
    assert_eq!(world.requests("pro.example"), 2, "log:\n{}", d.log());
    // Later rounds only re-check the (unchanged) id.
    let txt = world.dns.queries("_mta-sts.pro.example");
    assert!(
        wait_until(Duration::from_secs(4), || {
            world.dns.queries("_mta-sts.pro.example") > txt
        }),
        "no further round; log:\n{}",
        d.log()
    );
    assert_eq!(world.requests("pro.example"), 2, "log:\n{}", d.log());
}

/// [`proactive_refresh_case`] with the internal cache.
pub fn proactive_refresh_picks_up_change_internal(bins: &Bins) {
    let world = World::new();
    proactive_refresh_case(bins, &world, "");
}

/// [`proactive_refresh_case`] with an SQLite cache; the new id reaches the file.
pub fn proactive_refresh_picks_up_change_sqlite(bins: &Bins) {
    let world = World::new();
    let file = world.dir().join("cache.db");
    proactive_refresh_case(bins, &world, &sqlite_cache(&file));
    assert!(wait_sqlite_id(&file, "pro.example", "2"));
}

/// [`proactive_refresh_case`] with a Redis cache; the new id reaches Redis.
pub fn proactive_refresh_picks_up_change_redis(bins: &Bins) {
    let world = World::new();
    let redis = RedisServer::start();
    proactive_refresh_case(bins, &world, &redis_cache(&redis));
    assert!(wait_redis_id(&redis, "pro.example", "2"));
}

/// After a refresh round the stored round time (float Unix seconds, as Python writes it;
/// `read_ts` truncates) exists; a restart with a long
/// interval does not start a round at once, though every entry would be due (grace_ratio
/// huge: refresh anything not checked this second).
fn proactive_ts_case(bins: &Bins, world: &World, cache: &str, read_ts: &dyn Fn() -> Option<u64>) {
    publish_enforce(world, "ts.example", "1", &["mx.ts.example"]);
    let before = now_secs();
    let mut first = start(
        bins,
        world,
        &format!("{LONG_GRACE}{}{cache}", proactive(1, 2.0)),
    );
    expect(&first, "postfix", "ts.example", &secure("mx.ts.example"));
    let txt = world.dns.queries("_mta-sts.ts.example");
    assert!(
        wait_until(Duration::from_secs(5), || {
            world.dns.queries("_mta-sts.ts.example") > txt
        }),
        "no refresh round; log:\n{}",
        first.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || read_ts().is_some()),
        "no stored round time; log:\n{}",
        first.log()
    );
    stop(&mut first);
    let stored = read_ts().unwrap_or(0);
    assert!(
        (before..=now_secs()).contains(&stored),
        "stored {stored}, started {before}"
    );

    pause(1100);
    let total = world.dns.total_queries();
    let second = start(
        bins,
        world,
        &format!("{LONG_GRACE}{}{cache}", proactive(3600, 100_000.0)),
    );
    pause(1500);
    assert_eq!(
        world.dns.total_queries(),
        total,
        "a round started at once; log:\n{}",
        second.log()
    );
    assert_eq!(read_ts(), Some(stored), "round time changed");
}

/// [`proactive_ts_case`] on SQLite: `proactive_fetch_ts.last_fetch_ts` of row 1.
pub fn proactive_ts_persisted_sqlite(bins: &Bins) {
    let world = World::new();
    let file = world.dir().join("cache.db");
    let read = || {
        sqlite3(
            &file,
            "select last_fetch_ts from proactive_fetch_ts where id = 1",
        )
        .parse::<f64>()
        .ok()
        .map(|secs| secs as u64)
    };
    proactive_ts_case(bins, &world, &sqlite_cache(&file), &read);
}

/// [`proactive_ts_case`] on Redis: field `proactive_fetch_ts` of the `_metadata` hash.
pub fn proactive_ts_persisted_redis(bins: &Bins) {
    let world = World::new();
    let redis = RedisServer::start();
    let read = || {
        let reply = redis
            .cmd(&["HGET", "_metadata", "proactive_fetch_ts"])
            .ok()?;
        let (_, value) = reply.strip_prefix('$')?.split_once("\r\n")?;
        value.trim().parse::<f64>().ok().map(|secs| secs as u64)
    };
    proactive_ts_case(bins, &world, &redis_cache(&redis), &read);
}

/// The files of `config_examples/`.
fn config_examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config_examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every file of `config_examples/` starts the daemon, with the listener replaced by the
/// test's own (TCP port or Unix socket), the SQLite file moved to a temp dir, the Redis URL,
/// the sentinels and the PostgreSQL dsn pointed at test servers (a password the test servers
/// do not have is left out); the daemon then answers a lookup that needs no network and
/// logs the cache it uses.
pub fn config_examples_start(bins: &Bins) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = config_examples();
    assert!(files.len() >= 6, "{files:?}");
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read example"))
        .collect();
    let uses = |kind: &str| texts.iter().any(|t| t.contains(&format!("type: {kind}\n")));
    let redis = uses("redis").then(RedisServer::start);
    let sentinels = uses("redis_sentinel").then(SentinelSet::start);
    let pg = uses("postgres").then(PgServer::start);
    for (file, text) in files.iter().zip(&texts) {
        let unix = text.lines().any(|l| l.starts_with("path:"));
        let mut kind = "internal";
        let mut yaml = String::new();
        let mut in_list = false;
        for line in text.lines() {
            let trimmed = line.trim_start();
            let indent = line.strip_suffix(trimmed).unwrap_or_default();
            if in_list && trimmed.starts_with("- ") {
                continue;
            }
            in_list = false;
            if ["host:", "port:", "path:"]
                .iter()
                .any(|k| line.starts_with(k))
                || trimmed.starts_with("password:")
            {
                continue;
            }
            if let Some(t) = trimmed.strip_prefix("type: ") {
                kind = ["sqlite", "redis", "redis_sentinel", "postgres"]
                    .into_iter()
                    .find(|k| *k == t.trim())
                    .unwrap_or("internal");
            }
            let test_value = if trimmed.starts_with("filename:") {
                let db = tmp.path().join(format!(
                    "{}.db",
                    file.file_stem().unwrap_or_default().to_string_lossy()
                ));
                Some(("filename", yaml_str(&db.display().to_string())))
            } else if trimmed.starts_with("url:") {
                redis.as_ref().map(|r| ("url", yaml_str(&r.url())))
            } else if trimmed.starts_with("sentinels:") {
                in_list = true;
                sentinels
                    .as_ref()
                    .map(|s| ("sentinels", s.sentinels_yaml()))
            } else if trimmed.starts_with("sentinel_master_name:") {
                sentinels
                    .as_ref()
                    .map(|s| ("sentinel_master_name", yaml_str(&s.name)))
            } else if trimmed.starts_with("dsn:") {
                pg.as_ref().map(|p| ("dsn", yaml_str(&p.dsn())))
            } else {
                None
            };
            match test_value {
                Some((key, value)) => yaml.push_str(&format!("{indent}{key}: {value}\n")),
                None => {
                    yaml.push_str(line);
                    yaml.push('\n');
                }
            }
        }
        let name = file.display().to_string();
        let args = ["-v", "debug"];
        let mut d = if unix {
            Daemon::start_unix(bins.daemon, &yaml, &args)
        } else {
            Daemon::start_on(
                Path::new(bins.daemon),
                Listen::Tcp(free_port()),
                &yaml,
                &args,
            )
        };
        expect(&d, "postfix", "[192.0.2.1]", super::NOTFOUND);
        assert!(
            d.log().contains(&format!("cache: {kind} ")) || kind == "internal",
            "{name}: cache {kind} not logged; log:\n{}",
            d.log()
        );
        assert!(
            !d.log().contains("going on without"),
            "{name}: cache server not reached; log:\n{}",
            d.log()
        );
        assert!(d.is_running(), "{name}: log:\n{}", d.log());
        stop(&mut d);
    }
    if let Some(pg) = &pg {
        // The example's daemon created the Python original's tables.
        assert_eq!(pg.psql("select count(*) from sts_policy_cache"), "0");
    }
}

/// A SQLite cache file in the Python original's exact schema holding one row.
fn python_cache_file(file: &std::path::Path, domain: &str, ts: u64, pol_id: &str, body: &str) {
    sqlite3(
        file,
        &format!(
            "create table proactive_fetch_ts (id integer primary key, last_fetch_ts integer); \
             create table sts_policy_cache (domain text, ts integer, pol_id text, pol_body text); \
             create unique index sts_policy_domain on sts_policy_cache (domain); \
             create index sts_policy_domain_ts on sts_policy_cache (domain, ts); \
             insert into sts_policy_cache (domain, ts, pol_id, pol_body) \
             values ('{domain}', {ts}, '{pol_id}', '{body}');"
        ),
    );
}
