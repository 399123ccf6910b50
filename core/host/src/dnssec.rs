//! The DNSSEC self-check as the programs run it (docs/ARCHITECTURE.md
//! "Operations"): after READY and on SIGHUP in the daemon, in
//! `--check-config`, and in `mta-sts-query --dane`; only when DANE is on.

use std::sync::{Arc, Mutex};

use mta_sts_core::config::Config;
use mta_sts_core::dane::{CheckRuns, DnssecCheck};
use mta_sts_core::metrics::Metrics;
use mta_sts_core::service::{check_dnssec, DnsClient, Runtime};

/// Ask the resolver for `config`'s check: the root, then
/// `resolver.dnssec_test_name` if set, each query bounded by the default
/// zone's `timeout`.
pub(crate) async fn run<R: Runtime>(dns: &DnsClient<R>, config: &Config) -> DnssecCheck {
    let test_name = config.resolver.dnssec_test_name.as_deref();
    check_dnssec(dns, test_name, config.default_zone.timeout).await
}

/// [`run`], and log the verdict once.
pub(crate) async fn check_and_log<R: Runtime>(dns: &DnsClient<R>, config: &Config) -> DnssecCheck {
    let check = run(dns, config).await;
    log_verdict(&check);
    check
}

/// The verdict's one log line: a warning unless the resolver validates.
fn log_verdict(check: &DnssecCheck) {
    if check.is_validating() {
        log::info!("DNSSEC check: {check}");
    } else {
        log::warn!("DNSSEC check: {check}");
    }
}

/// The daemon's self-check (docs/ARCHITECTURE.md "Operations"): spawned,
/// so it never delays READY or a reload; each run supersedes the ones
/// before ([`CheckRuns`]), and only the latest run logs and sets the gauge.
/// With no zone that has `dane: true` it asks nothing and the gauge is
/// removed.
#[derive(Clone)]
pub(crate) struct Checker<R: Runtime> {
    rt: R,
    dns: Arc<DnsClient<R>>,
    metrics: Arc<Metrics>,
    /// The runs, and the configuration in force (a reload may come before
    /// READY's check).
    state: Arc<Mutex<(CheckRuns, Arc<Config>)>>,
}

impl<R: Runtime> Checker<R> {
    /// A checker for `config`, the configuration the daemon starts with.
    pub(crate) fn new(
        rt: R,
        dns: Arc<DnsClient<R>>,
        metrics: Arc<Metrics>,
        config: Arc<Config>,
    ) -> Self {
        Checker {
            rt,
            dns,
            metrics,
            state: Arc::new(Mutex::new((CheckRuns::default(), config))),
        }
    }

    /// Check `config`, now in force (a reload).
    pub(crate) fn check(&self, config: Arc<Config>) {
        let run = {
            let mut state = lock(&self.state);
            state.1 = config.clone();
            state.0.begin()
        };
        self.start(run, config);
    }

    /// Check the configuration in force (at READY).
    pub(crate) fn check_current(&self) {
        let (run, config) = {
            let mut state = lock(&self.state);
            (state.0.begin(), state.1.clone())
        };
        self.start(run, config);
    }

    fn start(&self, run: u64, config: Arc<Config>) {
        if !config.dane_enabled() {
            self.metrics.dnssec_validating(None);
            return;
        }
        let (dns, metrics, state) = (self.dns.clone(), self.metrics.clone(), self.state.clone());
        self.rt.spawn(Box::pin(async move {
            let check = self::run(&dns, &config).await;
            // Held while logging and setting, so a newer run cannot slip in between.
            let state = lock(&state);
            if state.0.is_current(run) {
                log_verdict(&check);
                metrics.dnssec_validating(Some(check.is_validating()));
            }
        }));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
