//! Proactive refresh rounds (RFC 8461 §5.1 pre-fetch,
//! `proactive_policy_fetching`): every `interval` the domains not checked
//! for `interval / grace_ratio` are re-checked with no client request, so a
//! changed id is picked up in the background; a persistent store keeps the
//! round's time across a restart.

use super::{enforce, enforce_entry, hours, ms, ok_reply, text};
use crate::cache::Store;
use crate::service::{run_proactive_refresh, Runtime, ShutdownTrigger};
use crate::sim::{Harness, TaskHandle};
use std::time::Duration;

const DNS_LATENCY: Duration = Duration::from_millis(5);
const POLICY_LATENCY: Duration = Duration::from_millis(20);

fn yaml(concurrency: usize) -> String {
    format!(
        "cache_grace: 60
proactive_policy_fetching:
  enabled: true
  interval: 3600
  concurrency_limit: {concurrency}
  grace_ratio: 2
"
    )
}

/// Start the refresh loop now; fire the trigger to stop it.
fn start_refresh(h: &Harness) -> (ShutdownTrigger, TaskHandle<()>) {
    let (trigger, shutdown) = ShutdownTrigger::new();
    let settings = h.config.proactive_policy_fetching.clone();
    assert!(settings.enabled);
    let task = h.sim.spawn_task(run_proactive_refresh(
        h.sim.clone(),
        h.stack.engine.clone(),
        h.stack.caches.clone(),
        settings,
        h.config.default_zone.timeout,
        shutdown,
    ));
    (trigger, task)
}

fn publish_all(h: &Harness) {
    h.world.dns.set_default_latency(DNS_LATENCY);
    for d in ["a.example", "b.example", "busy.example"] {
        h.world.publish(
            d,
            "id1",
            &enforce(&format!("mx.{d}"), 86400),
            POLICY_LATENCY,
        );
        assert_eq!(text(&h.answer(d)), ok_reply(&format!("mx.{d}")));
    }
}

/// Virtual times of the TXT queries for `_mta-sts.<domain>`.
fn txt_times(h: &Harness, domain: &str) -> Vec<Duration> {
    let name = format!("_mta-sts.{domain}");
    h.world
        .dns
        .log()
        .into_iter()
        .filter(|q| q.name == name)
        .map(|q| q.at)
        .collect()
}

#[test]
fn rounds_pick_up_a_changed_id_without_requests() {
    let h = Harness::new(&yaml(1));
    publish_all(&h);
    let start = h.sim.elapsed();
    let (_trigger, refresh) = start_refresh(&h);
    // busy.example is asked every 10 minutes: never due for a refresh.
    let busy: Vec<_> = (1..=30)
        .map(|k| h.spawn_answer(Duration::from_secs(600 * k), "busy.example"))
        .collect();

    // The id of a.example changes between two rounds.
    h.sim.advance_to(start + Duration::from_secs(90 * 60));
    assert_eq!(h.world.txt_queries("a.example"), 2, "first round at 1 h");
    h.world.dns.set_sts_id("a.example", "id2");
    h.world.set_policy(
        "a.example",
        crate::sim::HostBehaviour::Serve(crate::sim::HttpsReply::ok(
            enforce("mx2.a.example", 86400),
            POLICY_LATENCY,
        )),
    );
    h.sim.advance_to(start + hours(2) + Duration::from_secs(1));
    let entry = h.cached("a.example").expect("cached");
    assert_eq!(entry.policy_id, "id2", "picked up by the 2 h round");
    let queries = h.world.dns.total();
    assert_eq!(text(&h.answer("a.example")), ok_reply("mx2.a.example"));
    assert_eq!(h.world.dns.total(), queries, "served from memory, no query");

    h.sim.advance_to(start + hours(5) + Duration::from_secs(60));
    assert!(!refresh.is_finished(), "the loop runs until shutdown");
    // One initial check plus one per round (1 h .. 5 h).
    assert_eq!(h.world.txt_queries("a.example"), 6);
    assert_eq!(h.world.txt_queries("b.example"), 6);
    assert_eq!(h.world.fetches("a.example"), 2);
    assert_eq!(h.world.fetches("b.example"), 1);
    // busy.example: one check per client request, none from the rounds.
    assert_eq!(h.world.txt_queries("busy.example"), 31);
    for b in busy {
        let (reply, _) = b.take().expect("answered");
        assert_eq!(text(&reply), ok_reply("mx.busy.example"));
    }
    // concurrency_limit 1: each round checks one domain after the other,
    // the first exactly on the hour.
    let (a, b) = (txt_times(&h, "a.example"), txt_times(&h, "b.example"));
    for k in 1..=5 {
        let round = start + hours(k);
        let (ta, tb) = (a[k as usize], b[k as usize]);
        assert_eq!(ta.min(tb), round, "round {k}");
        assert!(
            ta.max(tb) > round && ta.max(tb) < round + ms(100),
            "round {k}: {ta:?} {tb:?}"
        );
    }
}

#[test]
fn store_keeps_the_round_time_across_a_restart() {
    let h = Harness::with_store(&yaml(10));
    let store = h.store.clone().expect("store");
    publish_all(&h);
    let start = h.sim.elapsed();
    let (trigger, first) = start_refresh(&h);
    h.sim
        .advance_to(start + hours(2) + Duration::from_secs(30 * 60));
    // Rounds at 0, 1 h and 2 h; the last one is recorded in the store.
    let round_ms =
        |t: Duration| crate::sim::DEFAULT_UNIX_MS + u64::try_from(t.as_millis()).expect("small");
    assert_eq!(store.proactive_time(), Some(round_ms(start + hours(2))));
    assert_eq!(store.lists(), 3);
    trigger.fire();
    h.sim.run_until_idle();
    assert!(first.is_finished(), "stopped by its shutdown signal");

    // A restart at 2.5 h waits for the 3 h round instead of running at once.
    let checked = h.world.txt_queries("b.example");
    let (_trigger, _second) = start_refresh(&h);
    h.sim.advance_to(start + hours(3) - ms(1));
    assert_eq!(
        h.world.txt_queries("b.example"),
        checked,
        "no round on restart"
    );
    h.sim.advance_to(start + hours(3) + Duration::from_secs(1));
    assert_eq!(
        h.world.txt_queries("b.example"),
        checked + 1,
        "the 3 h round"
    );
    // concurrency_limit 10: every due domain is checked at once.
    for d in ["a.example", "b.example", "busy.example"] {
        assert_eq!(txt_times(&h, d).last(), Some(&(start + hours(3))), "{d}");
        let stored = store.entry(d).expect("persisted");
        assert_eq!(
            stored.checked_at_ms,
            round_ms(start + hours(3) + DNS_LATENCY),
            "{d}"
        );
    }
    assert_eq!(store.proactive_time(), Some(round_ms(start + hours(3))));
}

#[test]
fn a_failing_store_does_not_spin_the_loop() {
    let h = Harness::with_store(&yaml(10));
    let store = h.store.clone().expect("store");
    publish_all(&h);
    store.set_latency(ms(10));
    store.set_failing(true);
    let start = h.sim.elapsed();
    let ops = store.ops();
    let (_trigger, _refresh) = start_refresh(&h);
    h.sim.advance(Duration::from_secs(60));
    // One round at start (nothing listed: the store is down), then a wait
    // for the next interval: not a round every few milliseconds. Calls:
    // read the round time, list, record the round time, read it again.
    assert_eq!(store.lists(), 1, "rounds in the first minute");
    assert_eq!(store.ops() - ops, 4, "store calls in the first minute");
    // The next round comes an interval later and asks the store again.
    h.sim.advance_to(start + hours(1) + Duration::from_secs(1));
    assert_eq!(store.lists(), 2);
}

/// A round time in the shared store dated ten days ahead (a peer whose
/// clock runs fast, a forged row) does not put the rounds off.
#[test]
fn a_future_dated_round_time_is_not_believed() {
    let h = Harness::with_store(&yaml(10));
    let store = h.store.clone().expect("store");
    publish_all(&h);
    let ahead = h.sim.unix_ms() + 10 * 86_400_000;
    futures::executor::block_on(store.set_proactive_ts(ahead)).expect("sim store is up");
    let checked = h.world.txt_queries("b.example");
    let (_trigger, _refresh) = start_refresh(&h);
    h.sim.advance(Duration::from_secs(60));
    assert_eq!(store.lists(), 1, "a round at start");
    assert!(store.proactive_time() < Some(ahead), "its time recorded");
    h.sim.advance(hours(1));
    assert_eq!(store.lists(), 2, "and an interval later");
    assert!(h.world.txt_queries("b.example") > checked);
}

/// A row dated ten days ahead in the shared store (a peer whose clock runs
/// fast, a forged row) is on the round's work list: its changed id is
/// picked up in the background, not ten days later (docs/ARCHITECTURE.md
/// "Time").
#[test]
fn a_future_dated_row_is_refreshed_by_the_next_round() {
    let h = Harness::with_store(&yaml(10));
    let store = h.store.clone().expect("store");
    h.world.dns.set_default_latency(DNS_LATENCY);
    h.world.publish(
        "ahead.example",
        "id2",
        &enforce("mx2.ahead.example", 86400),
        POLICY_LATENCY,
    );
    let ahead = h.sim.unix_ms() + 10 * 86_400_000;
    store.insert(
        "ahead.example",
        enforce_entry("id1", "mx1.ahead.example", ahead),
    );
    let (_trigger, _refresh) = start_refresh(&h);
    h.sim.advance(Duration::from_secs(60));
    assert_eq!(store.lists(), 1, "a round at start");
    assert_eq!(h.world.txt_queries("ahead.example"), 1);
    let row = store.entry("ahead.example").expect("kept");
    assert_eq!(row.policy_id, "id2");
    assert!(row.checked_at_ms < ahead);
}

/// Hourly rounds (`cache_grace` one hour, refresh what was checked over
/// 30 min ago) with `extra` appended to `proactive_policy_fetching`.
fn hourly(extra: &str) -> String {
    format!(
        "cache_grace: 3600
proactive_policy_fetching:
  enabled: true
  interval: 3600
  concurrency_limit: 10
  grace_ratio: 2
{extra}"
    )
}

/// Rounds (whole hours after `start`) in which `domain`'s TXT id was
/// checked, in order.
fn round_checks(h: &Harness, domain: &str, start: Duration) -> Vec<u64> {
    txt_times(h, domain)
        .into_iter()
        .filter(|t| *t > start && (*t - start).as_millis().is_multiple_of(3_600_000))
        .map(|t| (t - start).as_secs() / 3600)
        .collect()
}

/// A domain asked for every two hours (each a hit from memory) is
/// refreshed by every round, past its policy's `max_age` (6 h); one asked
/// for once, at the start, only until six hours after it, when its policy
/// has expired (docs/ARCHITECTURE.md "Proactive refresh").
#[test]
fn a_domain_asked_for_keeps_being_refreshed_and_an_idle_one_does_not() {
    let h = Harness::new(&hourly(""));
    h.world.dns.set_default_latency(DNS_LATENCY);
    for d in ["asked.example", "idle.example"] {
        h.world.publish(
            d,
            "id1",
            &enforce(&format!("mx.{d}"), 6 * 3600),
            POLICY_LATENCY,
        );
        assert_eq!(text(&h.answer(d)), ok_reply(&format!("mx.{d}")));
    }
    let start = h.sim.elapsed();
    let (_trigger, _refresh) = start_refresh(&h);
    // Ten minutes past every other hour: within cache_grace of the round.
    let asks: Vec<_> = (0..7)
        .map(|k| h.spawn_answer(hours(2 * k) + Duration::from_secs(600), "asked.example"))
        .collect();
    h.sim
        .advance_to(start + hours(14) + Duration::from_secs(60));
    let all: Vec<u64> = (1..=14).collect();
    assert_eq!(round_checks(&h, "asked.example", start), all);
    assert_eq!(round_checks(&h, "idle.example", start), vec![1, 2, 3, 4, 5]);
    // Fetched again when the first policy expired: still held, unexpired.
    assert!(h.world.fetches("asked.example") >= 2);
    let now = h.sim.unix_ms();
    let held = h.cached("asked.example").expect("held");
    assert!(!held.is_expired(now));
    for a in asks {
        let (reply, _) = a.take().expect("answered");
        assert_eq!(text(&reply), ok_reply("mx.asked.example"));
    }
    assert_eq!(h.world.fetches("idle.example"), 1, "never fetched again");
}

/// A domain not asked for is no longer refreshed and, once its policy
/// expires, leaves memory: the next request looks it up afresh (TXT
/// query and fetch) rather than being answered from the cache.
#[test]
fn an_idle_domain_expires_and_is_looked_up_afresh() {
    let h = Harness::new(&hourly(""));
    h.world.dns.set_default_latency(DNS_LATENCY);
    h.world.publish(
        "idle.example",
        "id1",
        &enforce("mx.idle.example", 3 * 3600),
        POLICY_LATENCY,
    );
    assert_eq!(text(&h.answer("idle.example")), ok_reply("mx.idle.example"));
    let start = h.sim.elapsed();
    let (_trigger, _refresh) = start_refresh(&h);
    h.sim.advance_to(start + hours(3) - ms(1));
    assert!(h.cached("idle.example").is_some(), "held while unexpired");
    h.sim.advance_to(start + hours(8) + Duration::from_secs(60));
    assert_eq!(round_checks(&h, "idle.example", start), vec![1, 2]);
    assert_eq!(h.world.fetches("idle.example"), 1);
    assert_eq!(h.cached("idle.example"), None, "left memory once expired");
    let (txt, fetches) = (h.world.txt_queries("idle.example"), 1);
    assert_eq!(text(&h.answer("idle.example")), ok_reply("mx.idle.example"));
    assert_eq!(h.world.txt_queries("idle.example"), txt + 1);
    assert_eq!(h.world.fetches("idle.example"), fetches + 1);
    // Asked for again: the rounds refresh it again.
    h.sim.advance(hours(2) + Duration::from_secs(60));
    assert!(round_checks(&h, "idle.example", start).contains(&10));
}

/// `idle_time` takes the place of the policy's `max_age` (one day here).
#[test]
fn idle_time_overrides_max_age() {
    let h = Harness::new(&hourly("  idle_time: 7200\n"));
    h.world.dns.set_default_latency(DNS_LATENCY);
    h.world.publish(
        "quiet.example",
        "id1",
        &enforce("mx.quiet.example", 86400),
        POLICY_LATENCY,
    );
    assert_eq!(
        text(&h.answer("quiet.example")),
        ok_reply("mx.quiet.example")
    );
    let start = h.sim.elapsed();
    let (_trigger, _refresh) = start_refresh(&h);
    h.sim.advance_to(start + hours(6) + Duration::from_secs(60));
    assert_eq!(round_checks(&h, "quiet.example", start), vec![1, 2]);
    // Not expired: still held, answered after a TXT check with no fetch.
    assert!(h.cached("quiet.example").is_some());
    assert_eq!(
        text(&h.answer("quiet.example")),
        ok_reply("mx.quiet.example")
    );
    assert_eq!(h.world.fetches("quiet.example"), 1);
}

/// With a shared store: a row another relay wrote, never asked for here,
/// is refreshed from the start for `idle_time`, then left alone, while the
/// domain this relay mails is refreshed throughout. When a domain was last
/// asked for is never written: the store sees one write per TXT check
/// (the check time, as before), none per request.
#[test]
fn a_store_row_asked_for_elsewhere_is_left_to_its_relay() {
    let h = Harness::with_store(&hourly("  idle_time: 10800\n"));
    let store = h.store.clone().expect("store");
    h.world.dns.set_default_latency(DNS_LATENCY);
    let now = h.sim.unix_ms();
    for d in ["mine.example", "theirs.example"] {
        h.world.publish(
            d,
            "id1",
            &enforce(&format!("mx.{d}"), 86400),
            POLICY_LATENCY,
        );
    }
    store.insert(
        "theirs.example",
        enforce_entry("id1", "mx.theirs.example", now),
    );
    assert_eq!(text(&h.answer("mine.example")), ok_reply("mx.mine.example"));
    let start = h.sim.elapsed();
    let (_trigger, _refresh) = start_refresh(&h);
    let asks: Vec<_> = (0..18)
        .map(|k| h.spawn_answer(Duration::from_secs(1800 * k + 60), "mine.example"))
        .collect();
    h.sim.advance_to(start + hours(9) + Duration::from_secs(60));
    assert_eq!(
        round_checks(&h, "mine.example", start),
        (1..=9).collect::<Vec<_>>()
    );
    // The round at the start finds the row just written; the next three
    // refresh it (the one at three hours within cache_grace of idle_time);
    // after that it is idle.
    let theirs = txt_times(&h, "theirs.example");
    assert_eq!(theirs, [1, 2, 3].map(|k| start + hours(k)), "{theirs:?}");
    assert_eq!(h.world.fetches("theirs.example"), 0, "the row's id held");
    for a in asks {
        let (reply, _) = a.take().expect("answered");
        assert_eq!(text(&reply), ok_reply("mx.mine.example"));
    }
    let checks = h.world.txt_queries("mine.example") + h.world.txt_queries("theirs.example");
    assert_eq!(store.writes(), checks);
}
