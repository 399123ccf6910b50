//! DNS wire format for the lookups the resolver makes (RFC 8461 §3.1,
//! "Layout" `dns`): build a TXT/A/AAAA query, or an MX/TLSA/A/AAAA query
//! asking for DNSSEC validation (RFC 7672 §2.1: EDNS0 DO and AD bits), frame
//! it for TCP, and parse and validate the response (RFC 1035 §4, EDNS0 per
//! RFC 6891) with its AD bit and TTLs. hickory-proto is used for the wire
//! format only; sending, timeouts and retries belong to the drivers. Also
//! parses `/etc/resolv.conf` text (resolv.conf(5)).

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::domain::is_valid_hostname;

/// EDNS0 UDP payload size we advertise (RFC 6891 §6.2.5; 1232 is the DNS
/// Flag Day 2020 value that avoids IP fragmentation), large enough that
/// ordinary TXT answers do not need a TCP retry.
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// Longest CNAME chain followed inside one answer section. Recursive
/// resolvers already chase chains; this only bounds work on hostile input.
pub const MAX_CNAME_HOPS: usize = 8;

/// The record types the resolver asks for (RFC 8461 §3.1 TXT; A/AAAA for
/// the policy host; MX, A/AAAA and TLSA for DANE, RFC 7672 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// TXT (RFC 1035 §3.3.14).
    Txt,
    /// IPv4 address (RFC 1035 §3.4.1).
    A,
    /// IPv6 address (RFC 3596 §2).
    Aaaa,
    /// Mail exchange (RFC 1035 §3.3.9; null MX per RFC 7505).
    Mx,
    /// TLSA (RFC 6698 §2).
    Tlsa,
    /// Start of authority (RFC 1035 §3.3.13): only the root zone's, asked
    /// with DO to see whether the resolver validates (RFC 4035 §3.2.3).
    Soa,
}

impl QueryType {
    fn record_type(self) -> RecordType {
        match self {
            QueryType::Txt => RecordType::TXT,
            QueryType::A => RecordType::A,
            QueryType::Aaaa => RecordType::AAAA,
            QueryType::Mx => RecordType::MX,
            QueryType::Tlsa => RecordType::TLSA,
            QueryType::Soa => RecordType::SOA,
        }
    }

    /// The type's mnemonic (`TXT`, `A`, `AAAA`, `MX`, `TLSA`, `SOA`), for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryType::Txt => "TXT",
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Mx => "MX",
            QueryType::Tlsa => "TLSA",
            QueryType::Soa => "SOA",
        }
    }
}

impl std::fmt::Display for QueryType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a DNS message could not be built or a response was not usable
/// (RFC 8461 §3.1: server failures are fetch errors, not "no policy").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The query name is not a valid DNS host name.
    #[error("invalid query name {0:?}")]
    InvalidName(String),
    /// hickory could not encode the query (should not happen for valid names).
    #[error("cannot encode query: {0}")]
    Encode(String),
    /// The message has the QR bit clear: it is a query, not a response.
    #[error("message is not a response")]
    NotResponse,
    /// The response ID differs from the query ID (RFC 5452 §9.1).
    #[error("response id {got} does not match query id {expected}")]
    IdMismatch {
        /// The ID we sent.
        expected: u16,
        /// The ID in the response.
        got: u16,
    },
    /// The question section is not our single question (RFC 5452 §9.1).
    #[error("response question does not match the query")]
    QuestionMismatch,
    /// The bytes are not a well-formed DNS message.
    #[error("malformed DNS response: {0}")]
    Malformed(String),
    /// The CNAME chain in the answer loops or is longer than [`MAX_CNAME_HOPS`].
    #[error("CNAME chain loops or is longer than {MAX_CNAME_HOPS} hops")]
    CnameChain,
    /// RCODE SERVFAIL (RFC 1035 §4.1.1).
    #[error("server failure (SERVFAIL)")]
    ServFail,
    /// RCODE REFUSED (RFC 1035 §4.1.1).
    #[error("query refused (REFUSED)")]
    Refused,
    /// Any other error RCODE (extended RCODEs included, RFC 6891 §6.1.3).
    #[error("DNS error rcode {0}")]
    Rcode(u16),
}

/// Why a DNS lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    /// No nameserver answered in time.
    #[error("DNS timeout")]
    Timeout,
    /// A nameserver answered with an error (SERVFAIL, REFUSED...) or an
    /// unusable message.
    #[error("DNS error: {0}")]
    Server(DnsError),
    /// The transport failed (refused, unreachable).
    #[error("DNS transport error: {0}")]
    Transport(String),
    /// A local resource ran out (file descriptors, buffers, ports).
    #[error("DNS query not sent: {0}")]
    Local(String),
    /// There is no nameserver to ask.
    #[error("no nameserver configured")]
    NoNameservers,
    /// The answer holds records of another type than asked.
    #[error("unexpected answer type")]
    UnexpectedAnswer,
}

impl DnsError {
    /// True when the datagram is not an answer to our query at all (wrong
    /// ID, wrong question, or a query): a UDP driver should drop it and keep
    /// waiting, since it may be spoofed (RFC 5452 §9.1).
    pub fn is_unrelated(&self) -> bool {
        matches!(
            self,
            DnsError::NotResponse | DnsError::IdMismatch { .. } | DnsError::QuestionMismatch
        )
    }

    /// True when the server answered our query but the answer is a failure
    /// (RCODE error, unusable content): a driver may try the next
    /// nameserver; if none succeeds the lookup is a fetch error.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            DnsError::ServFail
                | DnsError::Refused
                | DnsError::Rcode(_)
                | DnsError::Malformed(_)
                | DnsError::CnameChain
        )
    }
}

/// Why a name has no records of the asked type (RFC 2308 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoRecordsKind {
    /// RCODE NXDOMAIN: the name (or the end of its CNAME chain) does not exist.
    NxDomain,
    /// NOERROR with no records of the asked type (NODATA).
    NoData,
}

/// One MX record (RFC 1035 §3.3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower values are preferred (RFC 5321 §5.1).
    pub preference: u16,
    /// The exchange host, lower case with no trailing dot; `.` for the
    /// root, which is the null MX of RFC 7505 §3.
    pub exchange: String,
}

impl MxRecord {
    /// True for the null MX `0 .` (RFC 7505 §3): the domain accepts no mail.
    pub fn is_null(&self) -> bool {
        self.exchange == "."
    }
}

/// One TLSA record (RFC 6698 §2.1), its fields as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaRecord {
    /// Certificate usage (RFC 6698 §2.1.1; RFC 7672 §3.1 uses 2 and 3).
    pub usage: u8,
    /// Selector (RFC 6698 §2.1.2): 0 full certificate, 1 public key.
    pub selector: u8,
    /// Matching type (RFC 6698 §2.1.3): 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}

/// The usable content of a response (RFC 1035 §4.1.3, §3.3.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// TXT records; each record's character-strings concatenated
    /// (RFC 7208 §3.3 convention, which RFC 8461 §3.1 relies on).
    Txt(Vec<Vec<u8>>),
    /// A or AAAA addresses.
    Addresses(Vec<IpAddr>),
    /// MX records in answer order (RFC 1035 §3.3.9).
    Mx(Vec<MxRecord>),
    /// TLSA records in answer order (RFC 6698 §2).
    Tlsa(Vec<TlsaRecord>),
    /// The zone's SOA record is there (RFC 1035 §3.3.13); its fields are
    /// not needed.
    Soa,
    /// The name has no records of the asked type.
    NoRecords(NoRecordsKind),
}

/// Result of parsing a valid response to our query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// TC bit set: retry the query over TCP (RFC 1035 §4.2.1, RFC 7766 §5).
    Truncated,
    /// A complete answer.
    Answer(Answer),
}

/// A complete answer with what DANE needs besides the records
/// (RFC 7672 §2.1: the AD bit; §2.2.2: the CNAME-expanded name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The records, or why there are none.
    pub answer: Answer,
    /// The AD bit: a validating resolver found every record of the answer
    /// (or the denial of existence) DNSSEC-secure (RFC 4035 §3.2.3,
    /// RFC 6840 §5.8). Only as trustworthy as the path to the resolver.
    pub authentic: bool,
    /// Seconds the answer may be cached: the smallest TTL of the records
    /// used (CNAMEs included), or for a negative answer the SOA's negative
    /// TTL (RFC 2308 §5); 0 when a negative answer carries no SOA.
    pub ttl: u32,
    /// The name at the end of the answer's CNAME chain, when it differs
    /// from the query name (lower case, no trailing dot).
    pub canonical: Option<String>,
}

/// Result of [`parse_response_full`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// TC bit set: retry the query over TCP (RFC 1035 §4.2.1, RFC 7766 §5).
    Truncated,
    /// A complete answer with its AD bit and TTL.
    Answered(Answered),
}

/// Parses `name` (ASCII, optional trailing dot) into a fully qualified name.
fn fqdn(name: &str) -> Result<Name, DnsError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if !is_valid_hostname(bare) {
        return Err(DnsError::InvalidName(name.to_owned()));
    }
    let mut parsed = Name::from_ascii(bare).map_err(|_| DnsError::InvalidName(name.to_owned()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The query name: the root is asked only for its SOA (the DNSSEC self-check,
/// docs/ARCHITECTURE.md "Operations"); every other query names a host.
fn query_name(name: &str, qtype: QueryType) -> Result<Name, DnsError> {
    if name == "." && qtype == QueryType::Soa {
        return Ok(Name::root());
    }
    fqdn(name)
}

/// Builds a standard query (RFC 1035 §4.1) for `name`/`qtype`, class IN,
/// RD set, with an EDNS0 OPT record advertising [`EDNS_UDP_PAYLOAD`] bytes
/// (RFC 6891 §6.1). The caller picks `id` at random (RFC 5452 §9.2).
pub fn build_query(id: u16, name: &str, qtype: QueryType) -> Result<Vec<u8>, DnsError> {
    build_query_with(id, name, qtype, false)
}

/// [`build_query`], and with `dnssec` also the EDNS0 DO bit (RFC 3225 §3)
/// and the AD bit (RFC 6840 §5.7): a validating resolver then says in the
/// response's AD bit whether the answer is DNSSEC-secure, which DANE
/// relies on (RFC 7672 §2.1).
pub fn build_query_with(
    id: u16,
    name: &str,
    qtype: QueryType,
    dnssec: bool,
) -> Result<Vec<u8>, DnsError> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.metadata.authentic_data = dnssec;
    msg.add_query(Query::query(query_name(name, qtype)?, qtype.record_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_PAYLOAD)
        .set_version(0)
        .set_dnssec_ok(dnssec);
    msg.set_edns(edns);
    msg.to_vec().map_err(|e| DnsError::Encode(e.to_string()))
}

/// Prefixes `msg` with its 2-byte big-endian length for DNS over TCP
/// (RFC 1035 §4.2.2). `msg` must be at most 65535 bytes, which every query
/// from [`build_query`] is (names are at most 253 octets).
pub fn tcp_frame(msg: &[u8]) -> Vec<u8> {
    debug_assert!(msg.len() <= usize::from(u16::MAX));
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    framed
}

/// The message length announced by a TCP stream's 2-byte prefix
/// (RFC 1035 §4.2.2), or `None` while fewer than 2 bytes have arrived.
pub fn tcp_length(buf: &[u8]) -> Option<usize> {
    match buf {
        [hi, lo, ..] => Some(usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// Parses and validates a response to the query built by [`build_query`]
/// with the same `id`, `name` and `qtype` (RFC 1035 §4.1, RFC 5452 §9.1),
/// follows CNAMEs inside the answer section (RFC 1034 §3.6.2, §4.3.2) and
/// classifies the outcome (RFC 2308 §2 for NXDOMAIN and NODATA).
pub fn parse_response(
    bytes: &[u8],
    id: u16,
    name: &str,
    qtype: QueryType,
) -> Result<Response, DnsError> {
    Ok(match parse_response_full(bytes, id, name, qtype)? {
        Parsed::Truncated => Response::Truncated,
        Parsed::Answered(answered) => Response::Answer(answered.answer),
    })
}

/// [`parse_response`] with the response's AD bit (RFC 4035 §3.2.3), the
/// TTL the answer may be cached for (RFC 2181 §5.2, RFC 2308 §5) and the
/// CNAME-expanded name (RFC 7672 §2.2.2).
pub fn parse_response_full(
    bytes: &[u8],
    id: u16,
    name: &str,
    qtype: QueryType,
) -> Result<Parsed, DnsError> {
    let qname = query_name(name, qtype)?;
    let rtype = qtype.record_type();

    // Header and question first: a truncated message may be cut anywhere
    // after them, so full decoding waits until we know TC is clear.
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if header.metadata.message_type != MessageType::Response {
        return Err(DnsError::NotResponse);
    }
    if header.metadata.id != id {
        return Err(DnsError::IdMismatch {
            expected: id,
            got: header.metadata.id,
        });
    }
    let truncated = header.metadata.truncation;
    // Some servers drop the question from truncated replies; the TCP retry
    // is validated in full, so accept that case.
    if !(truncated && header.counts.queries == 0) {
        if header.counts.queries != 1 {
            return Err(DnsError::QuestionMismatch);
        }
        let query = Query::read(&mut decoder).map_err(|e| DnsError::Malformed(e.to_string()))?;
        if !query.name.eq_ignore_root(&qname)
            || query.query_type != rtype
            || query.query_class != DNSClass::IN
        {
            return Err(DnsError::QuestionMismatch);
        }
    }
    if truncated {
        return Ok(Parsed::Truncated);
    }

    // Decoding again merges the EDNS extended RCODE bits into the header.
    let msg = Message::from_vec(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    let nxdomain = match msg.metadata.response_code {
        ResponseCode::NoError => false,
        ResponseCode::NXDomain => true,
        ResponseCode::ServFail => return Err(DnsError::ServFail),
        ResponseCode::Refused => return Err(DnsError::Refused),
        other => return Err(DnsError::Rcode(u16::from(other))),
    };

    let chain = follow_chain(&msg.answers, &qname, rtype)?;
    let canonical = (!chain.end.eq_ignore_root(&qname)).then(|| name_text(&chain.end));
    let done = |answer: Answer, ttl: u32| {
        Ok(Parsed::Answered(Answered {
            answer,
            authentic: msg.metadata.authentic_data,
            ttl: ttl.min(chain.ttl),
            canonical: canonical.clone(),
        }))
    };
    if nxdomain {
        return done(
            Answer::NoRecords(NoRecordsKind::NxDomain),
            negative_ttl(&msg.authorities),
        );
    }
    let records: Vec<&Record> = owned_by(&msg.answers, &chain.end, rtype).collect();
    let ttl = records.iter().map(|r| r.ttl).min();
    let answer = match qtype {
        QueryType::Txt => {
            let txts: Vec<Vec<u8>> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect();
            (!txts.is_empty()).then_some(Answer::Txt(txts))
        }
        QueryType::A | QueryType::Aaaa => {
            let addrs: Vec<IpAddr> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect();
            (!addrs.is_empty()).then_some(Answer::Addresses(addrs))
        }
        QueryType::Mx => {
            let mxs: Vec<MxRecord> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(MxRecord {
                        preference: mx.preference,
                        exchange: name_text(&mx.exchange),
                    }),
                    _ => None,
                })
                .collect();
            (!mxs.is_empty()).then_some(Answer::Mx(mxs))
        }
        QueryType::Tlsa => {
            let tlsas: Vec<TlsaRecord> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(TlsaRecord {
                        usage: u8::from(t.cert_usage),
                        selector: u8::from(t.selector),
                        matching: u8::from(t.matching),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            (!tlsas.is_empty()).then_some(Answer::Tlsa(tlsas))
        }
        QueryType::Soa => records
            .iter()
            .any(|r| matches!(r.data, RData::SOA(_)))
            .then_some(Answer::Soa),
    };
    match (answer, ttl) {
        (Some(answer), Some(ttl)) => done(answer, ttl),
        _ => done(
            Answer::NoRecords(NoRecordsKind::NoData),
            negative_ttl(&msg.authorities),
        ),
    }
}

/// A name as text: lower case, no trailing dot; the root is `.`.
fn name_text(name: &Name) -> String {
    if name.is_root() {
        return ".".to_owned();
    }
    let text = name.to_lowercase().to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

/// How long a negative answer may be cached (RFC 2308 §5): the smaller of
/// the authority section SOA's TTL and its MINIMUM field; 0 without an SOA
/// (such answers "SHOULD NOT be cached").
fn negative_ttl(authorities: &[Record]) -> u32 {
    authorities
        .iter()
        .filter_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .min()
        .unwrap_or(0)
}

/// The IN records of type `rtype` owned by `name` in `answers`.
fn owned_by<'a>(
    answers: &'a [Record],
    name: &'a Name,
    rtype: RecordType,
) -> impl Iterator<Item = &'a Record> + 'a {
    answers.iter().filter(move |r| {
        r.dns_class == DNSClass::IN && r.record_type() == rtype && r.name.eq_ignore_root(name)
    })
}

/// The end of a CNAME chain in an answer section and the smallest TTL of
/// its CNAME records (`u32::MAX` when there are none).
struct Chain {
    end: Name,
    ttl: u32,
}

/// Follows the CNAME chain from `qname` through `answers` to the name that
/// owns records of type `rtype`, or the last alias (RFC 1034 §3.6.2).
fn follow_chain(answers: &[Record], qname: &Name, rtype: RecordType) -> Result<Chain, DnsError> {
    let mut current = qname.clone();
    let mut ttl = u32::MAX;
    let mut visited: Vec<Name> = Vec::new();
    loop {
        if owned_by(answers, &current, rtype).next().is_some() {
            break;
        }
        let target = owned_by(answers, &current, RecordType::CNAME).find_map(|r| match &r.data {
            RData::CNAME(cname) => Some((cname.0.clone(), r.ttl)),
            _ => None,
        });
        let Some((target, hop_ttl)) = target else {
            break;
        };
        visited.push(current);
        if visited.len() > MAX_CNAME_HOPS || visited.iter().any(|v| v.eq_ignore_root(&target)) {
            return Err(DnsError::CnameChain);
        }
        ttl = ttl.min(hop_ttl);
        current = target;
    }
    Ok(Chain { end: current, ttl })
}

/// Resolver settings from `/etc/resolv.conf` that the drivers use
/// (resolv.conf(5), as glibc reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses in file order (at most 3, glibc's MAXNS).
    pub nameservers: Vec<IpAddr>,
    /// Per-attempt timeout (`options timeout:N`, default 5 s, at most 30 s).
    pub timeout: Duration,
    /// Rounds over the nameservers (`options attempts:N`, default 2, at most 5).
    pub attempts: u32,
}

/// glibc's MAXNS: further `nameserver` lines are ignored.
const MAX_NAMESERVERS: usize = 3;

/// Parses resolv.conf text (resolv.conf(5)): `nameserver` lines (IPv6 zone
/// suffixes `%scope` are dropped), `options timeout:N attempts:N`, comments
/// from `#` or `;`. Unknown or malformed lines are ignored, as glibc does;
/// with no usable nameserver, 127.0.0.1 is used.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf {
        nameservers: Vec::new(),
        timeout: Duration::from_secs(5),
        attempts: 2,
    };
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("nameserver") => {
                let addr = words
                    .next()
                    .and_then(|w| w.split('%').next())
                    .and_then(|w| w.parse::<IpAddr>().ok());
                if let Some(addr) = addr {
                    if conf.nameservers.len() < MAX_NAMESERVERS {
                        conf.nameservers.push(addr);
                    }
                }
            }
            Some("options") => {
                for opt in words {
                    if let Some(n) = option_value(opt, "timeout:") {
                        conf.timeout = Duration::from_secs(u64::from(n.clamp(1, 30)));
                    } else if let Some(n) = option_value(opt, "attempts:") {
                        conf.attempts = n.clamp(1, 5);
                    }
                }
            }
            _ => {}
        }
    }
    if conf.nameservers.is_empty() {
        conf.nameservers.push(IpAddr::from([127, 0, 0, 1]));
    }
    conf
}

/// The number after `prefix` in a resolv.conf option word, if any.
fn option_value(opt: &str, prefix: &str) -> Option<u32> {
    opt.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TLSA, TXT};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const Q: &str = "_mta-sts.example.com";

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap_or_else(|_| panic!("bad test name {s}"))
    }

    fn response(id: u16, qname: &str, rtype: RecordType) -> Message {
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(Query::query(name(qname), rtype));
        m
    }

    fn rec(owner: &str, data: RData) -> Record {
        Record::from_rdata(name(owner), 300, data)
    }

    fn txt(owner: &str, parts: &[&str]) -> Record {
        rec(
            owner,
            RData::TXT(TXT::new(parts.iter().map(|s| s.to_string()).collect())),
        )
    }

    fn cname(owner: &str, target: &str) -> Record {
        rec(owner, RData::CNAME(CNAME(name(target))))
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().unwrap_or_default()
    }

    fn parse(m: &Message, qtype: QueryType) -> Result<Response, DnsError> {
        parse_response(&bytes(m), 7, Q, qtype)
    }

    fn answer(a: Answer) -> Result<Response, DnsError> {
        Ok(Response::Answer(a))
    }

    #[test]
    fn query_round_trips_through_hickory() {
        let wire = build_query(0xbeef, "_mta-sts.Example.COM", QueryType::Txt);
        let msg = Message::from_vec(&wire.unwrap_or_default());
        let msg = msg.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(msg.metadata.id, 0xbeef);
        assert_eq!(msg.metadata.message_type, MessageType::Query);
        assert_eq!(msg.metadata.op_code, OpCode::Query);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries.len(), 1);
        let q = &msg.queries[0];
        assert_eq!(q.name, name("_mta-sts.example.com."));
        assert_eq!(q.query_type, RecordType::TXT);
        assert_eq!(q.query_class, DNSClass::IN);
        assert_eq!(msg.edns.map(|e| e.max_payload()), Some(1232));
    }

    #[test]
    fn query_types_and_trailing_dot() {
        for (qt, rt) in [
            (QueryType::A, RecordType::A),
            (QueryType::Aaaa, RecordType::AAAA),
        ] {
            let wire = build_query(1, "mta-sts.example.com.", qt).unwrap_or_default();
            let msg = Message::from_vec(&wire).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(msg.queries[0].query_type, rt);
        }
    }

    #[test]
    fn query_rejects_bad_names() {
        for bad in ["", ".", "a..b", "exa mple.com", &"a".repeat(64)] {
            assert!(
                matches!(
                    build_query(1, bad, QueryType::Txt),
                    Err(DnsError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tcp_framing() {
        assert_eq!(tcp_frame(&[1, 2, 3]), vec![0, 3, 1, 2, 3]);
        assert_eq!(tcp_length(&[0x01]), None);
        assert_eq!(tcp_length(&[0x01, 0x02, 9]), Some(258));
        assert_eq!(tcp_length(&tcp_frame(&[7; 300])), Some(300));
    }

    #[test]
    fn txt_with_multiple_strings_is_concatenated() {
        let mut m = response(7, "_mta-sts.EXAMPLE.com.", RecordType::TXT);
        m.add_answer(txt(Q, &["v=STSv1; ", "id=20160831085700Z;"]));
        m.add_answer(txt(Q, &["v=spf1 -all"]));
        assert_eq!(
            parse(&m, QueryType::Txt),
            answer(Answer::Txt(vec![
                b"v=STSv1; id=20160831085700Z;".to_vec(),
                b"v=spf1 -all".to_vec()
            ]))
        );
    }

    #[test]
    fn cname_chain_to_txt() {
        let mut m = response(7, Q, RecordType::TXT);
        m.add_answer(cname(Q, "a.example.net."));
        m.add_answer(cname("A.example.net.", "b.example.org."));
        m.add_answer(txt("b.example.org.", &["v=STSv1; id=x"]));
        // A TXT record not on the chain is ignored.
        m.add_answer(txt("other.example.", &["v=STSv1; id=y"]));
        assert_eq!(
            parse(&m, QueryType::Txt),
            answer(Answer::Txt(vec![b"v=STSv1; id=x".to_vec()]))
        );
    }

    #[test]
    fn cname_loop_and_long_chain_are_errors() {
        let mut m = response(7, Q, RecordType::TXT);
        m.add_answer(cname(Q, "a.example."));
        m.add_answer(cname("a.example.", Q));
        assert_eq!(parse(&m, QueryType::Txt), Err(DnsError::CnameChain));

        let mut m = response(7, Q, RecordType::TXT);
        m.add_answer(cname(Q, "c0.example."));
        for i in 0..MAX_CNAME_HOPS {
            m.add_answer(cname(
                &format!("c{i}.example."),
                &format!("c{}.example.", i + 1),
            ));
        }
        m.add_answer(txt(
            &format!("c{MAX_CNAME_HOPS}.example."),
            &["v=STSv1; id=1"],
        ));
        assert_eq!(parse(&m, QueryType::Txt), Err(DnsError::CnameChain));
    }

    #[test]
    fn cname_to_nothing_is_nodata_and_nxdomain_after_cname() {
        let mut m = response(7, Q, RecordType::TXT);
        m.add_answer(cname(Q, "gone.example."));
        assert_eq!(
            parse(&m, QueryType::Txt),
            answer(Answer::NoRecords(NoRecordsKind::NoData))
        );
        m.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(
            parse(&m, QueryType::Txt),
            answer(Answer::NoRecords(NoRecordsKind::NxDomain))
        );
    }

    #[test]
    fn rcodes() {
        let mut m = response(7, Q, RecordType::TXT);
        assert_eq!(
            parse(&m, QueryType::Txt),
            answer(Answer::NoRecords(NoRecordsKind::NoData))
        );
        for (rc, want) in [
            (ResponseCode::ServFail, DnsError::ServFail),
            (ResponseCode::Refused, DnsError::Refused),
            (ResponseCode::NotImp, DnsError::Rcode(4)),
            (ResponseCode::FormErr, DnsError::Rcode(1)),
        ] {
            m.metadata.response_code = rc;
            let got = parse(&m, QueryType::Txt);
            assert_eq!(got, Err(want.clone()));
            assert!(want.is_server_failure() && !want.is_unrelated());
        }
    }

    #[test]
    fn extended_rcode_from_edns() {
        let mut m = response(7, Q, RecordType::TXT);
        m.metadata.response_code = ResponseCode::BADCOOKIE;
        m.set_edns(Edns::new());
        assert_eq!(parse(&m, QueryType::Txt), Err(DnsError::Rcode(23)));
    }

    #[test]
    fn truncated() {
        let mut m = response(7, Q, RecordType::TXT);
        m.metadata.truncation = true;
        m.add_answer(txt(Q, &["v=STSv1; id=1"]));
        assert_eq!(parse(&m, QueryType::Txt), Ok(Response::Truncated));
        // Cut in the middle of the answer: still just "truncated".
        let wire = bytes(&m);
        let cut = &wire[..wire.len() - 5];
        assert_eq!(
            parse_response(cut, 7, Q, QueryType::Txt),
            Ok(Response::Truncated)
        );
        // No question section at all.
        let mut bare = Message::response(7, OpCode::Query);
        bare.metadata.truncation = true;
        assert_eq!(parse(&bare, QueryType::Txt), Ok(Response::Truncated));
    }

    #[test]
    fn unrelated_packets() {
        let m = response(8, Q, RecordType::TXT);
        let got = parse(&m, QueryType::Txt);
        assert_eq!(
            got,
            Err(DnsError::IdMismatch {
                expected: 7,
                got: 8
            })
        );
        for m in [
            response(7, "_mta-sts.example.org.", RecordType::TXT),
            response(7, Q, RecordType::A),
            Message::response(7, OpCode::Query),
        ] {
            assert_eq!(parse(&m, QueryType::Txt), Err(DnsError::QuestionMismatch));
        }
        let mut two = response(7, Q, RecordType::TXT);
        two.add_query(Query::query(name(Q), RecordType::TXT));
        assert_eq!(parse(&two, QueryType::Txt), Err(DnsError::QuestionMismatch));
        let mut chaos = response(7, Q, RecordType::TXT);
        chaos.queries[0].query_class = DNSClass::CH;
        assert_eq!(
            parse(&chaos, QueryType::Txt),
            Err(DnsError::QuestionMismatch)
        );
        let query = build_query(7, Q, QueryType::Txt).unwrap_or_default();
        let err = parse_response(&query, 7, Q, QueryType::Txt);
        assert_eq!(err, Err(DnsError::NotResponse));
        assert!(err.is_err_and(|e| e.is_unrelated()));
    }

    #[test]
    fn a_and_aaaa() {
        let host = "mta-sts.example.com.";
        let mut m = response(7, host, RecordType::A);
        m.add_answer(rec(host, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))));
        m.add_answer(rec(host, RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))));
        m.add_answer(rec(host, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))));
        assert_eq!(
            parse_response(&bytes(&m), 7, host, QueryType::A),
            answer(Answer::Addresses(vec![
                IpAddr::from([192, 0, 2, 1]),
                IpAddr::from([192, 0, 2, 2])
            ]))
        );
        let mut m = response(7, host, RecordType::AAAA);
        m.add_answer(cname(host, "v6.example.com."));
        m.add_answer(rec(
            "v6.example.com.",
            RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
        ));
        assert_eq!(
            parse_response(&bytes(&m), 7, host, QueryType::Aaaa),
            answer(Answer::Addresses(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]))
        );
    }

    fn full(m: &Message, qname: &str, qtype: QueryType) -> Answered {
        match parse_response_full(&bytes(m), 7, qname, qtype) {
            Ok(Parsed::Answered(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn soa(owner: &str, ttl: u32, minimum: u32) -> Record {
        let data = RData::SOA(SOA::new(
            name("ns.example."),
            name("hostmaster.example."),
            1,
            3600,
            600,
            86400,
            minimum,
        ));
        Record::from_rdata(name(owner), ttl, data)
    }

    #[test]
    fn dnssec_queries_set_do_and_ad() {
        for dnssec in [false, true] {
            let wire = build_query_with(9, "_25._tcp.mx.example.com", QueryType::Tlsa, dnssec);
            let msg = Message::from_vec(&wire.unwrap_or_default());
            let msg = msg.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(msg.metadata.authentic_data, dnssec);
            let edns = msg.edns.unwrap_or_else(|| panic!("no OPT record"));
            assert_eq!(edns.flags().dnssec_ok, dnssec);
            assert_eq!(edns.max_payload(), EDNS_UDP_PAYLOAD);
            assert_eq!(msg.queries[0].query_type, RecordType::TLSA);
        }
        // The plain builder asks for neither (MTA-STS lookups are unchanged).
        let wire = build_query(9, "example.com", QueryType::Mx).unwrap_or_default();
        let msg = Message::from_vec(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert!(!msg.metadata.authentic_data);
        assert!(msg.edns.is_some_and(|e| !e.flags().dnssec_ok));
        assert_eq!(msg.queries[0].query_type, RecordType::MX);
    }

    /// The DNSSEC self-check asks the root's SOA with DO; `.` is no name
    /// for any other query.
    #[test]
    fn root_soa_query_and_answer() {
        let wire = build_query_with(9, ".", QueryType::Soa, true).unwrap_or_default();
        let msg = Message::from_vec(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert!(msg.queries[0].name.is_root());
        assert_eq!(msg.queries[0].query_type, RecordType::SOA);
        assert!(msg.edns.is_some_and(|e| e.flags().dnssec_ok));
        for qtype in [QueryType::Txt, QueryType::A, QueryType::Mx, QueryType::Tlsa] {
            assert!(matches!(
                build_query_with(9, ".", qtype, true),
                Err(DnsError::InvalidName(_))
            ));
        }
        let mut m = response(7, ".", RecordType::SOA);
        m.metadata.authentic_data = true;
        m.add_answer(soa(".", 300, 60));
        let a = full(&m, ".", QueryType::Soa);
        assert_eq!(a.answer, Answer::Soa);
        assert!(a.authentic);
        assert_eq!(a.canonical, None);
        m.metadata.authentic_data = false;
        assert!(!full(&m, ".", QueryType::Soa).authentic);
        // An answer without the SOA is NODATA.
        let m = response(7, ".", RecordType::SOA);
        assert_eq!(
            full(&m, ".", QueryType::Soa).answer,
            Answer::NoRecords(NoRecordsKind::NoData)
        );
    }

    #[test]
    fn mx_records_ad_bit_and_smallest_ttl() {
        let q = "example.com.";
        let mut m = response(7, q, RecordType::MX);
        m.metadata.authentic_data = true;
        m.add_answer(Record::from_rdata(
            name(q),
            300,
            RData::MX(MX::new(10, name("MX1.Example.com."))),
        ));
        m.add_answer(Record::from_rdata(
            name(q),
            120,
            RData::MX(MX::new(20, name("mx2.example.net."))),
        ));
        let a = full(&m, q, QueryType::Mx);
        assert!(a.authentic);
        assert_eq!(a.ttl, 120);
        assert_eq!(a.canonical, None);
        assert_eq!(
            a.answer,
            Answer::Mx(vec![
                MxRecord {
                    preference: 10,
                    exchange: "mx1.example.com".into()
                },
                MxRecord {
                    preference: 20,
                    exchange: "mx2.example.net".into()
                },
            ])
        );
        m.metadata.authentic_data = false;
        assert!(!full(&m, q, QueryType::Mx).authentic);
    }

    #[test]
    fn rrsig_records_beside_the_answer_are_ignored() {
        // Asked with DO, a validating resolver adds RRSIGs (RFC 4035 §3.1.1);
        // they decode as unknown data and take no part.
        let q = "example.com.";
        let mut m = response(7, q, RecordType::MX);
        m.metadata.authentic_data = true;
        m.add_answer(Record::from_rdata(
            name(q),
            300,
            RData::MX(MX::new(10, name("mx.example.com."))),
        ));
        let sig = RData::Unknown {
            code: RecordType::RRSIG,
            rdata: hickory_proto::rr::rdata::NULL::with(vec![0; 40]),
        };
        m.add_answer(Record::from_rdata(name(q), 30, sig));
        let a = full(&m, q, QueryType::Mx);
        assert!(a.authentic);
        assert_eq!(a.ttl, 300);
        assert!(matches!(a.answer, Answer::Mx(ref v) if v.len() == 1));
    }

    #[test]
    fn null_mx() {
        let q = "nomail.example.";
        let mut m = response(7, q, RecordType::MX);
        m.add_answer(Record::from_rdata(
            name(q),
            60,
            RData::MX(MX::new(0, Name::root())),
        ));
        let Answer::Mx(mxs) = full(&m, q, QueryType::Mx).answer else {
            panic!("not MX");
        };
        assert_eq!(mxs.len(), 1);
        assert!(mxs[0].is_null());
        assert_eq!(mxs[0].exchange, ".");
    }

    #[test]
    fn tlsa_records_through_a_cname() {
        let q = "_25._tcp.mx.example.com.";
        let mut m = response(7, q, RecordType::TLSA);
        m.metadata.authentic_data = true;
        m.add_answer(rec(
            q,
            RData::CNAME(CNAME(name("_25._tcp.mx.example.net."))),
        ));
        let tlsa = TLSA::new(
            CertUsage::DaneEe,
            Selector::Spki,
            Matching::Sha256,
            vec![0xab; 32],
        );
        m.add_answer(Record::from_rdata(
            name("_25._tcp.mx.example.net."),
            3600,
            RData::TLSA(tlsa),
        ));
        let a = full(&m, q, QueryType::Tlsa);
        assert_eq!(
            a.answer,
            Answer::Tlsa(vec![TlsaRecord {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![0xab; 32]
            }])
        );
        // The CNAME's TTL (300) is smaller than the TLSA record's.
        assert_eq!(a.ttl, 300);
        assert_eq!(a.canonical.as_deref(), Some("_25._tcp.mx.example.net"));
        assert!(a.authentic);
    }

    #[test]
    fn negative_answers_take_the_soa_negative_ttl() {
        let q = "_25._tcp.mx.example.com.";
        let mut m = response(7, q, RecordType::TLSA);
        m.metadata.authentic_data = true;
        m.add_authority(soa("example.com.", 900, 300));
        let a = full(&m, q, QueryType::Tlsa);
        assert_eq!(a.answer, Answer::NoRecords(NoRecordsKind::NoData));
        assert_eq!(a.ttl, 300, "min(SOA TTL, MINIMUM)");
        assert!(a.authentic);
        m.metadata.response_code = ResponseCode::NXDomain;
        m.authorities.clear();
        m.add_authority(soa("example.com.", 30, 300));
        let a = full(&m, q, QueryType::Tlsa);
        assert_eq!(a.answer, Answer::NoRecords(NoRecordsKind::NxDomain));
        assert_eq!(a.ttl, 30);
        // No SOA: not to be cached (RFC 2308 §5).
        m.authorities.clear();
        assert_eq!(full(&m, q, QueryType::Tlsa).ttl, 0);
    }

    #[test]
    fn address_answer_names_the_expanded_host() {
        let q = "mail.example.com.";
        let mut m = response(7, q, RecordType::A);
        m.add_answer(cname(q, "Real.Example.NET."));
        m.add_answer(rec(
            "real.example.net.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 25))),
        ));
        let a = full(&m, q, QueryType::A);
        assert_eq!(a.canonical.as_deref(), Some("real.example.net"));
        assert_eq!(
            a.answer,
            Answer::Addresses(vec![IpAddr::from([192, 0, 2, 25])])
        );
        assert_eq!(a.ttl, 300);
        assert!(!a.authentic);
    }

    #[test]
    fn garbage_is_malformed() {
        for junk in [&b""[..], b"\x00\x07", &[0xff; 40]] {
            let got = parse_response(junk, 7, Q, QueryType::Txt);
            assert!(got.is_err(), "{junk:?}");
        }
        // A valid header and question followed by a bogus answer count.
        let mut wire = bytes(&response(7, Q, RecordType::TXT));
        wire[7] = 3;
        assert!(matches!(
            parse_response(&wire, 7, Q, QueryType::Txt),
            Err(DnsError::Malformed(_))
        ));
    }

    #[test]
    fn resolv_conf_defaults() {
        let c = parse_resolv_conf("# nothing here\n\nsearch example.com\n");
        assert_eq!(c.nameservers, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.attempts, 2);
    }

    #[test]
    fn resolv_conf_full() {
        let text = "\
; a comment
nameserver 192.0.2.53 # inline comment
nameserver fe80::1%eth0
nameserver not-an-address
  nameserver\t2001:db8::53
nameserver 192.0.2.54
options ndots:2 timeout:3 attempts:4 rotate
";
        let c = parse_resolv_conf(text);
        assert_eq!(
            c.nameservers,
            vec![
                IpAddr::from([192, 0, 2, 53]),
                "fe80::1".parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4])),
                "2001:db8::53"
                    .parse::<IpAddr>()
                    .unwrap_or(IpAddr::from([0; 4])),
            ]
        );
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.attempts, 4);
    }

    #[test]
    fn resolv_conf_option_bounds() {
        let c = parse_resolv_conf("options timeout:0 attempts:99\noptions timeout:x");
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.attempts, 5);
        let c = parse_resolv_conf("options timeout:600 attempts:0");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.attempts, 1);
    }

    proptest! {
        #[test]
        fn parse_response_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            for qtype in [QueryType::Txt, QueryType::A, QueryType::Mx, QueryType::Tlsa] {
                let _ = parse_response_full(&data, 7, Q, qtype);
            }
        }

        #[test]
        fn parse_response_never_panics_on_mutated_answers(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
        ) {
            let mut m = response(7, Q, RecordType::TXT);
            m.add_answer(cname(Q, "a.example."));
            m.add_answer(txt("a.example.", &["v=STSv1; id=1", "x"]));
            let mut wire = bytes(&m);
            for (i, b) in flips {
                let at = i.index(wire.len());
                if let Some(slot) = wire.get_mut(at) {
                    *slot = b;
                }
            }
            let _ = parse_response(&wire, 7, Q, QueryType::Txt);
        }

        #[test]
        fn resolv_conf_never_panics(text in ".{0,300}") {
            let c = parse_resolv_conf(&text);
            prop_assert!(!c.nameservers.is_empty() && c.nameservers.len() <= 3);
        }
    }
}
