//! Service-layer tests on the sim: the real stack (index, engine, DNS
//! client, fetch, connections) against scripted DNS, policy servers and
//! store, with hours of virtual time per test.

mod burst;
mod cache_rules;
mod connection;
mod dane;
mod dns_client;
mod eviction;
mod fetch;
mod grace;
mod joined;
mod lifetime;
mod proactive;
mod retry;
mod rules;
mod shutdown;
mod smoke;
mod store;
mod tlsrpt;
mod zone_metrics;

use super::{policy_text, reply_text};
use crate::socketmap::Reply;
use std::time::Duration;

/// Shorthand for milliseconds.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Shorthand for hours.
fn hours(n: u64) -> Duration {
    Duration::from_secs(3600 * n)
}

/// An enforce policy for `mx` valid for `max_age` seconds.
fn enforce(mx: &str, max_age: u64) -> String {
    policy_text("enforce", &[mx], max_age)
}

/// A store row for an enforce policy for `mx` (max_age one day) with id
/// `id`, fetched and checked at `at_ms`, as another writer leaves it.
fn enforce_entry(id: &str, mx: &str, at_ms: u64) -> crate::cache::CacheEntry {
    crate::cache::CacheEntry {
        policy_id: id.into(),
        policy: crate::policy::parse_policy(enforce(mx, 86400).as_bytes()).expect("valid"),
        fetched_at_ms: at_ms,
        checked_at_ms: at_ms,
    }
}

/// The reply to expect for an enforce policy with one `mx` (default zone).
fn ok_reply(mx: &str) -> String {
    format!("OK secure match={mx} servername=hostname")
}

/// A reply as text.
fn text(reply: &Reply) -> String {
    reply_text(reply)
}

/// The service's answer to `key` under socketmap name `zone`, as text.
fn answer_in(h: &super::Harness, zone: &str, key: &str) -> String {
    let service = h.stack.service.clone();
    let (zone, key) = (zone.to_owned(), key.to_owned());
    text(
        &h.sim
            .block_on(async move { service.answer(&zone, &key).await }),
    )
}
