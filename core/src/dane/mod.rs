//! DANE for SMTP (RFC 7672) as MTA-STS's senior partner (RFC 8461 §2:
//! senders that support DANE use it, and ignore MTA-STS, for domains that
//! publish TLSA records): the sans-IO decision of whether a domain's mail
//! must go over DANE, from DNSSEC-validated MX, address and TLSA answers.
//!
//! The steps ([`after_mx`], [`after_addresses`], [`after_tlsa`],
//! [`conclude`]) take DNS results and say what to ask next or what was
//! decided; `service::lookup_dane` asks. The answer ([`Verdict`]) is
//! `dane-only` when every MX host has a usable TLSA record, `dane` when some
//! host has TLSA records, a null MX's `NOTFOUND`, "no DANE" (MTA-STS
//! decides), or `TEMP` when a lookup failed (RFC 7672 §2.1.1: never
//! downgrade on a failure). docs/ARCHITECTURE.md "The lookup coordinator"
//! says how it runs beside the MTA-STS lookup.

mod check;
mod result;
mod steps;
#[cfg(test)]
mod tests;
mod ttl;

pub use check::{
    after_signed, after_test_name, CheckRuns, DnssecCheck, NotValidating, SIGNED_NAME, SIGNED_TYPE,
    TEST_TYPE,
};
pub use result::{DaneFailure, DaneResult, HostDane, HostReport, NoDane, Verdict};
pub use steps::{
    after_addresses, after_mx, after_tlsa, conclude, is_usable, tlsa_name, AddressStep, HostPlan,
    MxStep, TlsaStep,
};
pub use ttl::{Ttl, MAX_TTL, MIN_TTL};

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::config::Config;

/// At most this many MX hosts are checked (in preference order); a domain
/// with more is never `dane-only` (the rest are unknown), only `dane`.
pub const MAX_MX_HOSTS: usize = 16;

/// The TLSA port and protocol prefix of SMTP servers (RFC 7672 §2.2.3).
pub const TLSA_PREFIX: &str = "_25._tcp.";

/// `dane-only` (RFC 7672 §3), rendered once and shared.
pub fn dane_only_value() -> Arc<str> {
    static DANE_ONLY: OnceLock<Arc<str>> = OnceLock::new();
    DANE_ONLY.get_or_init(|| Arc::from("dane-only")).clone()
}

/// `dane` (RFC 7672 §3), rendered once and shared.
pub fn dane_value() -> Arc<str> {
    static DANE: OnceLock<Arc<str>> = OnceLock::new();
    DANE.get_or_init(|| Arc::from("dane")).clone()
}

/// The start-up warning when a zone has `dane: true` and a nameserver is
/// not a loopback address: the AD bit (RFC 4035 §3.2.3) is only as
/// trustworthy as the path to the validating resolver (RFC 7672 §2.1.3,
/// RFC 6698 §4.1).
pub fn nameserver_warning(config: &Config, servers: &[SocketAddr]) -> Option<String> {
    if !config.dane_enabled() {
        return None;
    }
    let remote: Vec<String> = servers
        .iter()
        .filter(|s| !s.ip().is_loopback())
        .map(|s| s.to_string())
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(format!(
        "DANE is on (`dane: true`) but nameserver {} is not a loopback address: \
         the DNSSEC AD bit is trusted only as far as the path to the resolver; \
         use a local validating resolver (unbound, or systemd-resolved with DNSSEC)",
        remote.join(", ")
    ))
}
