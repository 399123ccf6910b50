//! What a DANE lookup found (RFC 7672 §2.2), as values: the log line says
//! `Display`, the reply comes from [`Verdict`].

use std::fmt;
use std::time::Duration;

use crate::dns::DnsFailure;
use crate::dns::QueryType;

/// The DANE answer for a domain (RFC 7672 §2.2, RFC 8461 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every MX host has a usable TLSA record: `OK dane-only`.
    DaneOnly,
    /// Some MX host has TLSA records (usable or not), not all usable:
    /// `OK dane`.
    Dane,
    /// A secure null MX (RFC 7505 §3): the domain takes no mail,
    /// `NOTFOUND `.
    NullMx,
    /// DANE does not apply: the MTA-STS answer stands.
    NoDane(NoDane),
    /// A lookup failed: `TEMP` (RFC 7672 §2.1.1).
    Temp(DaneFailure),
}

impl Verdict {
    /// True when the verdict alone decides the reply (everything but
    /// [`Verdict::NoDane`]): the MTA-STS answer is not waited for.
    pub fn decides(&self) -> bool {
        !matches!(self, Verdict::NoDane(_))
    }

    /// A short label for logs and metrics: `dane-only`, `dane`, `null-mx`,
    /// `no-dane`, `temp`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::DaneOnly => "dane-only",
            Verdict::Dane => "dane",
            Verdict::NullMx => "null-mx",
            Verdict::NoDane(_) => "no-dane",
            Verdict::Temp(_) => "temp",
        }
    }
}

/// Why DANE does not apply to a domain (RFC 7672 §2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDane {
    /// The MX answer is not DNSSEC-secure (AD clear).
    MxInsecure,
    /// The domain does not exist (NXDOMAIN).
    NxDomain,
    /// No MX host has secure TLSA records.
    NoTlsa,
}

impl fmt::Display for NoDane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoDane::MxInsecure => "MX records not DNSSEC-signed",
            NoDane::NxDomain => "domain does not exist (NXDOMAIN)",
            NoDane::NoTlsa => "no MX host has signed TLSA records",
        })
    }
}

/// Why a DANE lookup could not decide (RFC 7672 §2.1.1: a DNS failure is
/// never read as "no DANE").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneFailure {
    /// A DNS query failed (SERVFAIL, which a validating resolver also
    /// answers for bogus data; timeouts of every try; ...).
    Dns {
        /// The name asked.
        name: String,
        /// The type asked.
        qtype: QueryType,
        /// What went wrong.
        cause: DnsFailure,
    },
    /// The lookup did not finish within the zone's `timeout`.
    Timeout,
    /// A local fault (overload, resolver stopped): not the domain's.
    Local(String),
}

impl DaneFailure {
    /// True when the failure is ours, not the network's: not remembered,
    /// so the next request tries again.
    pub fn is_local(&self) -> bool {
        match self {
            DaneFailure::Local(_) => true,
            DaneFailure::Dns { cause, .. } => {
                matches!(cause, DnsFailure::Local(_) | DnsFailure::NoNameservers)
            }
            DaneFailure::Timeout => false,
        }
    }
}

impl fmt::Display for DaneFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaneFailure::Dns { name, qtype, cause } => write!(f, "{qtype} {name}: {cause}"),
            DaneFailure::Timeout => f.write_str("DANE lookup timed out"),
            DaneFailure::Local(why) => f.write_str(why),
        }
    }
}

/// What one MX host has for DANE (RFC 7672 §2.2.2, §2.2.3, §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDane {
    /// Secure TLSA records of which `usable` are usable for SMTP.
    Usable {
        /// Where the records were found (`_25._tcp.<host>`).
        tlsa_name: String,
        /// Usable records.
        usable: usize,
        /// All records.
        total: usize,
    },
    /// Secure TLSA records, none usable ("has TLSA"): Postfix still
    /// requires TLS to this host.
    Unusable {
        /// Where the records were found.
        tlsa_name: String,
        /// All records.
        total: usize,
    },
    /// Secure NODATA or NXDOMAIN for the TLSA name(s).
    NoTlsa,
    /// The TLSA answer is not DNSSEC-secure.
    TlsaInsecure,
    /// The host's A/AAAA answers are not DNSSEC-secure.
    AddressesInsecure,
    /// The host has no A or AAAA record.
    NoAddress,
    /// The host name (or its TLSA name) is not a valid DNS name.
    InvalidName,
}

impl HostDane {
    /// Usable TLSA records: this host is DANE-authenticated.
    pub fn is_usable(&self) -> bool {
        matches!(self, HostDane::Usable { .. })
    }

    /// Secure TLSA records, usable or not.
    pub fn has_tlsa(&self) -> bool {
        matches!(self, HostDane::Usable { .. } | HostDane::Unusable { .. })
    }

    /// A short label: `usable`, `unusable`, `no-tlsa`, `tlsa-insecure`,
    /// `address-insecure`, `no-address`, `invalid-name`.
    pub fn label(&self) -> &'static str {
        match self {
            HostDane::Usable { .. } => "usable",
            HostDane::Unusable { .. } => "unusable",
            HostDane::NoTlsa => "no-tlsa",
            HostDane::TlsaInsecure => "tlsa-insecure",
            HostDane::AddressesInsecure => "address-insecure",
            HostDane::NoAddress => "no-address",
            HostDane::InvalidName => "invalid-name",
        }
    }
}

impl fmt::Display for HostDane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostDane::Usable {
                tlsa_name,
                usable,
                total,
            } => write!(
                f,
                "usable ({usable} of {total} TLSA records at {tlsa_name})"
            ),
            HostDane::Unusable { tlsa_name, total } => {
                write!(f, "TLSA records but none usable ({total} at {tlsa_name})")
            }
            HostDane::NoTlsa => f.write_str("no TLSA records"),
            HostDane::TlsaInsecure => f.write_str("TLSA records not DNSSEC-signed"),
            HostDane::AddressesInsecure => f.write_str("addresses not DNSSEC-signed"),
            HostDane::NoAddress => f.write_str("no address"),
            HostDane::InvalidName => f.write_str("not a valid host name"),
        }
    }
}

/// One MX host and what it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// The MX exchange (or the domain itself for an implicit MX).
    pub host: String,
    /// Its DANE status.
    pub dane: HostDane,
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.host, self.dane)
    }
}

/// The outcome of one DANE lookup for a domain (RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneResult {
    /// The answer.
    pub verdict: Verdict,
    /// What each MX host checked has (empty when the MX answer decided).
    pub hosts: Vec<HostReport>,
    /// The domain has no MX records and is its own host (RFC 7672 §2.2.1).
    pub implicit_mx: bool,
    /// More MX hosts than were checked ([`super::MAX_MX_HOSTS`]).
    pub more_hosts: bool,
    /// How long the result may be cached: the smallest TTL of the records
    /// that decided it, within [`super::MIN_TTL`]..=[`super::MAX_TTL`].
    pub ttl: Duration,
}

impl DaneResult {
    /// A result decided with no host checked.
    pub fn decided(verdict: Verdict, ttl: Duration) -> Self {
        DaneResult {
            verdict,
            hosts: Vec::new(),
            implicit_mx: false,
            more_hosts: false,
            ttl,
        }
    }

    /// A failed lookup.
    pub fn failed(failure: DaneFailure) -> Self {
        DaneResult::decided(Verdict::Temp(failure), super::MIN_TTL)
    }
}

impl fmt::Display for DaneResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::DaneOnly => f.write_str("dane-only")?,
            Verdict::Dane => f.write_str("dane")?,
            Verdict::NullMx => f.write_str("null MX, the domain takes no mail")?,
            Verdict::NoDane(why) => write!(f, "no DANE, {why}")?,
            Verdict::Temp(why) => return write!(f, "DANE lookup failed: {why}"),
        }
        if self.implicit_mx {
            f.write_str(" (no MX, the domain is its own host)")?;
        }
        for (i, host) in self.hosts.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{host}")?;
        }
        if self.more_hosts {
            write!(
                f,
                "; more than {} MX hosts, the rest unchecked",
                super::MAX_MX_HOSTS
            )?;
        }
        Ok(())
    }
}
