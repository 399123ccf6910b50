//! The DNSSEC self-check as the programs run it (docs/ARCHITECTURE.md
//! "Operations"): after READY and on SIGHUP in the daemon, in
//! `--check-config`, and in `mta-sts-query --dane`; only when DANE is on.

use std::sync::Arc;

use mta_sts_core::config::Config;
use mta_sts_core::dane::DnssecCheck;
use mta_sts_core::metrics::Metrics;
use mta_sts_core::service::{check_dnssec, DnsClient, Runtime};

/// Ask the resolver for `config`'s check: the root, then
/// `resolver.dnssec_test_name` if set, each query bounded by the default
/// zone's `timeout`.
pub(crate) async fn run<R: Runtime>(dns: &DnsClient<R>, config: &Config) -> DnssecCheck {
    let test_name = config.resolver.dnssec_test_name.as_deref();
    check_dnssec(dns, test_name, config.default_zone.timeout).await
}

/// [`run`], and log the verdict once (a warning unless it validates).
pub(crate) async fn check_and_log<R: Runtime>(dns: &DnsClient<R>, config: &Config) -> DnssecCheck {
    let check = run(dns, config).await;
    if check.is_validating() {
        log::info!("DNSSEC check: {check}");
    } else {
        log::warn!("DNSSEC check: {check}");
    }
    check
}

/// The daemon's check for the configuration in force: spawned, so it never
/// delays READY or a reload; with no zone that has `dane: true` it asks
/// nothing and the gauge is removed.
pub(crate) fn spawn_check<R: Runtime>(
    rt: &R,
    dns: Arc<DnsClient<R>>,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
) {
    if !config.dane_enabled() {
        metrics.dnssec_validating(None);
        return;
    }
    rt.spawn(Box::pin(async move {
        let check = check_and_log(&dns, &config).await;
        metrics.dnssec_validating(Some(check.is_validating()));
    }));
}
