//! Why a lookup found no policy or failed, as values: the log line says
//! `Display`, metrics count by [`Failure::kind`] (RFC 8461 §3.1 "no policy"
//! versus §3.3 fetch failures, which fall back to a cached policy).

use crate::dns::{DnsFailure, NoRecordsKind};
use crate::http::HttpError;
use crate::policy::PolicyError;
use crate::txt::TxtError;

/// Why a request that waited for a lookup slot until its deadline failed:
/// a [`Failure::Local`] (or DANE's local failure), never "no policy".
pub(super) const OVERLOADED: &str = "too many lookups in flight";

/// Why a domain publishes no policy (RFC 8461 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPolicy {
    /// NXDOMAIN or no TXT record at `_mta-sts.<domain>`.
    #[error("no TXT record ({0:?})")]
    NoRecord(NoRecordsKind),
    /// TXT records, but not exactly one valid `v=STSv1` record.
    #[error("TXT record: {0}")]
    Record(TxtError),
}

/// Why a lookup step failed: not "no policy" (RFC 8461 §5.1: fall back to
/// the cached policy while it is unexpired).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The `_mta-sts` TXT lookup failed.
    #[error("TXT lookup: {0}")]
    Txt(DnsFailure),
    /// The policy host's address lookup failed.
    #[error("policy host {host}: {cause}")]
    HostDns {
        /// `mta-sts.<domain>`.
        host: String,
        /// The DNS failure.
        cause: DnsFailure,
    },
    /// The policy host has no A/AAAA record.
    #[error("policy host {0} has no address")]
    NoAddress(String),
    /// TCP or TLS (certificate validation included) failed, or the stream
    /// broke.
    #[error("policy host {host}: {reason}")]
    Connect {
        /// `mta-sts.<domain>`.
        host: String,
        /// The IO or TLS error's message.
        reason: String,
    },
    /// The HTTP response was refused (status, type, size, framing).
    #[error("policy fetch: {0}")]
    Http(HttpError),
    /// The policy file is invalid (RFC 8461 §3.2).
    #[error("invalid policy: {0}")]
    Policy(PolicyError),
    /// A local fault (resolver stopped, out of resources): never "no policy".
    #[error("{0}")]
    Local(String),
}

impl Failure {
    /// True when the failure is ours (resources, overload, shutdown), not
    /// the network's: Postfix gets `TEMP` and retries, instead of sending
    /// without the policy.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Failure::Local(_)
                | Failure::Txt(DnsFailure::Local(_) | DnsFailure::NoNameservers)
                | Failure::HostDns {
                    cause: DnsFailure::Local(_) | DnsFailure::NoNameservers,
                    ..
                }
        )
    }

    /// A short label for metrics and summaries: `dns`, `no_address`,
    /// `connect`, `http_status`, `too_big`, `http`, `invalid_policy`, `local`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Txt(_) | Failure::HostDns { .. } => "dns",
            Failure::NoAddress(_) => "no_address",
            Failure::Connect { .. } => "connect",
            Failure::Http(HttpError::Status(_) | HttpError::Redirect { .. }) => "http_status",
            Failure::Http(HttpError::BodyTooLarge { .. }) => "too_big",
            Failure::Http(_) => "http",
            Failure::Policy(_) => "invalid_policy",
            Failure::Local(_) => "local",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::DnsError;

    #[test]
    fn only_our_own_faults_are_local() {
        assert!(Failure::Local("overloaded".into()).is_local());
        assert!(Failure::Txt(DnsFailure::Local("EMFILE".into())).is_local());
        assert!(Failure::Txt(DnsFailure::NoNameservers).is_local());
        assert!(!Failure::Txt(DnsFailure::Timeout).is_local());
        assert!(!Failure::Txt(DnsFailure::Server(DnsError::ServFail)).is_local());
        assert!(!Failure::NoAddress("mta-sts.example".into()).is_local());
        assert_eq!(Failure::Http(HttpError::Status(404)).kind(), "http_status");
    }
}
