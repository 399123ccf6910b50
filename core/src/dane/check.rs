//! Is the resolver validating? DANE trusts the AD bit of the configured
//! nameserver (RFC 7672 §2.1); a resolver that does not validate (a
//! forwarder that strips AD, a stub) silently turns DANE off, and one that
//! passes on an AD bit it did not check makes it trust forged records. The
//! sans-IO verdict from the answers to two questions
//! (docs/ARCHITECTURE.md "Operations"): the root zone's SOA asked with DO
//! (the root is signed, so a validating resolver sets AD, RFC 4035
//! §3.2.3), and, when configured, a name whose signatures are broken on
//! purpose (a validating resolver answers it SERVFAIL, RFC 4035 §5.5).
//! `service::check_dnssec` asks.

use crate::dns::{Answered, DnsError, DnsFailure, QueryType};

/// The name asked first: the root zone, signed on the Internet and in the
/// test world (RFC 4035 §3.2.3: a validating resolver sets AD on its SOA).
pub const SIGNED_NAME: &str = ".";

/// The type asked at [`SIGNED_NAME`] (with the DO bit, RFC 3225 §3).
pub const SIGNED_TYPE: QueryType = QueryType::Soa;

/// The type asked at the configured test name (with the DO bit; a
/// validating resolver answers a bogus name SERVFAIL, RFC 4035 §5.5).
pub const TEST_TYPE: QueryType = QueryType::A;

/// What to do about a resolver that does not validate, in every warning.
const ADVICE: &str = "point resolver.nameservers (or /etc/resolv.conf) at a local \
     validating resolver such as unbound, the same one Postfix uses (README.md \
     \"Postfix and the daemon must use the same validating resolver\")";

/// The outcome of the DNSSEC self-check (docs/ARCHITECTURE.md
/// "Operations"; RFC 7672 §2.1: DANE rests on the resolver's AD bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnssecCheck {
    /// The root's SOA came with the AD bit and the test name, when one is
    /// configured (`Some`), failed validation as it must.
    Validating {
        /// The test name that failed validation, if one was asked.
        test_name: Option<String>,
    },
    /// The resolver answered but does not validate.
    NotValidating(NotValidating),
    /// The resolver gave no usable answer for `name` (timeout, REFUSED,
    /// SERVFAIL at the root, transport error).
    NoAnswer {
        /// The name asked (`.` for the root).
        name: String,
        /// Why there was no answer.
        failure: DnsFailure,
    },
}

/// How a resolver showed that it does not validate (RFC 6840 §5.7: AD only
/// from a resolver that checked the signatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotValidating {
    /// The root zone's SOA, asked with DO, came without the AD bit: no DANE
    /// answer is ever given.
    NoAdBit,
    /// The test name, whose signatures are broken, was answered rather
    /// than refused with SERVFAIL: an AD bit from this resolver is not its
    /// own check (it may pass on another resolver's).
    BogusAnswered {
        /// The test name.
        name: String,
    },
}

/// The verdict after the root's SOA (RFC 4035 §3.2.3): `Some` when it
/// decides (no answer, or no AD bit), `None` when the resolver validated
/// it and the test name, if any, is to be asked next.
pub fn after_signed(root: Result<&Answered, &DnsFailure>) -> Option<DnssecCheck> {
    match root {
        Err(failure) => Some(DnssecCheck::NoAnswer {
            name: SIGNED_NAME.to_owned(),
            failure: failure.clone(),
        }),
        Ok(answered) if !answered.authentic => {
            Some(DnssecCheck::NotValidating(NotValidating::NoAdBit))
        }
        Ok(_) => None,
    }
}

/// The verdict from the answer for `name`, whose signatures are broken: a
/// validating resolver answers SERVFAIL (RFC 4035 §5.5); NOERROR or
/// NXDOMAIN, with or without AD, means it does not validate; any other
/// failure says nothing about validation, so there is no answer.
pub fn after_test_name(name: &str, answer: Result<&Answered, &DnsFailure>) -> DnssecCheck {
    match answer {
        Err(DnsFailure::Server(DnsError::ServFail)) => DnssecCheck::Validating {
            test_name: Some(name.to_owned()),
        },
        Ok(_) => DnssecCheck::NotValidating(NotValidating::BogusAnswered {
            name: name.to_owned(),
        }),
        Err(failure) => DnssecCheck::NoAnswer {
            name: name.to_owned(),
            failure: failure.clone(),
        },
    }
}

impl DnssecCheck {
    /// True when DANE answers can rest on this resolver's AD bit.
    pub fn is_validating(&self) -> bool {
        matches!(self, DnssecCheck::Validating { .. })
    }

    /// A short machine-readable status: `validating`, `not_validating`,
    /// `no_answer`.
    pub fn label(&self) -> &'static str {
        match self {
            DnssecCheck::Validating { .. } => "validating",
            DnssecCheck::NotValidating(_) => "not_validating",
            DnssecCheck::NoAnswer { .. } => "no_answer",
        }
    }
}

/// Which run of the self-check is current (docs/ARCHITECTURE.md
/// "Operations"): the daemon starts one after READY and one on each SIGHUP,
/// and a run waiting on a silent resolver may end after a later one. Each
/// run supersedes the ones before; a superseded run's verdict is dropped,
/// so it never overwrites a newer verdict or the removal of the gauge.
#[derive(Debug, Default)]
pub struct CheckRuns {
    latest: u64,
}

impl CheckRuns {
    /// Starts a run, superseding every run before it; its ticket.
    pub fn begin(&mut self) -> u64 {
        self.latest += 1;
        self.latest
    }

    /// True while `run` is the latest run begun.
    pub fn is_current(&self, run: u64) -> bool {
        run == self.latest
    }
}

/// The log line: what was found and, when it is not validating, what to do.
impl std::fmt::Display for DnssecCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnssecCheck::Validating { test_name: None } => f.write_str(
                "the resolver validates DNSSEC (the root zone's SOA came with the AD bit)",
            ),
            DnssecCheck::Validating {
                test_name: Some(name),
            } => write!(
                f,
                "the resolver validates DNSSEC (the root zone's SOA came with the AD bit, \
                 {name} failed validation with SERVFAIL)"
            ),
            DnssecCheck::NotValidating(NotValidating::NoAdBit) => write!(
                f,
                "the resolver does not validate DNSSEC: the root zone's SOA, asked with the \
                 DO bit, came without the AD bit, so `dane: true` zones never answer DANE \
                 and may disagree with Postfix's own DANE checks; {ADVICE}"
            ),
            DnssecCheck::NotValidating(NotValidating::BogusAnswered { name }) => write!(
                f,
                "the resolver does not validate DNSSEC: {name}, whose signatures are broken, \
                 was answered instead of failing with SERVFAIL, so its AD bit cannot be \
                 trusted for DANE; {ADVICE}"
            ),
            DnssecCheck::NoAnswer { name, failure } => write!(
                f,
                "the resolver did not answer the DNSSEC check ({name} {}: {failure}): DANE \
                 lookups answer TEMP until it does; check that resolver.nameservers (or \
                 /etc/resolv.conf) names a running resolver",
                if name == SIGNED_NAME {
                    SIGNED_TYPE
                } else {
                    TEST_TYPE
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Answer, NoRecordsKind};

    #[test]
    fn a_later_run_supersedes_an_earlier_one() {
        let mut runs = CheckRuns::default();
        let at_ready = runs.begin();
        assert!(runs.is_current(at_ready));
        let on_sighup = runs.begin();
        // The run at READY ends last: its verdict is dropped.
        assert!(!runs.is_current(at_ready));
        assert!(runs.is_current(on_sighup));
        let removed = runs.begin();
        assert!(!runs.is_current(on_sighup));
        assert!(runs.is_current(removed));
    }

    fn answered(answer: Answer, authentic: bool) -> Answered {
        Answered {
            answer,
            authentic,
            ttl: 60,
            canonical: None,
        }
    }

    #[test]
    fn the_root_with_ad_goes_on_to_the_test_name() {
        assert_eq!(after_signed(Ok(&answered(Answer::Soa, true))), None);
    }

    #[test]
    fn the_root_without_ad_is_not_validating() {
        let check = after_signed(Ok(&answered(Answer::Soa, false)));
        assert_eq!(
            check,
            Some(DnssecCheck::NotValidating(NotValidating::NoAdBit))
        );
        let text = check.map(|c| c.to_string()).unwrap_or_default();
        assert!(text.contains("without the AD bit"), "{text}");
        assert!(
            text.contains("unbound, the same one Postfix uses"),
            "{text}"
        );
    }

    #[test]
    fn no_answer_at_the_root_is_its_own_verdict() {
        for failure in [
            DnsFailure::Timeout,
            DnsFailure::Server(DnsError::Refused),
            DnsFailure::Server(DnsError::ServFail),
            DnsFailure::Transport("refused".into()),
        ] {
            let check = after_signed(Err(&failure));
            let Some(check) = check else {
                panic!("{failure:?} decided nothing");
            };
            assert_eq!(check.label(), "no_answer");
            assert!(!check.is_validating());
            let text = check.to_string();
            assert!(text.contains("did not answer"), "{text}");
            assert!(text.contains(". SOA"), "{text}");
        }
    }

    #[test]
    fn the_test_name_must_fail_with_servfail() {
        let name = "dnssec-failed.example";
        let check = after_test_name(name, Err(&DnsFailure::Server(DnsError::ServFail)));
        assert!(check.is_validating());
        assert!(check.to_string().contains(name));
        for answer in [
            answered(Answer::Addresses(vec![[192, 0, 2, 1].into()]), false),
            answered(Answer::Addresses(vec![[192, 0, 2, 1].into()]), true),
            answered(Answer::NoRecords(NoRecordsKind::NxDomain), false),
        ] {
            let check = after_test_name(name, Ok(&answer));
            assert_eq!(
                check,
                DnssecCheck::NotValidating(NotValidating::BogusAnswered { name: name.into() })
            );
            assert_eq!(check.label(), "not_validating");
            assert!(check.to_string().contains("cannot be trusted"));
        }
        let check = after_test_name(name, Err(&DnsFailure::Timeout));
        assert_eq!(check.label(), "no_answer");
        assert!(check
            .to_string()
            .contains(&format!("{name} A: DNS timeout")));
    }
}
