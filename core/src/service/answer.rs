//! Answering one socketmap request: the zone, key normalisation, the fresh
//! hit from the shared index in the caller's task, and the miss through the
//! lookup coordinator (docs/ARCHITECTURE.md "The path of one request"). In
//! a zone with `dane: true` a DANE verdict comes first (RFC 8461 §2,
//! RFC 7672): `dane-only`, `dane`, a null MX's `NOTFOUND` or `TEMP`, and
//! the MTA-STS answer only where DANE does not apply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::EngineHandle;
use crate::cache::{Fresh, PolicyIndex};
use crate::config::Config;
use crate::dane;
use crate::domain::{already_normal, normalize_key, Domain};
use crate::metrics::{Metrics, Outcome};
use crate::policy::{render_reply, ReplyOptions};
use crate::resolve::{dane_class, Class, LogClass, Source};
use crate::socketmap::{Connection, Reply, Seq};

/// Reads the wall clock in Unix milliseconds (the runtime's).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Everything a connection needs to answer requests.
pub struct Service {
    config: std::sync::RwLock<Arc<Config>>,
    /// Bumped by every [`Service::reload`], under the `config` lock.
    config_version: AtomicU64,
    metrics: Arc<Metrics>,
    index: Arc<PolicyIndex>,
    engine: EngineHandle,
    wall_ms: WallClock,
    failure_log: FailureLog,
}

/// At most one info line per domain per minute for failed lookups: a
/// failing domain asked often cannot fill the disk (the rest go to debug).
struct FailureLog {
    last: std::sync::Mutex<std::collections::HashMap<Domain, u64>>,
}

/// Interval between two failure lines for one domain.
const FAILURE_LOG_INTERVAL_MS: u64 = 60_000;
/// Domains remembered by [`FailureLog`] before it starts over.
const FAILURE_LOG_DOMAINS: usize = 10_000;

impl FailureLog {
    fn allow(&self, domain: &Domain, now_ms: u64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= FAILURE_LOG_DOMAINS {
            last.clear();
        }
        match last.get(domain) {
            Some(&at) if now_ms < at.saturating_add(FAILURE_LOG_INTERVAL_MS) => false,
            _ => {
                last.insert(domain.clone(), now_ms);
                true
            }
        }
    }
}

/// A key as a domain, borrowed when it already was one.
enum KeyDomain<'a> {
    Plain(&'a str),
    Normalised(Domain),
}

impl KeyDomain<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyDomain::Plain(s) => s,
            KeyDomain::Normalised(d) => d.as_str(),
        }
    }

    fn into_domain(self) -> Option<Domain> {
        match self {
            KeyDomain::Plain(s) => Domain::new(s).ok(),
            KeyDomain::Normalised(d) => Some(d),
        }
    }
}

/// The configuration one connection answers with: its own handle on the
/// service's, taken again only after a reload. Checking it reads a counter
/// that only a reload writes; a lock taken per request had both cores write
/// one cache line for every request (docs/ARCHITECTURE.md "The path of one
/// request").
pub struct ConfigView {
    version: u64,
    config: Arc<Config>,
}

/// A request the index could not answer: what the coordinator needs.
#[derive(Debug)]
pub struct Miss {
    domain: Domain,
    zone: String,
    timeout: Duration,
    opts: ReplyOptions,
    /// The zone has `dane: true`: DANE first (RFC 8461 §2).
    dane: bool,
}

impl Service {
    /// A service answering with `config`'s zones from `index`, and through
    /// `engine` on a miss.
    pub fn new(
        config: Arc<Config>,
        index: Arc<PolicyIndex>,
        engine: EngineHandle,
        wall_ms: WallClock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Service {
            config: std::sync::RwLock::new(config),
            config_version: AtomicU64::new(0),
            metrics,
            index,
            engine,
            wall_ms,
            failure_log: FailureLog {
                last: Default::default(),
            },
        }
    }

    /// Answer every request `conn` has ready: fresh hits at once
    /// ([`Service::answer_now`]), each miss handed to `miss` with its place
    /// in the reply order. Every connection loop does this after reading
    /// (docs/ARCHITECTURE.md "Connections").
    pub fn answer_ready(
        &self,
        view: &mut ConfigView,
        conn: &mut Connection,
        mut miss: impl FnMut(Seq, Miss),
    ) {
        while let Some((seq, request)) = conn.poll_request() {
            match self.answer_now(view, request.name, request.key) {
                Ok(reply) => conn.handle_reply(seq, reply),
                Err(m) => miss(seq, m),
            }
        }
    }

    /// Answer `NAME KEY` at once when no IO is needed (a fresh policy or
    /// "no policy" in the index, a key that is no domain); otherwise the
    /// [`Miss`] to hand to [`Service::answer_miss`]. A fresh hit allocates
    /// nothing: the reply is the policy's, rendered once per zone flavour.
    /// `view` is the connection's [`ConfigView`], renewed here after a
    /// reload.
    pub fn answer_now(&self, view: &mut ConfigView, name: &str, key: &str) -> Result<Reply, Miss> {
        if self.config_version.load(Ordering::Acquire) != view.version {
            *view = self.config_view();
        }
        let (opts, timeout, zone_dane) = {
            let zone = view.config.zone(name);
            (zone.reply_options(), zone.timeout, zone.dane)
        };
        let key_domain = match already_normal(key) {
            Some(plain) => KeyDomain::Plain(plain),
            None => match normalize_key(key) {
                Ok(domain) => KeyDomain::Normalised(domain),
                Err(why) => {
                    log::debug!("{key:?} (zone {name}): NOTFOUND, {why}");
                    self.metrics.zone(name).count(Outcome::NotFound);
                    self.metrics.answered_from(Source::InvalidKey);
                    return Ok(Reply::NotFound);
                }
            },
        };
        let domain = key_domain.as_str();
        let now_ms = (self.wall_ms)();
        if zone_dane {
            match self.index.dane_fresh(domain, now_ms) {
                Some(result) => {
                    if let Some(class) = dane_class(&result.verdict) {
                        let (reply, outcome) = render(domain, class, opts);
                        log::debug!("{domain} (zone {name}): cached DANE result, {result}");
                        self.metrics.answered_from(Source::Fresh);
                        self.metrics.zone(name).count(outcome);
                        return Ok(reply);
                    }
                    // No DANE for this domain: the MTA-STS answer, as below.
                }
                None => {
                    return match key_domain.into_domain() {
                        Some(domain) => Err(Miss {
                            domain,
                            zone: name.to_owned(),
                            timeout,
                            opts,
                            dane: true,
                        }),
                        None => Ok(Reply::NotFound),
                    };
                }
            }
        }
        match self.index.fresh(domain, now_ms) {
            Fresh::Policy(cached) => {
                let mode = cached.entry().policy.mode;
                log::debug!("{domain} (zone {name}): cached {mode} policy");
                self.metrics.answered_from(Source::Fresh);
                let reply = cached.reply(domain, opts);
                let outcome = match reply {
                    Some(_) => Outcome::Secure,
                    None => Outcome::NotFound,
                };
                self.metrics.zone(name).count(outcome);
                Ok(reply.map_or(Reply::NotFound, Reply::Ok))
            }
            Fresh::NoPolicy => {
                log::debug!("{domain} (zone {name}): NOTFOUND, no policy (remembered)");
                self.metrics.answered_from(Source::Fresh);
                self.metrics.zone(name).count(Outcome::NotFound);
                Ok(Reply::NotFound)
            }
            Fresh::Miss => match key_domain.into_domain() {
                Some(domain) => Err(Miss {
                    domain,
                    zone: name.to_owned(),
                    timeout,
                    opts,
                    dane: zone_dane,
                }),
                // `already_normal` only passes valid names.
                None => Ok(Reply::NotFound),
            },
        }
    }

    /// Answer a [`Miss`] through the lookup coordinator, logging one line.
    pub async fn answer_miss(&self, miss: Miss) -> Reply {
        let Miss {
            domain,
            zone,
            timeout,
            opts,
            dane,
        } = miss;
        let answer = if dane {
            self.engine.lookup_dane(domain.clone(), timeout).await
        } else {
            self.engine.lookup(domain.clone(), timeout).await
        };
        let decision = answer.decision();
        let (reply, outcome) = render(domain.as_str(), decision.class, opts);
        let level = self.level(&domain, decision.log);
        let shown = Shown(decision.class, outcome);
        let reason = decision.reason;
        match decision.dane {
            Some(d) => log::log!(
                level,
                "{domain} (zone {zone}): {shown} (DANE: {d}) (MTA-STS: {reason})"
            ),
            None => log::log!(level, "{domain} (zone {zone}): {shown} ({reason})"),
        }
        self.metrics.answered_from(decision.source);
        if decision.refresh_failed() {
            // RFC 8461 §3.3: tell the administrator a policy could not be
            // refreshed (the cached one still answers while unexpired).
            self.metrics.refresh_failure();
            if level != log::Level::Debug {
                log::warn!("{domain}: cached policy could not be refreshed ({reason})");
            }
        }
        self.metrics.zone(&zone).count(outcome);
        reply
    }

    /// Answer with a reloaded configuration's zones from now on.
    pub fn reload(&self, config: Arc<Config>) {
        let mut current = self.config.write().unwrap_or_else(|p| p.into_inner());
        *current = config;
        self.config_version.fetch_add(1, Ordering::Release);
    }

    /// The connection limits in force: a reload changes them for the
    /// connections accepted after it (docs/ARCHITECTURE.md "Connections").
    pub fn limits(&self) -> crate::config::Limits {
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        config.limits.clone()
    }

    /// The configuration in force, for a connection's
    /// [`Service::answer_now`] calls (which take a new one after a reload).
    pub fn config_view(&self) -> ConfigView {
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        ConfigView {
            version: self.config_version.load(Ordering::Acquire),
            config: Arc::clone(&config),
        }
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The shared index (cache administration, metrics).
    pub fn index(&self) -> &Arc<PolicyIndex> {
        &self.index
    }

    /// The log level a decision's [`LogClass`] implies; a network failure
    /// is logged at info at most once a minute per domain.
    fn level(&self, domain: &Domain, log: LogClass) -> log::Level {
        match log {
            LogClass::Memory => log::Level::Debug,
            LogClass::Network => log::Level::Info,
            LogClass::Failure if self.failure_log.allow(domain, (self.wall_ms)()) => {
                log::Level::Info
            }
            LogClass::Failure => log::Level::Debug,
            LogClass::Local => log::Level::Warn,
        }
    }

    /// Answer one request, whichever way it goes.
    pub async fn answer(&self, name: &str, key: &str) -> Reply {
        match self.answer_now(&mut self.config_view(), name, key) {
            Ok(reply) => reply,
            Err(miss) => self.answer_miss(miss).await,
        }
    }
}

/// The reply bytes a decision's class gives in a zone with `opts`, and
/// the zone metric's outcome (RFC 8461 §4.2, §5; RFC 7672 §3).
pub(super) fn render(domain: &str, class: Class<'_>, opts: ReplyOptions) -> (Reply, Outcome) {
    match class {
        Class::Policy(policy) => match render_reply(policy, domain, opts) {
            Some(value) => (Reply::Ok(value.into()), Outcome::Secure),
            None => (Reply::NotFound, Outcome::NotFound),
        },
        Class::DaneOnly => (Reply::Ok(dane::dane_only_value()), Outcome::DaneOnly),
        Class::Dane => (Reply::Ok(dane::dane_value()), Outcome::Dane),
        Class::NullMx | Class::NoPolicy => (Reply::NotFound, Outcome::NotFound),
        Class::Temp(cause) => (Reply::Temp(format!("{domain}: {cause}")), Outcome::Temp),
    }
}

/// A rendered class as the log line says it.
struct Shown<'a>(Class<'a>, Outcome);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Class::Policy(policy) if self.1 == Outcome::Secure => {
                write!(f, "{} policy", policy.mode)
            }
            Class::Policy(policy) => write!(f, "NOTFOUND, {} policy", policy.mode),
            Class::DaneOnly => f.write_str("dane-only"),
            Class::Dane => f.write_str("dane"),
            Class::NullMx => f.write_str("NOTFOUND, null MX"),
            Class::NoPolicy => f.write_str("NOTFOUND, no policy"),
            Class::Temp(_) => f.write_str("TEMP"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::dane::{DaneFailure, DaneResult, NoDane, Verdict};
    use crate::dns::{DnsError, DnsFailure, NoRecordsKind};
    use crate::policy::{Mode, Policy};
    use crate::resolve::{Answer, DaneAnswer, Failure, NoPolicy, Reason};

    fn policy(mode: Mode) -> Policy {
        Policy {
            mode,
            max_age: 86_400,
            mx: vec!["mx.example.com".to_owned()],
            lines: vec![
                "version: STSv1".into(),
                format!("mode: {mode}"),
                "max_age: 86400".into(),
                "mx: mx.example.com".into(),
            ]
            .into(),
        }
    }

    fn dane(verdict: Verdict, cached: bool) -> Option<DaneAnswer> {
        Some(DaneAnswer {
            result: Arc::new(DaneResult::decided(verdict, Duration::from_secs(60))),
            cached,
        })
    }

    fn answer(policy: Option<Policy>, reason: Reason, dane: Option<DaneAnswer>) -> Answer {
        Answer {
            policy,
            reason,
            dane,
        }
    }

    /// Every class of decision, as the resolver's answers reach it, renders
    /// to the expected reply, zone outcome, source, log class and text.
    #[test]
    fn every_decision_renders_to_its_reply_metric_and_level() {
        let servfail = Failure::Txt(DnsFailure::Server(DnsError::ServFail));
        let overloaded = Failure::Local("too many lookups in flight".into());
        let nx = NoPolicy::NoRecord(NoRecordsKind::NxDomain);
        let secure = "secure match=mx.example.com";
        let ok = |v: &str| Reply::Ok(Arc::from(v));
        let temp = |v: &str| Reply::Temp(v.to_owned());
        let enforce = || Some(policy(Mode::Enforce));
        let cases: Vec<(Answer, Reply, Outcome, Source, LogClass, &str)> = vec![
            (
                answer(enforce(), Reason::Fetched, None),
                ok(secure),
                Outcome::Secure,
                Source::Fetched,
                LogClass::Network,
                "enforce policy",
            ),
            (
                answer(enforce(), Reason::Cached, None),
                ok(secure),
                Outcome::Secure,
                Source::Fresh,
                LogClass::Memory,
                "enforce policy",
            ),
            (
                answer(Some(policy(Mode::Testing)), Reason::Confirmed, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Revalidated,
                LogClass::Network,
                "NOTFOUND, testing policy",
            ),
            (
                answer(Some(policy(Mode::None)), Reason::Fetched, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fetched,
                LogClass::Network,
                "NOTFOUND, none policy",
            ),
            (
                answer(None, Reason::NoPolicy(nx.clone()), None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::NoPolicy,
                LogClass::Network,
                "NOTFOUND, no policy",
            ),
            (
                answer(enforce(), Reason::NoPolicy(nx), None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Network,
                "enforce policy",
            ),
            (
                answer(None, Reason::NoPolicyRemembered, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fresh,
                LogClass::Memory,
                "NOTFOUND, no policy",
            ),
            (
                answer(enforce(), Reason::Fallback(servfail.clone()), None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Failure,
                "enforce policy",
            ),
            (
                answer(None, Reason::Fallback(servfail), None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Failed,
                LogClass::Failure,
                "NOTFOUND, no policy",
            ),
            (
                answer(None, Reason::Timeout, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Failed,
                LogClass::Failure,
                "NOTFOUND, no policy",
            ),
            (
                answer(enforce(), Reason::FailureBackoff, None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Memory,
                "enforce policy",
            ),
            (
                answer(None, Reason::Fallback(overloaded.clone()), None),
                temp("example.com: too many lookups in flight"),
                Outcome::Temp,
                Source::Failed,
                LogClass::Local,
                "TEMP",
            ),
            (
                answer(enforce(), Reason::Fallback(overloaded), None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Local,
                "enforce policy",
            ),
            (
                answer(None, Reason::DaneDecided, dane(Verdict::DaneOnly, false)),
                ok("dane-only"),
                Outcome::DaneOnly,
                Source::Fetched,
                LogClass::Network,
                "dane-only",
            ),
            (
                answer(None, Reason::DaneDecided, dane(Verdict::Dane, true)),
                ok("dane"),
                Outcome::Dane,
                Source::Fresh,
                LogClass::Network,
                "dane",
            ),
            (
                answer(
                    None,
                    Reason::NoPolicyRemembered,
                    dane(Verdict::NullMx, true),
                ),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fresh,
                LogClass::Memory,
                "NOTFOUND, null MX",
            ),
            (
                answer(
                    None,
                    Reason::DaneDecided,
                    dane(Verdict::Temp(DaneFailure::Timeout), false),
                ),
                temp("example.com: DANE lookup failed: DANE lookup timed out"),
                Outcome::Temp,
                Source::Fetched,
                LogClass::Failure,
                "TEMP",
            ),
            (
                answer(
                    None,
                    Reason::DaneDecided,
                    dane(Verdict::Temp(DaneFailure::Timeout), true),
                ),
                temp("example.com: DANE lookup failed: DANE lookup timed out"),
                Outcome::Temp,
                Source::Fetched,
                LogClass::Memory,
                "TEMP",
            ),
            (
                answer(
                    None,
                    Reason::DaneDecided,
                    dane(Verdict::Temp(DaneFailure::Local("EMFILE".into())), false),
                ),
                temp("example.com: DANE lookup failed: EMFILE"),
                Outcome::Temp,
                Source::Fetched,
                LogClass::Local,
                "TEMP",
            ),
            (
                answer(
                    enforce(),
                    Reason::Fetched,
                    dane(Verdict::NoDane(NoDane::NoTlsa), true),
                ),
                ok(secure),
                Outcome::Secure,
                Source::Fetched,
                LogClass::Network,
                "enforce policy",
            ),
            (
                answer(
                    enforce(),
                    Reason::Cached,
                    dane(Verdict::NoDane(NoDane::NoTlsa), true),
                ),
                ok(secure),
                Outcome::Secure,
                Source::Fresh,
                LogClass::Memory,
                "enforce policy",
            ),
        ];
        for (answer, reply, outcome, source, log, shown) in cases {
            let decision = answer.decision();
            let rendered = render(
                "example.com",
                decision.class,
                ReplyOptions {
                    strict_testing: false,
                    require_sni: false,
                    tlsrpt: false,
                },
            );
            assert_eq!(rendered, (reply, outcome), "{answer}");
            assert_eq!(decision.source, source, "{answer}");
            assert_eq!(decision.log, log, "{answer}");
            assert_eq!(Shown(decision.class, outcome).to_string(), shown);
            assert_eq!(
                decision.refresh_failed(),
                source == Source::StaleOnFailure,
                "{answer}"
            );
        }
    }
}
