//! The caches shared with the Python original (README.md "Caches shared with the Python
//! original") on real servers: PostgreSQL in the original's tables, and Redis through
//! Sentinel across a failover. Each case has its own world and servers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::persist::{stop, survives_restart, wait_redis_id, wait_until, LONG_GRACE};
use super::{expect, lookup, publish_enforce, publish_phases, secure, start, Bins};
use crate::daemon::yaml_str;
use crate::{PgServer, SentinelSet, World};

/// `cache:` section for the test PostgreSQL (1 s timeout).
pub(super) fn postgres_cache(pg: &PgServer) -> String {
    format!(
        "cache:\n  type: postgres\n  options:\n    dsn: {}\n    timeout: 1\n    min_size: 1\n    max_size: 4\n",
        yaml_str(&pg.dsn())
    )
}

/// `cache:` section for Redis through the set's sentinels (1 s timeouts).
pub(super) fn sentinel_cache(set: &SentinelSet) -> String {
    format!(
        "cache:\n  type: redis_sentinel\n  options:\n    sentinel_master_name: {}\n    \
         sentinels: {}\n    socket_timeout: 1\n    socket_connect_timeout: 1\n",
        yaml_str(&set.name),
        set.sentinels_yaml()
    )
}

/// The `pol_id` PostgreSQL holds for `domain`, if any.
pub(super) fn pg_pol_id(pg: &PgServer, domain: &str) -> Option<String> {
    pg.try_psql(&format!(
        "select pol_id from sts_policy_cache where domain = '{domain}'"
    ))
    .filter(|id| !id.is_empty())
}

/// Waits (up to 5 s) until the row of `domain` has `pol_id == id`.
pub(super) fn wait_pg_id(pg: &PgServer, domain: &str, id: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        pg_pol_id(pg, domain).as_deref() == Some(id)
    })
}

/// A policy fetched by one daemon is served by the next on the same database, with the
/// policy host down and no DNS or HTTPS traffic; the row is in the Python original's form.
pub fn postgres_survives_restart(bins: &Bins) {
    let world = World::new();
    let pg = PgServer::start();
    let config = format!("{LONG_GRACE}{}", postgres_cache(&pg));
    survives_restart(bins, &world, &config, |first| {
        assert!(
            wait_pg_id(&pg, "keep.example", "1"),
            "no row written; log:\n{}",
            first.log()
        );
        assert_eq!(
            pg.psql("select pol_body->'mx', pol_body->>'mode' from sts_policy_cache"),
            "[\"mx.keep.example\"]|enforce"
        );
    });
}

/// PostgreSQL stopped, then frozen, mid-run: lookups are still answered from the network
/// within the zone timeout and the daemon logs the outage; once the server is back, new
/// entries are written again.
pub fn postgres_down_frozen_and_back(bins: &Bins) {
    let world = World::new();
    let mut pg = PgServer::start();
    publish_phases(&world, &["before", "down", "frozen", "after"]);
    let config = format!("default_zone:\n  timeout: 3\n{}", postgres_cache(&pg));
    let mut d = start(bins, &world, &config);
    expect(
        &d,
        "postfix",
        "before.example",
        &secure("mx.before.example"),
    );
    assert!(wait_pg_id(&pg, "before.example", "1"), "{}", d.log());

    pg.stop();
    let t = Instant::now();
    expect(&d, "postfix", "down.example", &secure("mx.down.example"));
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "took {:?}",
        t.elapsed()
    );
    expect(
        &d,
        "postfix",
        "before.example",
        &secure("mx.before.example"),
    );
    assert!(
        wait_until(Duration::from_secs(3), || d
            .log()
            .contains("going on without")),
        "no log line about the outage; log:\n{}",
        d.log()
    );

    pg.restart();
    pg.freeze();
    let t = Instant::now();
    expect(
        &d,
        "postfix",
        "frozen.example",
        &secure("mx.frozen.example"),
    );
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "took {:?}",
        t.elapsed()
    );
    pg.thaw();

    let written = wait_until(Duration::from_secs(10), || {
        lookup(&d, "postfix", "after.example") == secure("mx.after.example")
            && pg_pol_id(&pg, "after.example").as_deref() == Some("4")
    });
    assert!(
        written,
        "no write after the server came back; log:\n{}",
        d.log()
    );
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());
    stop(&mut d);
}

/// Redis through Sentinel: a failover while a client keeps looking domains up. Every
/// answer is right, and after the failover new entries land on the new master.
pub fn sentinel_failover_during_lookups(bins: &Bins) {
    let world = World::new();
    let set = SentinelSet::start();
    for i in 0..6 {
        publish_enforce(
            &world,
            &format!("d{i}.example"),
            "1",
            &[&format!("mx.d{i}.example")],
        );
    }
    let config = format!("default_zone:\n  timeout: 3\n{}", sentinel_cache(&set));
    let mut d = start(bins, &world, &config);
    expect(&d, "postfix", "d0.example", &secure("mx.d0.example"));
    assert!(wait_redis_id(&set.first, "d0.example", "1"), "{}", d.log());

    let running = Arc::new(AtomicBool::new(true));
    let wrong = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let client = {
        let (running, wrong, answered) = (running.clone(), wrong.clone(), answered.clone());
        let mut c = d.client();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while running.load(Ordering::Relaxed) && Instant::now() < deadline {
                for i in 0..3 {
                    c.send_request("postfix", &format!("d{i}.example"));
                    match c.read_reply() {
                        Some(r) if r == secure(&format!("mx.d{i}.example")) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    set.failover();
    running.store(false, Ordering::Relaxed);
    let _ = client.join();
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "log:\n{}", d.log());
    assert!(answered.load(Ordering::Relaxed) > 0);

    // New entries reach the new master (the first write may meet the old connection).
    let mut landed = false;
    for i in 3..6 {
        let domain = format!("d{i}.example");
        expect(&d, "postfix", &domain, &secure(&format!("mx.{domain}")));
        if wait_redis_id(&set.second, &domain, "1") {
            landed = true;
            break;
        }
    }
    assert!(landed, "no write on the new master; log:\n{}", d.log());
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());
    stop(&mut d);
}
