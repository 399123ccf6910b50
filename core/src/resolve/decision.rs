//! What an [`Answer`] decides, as values: the reply class, the source the
//! metrics count, the reason the log says and the level it is logged at
//! (RFC 8461 §2, §5; RFC 7672 §2.1.1; docs/ARCHITECTURE.md "The path of
//! one request"). `service::answer` only renders a [`Decision`] into reply
//! bytes, one metric and one log line.

use std::fmt;

use super::{Answer, DaneAnswer, Failure, Reason};
use crate::dane::{DaneFailure, Verdict};
use crate::domain::KeyRejection;
use crate::policy::Policy;

/// Where an answer came from: the `source` label of the answers metric
/// (docs/ARCHITECTURE.md "The path of one request").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Memory (or the store) within `cache_grace`, no traffic.
    Fresh,
    /// The TXT id was checked and unchanged.
    Revalidated,
    /// A policy was fetched.
    Fetched,
    /// The domain publishes no policy (found on the network).
    NoPolicy,
    /// A lookup failed; the cached, unexpired policy answered.
    StaleOnFailure,
    /// A lookup failed with nothing cached.
    Failed,
    /// The key is no domain (IP literal, parent-domain probe, invalid).
    InvalidKey,
}

/// The class of reply a request gets, before it is rendered for its zone
/// (socketmap_table(5) replies; RFC 8461 §4.2, RFC 7672 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    /// `OK` with this MTA-STS policy's parameters (RFC 8461 §4.2); a mode
    /// the zone does not enforce renders as `NOTFOUND`.
    Policy(&'a Policy),
    /// `OK dane-only`: every MX host has usable TLSA records (RFC 7672 §2.2).
    DaneOnly,
    /// `OK dane`: some MX host has TLSA records.
    Dane,
    /// `NOTFOUND`: a null MX, no mail to send (RFC 7505 §3).
    NullMx,
    /// `NOTFOUND`: no policy (RFC 8461 §3.1, or none left after a failure,
    /// or the key is no domain).
    NoPolicy,
    /// `TEMP`: Postfix retries later rather than downgrade.
    Temp(TempCause<'a>),
}

/// Why a reply is `TEMP` (RFC 8461 §5.1, RFC 7672 §2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempCause<'a> {
    /// Our own fault (overload, resources, stopped) with no cached policy:
    /// not the domain's "no policy" (RFC 8461 §5.1).
    Local(&'a Failure),
    /// The DANE lookup failed: never downgraded (RFC 7672 §2.1.1).
    Dane(&'a DaneFailure),
}

impl fmt::Display for TempCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TempCause::Local(failure) => write!(f, "{failure}"),
            TempCause::Dane(failure) => write!(f, "DANE lookup failed: {failure}"),
        }
    }
}

/// How loud an answer's log line is (docs/ARCHITECTURE.md "The path of
/// one request").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogClass {
    /// Answered from memory or the store, no traffic: debug.
    Memory,
    /// A network lookup decided: info.
    Network,
    /// The network failed: info at most once a minute per domain, else
    /// debug (a failing domain asked often cannot fill the disk).
    Failure,
    /// Our own fault: warn.
    Local,
}

/// How a decision was reached: the log line's reason (docs/ARCHITECTURE.md
/// "The path of one request").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why<'a> {
    /// The lookup coordinator answered; how its MTA-STS part was reached.
    Lookup(&'a Reason),
    /// A fresh entry of the shared index answered, with no lookup: a
    /// policy or "no policy" within `cache_grace`, a DANE result within
    /// its TTL.
    Fresh,
    /// The key is no domain (`NOTFOUND` with no lookup).
    InvalidKey(&'a KeyRejection),
}

/// What one request's answer is (RFC 8461 §2, §5; docs/ARCHITECTURE.md
/// "The path of one request"): a fresh hit's, a key's that is no domain,
/// or the lookup coordinator's [`Answer::decision`]. A small `Copy` value
/// borrowing what it describes: a fresh hit makes one with no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The class of reply.
    pub class: Class<'a>,
    /// Where it came from, for the answers metric.
    pub source: Source,
    /// How it was reached (the log's reason).
    pub why: Why<'a>,
    /// The DANE part, for a `dane: true` zone's request.
    pub dane: Option<&'a DaneAnswer>,
    /// How loud the log line is.
    pub log: LogClass,
}

impl<'a> Decision<'a> {
    /// A fresh hit of the shared index: `class` from a policy or "no
    /// policy" within `cache_grace`, or from `dane`, a DANE result within
    /// its TTL that decides (RFC 8461 §2). Counted as fresh, logged at
    /// debug (answered from memory).
    pub fn fresh(class: Class<'a>, dane: Option<&'a DaneAnswer>) -> Self {
        Decision {
            class,
            source: Source::Fresh,
            why: Why::Fresh,
            dane,
            log: LogClass::Memory,
        }
    }

    /// A key that is no domain (an IP literal, a parent-domain probe, an
    /// invalid name): `NOTFOUND` with no lookup, logged at debug.
    pub fn invalid_key(why: &'a KeyRejection) -> Self {
        Decision {
            class: Class::NoPolicy,
            source: Source::InvalidKey,
            why: Why::InvalidKey(why),
            dane: None,
            log: LogClass::Memory,
        }
    }
}

impl Decision<'_> {
    /// DANE decided the reply (`dane-only` or `dane`), not MTA-STS
    /// (RFC 8461 §2).
    pub fn by_dane(&self) -> bool {
        matches!(self.class, Class::DaneOnly | Class::Dane)
    }

    /// A cached policy answered because it could not be refreshed: RFC
    /// 8461 §3.3 asks to tell the administrator.
    pub fn refresh_failed(&self) -> bool {
        self.source == Source::StaleOnFailure && !self.by_dane()
    }
}

impl Answer {
    /// What this answer decides: a DANE verdict that decides comes first
    /// (RFC 8461 §2), else the MTA-STS policy, a local failure's `TEMP`,
    /// or no policy.
    pub fn decision(&self) -> Decision<'_> {
        let dane_class = self
            .dane
            .as_ref()
            .and_then(|d| dane_class(&d.result.verdict));
        let class = match dane_class {
            Some(class) => class,
            None => match (&self.policy, &self.reason) {
                (Some(policy), _) => Class::Policy(policy),
                (None, Reason::Fallback(failure)) if failure.is_local() => {
                    Class::Temp(TempCause::Local(failure))
                }
                (None, _) => Class::NoPolicy,
            },
        };
        let by_dane = matches!(class, Class::DaneOnly | Class::Dane);
        let source = match &self.dane {
            Some(d) if d.cached && by_dane => Source::Fresh,
            _ => source_of(&self.reason, self.policy.is_some()),
        };
        let log = match &self.dane {
            Some(d) => dane_log(d, &self.reason),
            None => sts_log(&self.reason),
        };
        Decision {
            class,
            source,
            why: Why::Lookup(&self.reason),
            dane: self.dane.as_ref(),
            log,
        }
    }
}

/// The class a DANE verdict decides, or `None` when MTA-STS decides
/// (RFC 7672 §2.2, RFC 7505 §3).
pub fn dane_class(verdict: &Verdict) -> Option<Class<'_>> {
    match verdict {
        Verdict::DaneOnly => Some(Class::DaneOnly),
        Verdict::Dane => Some(Class::Dane),
        Verdict::NullMx => Some(Class::NullMx),
        Verdict::Temp(failure) => Some(Class::Temp(TempCause::Dane(failure))),
        Verdict::NoDane(_) => None,
    }
}

/// The source of an MTA-STS answer, by how it was reached and whether a
/// policy came with it.
fn source_of(reason: &Reason, has_policy: bool) -> Source {
    match reason {
        Reason::Cached | Reason::NoPolicyRemembered => Source::Fresh,
        Reason::Confirmed => Source::Revalidated,
        // DANE answered from the network; MTA-STS still looking.
        Reason::DaneDecided => Source::Fetched,
        Reason::Fetched => Source::Fetched,
        Reason::NoPolicy(_) if has_policy => Source::StaleOnFailure,
        Reason::NoPolicy(_) => Source::NoPolicy,
        Reason::Fallback(_) | Reason::FailureBackoff | Reason::Timeout if has_policy => {
            Source::StaleOnFailure
        }
        Reason::Fallback(_) | Reason::FailureBackoff | Reason::Timeout => Source::Failed,
    }
}

/// The log class of an MTA-STS answer: answers from memory quiet, network
/// failures rate-limited, our own faults loud.
fn sts_log(reason: &Reason) -> LogClass {
    match reason {
        Reason::Cached | Reason::NoPolicyRemembered | Reason::FailureBackoff => LogClass::Memory,
        Reason::Fallback(failure) if failure.is_local() => LogClass::Local,
        Reason::Fallback(_) | Reason::Timeout => LogClass::Failure,
        _ => LogClass::Network,
    }
}

/// The log class of a `dane: true` zone's answer: as [`sts_log`], with
/// the DANE lookup counted as a network lookup unless it came from the
/// index.
fn dane_log(dane: &DaneAnswer, reason: &Reason) -> LogClass {
    match &dane.result.verdict {
        Verdict::Temp(failure) if failure.is_local() => LogClass::Local,
        Verdict::Temp(_) if dane.cached => LogClass::Memory,
        Verdict::Temp(_) => LogClass::Failure,
        _ if !dane.cached => LogClass::Network,
        _ => sts_log(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_reason() {
        use crate::dns::DnsFailure;
        use crate::resolve::NoPolicy;
        let servfail = Failure::Txt(DnsFailure::Timeout);
        assert_eq!(source_of(&Reason::Cached, true), Source::Fresh);
        assert_eq!(source_of(&Reason::Confirmed, true), Source::Revalidated);
        assert_eq!(source_of(&Reason::Fetched, true), Source::Fetched);
        assert_eq!(
            source_of(&Reason::Fallback(servfail.clone()), true),
            Source::StaleOnFailure
        );
        assert_eq!(
            source_of(&Reason::Fallback(servfail), false),
            Source::Failed
        );
        let nx = NoPolicy::NoRecord(crate::dns::NoRecordsKind::NxDomain);
        assert_eq!(source_of(&Reason::NoPolicy(nx), false), Source::NoPolicy);
    }
}
