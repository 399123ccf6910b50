//! DNS wire format for the lookups the resolver makes (RFC 8461 §3.1,
//! "Layout" `dns`): build a TXT/A/AAAA query, frame it for TCP, and parse and
//! validate the response (RFC 1035 §4, EDNS0 per RFC 6891). hickory-proto is
//! used for the wire format only; sending, timeouts and retries belong to
//! the drivers. Also parses `/etc/resolv.conf` text (resolv.conf(5)).

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
/// drivers that resolve the policy host themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// TXT (RFC 1035 §3.3.14).
    Txt,
    /// IPv4 address (RFC 1035 §3.4.1).
    A,
    /// IPv6 address (RFC 3596 §2).
    Aaaa,
}

impl QueryType {
    fn record_type(self) -> RecordType {
        match self {
            QueryType::Txt => RecordType::TXT,
            QueryType::A => RecordType::A,
            QueryType::Aaaa => RecordType::AAAA,
        }
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

/// The usable content of a response (RFC 1035 §4.1.3, §3.3.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// TXT records; each record's character-strings concatenated
    /// (RFC 7208 §3.3 convention, which RFC 8461 §3.1 relies on).
    Txt(Vec<Vec<u8>>),
    /// A or AAAA addresses.
    Addresses(Vec<IpAddr>),
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

/// Builds a standard query (RFC 1035 §4.1) for `name`/`qtype`, class IN,
/// RD set, with an EDNS0 OPT record advertising [`EDNS_UDP_PAYLOAD`] bytes
/// (RFC 6891 §6.1). The caller picks `id` at random (RFC 5452 §9.2).
pub fn build_query(id: u16, name: &str, qtype: QueryType) -> Result<Vec<u8>, DnsError> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(fqdn(name)?, qtype.record_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_PAYLOAD).set_version(0);
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
    let qname = fqdn(name)?;
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
        return Ok(Response::Truncated);
    }

    // Decoding again merges the EDNS extended RCODE bits into the header.
    let msg = Message::from_vec(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    match msg.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Ok(Response::Answer(Answer::NoRecords(NoRecordsKind::NxDomain)));
        }
        ResponseCode::ServFail => return Err(DnsError::ServFail),
        ResponseCode::Refused => return Err(DnsError::Refused),
        other => return Err(DnsError::Rcode(u16::from(other))),
    }

    let records = final_records(&msg.answers, qname, rtype)?;
    let answer = match qtype {
        QueryType::Txt => {
            let txts: Vec<Vec<u8>> = records
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect();
            (!txts.is_empty()).then_some(Answer::Txt(txts))
        }
        QueryType::A | QueryType::Aaaa => {
            let addrs: Vec<IpAddr> = records
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect();
            (!addrs.is_empty()).then_some(Answer::Addresses(addrs))
        }
    };
    Ok(Response::Answer(
        answer.unwrap_or(Answer::NoRecords(NoRecordsKind::NoData)),
    ))
}

/// Follows the CNAME chain from `qname` through `answers` and returns the
/// IN records of type `rtype` owned by the name at its end.
fn final_records(
    answers: &[Record],
    qname: Name,
    rtype: RecordType,
) -> Result<impl Iterator<Item = &Record>, DnsError> {
    let owned_by = |name: &Name, ty: RecordType| {
        let name = name.clone();
        answers.iter().filter(move |r| {
            r.dns_class == DNSClass::IN && r.record_type() == ty && r.name.eq_ignore_root(&name)
        })
    };
    let mut current = qname;
    let mut visited: Vec<Name> = Vec::new();
    loop {
        if owned_by(&current, rtype).next().is_some() {
            break;
        }
        let target = owned_by(&current, RecordType::CNAME).find_map(|r| match &r.data {
            RData::CNAME(cname) => Some(cname.0.clone()),
            _ => None,
        });
        let Some(target) = target else { break };
        visited.push(current);
        if visited.len() > MAX_CNAME_HOPS || visited.iter().any(|v| v.eq_ignore_root(&target)) {
            return Err(DnsError::CnameChain);
        }
        current = target;
    }
    Ok(owned_by(&current, rtype))
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
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
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
            let _ = parse_response(&data, 7, Q, QueryType::Txt);
            let _ = parse_response(&data, 7, Q, QueryType::A);
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
