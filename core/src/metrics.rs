//! The daemon's metrics (README.md "Metrics"), kept with the Prometheus
//! client's atomic counters and encoded in the OpenMetrics text format for
//! the `metrics` listener. Counters on the request path are handles taken
//! once, each spread over stripes ([`Striped`]), so recording one answer is
//! one atomic add on a cache line the other cores seldom write.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::resolve::{Failure, Source};

/// Labels of `mta_sts_lookups_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    zone: String,
    outcome: String,
}

/// A single label `name=value`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    r#type: String,
    rcode: String,
}

/// The label set of a series that has none (a gauge that may be absent).
type NoLabels = [(&'static str, &'static str); 0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// What a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `OK secure ...`.
    Secure,
    /// `NOTFOUND `.
    NotFound,
    /// `TEMP ...`.
    Temp,
    /// `PERM ...` (malformed request).
    Perm,
    /// `OK dane-only`.
    DaneOnly,
    /// `OK dane`.
    Dane,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Secure,
        Outcome::NotFound,
        Outcome::Temp,
        Outcome::Perm,
        Outcome::DaneOnly,
        Outcome::Dane,
    ];

    /// The `outcome` label (README.md "Metrics"); JSON log lines name a
    /// reply's class with it (docs/ARCHITECTURE.md "Logs").
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Secure => "secure",
            Outcome::NotFound => "notfound",
            Outcome::Temp => "temp",
            Outcome::Perm => "perm",
            Outcome::DaneOnly => "dane_only",
            Outcome::Dane => "dane",
        }
    }
}

impl Source {
    const ALL: [Source; 7] = [
        Source::Fresh,
        Source::Revalidated,
        Source::Fetched,
        Source::NoPolicy,
        Source::StaleOnFailure,
        Source::Failed,
        Source::InvalidKey,
    ];

    /// The `source` label (README.md "Metrics"); JSON log lines name an
    /// answer's source with it (docs/ARCHITECTURE.md "Logs").
    pub fn label(self) -> &'static str {
        match self {
            Source::Fresh => "fresh",
            Source::Revalidated => "revalidated",
            Source::Fetched => "fetched",
            Source::NoPolicy => "no_policy",
            Source::StaleOnFailure => "stale_on_failure",
            Source::Failed => "failed",
            Source::InvalidKey => "invalid_key",
        }
    }
}

/// Stripes of a [`Striped`] counter.
const STRIPES: usize = 8;

/// A counter's value spread over [`STRIPES`] cache lines, each thread
/// adding to its own (threads are dealt stripes in turn), the scrape
/// summing them. Connection threads on different cores count every
/// request they answer; with one shared atomic each count moved that cache
/// line between the cores.
#[derive(Debug, Default)]
pub struct Striped([Stripe; STRIPES]);

/// One cache line of a [`Striped`] counter.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

/// The stripe of the calling thread.
fn my_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    MINE.with(|s| *s)
}

impl Atomic<u64> for Striped {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns the stripe's previous value (nothing reads it).
    fn inc_by(&self, v: u64) -> u64 {
        self.0
            .get(my_stripe())
            .map_or(0, |s| s.0.fetch_add(v, Ordering::Relaxed))
    }

    fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// A counter on the request path.
type HotCounter = Counter<u64, Striped>;

/// The counters of one zone, one per [`Outcome`].
#[derive(Clone, Debug)]
struct ZoneCounters {
    counters: Vec<(Outcome, HotCounter)>,
}

impl ZoneCounters {
    /// Count one answer.
    fn count(&self, outcome: Outcome) {
        if let Some((_, c)) = self.counters.iter().find(|(o, _)| *o == outcome) {
            c.inc();
        }
    }
}

/// Every zone's counters by zone name, replaced whole when a reload adds
/// zones.
type ZoneTable = HashMap<String, ZoneCounters>;

/// The zone counters a thread last used: which [`Metrics`], at which
/// version of its table, and the table. The request path takes the lock on
/// the table only when its version moved (a reload added zones), so
/// counting reads one atomic that only a reload writes (docs/ARCHITECTURE.md
/// "The path of one request").
struct SeenZones {
    metrics: u64,
    version: u64,
    table: Arc<ZoneTable>,
}

thread_local! {
    static SEEN_ZONES: RefCell<Option<SeenZones>> = const { RefCell::new(None) };
}

/// The counters of one zone, as [`Metrics::zone`] names them.
pub struct ZoneCount<'a> {
    metrics: &'a Metrics,
    name: &'a str,
}

impl ZoneCount<'_> {
    /// Count one answer under the zone's label (the default zone's for a
    /// name not in `zones`).
    pub fn count(&self, outcome: Outcome) {
        let m = self.metrics;
        let version = m.zones_version.load(Ordering::Acquire);
        let counted = SEEN_ZONES.try_with(|seen| {
            let mut seen = seen.borrow_mut();
            let current = seen
                .as_ref()
                .is_some_and(|s| s.metrics == m.id && s.version == version);
            if !current {
                *seen = Some(SeenZones {
                    metrics: m.id,
                    version,
                    table: m.zone_table(),
                });
            }
            if let Some(s) = seen.as_ref() {
                m.counters_in(&s.table, self.name).count(outcome);
            }
        });
        if counted.is_err() {
            // The thread is ending: no cache, the table as it is.
            m.counters_in(&m.zone_table(), self.name).count(outcome);
        }
    }
}

/// Label of the counters of requests whose zone is not in `zones`.
pub const DEFAULT_ZONE_LABEL: &str = "default";

/// One connection's reply bytes waiting to be written, in the
/// `queued_reply_bytes` gauge (docs/ARCHITECTURE.md "Connections"): the
/// connection reports changes; its bytes leave the gauge when it is dropped.
pub struct QueuedReplies {
    gauge: Gauge,
    reported: i64,
}

impl QueuedReplies {
    /// The connection now has `bytes` waiting.
    pub fn set(&mut self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        if bytes != self.reported {
            self.gauge.inc_by(bytes.saturating_sub(self.reported));
            self.reported = bytes;
        }
    }
}

impl Drop for QueuedReplies {
    fn drop(&mut self) {
        self.gauge.dec_by(self.reported);
    }
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    lookups: Family<LookupLabels, HotCounter>,
    answers: Vec<(Source, HotCounter)>,
    fetches: Family<ResultLabels, Counter>,
    fetch_seconds: Histogram,
    dns: Family<DnsLabels, Counter>,
    cache_entries: Gauge,
    open_connections: Gauge,
    queued_reply_bytes: Gauge,
    /// Empty until the DNSSEC self-check has run (no series), then its
    /// one series without labels.
    dnssec_validating: Family<NoLabels, Gauge>,
    coalesced: Counter,
    proactive_rounds: Counter,
    proactive_failures: Counter,
    proactive_skipped: Counter,
    refresh_failures: Counter,
    store_errors: Counter,
    /// Lookups that went to the network (not exported: an activity gauge
    /// for the host's memory upkeep).
    network_lookups: Counter,
    /// Every zone's counters, the default zone's under
    /// [`DEFAULT_ZONE_LABEL`]; a reload adds new zones' ([`Metrics::add_zones`]).
    zones: RwLock<Arc<ZoneTable>>,
    /// Bumped by every change of `zones`, under its lock.
    zones_version: AtomicU64,
    /// Tells this instance's table from another's in [`SeenZones`].
    id: u64,
    perm: ZoneCounters,
}

/// The `zone` counters, one per [`Outcome`], in `lookups`.
fn zone_counters(lookups: &Family<LookupLabels, HotCounter>, zone: &str) -> ZoneCounters {
    ZoneCounters {
        counters: Outcome::ALL
            .iter()
            .map(|&o| {
                let labels = LookupLabels {
                    zone: zone.into(),
                    outcome: o.label().into(),
                };
                (o, lookups.get_or_create_owned(&labels))
            })
            .collect(),
    }
}

impl Metrics {
    /// Metrics for a daemon serving `zones` (plus the default zone).
    pub fn new<'a>(zones: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("mta_sts");
        let lookups = Family::<LookupLabels, HotCounter>::default();
        registry.register(
            "lookups",
            "Socketmap requests answered, by zone and outcome",
            lookups.clone(),
        );
        let answers_family = Family::<SourceLabels, HotCounter>::default();
        registry.register(
            "answers",
            "Answers by where they came from (memory within cache_grace, network, stale policy on failure)",
            answers_family.clone(),
        );
        let answers = Source::ALL
            .iter()
            .map(|&s| {
                let labels = SourceLabels {
                    source: s.label().into(),
                };
                (s, answers_family.get_or_create_owned(&labels))
            })
            .collect();
        let fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_fetches",
            "Policy lookups that went to the network, by result (RFC 8461 §3.3)",
            fetches.clone(),
        );
        let fetch_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "policy_fetch_seconds",
            "Time to fetch a policy over HTTPS",
            fetch_seconds.clone(),
        );
        let dns = Family::<DnsLabels, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries by type and response code",
            dns.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Domains held in memory (policies and no-policy notes)",
            cache_entries.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Open socketmap connections",
            open_connections.clone(),
        );
        let queued_reply_bytes = Gauge::default();
        registry.register(
            "queued_reply_bytes",
            "Reply bytes waiting for socketmap clients to read them, across connections",
            queued_reply_bytes.clone(),
        );
        let dnssec_validating = Family::<NoLabels, Gauge>::default();
        registry.register(
            "dnssec_validating",
            "1 when the resolver validated the DNSSEC self-check, 0 when it did not or did not answer; absent before the check and without dane zones",
            dnssec_validating.clone(),
        );
        let coalesced = Counter::default();
        registry.register(
            "coalesced_requests",
            "Requests that joined a lookup already running for their domain",
            coalesced.clone(),
        );
        let proactive_rounds = Counter::default();
        registry.register(
            "proactive_rounds",
            "Proactive refresh rounds run",
            proactive_rounds.clone(),
        );
        let proactive_failures = Counter::default();
        registry.register(
            "proactive_failures",
            "Proactive refreshes of a domain that failed",
            proactive_failures.clone(),
        );
        let proactive_skipped = Counter::default();
        registry.register(
            "proactive_skipped",
            "Domains left alone by proactive refresh rounds (each round counts each): not asked for within their idle time",
            proactive_skipped.clone(),
        );
        let refresh_failures = Counter::default();
        registry.register(
            "refresh_failures",
            "Cached policies that could not be refreshed (RFC 8461 §3.3: alert the administrator)",
            refresh_failures.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Cache store reads and writes that failed",
            store_errors.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register("build_info", "The daemon's version", build.clone());
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);

        let mut by_zone = HashMap::new();
        for zone in zones.into_iter().chain([DEFAULT_ZONE_LABEL]) {
            by_zone.insert(zone.to_owned(), zone_counters(&lookups, zone));
        }
        let perm = zone_counters(&lookups, "");
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            registry,
            lookups,
            answers,
            fetches,
            fetch_seconds,
            dns,
            cache_entries,
            open_connections,
            queued_reply_bytes,
            dnssec_validating,
            coalesced,
            proactive_rounds,
            proactive_failures,
            proactive_skipped,
            refresh_failures,
            store_errors,
            network_lookups: Counter::default(),
            zones: RwLock::new(Arc::new(by_zone)),
            zones_version: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            perm,
        }
    }

    /// The counters of zone `name` (the default zone's for names not in
    /// `zones`).
    pub fn zone<'a>(&'a self, name: &'a str) -> ZoneCount<'a> {
        ZoneCount {
            metrics: self,
            name,
        }
    }

    /// Counters for the zones of a reloaded configuration that have none
    /// yet, so their requests are counted under their own label (those of
    /// zones it dropped stay). Call before answering with its zones.
    pub fn add_zones<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut zones = self.zones.write().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<&str> = names
            .into_iter()
            .filter(|name| !zones.contains_key(*name))
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut table = ZoneTable::clone(&zones);
        for name in missing {
            table.insert(name.to_owned(), zone_counters(&self.lookups, name));
        }
        *zones = Arc::new(table);
        self.zones_version.fetch_add(1, Ordering::Release);
    }

    /// The zone table in force.
    fn zone_table(&self) -> Arc<ZoneTable> {
        Arc::clone(&self.zones.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The counters of `name` in `table`.
    fn counters_in<'t>(&'t self, table: &'t ZoneTable, name: &str) -> &'t ZoneCounters {
        table
            .get(name)
            .or_else(|| table.get(DEFAULT_ZONE_LABEL))
            .unwrap_or(&self.perm)
    }

    /// A malformed request answered `PERM` (its zone is unknown).
    pub fn perm(&self) {
        self.perm.count(Outcome::Perm);
    }

    /// Count where an answer came from.
    pub fn answered_from(&self, source: Source) {
        if let Some((_, c)) = self.answers.iter().find(|(s, _)| *s == source) {
            c.inc();
        }
    }

    /// A policy lookup's network result: `ok`, `no_txt`, or a
    /// [`Failure::kind`], or `timeout`.
    pub fn fetch_result(&self, result: &str) {
        self.network_lookups.inc();
        self.fetches
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// A failed policy lookup.
    pub fn fetch_failure(&self, failure: &Failure) {
        self.fetch_result(failure.kind());
    }

    /// How long a policy fetch took.
    pub fn fetch_seconds(&self, secs: f64) {
        self.fetch_seconds.observe(secs);
    }

    /// One DNS query of `qtype` answered with `rcode` (or `timeout`, `error`).
    pub fn dns_query(&self, qtype: &str, rcode: &str) {
        self.dns
            .get_or_create(&DnsLabels {
                r#type: qtype.into(),
                rcode: rcode.into(),
            })
            .inc();
    }

    /// `n` requests joined running lookups.
    pub fn coalesced(&self, n: u64) {
        self.coalesced.inc_by(n);
    }

    /// A proactive refresh round ran.
    pub fn proactive_round(&self) {
        self.proactive_rounds.inc();
    }

    /// A proactive refresh of one domain failed.
    pub fn proactive_failure(&self) {
        self.proactive_failures.inc();
    }

    /// A proactive refresh round left a domain alone: not asked for within
    /// its idle time (docs/ARCHITECTURE.md "Proactive refresh").
    pub fn proactive_skipped(&self) {
        self.proactive_skipped.inc();
    }

    /// A cached policy could not be refreshed (RFC 8461 §3.3).
    pub fn refresh_failure(&self) {
        self.refresh_failures.inc();
    }

    /// A store read or write failed.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// A connection's share of the `queued_reply_bytes` gauge
    /// (docs/ARCHITECTURE.md "Connections").
    pub fn queued_replies(&self) -> QueuedReplies {
        QueuedReplies {
            gauge: self.queued_reply_bytes.clone(),
            reported: 0,
        }
    }

    /// The DNSSEC self-check's outcome (docs/ARCHITECTURE.md "Operations"):
    /// `Some(validating)` sets `dnssec_validating`, `None` (no zone with
    /// `dane: true`) removes it.
    pub fn dnssec_validating(&self, validating: Option<bool>) {
        match validating {
            Some(on) => {
                self.dnssec_validating.get_or_create(&[]).set(i64::from(on));
            }
            None => self.dnssec_validating.clear(),
        }
    }

    /// How many lookups have gone to the network since the start.
    pub fn network_lookups(&self) -> u64 {
        self.network_lookups.get()
    }

    /// The OpenMetrics text of every metric, with the gauges read now.
    pub fn encode(&self, cache_entries: usize, open_connections: usize) -> String {
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        self.open_connections
            .set(i64::try_from(open_connections).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The lookups counter of `zone` and `outcome` (tests and summaries).
    pub fn lookups(&self, zone: &str, outcome: Outcome) -> u64 {
        self.lookups
            .get(&LookupLabels {
                zone: zone.into(),
                outcome: outcome.label().into(),
            })
            .map_or(0, |c| c.get())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new([])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_striped_counter_sums_every_thread() {
        let counter = HotCounter::default();
        std::thread::scope(|scope| {
            for _ in 0..(2 * STRIPES + 1) {
                let counter = counter.clone();
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                    counter.inc_by(5);
                });
            }
        });
        assert_eq!(counter.get(), (2 * STRIPES as u64 + 1) * 1005);
    }

    use super::*;

    #[test]
    fn zones_outcomes_and_sources_are_encoded() {
        let m = Metrics::new(["postfix"]);
        m.zone("postfix").count(Outcome::Secure);
        m.zone("postfix").count(Outcome::Secure);
        m.zone("unknown-name").count(Outcome::NotFound);
        m.perm();
        m.answered_from(Source::Fresh);
        m.fetch_result("ok");
        m.fetch_seconds(0.02);
        m.dns_query("TXT", "NOERROR");
        m.coalesced(3);
        assert_eq!(m.lookups("postfix", Outcome::Secure), 2);
        assert_eq!(m.lookups(DEFAULT_ZONE_LABEL, Outcome::NotFound), 1);
        let text = m.encode(7, 2);
        for line in [
            "mta_sts_lookups_total{zone=\"postfix\",outcome=\"secure\"} 2",
            "mta_sts_lookups_total{zone=\"default\",outcome=\"notfound\"} 1",
            "mta_sts_lookups_total{zone=\"\",outcome=\"perm\"} 1",
            "mta_sts_answers_total{source=\"fresh\"} 1",
            "mta_sts_policy_fetches_total{result=\"ok\"} 1",
            "mta_sts_dns_queries_total{type=\"TXT\",rcode=\"NOERROR\"} 1",
            "mta_sts_cache_entries 7",
            "mta_sts_open_connections 2",
            "mta_sts_coalesced_requests_total 3",
            "mta_sts_policy_fetch_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("mta_sts_build_info{version="));
    }

    /// `dnssec_validating` has no series before the check, its value
    /// after, and none again once no zone has `dane: true`.
    #[test]
    fn dnssec_validating_is_absent_until_checked() {
        let m = Metrics::default();
        assert!(!m.encode(0, 0).contains("mta_sts_dnssec_validating "));
        m.dnssec_validating(Some(true));
        assert!(m.encode(0, 0).contains("\nmta_sts_dnssec_validating 1\n"));
        m.dnssec_validating(Some(false));
        assert!(m.encode(0, 0).contains("\nmta_sts_dnssec_validating 0\n"));
        m.dnssec_validating(None);
        assert!(!m.encode(0, 0).contains("mta_sts_dnssec_validating "));
    }

    /// A zone added by a reload is counted under its own label, on a
    /// thread that counted before the reload too (its cached table is
    /// renewed); a zone the reload dropped keeps its counters.
    #[test]
    fn zones_added_by_a_reload_get_their_own_label() {
        let m = Metrics::new(["z1"]);
        m.zone("z2").count(Outcome::Secure);
        assert_eq!(m.lookups(DEFAULT_ZONE_LABEL, Outcome::Secure), 1);
        m.add_zones(["z2"]);
        m.zone("z2").count(Outcome::Secure);
        m.zone("z1").count(Outcome::Temp);
        std::thread::scope(|scope| {
            scope.spawn(|| m.zone("z2").count(Outcome::NotFound));
        });
        assert_eq!(m.lookups("z2", Outcome::Secure), 1);
        assert_eq!(m.lookups("z2", Outcome::NotFound), 1);
        assert_eq!(m.lookups("z1", Outcome::Temp), 1);
        assert_eq!(m.lookups(DEFAULT_ZONE_LABEL, Outcome::Secure), 1);
        let text = m.encode(0, 0);
        assert!(
            text.contains("mta_sts_lookups_total{zone=\"z2\",outcome=\"secure\"} 1"),
            "{text}"
        );
    }
}
