//! The network half of a DANE lookup (RFC 7672 §2.2): the MX, A/AAAA and
//! TLSA queries with the DO bit, asked in the order the sans-IO steps of
//! [`crate::dane`] say, every MX host at once; and the DNSSEC self-check
//! ([`check_dnssec`]).

use super::{with_timeout, DnsClient, Runtime};
use crate::dane::{
    self, AddressStep, DaneFailure, DaneResult, DnssecCheck, HostDane, HostReport, MxStep,
    TlsaStep, Ttl,
};
use crate::dns::DnsFailure;
use crate::dns::{Answered, QueryType};
use crate::domain::Domain;
use futures::future::try_join_all;

/// Decide whether mail to `domain` goes over DANE (RFC 7672 §2.2): MX
/// first, then every MX host's addresses and TLSA records at once. Not
/// bounded in time: the caller applies the zone's `timeout`.
pub async fn lookup_dane<R: Runtime>(dns: &DnsClient<R>, domain: &Domain) -> DaneResult {
    let mx = ask(dns, domain.as_str(), QueryType::Mx).await;
    let plan = match dane::after_mx(domain.as_str(), mx) {
        MxStep::Done(result) => return result,
        MxStep::Hosts(plan) => plan,
    };
    // The first failure decides (`TEMP`): the other hosts are not waited for.
    match try_join_all(plan.hosts.iter().map(|host| check_host(dns, host))).await {
        Ok(hosts) => dane::conclude(&plan, hosts),
        Err(failure) => DaneResult::failed(failure),
    }
}

/// Is the resolver validating? (docs/ARCHITECTURE.md "Operations"): the
/// root zone's SOA with the DO bit, then, when the root came with AD and
/// `test_name` is given, that name, which must fail validation (RFC 4035
/// §3.2.3, §5.5). Each query is bounded by `limit` (the nameservers'
/// rounds may take longer); the verdict says which one went unanswered.
pub async fn check_dnssec<R: Runtime>(
    dns: &DnsClient<R>,
    test_name: Option<&str>,
    limit: std::time::Duration,
) -> DnssecCheck {
    let bounded = |name, qtype| async move {
        with_timeout(dns.runtime(), limit, ask(dns, name, qtype))
            .await
            .unwrap_or(Err(DnsFailure::Timeout))
    };
    let root = bounded(dane::SIGNED_NAME, dane::SIGNED_TYPE).await;
    if let Some(verdict) = dane::after_signed(root.as_ref()) {
        return verdict;
    }
    match test_name {
        None => DnssecCheck::Validating { test_name: None },
        Some(name) => {
            let answer = bounded(name, dane::TEST_TYPE).await;
            dane::after_test_name(name, answer.as_ref())
        }
    }
}

/// One MX host: its A and AAAA records at once, then TLSA (RFC 7672
/// §2.2.2, §2.2.3), with the smallest TTL involved.
async fn check_host<R: Runtime>(
    dns: &DnsClient<R>,
    host: &str,
) -> Result<(HostReport, Ttl), DaneFailure> {
    let mut ttl = Ttl::new();
    let report = |dane: HostDane| HostReport {
        host: host.to_owned(),
        dane,
    };
    if dane::tlsa_name(host).is_none() {
        return Ok((report(HostDane::InvalidName), ttl));
    }
    let (a, aaaa) = futures::join!(
        ask(dns, host, QueryType::A),
        ask(dns, host, QueryType::Aaaa)
    );
    let names = match dane::after_addresses(host, a, aaaa, &mut ttl)? {
        AddressStep::Done(status) => return Ok((report(status), ttl)),
        AddressStep::Tlsa(names) => names,
    };
    let last = names.len().saturating_sub(1);
    for (i, name) in names.iter().enumerate() {
        let tlsa = ask(dns, name, QueryType::Tlsa).await;
        if let TlsaStep::Done(status) = dane::after_tlsa(name, tlsa, i == last, &mut ttl)? {
            return Ok((report(status), ttl));
        }
    }
    Ok((report(HostDane::NoTlsa), ttl))
}

async fn ask<R: Runtime>(
    dns: &DnsClient<R>,
    name: &str,
    qtype: QueryType,
) -> Result<Answered, DnsFailure> {
    dns.query_dnssec(name, qtype)
        .await
        .map_err(DnsFailure::from)
}
