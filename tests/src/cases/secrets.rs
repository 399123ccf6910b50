//! Credentials never reach the log or `--check-config` output (docs/ARCHITECTURE.md
//! "Secrets"): a Redis URL's password, a password read as a number, a PostgreSQL DSN's
//! password; and `--check-config` warns about PostgreSQL TLS open to interception.

use std::path::Path;
use std::time::Duration;

use super::persist::stop;
use super::{expect, publish_enforce, secure, start, Bins};
use crate::daemon::yaml_str;
use crate::{run_bounded, RedisServer, World};

/// A Redis password no other text of a log contains.
const REDIS_PASSWORD: &str = "Zq8vRedisPw";
/// A wrong one, refused by the server.
const WRONG_PASSWORD: &str = "Xk3vWrongPw";

/// `cache:` section for Redis at `url` with 1 s timeouts.
fn redis_cache_url(url: &str) -> String {
    format!(
        "cache:\n  type: redis\n  options:\n    url: {}\n    \
         socket_timeout: 1\n    socket_connect_timeout: 1\n",
        yaml_str(url),
    )
}

/// A Redis server that requires `AUTH` with the password given in the cache URL: the
/// daemon authenticates (no "not reachable" warning) and logs the URL with the password
/// hidden; with a wrong password the refusal is logged, the password is not.
pub fn redis_password_not_logged(bins: &Bins) {
    let redis = RedisServer::start();
    let set = redis
        .cmd(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD])
        .expect("CONFIG SET");
    assert_eq!(set, "+OK");
    let world = World::new();
    publish_enforce(&world, "pw.example", "1", &["mx.pw.example"]);
    for (password, works) in [(REDIS_PASSWORD, true), (WRONG_PASSWORD, false)] {
        let url = format!("redis://:{password}@127.0.0.1:{}/0", redis.port());
        let mut d = start(bins, &world, &redis_cache_url(&url));
        expect(&d, "postfix", "pw.example", &secure("mx.pw.example"));
        stop(&mut d);
        let log = d.log();
        assert!(!log.contains(password), "{password} in the log:\n{log}");
        let shown = format!("cache: redis redis://:***@127.0.0.1:{}/0", redis.port());
        assert!(log.contains(&shown), "{shown:?} missing:\n{log}");
        assert_eq!(
            !log.contains("not reachable"),
            works,
            "with {password}:\n{log}"
        );
    }
}

/// Runs `mta-sts-daemon --check-config` on `yaml`: exit code and output.
fn check_config(bins: &Bins, dir: &Path, yaml: &str) -> (i32, String) {
    let path = dir.join("check.yml");
    std::fs::write(&path, yaml).expect("write config");
    let mut cmd = std::process::Command::new(bins.daemon);
    cmd.arg("--check-config").arg("-c").arg(&path);
    for var in ["PGHOST", "PGSSLMODE", "PGPASSWORD"] {
        cmd.env_remove(var);
    }
    let (code, out, err) = run_bounded(cmd, Duration::from_secs(20));
    (code, format!("{out}{err}"))
}

/// `--check-config` names the key of a bad credential without quoting it, quotes no piece
/// of a DSN's password, and warns (without the password) when a PostgreSQL host that is
/// not local is reached with `sslmode` below `verify-full`.
pub fn check_config_shows_no_secret(bins: &Bins) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out) = check_config(
        bins,
        dir.path(),
        "cache:\n  type: redis\n  options:\n    url: 'redis://:Zq8vRedisPw@127.0.0.1:6379/0'\n    \
         password: 846131175\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache.options.password"), "{out}");
    for secret in ["846131175", REDIS_PASSWORD] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
    // An unencoded `/` in the password: the URI's host part reads `mta:Zq8v`.
    let (code, out) = check_config(
        bins,
        dir.path(),
        "cache:\n  type: postgres\n  options:\n    dsn: 'postgresql://mta:Zq8v/PgPw@db.example.com/mta'\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache.options.dsn"), "{out}");
    assert!(!out.contains("Zq8v"), "{out}");
    for (dsn, warned) in [
        ("postgresql://mta:Zq8vPgPw@db.example.com/mta", true),
        (
            "postgresql://mta:Zq8vPgPw@db.example.com/mta?sslmode=verify-ca",
            true,
        ),
        (
            "postgresql://mta:Zq8vPgPw@db.example.com/mta?sslmode=verify-full",
            false,
        ),
        (
            "postgresql://mta:Zq8vPgPw@127.0.0.1/mta?sslmode=disable",
            false,
        ),
        ("host=/run/postgresql password=Zq8vPgPw", false),
    ] {
        let yaml = format!(
            "cache:\n  type: postgres\n  options:\n    dsn: {}\n",
            yaml_str(dsn)
        );
        let (code, out) = check_config(bins, dir.path(), &yaml);
        assert_eq!(code, 0, "{dsn}: {out}");
        assert!(!out.contains("Zq8vPgPw"), "{out}");
        assert_eq!(
            out.contains("warning: postgres: sslmode") && out.contains("db.example.com"),
            warned,
            "{dsn}: {out}"
        );
    }
}
