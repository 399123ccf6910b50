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
use crate::dane::{self, Verdict};
use crate::domain::{already_normal, normalize_key, Domain};
use crate::metrics::{Metrics, Outcome, Source};
use crate::policy::{render_reply, ReplyOptions};
use crate::resolve::{Answer, DaneAnswer, Reason};
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

/// The reply a DANE verdict decides (RFC 7672 §2.2, RFC 7505 §3), or
/// `None` when the MTA-STS answer stands. No TLSRPT attributes: Postfix
/// reports DANE itself.
fn dane_reply(domain: &str, verdict: &Verdict) -> Option<Reply> {
    match verdict {
        Verdict::DaneOnly | Verdict::Dane => dane::reply_value(verdict).map(Reply::Ok),
        Verdict::NullMx => Some(Reply::NotFound),
        Verdict::Temp(failure) => Some(Reply::Temp(format!(
            "{domain}: DANE lookup failed: {failure}"
        ))),
        Verdict::NoDane(_) => None,
    }
}

/// How a DANE reply is logged.
fn dane_outcome(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::DaneOnly => "dane-only",
        Verdict::Dane => "dane",
        Verdict::NullMx => "NOTFOUND, null MX",
        Verdict::Temp(_) => "TEMP",
        Verdict::NoDane(_) => "no DANE",
    }
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
                    if let Some(reply) = dane_reply(domain, &result.verdict) {
                        log::debug!("{domain} (zone {name}): cached DANE result, {result}");
                        self.metrics.answered_from(Source::Fresh);
                        self.metrics.zone(name).count(outcome_of(&reply));
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
        let Answer {
            policy,
            reason,
            dane,
        } = if dane {
            self.engine.lookup_dane(domain.clone(), timeout).await
        } else {
            self.engine.lookup(domain.clone(), timeout).await
        };
        let decided = dane.as_ref().and_then(|d| {
            dane_reply(domain.as_str(), &d.result.verdict)
                .map(|reply| (reply, dane_outcome(&d.result.verdict).to_owned()))
        });
        let (reply, outcome) = match decided {
            Some(decided) => decided,
            None => sts_reply(&domain, policy.as_ref(), &reason, opts),
        };
        let level = match &dane {
            Some(d) => self.dane_level(&domain, d, &reason),
            None => self.sts_level(&domain, &reason),
        };
        match &dane {
            Some(d) => log::log!(
                level,
                "{domain} (zone {zone}): {outcome} (DANE: {d}) (MTA-STS: {reason})"
            ),
            None => log::log!(level, "{domain} (zone {zone}): {outcome} ({reason})"),
        }
        let source = match &dane {
            Some(d) if d.cached && decided_by_dane(&reply) => Source::Fresh,
            _ => Source::of(&reason, policy.is_some()),
        };
        self.metrics.answered_from(source);
        if source == Source::StaleOnFailure && !decided_by_dane(&reply) {
            // RFC 8461 §3.3: tell the administrator a policy could not be
            // refreshed (the cached one still answers while unexpired).
            self.metrics.refresh_failure();
            if level != log::Level::Debug {
                log::warn!("{domain}: cached policy could not be refreshed ({reason})");
            }
        }
        self.metrics.zone(&zone).count(outcome_of(&reply));
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

    /// The log level of an MTA-STS answer: network lookups at info, answers
    /// from memory at debug, failures at info at most once a minute per
    /// domain, our own faults at warn.
    fn sts_level(&self, domain: &Domain, reason: &Reason) -> log::Level {
        match reason {
            // Answered from memory or the store: no traffic.
            Reason::Cached | Reason::NoPolicyRemembered | Reason::FailureBackoff => {
                log::Level::Debug
            }
            Reason::Fallback(failure) if failure.is_local() => log::Level::Warn,
            Reason::Fallback(_) | Reason::Timeout
                if !self.failure_log.allow(domain, (self.wall_ms)()) =>
            {
                log::Level::Debug
            }
            _ => log::Level::Info,
        }
    }

    /// The log level of a `dane: true` zone's answer: as
    /// [`Service::sts_level`], with the DANE lookup counted as a network
    /// lookup unless it came from the index.
    fn dane_level(&self, domain: &Domain, dane: &DaneAnswer, reason: &Reason) -> log::Level {
        match &dane.result.verdict {
            Verdict::Temp(failure) if failure.is_local() => log::Level::Warn,
            Verdict::Temp(_) if dane.cached => log::Level::Debug,
            Verdict::Temp(_) if !self.failure_log.allow(domain, (self.wall_ms)()) => {
                log::Level::Debug
            }
            Verdict::Temp(_) => log::Level::Info,
            _ if !dane.cached => log::Level::Info,
            _ => self.sts_level(domain, reason),
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

/// The metrics outcome of a reply.
fn outcome_of(reply: &Reply) -> Outcome {
    match reply {
        Reply::Ok(value) if value.starts_with("dane-only") => Outcome::DaneOnly,
        Reply::Ok(value) if value.starts_with("dane") => Outcome::Dane,
        Reply::Ok(_) => Outcome::Secure,
        Reply::Temp(_) | Reply::Timeout(_) => Outcome::Temp,
        Reply::Perm(_) => Outcome::Perm,
        Reply::NotFound => Outcome::NotFound,
    }
}

/// True when the reply came from DANE, not from MTA-STS.
fn decided_by_dane(reply: &Reply) -> bool {
    matches!(outcome_of(reply), Outcome::DaneOnly | Outcome::Dane)
}

/// The reply an MTA-STS answer gives in a zone with `opts`, and how it is
/// logged (RFC 8461 §4.2, §5).
fn sts_reply(
    domain: &Domain,
    policy: Option<&crate::policy::Policy>,
    reason: &Reason,
    opts: ReplyOptions,
) -> (Reply, String) {
    match policy {
        None => match reason {
            // Our fault, not the domain's: Postfix retries later.
            Reason::Fallback(failure) if failure.is_local() => (
                Reply::Temp(format!("{domain}: {failure}")),
                "TEMP".to_owned(),
            ),
            _ => (Reply::NotFound, "NOTFOUND, no policy".to_owned()),
        },
        Some(policy) => match render_reply(policy, domain.as_str(), opts) {
            Some(value) => (Reply::Ok(value.into()), format!("{} policy", policy.mode)),
            None => (Reply::NotFound, format!("NOTFOUND, {} policy", policy.mode)),
        },
    }
}
