//! Answering one socketmap request: the zone, key normalisation, the fresh
//! hit from the shared index in the caller's task, and the miss through the
//! lookup coordinator (docs/ARCHITECTURE.md "The path of one request"). In
//! a zone with `dane: true` a DANE verdict comes first (RFC 8461 §2,
//! RFC 7672): `dane-only`, `dane`, a null MX's `NOTFOUND` or `TEMP`, and
//! the MTA-STS answer only where DANE does not apply.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::EngineHandle;
use crate::cache::{Fresh, PolicyIndex};
use crate::config::Config;
use crate::dane;
use crate::domain::{already_normal, normalize_key, Domain, KeyRejection};
use crate::metrics::{Metrics, Outcome};
use crate::policy::{render_reply, Policy, ReplyOptions};
use crate::resolve::{dane_class, Class, DaneAnswer, Decision, LogClass, Reason, Why};
use crate::socketmap::{Connection, Reply, Seq};

/// Reads the wall clock in Unix milliseconds (the runtime's).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Reads the monotonic clock (the runtime's `now`): how long a lookup took,
/// for its log line (docs/ARCHITECTURE.md "Logs").
pub type MonoClock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Everything a connection needs to answer requests.
pub struct Service {
    config: std::sync::RwLock<Arc<Config>>,
    /// Bumped by every [`Service::reload`], under the `config` lock.
    config_version: AtomicU64,
    metrics: Arc<Metrics>,
    index: Arc<PolicyIndex>,
    engine: EngineHandle,
    wall_ms: WallClock,
    now: MonoClock,
    failure_log: FailureLog,
}

/// At most one info line per domain per minute for failed lookups: a
/// failing domain asked often cannot fill the disk (the rest go to debug).
struct FailureLog {
    last: std::sync::Mutex<std::collections::HashMap<Box<str>, u64>>,
}

/// Interval between two failure lines for one domain.
const FAILURE_LOG_INTERVAL_MS: u64 = 60_000;
/// Domains remembered by [`FailureLog`] before it starts over.
const FAILURE_LOG_DOMAINS: usize = 10_000;

impl FailureLog {
    fn allow(&self, domain: &str, now_ms: u64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= FAILURE_LOG_DOMAINS {
            last.clear();
        }
        match last.get(domain) {
            Some(&at) if now_ms < at.saturating_add(FAILURE_LOG_INTERVAL_MS) => false,
            _ => {
                last.insert(domain.into(), now_ms);
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
    /// When the index could not answer: the lookup's log line says how
    /// long it took from here.
    arrived: Instant,
}

impl Service {
    /// A service answering with `config`'s zones from `index`, and through
    /// `engine` on a miss; `wall_ms` and `now` are the runtime's clocks.
    pub fn new(
        config: Arc<Config>,
        index: Arc<PolicyIndex>,
        engine: EngineHandle,
        wall_ms: WallClock,
        now: MonoClock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Service {
            config: std::sync::RwLock::new(config),
            config_version: AtomicU64::new(0),
            metrics,
            index,
            engine,
            wall_ms,
            now,
            failure_log: FailureLog {
                last: Default::default(),
            },
        }
    }

    /// Answer every request `conn` has ready: fresh hits at once
    /// ([`Service::answer_now`]), each miss handed to `miss` with its place
    /// in the reply order. Every connection loop does this each time it runs
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
                    let decision = Decision::invalid_key(&why);
                    return Ok(self.render_decision(key, name, decision, FRESH, |_| None));
                }
            },
        };
        // Not fresh: the lookup coordinator decides.
        let miss = |key_domain: KeyDomain<'_>, dane: bool| match key_domain.into_domain() {
            Some(domain) => Err(Miss {
                domain,
                zone: name.to_owned(),
                timeout,
                opts,
                dane,
                arrived: (self.now)(),
            }),
            // `already_normal` only passes valid names.
            None => {
                let decision = Decision::invalid_key(&KeyRejection::InvalidName);
                Ok(self.render_decision(key, name, decision, FRESH, |_| None))
            }
        };
        let domain = key_domain.as_str();
        let now_ms = (self.wall_ms)();
        if zone_dane {
            match self.index.dane_fresh(domain, now_ms) {
                Some(result) => {
                    let dane = DaneAnswer {
                        result,
                        cached: true,
                    };
                    if let Some(class) = dane_class(&dane.result.verdict) {
                        // The domain's MTA-STS policy stays refreshed while
                        // DANE answers: one more shard read, no allocation.
                        self.index.note_asked(domain, now_ms);
                        let decision = Decision::fresh(class, Some(&dane));
                        let reply = |_: &Policy| None;
                        return Ok(self.render_decision(domain, name, decision, FRESH, reply));
                    }
                    // No DANE for this domain: the MTA-STS answer, as below.
                }
                None => return miss(key_domain, true),
            }
        }
        match self.index.fresh(domain, now_ms) {
            Fresh::Policy(cached) => {
                let decision = Decision::fresh(Class::Policy(&cached.entry().policy), None);
                // The reply rendered once for this zone flavour, shared.
                let reply = |_: &Policy| cached.reply(domain, opts);
                Ok(self.render_decision(domain, name, decision, FRESH, reply))
            }
            Fresh::NoPolicy => {
                let decision = Decision::fresh(Class::NoPolicy, None);
                Ok(self.render_decision(domain, name, decision, FRESH, |_| None))
            }
            Fresh::Miss => miss(key_domain, zone_dane),
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
            arrived,
        } = miss;
        let answer = if dane {
            self.engine.lookup_dane(domain.clone(), timeout).await
        } else {
            self.engine.lookup(domain.clone(), timeout).await
        };
        let domain = domain.as_str();
        // Asked for: the proactive refresh keeps its policy (a fresh hit
        // notes it in `PolicyIndex::fresh`).
        self.index.note_asked(domain, (self.wall_ms)());
        let reply = |policy: &Policy| render_reply(policy, domain, opts).map(Arc::from);
        let took = (self.now)().saturating_duration_since(arrived);
        self.render_decision(domain, &zone, answer.decision(), took, reply)
    }

    /// Render one request's `decision`, whichever way it was reached: the
    /// reply (a policy's from `policy_reply`), one log line, one answers
    /// increment and the zone's outcome, and, when a cached policy
    /// answered because it could not be refreshed, the refresh-failure
    /// counter and a warning (RFC 8461 §3.3). The one place a decision
    /// becomes a reply, a metric and a log level (docs/ARCHITECTURE.md
    /// "The path of one request"). `domain` is the key when it is no
    /// domain; `took` is how long the answer took since the request came.
    fn render_decision(
        &self,
        domain: &str,
        zone: &str,
        decision: Decision<'_>,
        took: Duration,
        policy_reply: impl FnOnce(&Policy) -> Option<Arc<str>>,
    ) -> Reply {
        let (reply, outcome) = render(domain, decision.class, policy_reply);
        let level = self.level(domain, decision.log);
        let line = Line {
            domain,
            zone,
            decision,
            outcome,
            took,
        };
        line.log(level);
        self.metrics.answered_from(decision.source);
        if decision.refresh_failed() {
            // RFC 8461 §3.3: tell the administrator a policy could not be
            // refreshed (the cached one still answers while unexpired).
            self.metrics.refresh_failure();
            if let (true, Why::Lookup(reason)) = (level != log::Level::Debug, decision.why) {
                log::warn!(
                    domain = domain, zone = zone;
                    "{domain}: cached policy could not be refreshed ({reason})"
                );
            }
        }
        self.metrics.zone(zone).count(outcome);
        reply
    }

    /// Answer with a reloaded configuration's zones from now on, each
    /// counted under its own label.
    pub fn reload(&self, config: Arc<Config>) {
        self.metrics
            .add_zones(config.zones.keys().map(String::as_str));
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
    fn level(&self, domain: &str, log: LogClass) -> log::Level {
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

/// The reply bytes a decision's class gives, a policy's rendered for the
/// zone by `policy_reply` (`None`: a mode the zone does not enforce), and
/// the zone metric's outcome (RFC 8461 §4.2, §5; RFC 7672 §3).
pub(super) fn render(
    domain: &str,
    class: Class<'_>,
    policy_reply: impl FnOnce(&Policy) -> Option<Arc<str>>,
) -> (Reply, Outcome) {
    match class {
        Class::Policy(policy) => match policy_reply(policy) {
            Some(value) => (Reply::Ok(value), Outcome::Secure),
            None => (Reply::NotFound, Outcome::NotFound),
        },
        Class::DaneOnly => (Reply::Ok(dane::dane_only_value()), Outcome::DaneOnly),
        Class::Dane => (Reply::Ok(dane::dane_value()), Outcome::Dane),
        Class::NullMx | Class::NoPolicy => (Reply::NotFound, Outcome::NotFound),
        Class::Temp(cause) => (Reply::Temp(format!("{domain}: {cause}")), Outcome::Temp),
    }
}

/// A fresh hit's (or a rejected key's) time to answer: it is answered from
/// memory as the request is read, and reading a clock for it would cost
/// every hit (docs/ARCHITECTURE.md "Logs").
const FRESH: Duration = Duration::ZERO;

/// What one answer's log line is made from: the request's domain (the
/// key, when it is no domain) and zone, its decision, the outcome it
/// rendered to, and how long it took (docs/ARCHITECTURE.md "The path of
/// one request"). Its text is the message; the same values are the
/// record's fields (`log::kv`), which the JSON format writes.
struct Line<'a> {
    domain: &'a str,
    zone: &'a str,
    decision: Decision<'a>,
    outcome: Outcome,
    took: Duration,
}

/// The reasons a fresh hit gives, as the lookup coordinator would name
/// them, borrowed for the record's `reason` field.
static CACHED: Reason = Reason::Cached;
static REMEMBERED: Reason = Reason::NoPolicyRemembered;

impl<'a> Line<'a> {
    /// Log the line at `level` with its fields; nothing is formatted or
    /// built when the level is off (a fresh hit logs at debug).
    fn log(&self, level: log::Level) {
        if log::log_enabled!(level) {
            log::logger().log(
                &log::Record::builder()
                    .args(format_args!("{self}"))
                    .level(level)
                    .target(module_path!())
                    .module_path_static(Some(module_path!()))
                    .key_values(self)
                    .build(),
            );
        }
    }

    /// How the decision was reached, as the `reason` field says it: the
    /// lookup's MTA-STS reason, the key's rejection, or for a fresh hit
    /// the reason a lookup answering from memory gives.
    fn reason(&self) -> log::kv::Value<'a> {
        use log::kv::Value;
        match (self.decision.why, self.decision.class) {
            (Why::Lookup(reason), _) => Value::from_display(reason),
            (Why::InvalidKey(why), _) => Value::from_display(why),
            (Why::Fresh, Class::Policy(_)) => Value::from_display(&CACHED),
            (Why::Fresh, Class::NoPolicy) => Value::from_display(&REMEMBERED),
            (Why::Fresh, _) => Value::from("cached DANE result"),
        }
    }
}

/// The record's fields (docs/ARCHITECTURE.md "Logs"): `domain`, `zone`,
/// `class` (the reply, as the zone metric's `outcome` label), `source` (the
/// answers metric's label), `reason`, `dane` (a `dane: true` zone's DANE
/// part) and `duration_ms`, taken from the typed decision.
impl log::kv::Source for Line<'_> {
    fn visit<'kvs>(
        &'kvs self,
        visitor: &mut dyn log::kv::VisitSource<'kvs>,
    ) -> Result<(), log::kv::Error> {
        use log::kv::{Key, Value};
        let ms = u64::try_from(self.took.as_millis()).unwrap_or(u64::MAX);
        visitor.visit_pair(Key::from_str("domain"), Value::from(self.domain))?;
        visitor.visit_pair(Key::from_str("zone"), Value::from(self.zone))?;
        visitor.visit_pair(Key::from_str("class"), Value::from(self.outcome.label()))?;
        let source = self.decision.source.label();
        visitor.visit_pair(Key::from_str("source"), Value::from(source))?;
        visitor.visit_pair(Key::from_str("reason"), self.reason())?;
        if let Some(dane) = self.decision.dane {
            visitor.visit_pair(Key::from_str("dane"), Value::from_display(dane))?;
        }
        visitor.visit_pair(Key::from_str("duration_ms"), Value::from(ms))
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Line {
            domain,
            zone,
            decision,
            outcome,
            took: _,
        } = self;
        let shown = Shown(decision.class, *outcome);
        match (decision.why, decision.dane) {
            (Why::InvalidKey(why), _) => write!(f, "{domain:?} (zone {zone}): NOTFOUND, {why}"),
            (Why::Fresh, dane) => match (decision.class, dane) {
                (Class::Policy(policy), _) => {
                    write!(f, "{domain} (zone {zone}): cached {} policy", policy.mode)
                }
                (Class::NoPolicy, _) => {
                    write!(
                        f,
                        "{domain} (zone {zone}): NOTFOUND, no policy (remembered)"
                    )
                }
                (_, Some(dane)) => {
                    write!(
                        f,
                        "{domain} (zone {zone}): cached DANE result, {}",
                        dane.result
                    )
                }
                (_, None) => write!(f, "{domain} (zone {zone}): {shown}"),
            },
            (Why::Lookup(reason), Some(dane)) => write!(
                f,
                "{domain} (zone {zone}): {shown} (DANE: {dane}) (MTA-STS: {reason})"
            ),
            (Why::Lookup(reason), None) => write!(f, "{domain} (zone {zone}): {shown} ({reason})"),
        }
    }
}

/// A rendered class as the log line says it.
struct Shown<'a>(Class<'a>, Outcome);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    use crate::policy::Mode;
    use crate::resolve::{Answer, Failure, NoPolicy, Reason, Source};

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

    /// How a decision is reached: the resolver's answer, a fresh hit of
    /// the index (as `Service::answer_now` makes it), a key that is no
    /// domain.
    #[derive(Debug)]
    enum Made {
        Lookup(Answer),
        Fresh(Option<Policy>, Option<DaneAnswer>),
        InvalidKey(KeyRejection),
    }

    impl Made {
        fn decision(&self) -> Decision<'_> {
            match self {
                Made::Lookup(answer) => answer.decision(),
                Made::Fresh(policy, dane) => {
                    let by_dane = dane.as_ref().and_then(|d| dane_class(&d.result.verdict));
                    let class = match (by_dane, policy) {
                        (Some(class), _) => class,
                        (None, Some(policy)) => Class::Policy(policy),
                        (None, None) => Class::NoPolicy,
                    };
                    Decision::fresh(class, dane.as_ref().filter(|_| by_dane.is_some()))
                }
                Made::InvalidKey(why) => Decision::invalid_key(why),
            }
        }
    }

    fn answer(policy: Option<Policy>, reason: Reason, dane: Option<DaneAnswer>) -> Made {
        Made::Lookup(Answer {
            policy,
            reason,
            dane,
        })
    }

    /// A line's fields as `(key, value)` texts, in order.
    fn fields(line: &Line<'_>) -> Vec<(String, String)> {
        struct Collect(Vec<(String, String)>);
        impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
            fn visit_pair(
                &mut self,
                key: log::kv::Key<'kvs>,
                value: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push((key.as_str().to_owned(), value.to_string()));
                Ok(())
            }
        }
        let mut collect = Collect(Vec::new());
        log::kv::Source::visit(line, &mut collect).expect("fields");
        collect.0
    }

    /// A lookup's log record carries its fields from the typed decision
    /// (docs/ARCHITECTURE.md "Logs"): the domain (the key as given when it
    /// is no domain) and zone as they are, the reply class and source by
    /// the metrics' label names, the reason, the DANE part in a `dane:
    /// true` zone, and the time taken, a number.
    #[test]
    fn log_fields_come_from_the_decision() {
        let nx = NoPolicy::NoRecord(NoRecordsKind::NxDomain);
        /// A decision, the domain logged, the time taken, the fields.
        type Case = (
            Made,
            &'static str,
            Duration,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                answer(Some(policy(Mode::Enforce)), Reason::Fetched, None),
                "example.com",
                Duration::from_millis(1234),
                vec![
                    ("domain", "example.com"),
                    ("zone", "z"),
                    ("class", "secure"),
                    ("source", "fetched"),
                    ("reason", "policy fetched"),
                    ("duration_ms", "1234"),
                ],
            ),
            (
                answer(None, Reason::NoPolicy(nx), None),
                "example.com",
                Duration::from_micros(999),
                vec![
                    ("domain", "example.com"),
                    ("zone", "z"),
                    ("class", "notfound"),
                    ("source", "no_policy"),
                    ("reason", "no policy published: no TXT record (NxDomain)"),
                    ("duration_ms", "0"),
                ],
            ),
            (
                Made::Fresh(Some(policy(Mode::Testing)), None),
                "example.com",
                FRESH,
                vec![
                    ("domain", "example.com"),
                    ("zone", "z"),
                    ("class", "notfound"),
                    ("source", "fresh"),
                    ("reason", "cached policy, checked within cache_grace"),
                    ("duration_ms", "0"),
                ],
            ),
            (
                Made::Fresh(None, None),
                "example.com",
                FRESH,
                vec![
                    ("domain", "example.com"),
                    ("zone", "z"),
                    ("class", "notfound"),
                    ("source", "fresh"),
                    ("reason", "no policy (remembered)"),
                    ("duration_ms", "0"),
                ],
            ),
            (
                Made::Fresh(None, dane(Verdict::DaneOnly, true)),
                "example.com",
                FRESH,
                vec![
                    ("domain", "example.com"),
                    ("zone", "z"),
                    ("class", "dane_only"),
                    ("source", "fresh"),
                    ("reason", "cached DANE result"),
                    ("dane", "dane-only (cached)"),
                    ("duration_ms", "0"),
                ],
            ),
            (
                answer(None, Reason::DaneDecided, dane(Verdict::Dane, false)),
                "example.com",
                Duration::from_millis(20),
                vec![
                    ("domain", "example.com"),
                    ("zone", "z"),
                    ("class", "dane"),
                    ("source", "fetched"),
                    ("reason", "not waited for, DANE decided"),
                    ("dane", "dane"),
                    ("duration_ms", "20"),
                ],
            ),
            (
                Made::InvalidKey(KeyRejection::IpLiteral),
                "[192.0.2.1]\n\"x",
                FRESH,
                vec![
                    ("domain", "[192.0.2.1]\n\"x"),
                    ("zone", "z"),
                    ("class", "notfound"),
                    ("source", "invalid_key"),
                    ("reason", "IP address literal"),
                    ("duration_ms", "0"),
                ],
            ),
        ];
        for (made, domain, took, expected) in cases {
            let decision = made.decision();
            let opts = ReplyOptions {
                strict_testing: false,
                require_sni: false,
                tlsrpt: false,
            };
            let policy_reply = |p: &Policy| render_reply(p, domain, opts).map(Arc::from);
            let (_, outcome) = render(domain, decision.class, policy_reply);
            let line = Line {
                domain,
                zone: "z",
                decision,
                outcome,
                took,
            };
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(fields(&line), expected, "{made:?}");
        }
    }

    /// Every class of decision, as the resolver's answers and the fresh
    /// hits reach it, renders to the expected reply, zone outcome, source,
    /// log class and log line.
    #[test]
    fn every_decision_renders_to_its_reply_metric_and_level() {
        let servfail = Failure::Txt(DnsFailure::Server(DnsError::ServFail));
        let overloaded = Failure::Local("too many lookups in flight".into());
        let nx = NoPolicy::NoRecord(NoRecordsKind::NxDomain);
        let secure = "secure match=mx.example.com";
        let ok = |v: &str| Reply::Ok(Arc::from(v));
        let temp = |v: &str| Reply::Temp(v.to_owned());
        let enforce = || Some(policy(Mode::Enforce));
        let cases: Vec<(Made, Reply, Outcome, Source, LogClass, &str)> = vec![
            (
                answer(enforce(), Reason::Fetched, None),
                ok(secure),
                Outcome::Secure,
                Source::Fetched,
                LogClass::Network,
                "example.com (zone z): enforce policy (policy fetched)",
            ),
            (
                answer(enforce(), Reason::Cached, None),
                ok(secure),
                Outcome::Secure,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): enforce policy (cached policy, checked within cache_grace)",
            ),
            (
                answer(Some(policy(Mode::Testing)), Reason::Confirmed, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Revalidated,
                LogClass::Network,
                "example.com (zone z): NOTFOUND, testing policy (policy id unchanged, cached policy confirmed)",
            ),
            (
                answer(Some(policy(Mode::None)), Reason::Fetched, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fetched,
                LogClass::Network,
                "example.com (zone z): NOTFOUND, none policy (policy fetched)",
            ),
            (
                answer(None, Reason::NoPolicy(nx.clone()), None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::NoPolicy,
                LogClass::Network,
                "example.com (zone z): NOTFOUND, no policy (no policy published: no TXT record (NxDomain))",
            ),
            (
                answer(enforce(), Reason::NoPolicy(nx), None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Network,
                "example.com (zone z): enforce policy (no policy published: no TXT record (NxDomain))",
            ),
            (
                answer(None, Reason::NoPolicyRemembered, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): NOTFOUND, no policy (no policy (remembered))",
            ),
            (
                answer(enforce(), Reason::Fallback(servfail.clone()), None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Failure,
                "example.com (zone z): enforce policy (lookup failed: TXT lookup: DNS error: server failure (SERVFAIL))",
            ),
            (
                answer(None, Reason::Fallback(servfail), None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Failed,
                LogClass::Failure,
                "example.com (zone z): NOTFOUND, no policy (lookup failed: TXT lookup: DNS error: server failure (SERVFAIL))",
            ),
            (
                answer(None, Reason::Timeout, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Failed,
                LogClass::Failure,
                "example.com (zone z): NOTFOUND, no policy (lookup timed out)",
            ),
            (
                answer(enforce(), Reason::FailureBackoff, None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Memory,
                "example.com (zone z): enforce policy (recent fetch failure for this id, not retried yet)",
            ),
            (
                answer(None, Reason::Fallback(overloaded.clone()), None),
                temp("example.com: too many lookups in flight"),
                Outcome::Temp,
                Source::Failed,
                LogClass::Local,
                "example.com (zone z): TEMP (lookup failed: too many lookups in flight)",
            ),
            (
                answer(enforce(), Reason::Fallback(overloaded), None),
                ok(secure),
                Outcome::Secure,
                Source::StaleOnFailure,
                LogClass::Local,
                "example.com (zone z): enforce policy (lookup failed: too many lookups in flight)",
            ),
            (
                answer(None, Reason::DaneDecided, dane(Verdict::DaneOnly, false)),
                ok("dane-only"),
                Outcome::DaneOnly,
                Source::Fetched,
                LogClass::Network,
                "example.com (zone z): dane-only (DANE: dane-only) (MTA-STS: not waited for, DANE decided)",
            ),
            (
                answer(None, Reason::DaneDecided, dane(Verdict::Dane, true)),
                ok("dane"),
                Outcome::Dane,
                Source::Fresh,
                LogClass::Network,
                "example.com (zone z): dane (DANE: dane (cached)) (MTA-STS: not waited for, DANE decided)",
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
                "example.com (zone z): NOTFOUND, null MX (DANE: null MX, the domain takes no mail (cached)) (MTA-STS: no policy (remembered))",
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
                "example.com (zone z): TEMP (DANE: DANE lookup failed: DANE lookup timed out) (MTA-STS: not waited for, DANE decided)",
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
                "example.com (zone z): TEMP (DANE: DANE lookup failed: DANE lookup timed out (cached)) (MTA-STS: not waited for, DANE decided)",
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
                "example.com (zone z): TEMP (DANE: DANE lookup failed: EMFILE) (MTA-STS: not waited for, DANE decided)",
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
                "example.com (zone z): enforce policy (DANE: no DANE, no MX host has signed TLSA records (cached)) (MTA-STS: policy fetched)",
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
                "example.com (zone z): enforce policy (DANE: no DANE, no MX host has signed TLSA records (cached)) (MTA-STS: cached policy, checked within cache_grace)",
            ),
            (
                Made::Fresh(enforce(), None),
                ok(secure),
                Outcome::Secure,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached enforce policy",
            ),
            (
                Made::Fresh(Some(policy(Mode::Testing)), None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached testing policy",
            ),
            (
                Made::Fresh(None, None),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): NOTFOUND, no policy (remembered)",
            ),
            (
                Made::Fresh(None, dane(Verdict::DaneOnly, true)),
                ok("dane-only"),
                Outcome::DaneOnly,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached DANE result, dane-only",
            ),
            (
                Made::Fresh(enforce(), dane(Verdict::Dane, true)),
                ok("dane"),
                Outcome::Dane,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached DANE result, dane",
            ),
            (
                Made::Fresh(None, dane(Verdict::NullMx, true)),
                Reply::NotFound,
                Outcome::NotFound,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached DANE result, null MX, the domain takes no mail",
            ),
            (
                Made::Fresh(None, dane(Verdict::Temp(DaneFailure::Timeout), true)),
                temp("example.com: DANE lookup failed: DANE lookup timed out"),
                Outcome::Temp,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached DANE result, DANE lookup failed: DANE lookup timed out",
            ),
            (
                Made::Fresh(enforce(), dane(Verdict::NoDane(NoDane::NoTlsa), true)),
                ok(secure),
                Outcome::Secure,
                Source::Fresh,
                LogClass::Memory,
                "example.com (zone z): cached enforce policy",
            ),
            (
                Made::InvalidKey(KeyRejection::IpLiteral),
                Reply::NotFound,
                Outcome::NotFound,
                Source::InvalidKey,
                LogClass::Memory,
                "\"[192.0.2.1]\" (zone z): NOTFOUND, IP address literal",
            ),
        ];
        let opts = ReplyOptions {
            strict_testing: false,
            require_sni: false,
            tlsrpt: false,
        };
        for (made, reply, outcome, source, log, line) in cases {
            let decision = made.decision();
            let domain = match &made {
                Made::InvalidKey(_) => "[192.0.2.1]",
                _ => "example.com",
            };
            let policy_reply = |p: &Policy| render_reply(p, domain, opts).map(Arc::from);
            let rendered = render(domain, decision.class, policy_reply);
            assert_eq!(rendered, (reply, outcome), "{made:?}");
            assert_eq!(decision.source, source, "{made:?}");
            assert_eq!(decision.log, log, "{made:?}");
            let made_line = Line {
                domain,
                zone: "z",
                decision,
                outcome,
                took: Duration::from_millis(5),
            };
            assert_eq!(made_line.to_string(), line);
            // The fields name the source and class as the metrics do.
            let fields = fields(&made_line);
            let field = |k: &str| {
                fields
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(field("source"), Some(source.label()), "{made:?}");
            assert_eq!(field("class"), Some(outcome.label()), "{made:?}");
            assert_eq!(field("duration_ms"), Some("5"), "{made:?}");
            assert_eq!(
                decision.refresh_failed(),
                source == Source::StaleOnFailure,
                "{made:?}"
            );
        }
    }
}
