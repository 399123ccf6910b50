//! Service-layer tests on the sim: the real stack (index, engine, DNS
//! client, fetch, connections) against scripted DNS, policy servers and
//! store, with hours of virtual time per test.

mod burst;
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
mod shutdown;
mod smoke;
mod store;

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

/// The reply to expect for an enforce policy with one `mx` (default zone).
fn ok_reply(mx: &str) -> String {
    format!("OK secure match={mx} servername=hostname")
}

/// A reply as text.
fn text(reply: &Reply) -> String {
    reply_text(reply)
}
