//! The steps of a DANE lookup (RFC 7672 §2.2) as pure functions: each
//! takes DNS results (asked with the DO bit; the AD bit means secure) and
//! says what to ask next or what was decided, noting the TTLs involved.

use super::result::{DaneFailure, DaneResult, HostDane, HostReport, NoDane, Verdict};
use super::ttl::Ttl;
use super::{MAX_MX_HOSTS, TLSA_PREFIX};
use crate::dns::DnsFailure;
use crate::dns::{Answer, Answered, NoRecordsKind, QueryType, TlsaRecord};
use crate::domain::is_valid_hostname;

/// The result of one DNSSEC query as the steps take it.
pub type Lookup = Result<Answered, DnsFailure>;

/// What the MX answer decided (RFC 7672 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxStep {
    /// Decided with no host to check.
    Done(DaneResult),
    /// Check these hosts.
    Hosts(HostPlan),
}

/// The MX hosts to check and what the MX answer contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// The hosts in preference order, each once (at most
    /// [`MAX_MX_HOSTS`]).
    pub hosts: Vec<String>,
    /// The domain has no MX records (secure NODATA) and is its own host.
    pub implicit_mx: bool,
    /// The MX answer had more hosts than are checked.
    pub more_hosts: bool,
    /// The MX answer's TTL.
    pub ttl: Ttl,
}

/// What a host's address answers decided (RFC 7672 §2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressStep {
    /// Decided with no TLSA query.
    Done(HostDane),
    /// Ask TLSA at these names in turn (the CNAME-expanded host's first,
    /// then the host's own), until one has TLSA records.
    Tlsa(Vec<String>),
}

/// What a TLSA answer decided (RFC 7672 §2.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaStep {
    /// The host's status.
    Done(HostDane),
    /// No TLSA records here: ask the next name.
    TryNext,
}

fn dns_failure(name: &str, qtype: QueryType, cause: DnsFailure) -> DaneFailure {
    DaneFailure::Dns {
        name: name.to_owned(),
        qtype,
        cause,
    }
}

/// The TLSA name of an SMTP server, `_25._tcp.<host>` (RFC 7672 §2.2.3),
/// or `None` when `host` is no valid host name or the result would be too
/// long a name.
pub fn tlsa_name(host: &str) -> Option<String> {
    let name = format!("{TLSA_PREFIX}{host}");
    (is_valid_hostname(host) && is_valid_hostname(&name)).then_some(name)
}

/// The MX answer for `domain` (RFC 7672 §2.2.1): a failure is `TEMP`;
/// NXDOMAIN or an insecure answer is "no DANE"; secure NODATA makes the
/// domain its own host (implicit MX); a secure null MX (RFC 7505) is
/// `NOTFOUND`; secure MX records give the hosts to check, in preference
/// order (RFC 5321 §5.1).
pub fn after_mx(domain: &str, mx: Lookup) -> MxStep {
    let answered = match mx {
        Ok(answered) => answered,
        Err(cause) => {
            return MxStep::Done(DaneResult::failed(dns_failure(
                domain,
                QueryType::Mx,
                cause,
            )))
        }
    };
    let mut ttl = Ttl::new();
    ttl.note(answered.ttl);
    let done = |verdict| MxStep::Done(DaneResult::decided(verdict, ttl.duration()));
    match answered.answer {
        Answer::NoRecords(NoRecordsKind::NxDomain) => done(Verdict::NoDane(NoDane::NxDomain)),
        _ if !answered.authentic => done(Verdict::NoDane(NoDane::MxInsecure)),
        Answer::NoRecords(NoRecordsKind::NoData) => MxStep::Hosts(HostPlan {
            hosts: vec![domain.to_owned()],
            implicit_mx: true,
            more_hosts: false,
            ttl,
        }),
        Answer::Mx(mut records) => {
            // A null MX among real ones is ignored; alone it means no mail.
            records.retain(|r| !r.is_null());
            if records.is_empty() {
                return done(Verdict::NullMx);
            }
            records.sort_by_key(|r| r.preference);
            let mut hosts: Vec<String> = Vec::new();
            for r in records {
                if !hosts.contains(&r.exchange) {
                    hosts.push(r.exchange);
                }
            }
            let more_hosts = hosts.len() > MAX_MX_HOSTS;
            hosts.truncate(MAX_MX_HOSTS);
            MxStep::Hosts(HostPlan {
                hosts,
                implicit_mx: false,
                more_hosts,
                ttl,
            })
        }
        Answer::Txt(_) | Answer::Addresses(_) | Answer::Tlsa(_) | Answer::Soa => {
            MxStep::Done(DaneResult::failed(dns_failure(
                domain,
                QueryType::Mx,
                DnsFailure::UnexpectedAnswer,
            )))
        }
    }
}

/// The A and AAAA answers for MX host `host` (RFC 7672 §2.2.2): a failure
/// is `TEMP`; both must be secure and hold an address, else the host has
/// no DANE. With a CNAME'd host the TLSA names are the expanded name's,
/// then the host's own.
pub fn after_addresses(
    host: &str,
    a: Lookup,
    aaaa: Lookup,
    ttl: &mut Ttl,
) -> Result<AddressStep, DaneFailure> {
    let a = a.map_err(|cause| dns_failure(host, QueryType::A, cause))?;
    let aaaa = aaaa.map_err(|cause| dns_failure(host, QueryType::Aaaa, cause))?;
    ttl.note(a.ttl);
    ttl.note(aaaa.ttl);
    if !(a.authentic && aaaa.authentic) {
        return Ok(AddressStep::Done(HostDane::AddressesInsecure));
    }
    let with_addresses: Vec<&Answered> = [&a, &aaaa]
        .into_iter()
        .filter(|x| matches!(x.answer, Answer::Addresses(_)))
        .collect();
    if with_addresses.is_empty() {
        return Ok(AddressStep::Done(HostDane::NoAddress));
    }
    let Some(own) = tlsa_name(host) else {
        return Ok(AddressStep::Done(HostDane::InvalidName));
    };
    let expanded = with_addresses
        .iter()
        .find_map(|x| x.canonical.as_deref())
        .filter(|c| *c != host)
        .and_then(tlsa_name);
    let mut names = Vec::with_capacity(2);
    names.extend(expanded);
    names.push(own);
    Ok(AddressStep::Tlsa(names))
}

/// The TLSA answer at `name` (RFC 7672 §2.2.3, §3.1): a failure is
/// `TEMP`; secure records make the host usable (some usable) or "has
/// TLSA" (none usable); secure NODATA/NXDOMAIN or an insecure answer is no
/// DANE, unless a further name (`last` false) is to be asked.
pub fn after_tlsa(
    name: &str,
    tlsa: Lookup,
    last: bool,
    ttl: &mut Ttl,
) -> Result<TlsaStep, DaneFailure> {
    let answered = tlsa.map_err(|cause| dns_failure(name, QueryType::Tlsa, cause))?;
    ttl.note(answered.ttl);
    let status = match answered.answer {
        _ if !answered.authentic => HostDane::TlsaInsecure,
        Answer::NoRecords(_) => HostDane::NoTlsa,
        Answer::Tlsa(records) => {
            let usable = records.iter().filter(|r| is_usable(r)).count();
            let tlsa_name = name.to_owned();
            if usable > 0 {
                HostDane::Usable {
                    tlsa_name,
                    usable,
                    total: records.len(),
                }
            } else {
                HostDane::Unusable {
                    tlsa_name,
                    total: records.len(),
                }
            }
        }
        Answer::Txt(_) | Answer::Addresses(_) | Answer::Mx(_) | Answer::Soa => {
            return Err(dns_failure(
                name,
                QueryType::Tlsa,
                DnsFailure::UnexpectedAnswer,
            ))
        }
    };
    Ok(if status.has_tlsa() || last {
        TlsaStep::Done(status)
    } else {
        TlsaStep::TryNext
    })
}

/// A TLSA record usable for SMTP (RFC 7672 §3.1; RFC 7671 §5): usage
/// DANE-TA(2) or DANE-EE(3), selector Cert(0) or SPKI(1), matching type
/// Full(0) with data, SHA2-256(1) with a 32-byte digest or SHA2-512(2)
/// with a 64-byte digest.
pub fn is_usable(r: &TlsaRecord) -> bool {
    let digest_ok = match r.matching {
        0 => !r.data.is_empty(),
        1 => r.data.len() == 32,
        2 => r.data.len() == 64,
        _ => false,
    };
    matches!(r.usage, 2 | 3) && matches!(r.selector, 0 | 1) && digest_ok
}

/// The verdict from every checked host (RFC 7672 §2.2; Postfix's levels):
/// all usable is `dane-only` (unless some hosts went unchecked), any with
/// TLSA records is `dane`, else no DANE. The TTL is the smallest of the
/// plan's and the hosts'.
pub fn conclude(plan: &HostPlan, hosts: Vec<(HostReport, Ttl)>) -> DaneResult {
    let mut ttl = plan.ttl;
    let mut reports = Vec::with_capacity(hosts.len());
    for (report, host_ttl) in hosts {
        ttl.merge(host_ttl);
        reports.push(report);
    }
    let all_usable = !reports.is_empty() && reports.iter().all(|r| r.dane.is_usable());
    let verdict = if all_usable && !plan.more_hosts {
        Verdict::DaneOnly
    } else if reports.iter().any(|r| r.dane.has_tlsa()) {
        Verdict::Dane
    } else {
        Verdict::NoDane(NoDane::NoTlsa)
    };
    DaneResult {
        verdict,
        hosts: reports,
        implicit_mx: plan.implicit_mx,
        more_hosts: plan.more_hosts,
        ttl: ttl.duration(),
    }
}
