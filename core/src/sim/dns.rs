//! The scripted DNS server: per (name, type) an answer and a latency,
//! reached over the sim's datagrams (and over a pipe for DNS over TCP,
//! RFC 7766). Queries are parsed and answered with hickory-proto, with the
//! query's id and question (RFC 1035 §4.1), so the real stub client's
//! checks run. Unknown names get NXDOMAIN; a known name without the asked
//! type gets NODATA (RFC 2308 §2), with an SOA giving its negative TTL.
//!
//! It plays a validating resolver for DANE (RFC 7672 §2.1): a rule may be
//! DNSSEC-secure, and negative answers under a signed zone are; the AD bit
//! is set on secure answers only when the query asked with DO or AD
//! (RFC 6840 §5.7), and every query's DO bit is logged.

use super::net::{InboxHandle, PipeEnd};
use super::Sim;
use crate::dns::{QueryType, TlsaRecord};
use crate::service::Runtime;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What the server answers for one (name, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// TXT records, one string each (RFC 1035 §3.3.14).
    Txt(Vec<String>),
    /// A or AAAA records (the addresses of the asked family are sent).
    Addrs(Vec<IpAddr>),
    /// MX records: preference and exchange (`.` for a null MX, RFC 7505).
    Mx(Vec<(u16, String)>),
    /// TLSA records (RFC 6698).
    Tlsa(Vec<TlsaRecord>),
    /// NOERROR with no records (NODATA).
    NoData,
    /// RCODE NXDOMAIN.
    NxDomain,
    /// RCODE SERVFAIL: a lookup failure, not "no policy" (RFC 8461 §3.1).
    ServFail,
    /// No answer at all: the client times out.
    Drop,
}

/// An answer with its latency and transport behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRule {
    /// The answer.
    pub answer: DnsAnswer,
    /// Virtual time between the query and the answer.
    pub latency: Duration,
    /// Over UDP, answer with TC set and no records; TCP answers in full.
    pub truncate_udp: bool,
    /// DNSSEC-secure: AD is set when the query asks (RFC 6840 §5.7).
    pub secure: bool,
    /// TTL of the records (and of the SOA of a negative answer).
    pub ttl: u32,
}

/// TTL of rules set with the helpers.
pub const DEFAULT_TTL: u32 = 60;

/// Which transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A datagram.
    Udp,
    /// DNS over TCP (RFC 7766).
    Tcp,
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLog {
    /// Virtual time of arrival.
    pub at: Duration,
    /// Query name, lower case, no trailing dot.
    pub name: String,
    /// Query type.
    pub qtype: QueryType,
    /// Transport.
    pub via: Via,
    /// The query asked for DNSSEC (EDNS0 DO or the AD bit).
    pub dnssec: bool,
}

#[derive(Default)]
struct State {
    rules: HashMap<(String, QueryType), DnsRule>,
    default_latency: Duration,
    log: Vec<QueryLog>,
    /// Zones whose negative answers are secure.
    signed: Vec<String>,
    /// Never set AD (a resolver that does not validate).
    not_validating: bool,
}

impl State {
    fn signed(&self, name: &str) -> bool {
        self.signed
            .iter()
            .any(|z| name == z || name.ends_with(&format!(".{z}")))
    }
}

/// The scripted DNS server (shared by every nameserver address of a
/// [`super::World`]). Clone it freely.
#[derive(Clone, Default)]
pub struct DnsServer {
    state: Arc<Mutex<State>>,
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn qtype_of(rt: RecordType) -> Option<QueryType> {
    match rt {
        RecordType::TXT => Some(QueryType::Txt),
        RecordType::A => Some(QueryType::A),
        RecordType::AAAA => Some(QueryType::Aaaa),
        RecordType::MX => Some(QueryType::Mx),
        RecordType::TLSA => Some(QueryType::Tlsa),
        _ => None,
    }
}

impl DnsServer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Latency of rules set from now on with the `set_*` helpers.
    pub fn set_default_latency(&self, latency: Duration) {
        self.state().default_latency = latency;
    }

    /// Answer `qtype` queries for `name` by `rule`.
    pub fn set_rule(&self, name: &str, qtype: QueryType, rule: DnsRule) {
        self.state().rules.insert((norm(name), qtype), rule);
    }

    /// Answer `qtype` queries for `name` with `answer` after the default latency.
    pub fn set(&self, name: &str, qtype: QueryType, answer: DnsAnswer) {
        let latency = self.state().default_latency;
        self.set_with_latency(name, qtype, answer, latency);
    }

    /// Answer `qtype` queries for `name` with `answer` after `latency`.
    pub fn set_with_latency(
        &self,
        name: &str,
        qtype: QueryType,
        answer: DnsAnswer,
        latency: Duration,
    ) {
        let rule = DnsRule {
            answer,
            latency,
            truncate_udp: false,
            secure: false,
            ttl: DEFAULT_TTL,
        };
        self.set_rule(name, qtype, rule);
    }

    /// Answer `qtype` queries for `name` with `answer`, DNSSEC-secure,
    /// with records of `ttl` seconds, after the default latency.
    pub fn set_secure(&self, name: &str, qtype: QueryType, answer: DnsAnswer, ttl: u32) {
        let latency = self.state().default_latency;
        let rule = DnsRule {
            answer,
            latency,
            truncate_udp: false,
            secure: true,
            ttl,
        };
        self.set_rule(name, qtype, rule);
    }

    /// Make the negative answers (NXDOMAIN, NODATA) for `zone` and the
    /// names under it secure (signed denial of existence).
    pub fn sign_zone(&self, zone: &str) {
        self.state().signed.push(norm(zone));
    }

    /// Never set AD, like a resolver that does not validate.
    pub fn set_not_validating(&self, on: bool) {
        self.state().not_validating = on;
    }

    /// Publish `v=STSv1; id=<id>;` at `_mta-sts.<domain>` (RFC 8461 §3.1).
    pub fn set_sts_id(&self, domain: &str, id: &str) {
        self.set(
            &format!("_mta-sts.{domain}"),
            QueryType::Txt,
            DnsAnswer::Txt(vec![format!("v=STSv1; id={id};")]),
        );
    }

    /// Change only the answer of an existing rule (latency kept).
    pub fn set_answer(&self, name: &str, qtype: QueryType, answer: DnsAnswer) {
        let mut st = self.state();
        let latency = st.default_latency;
        st.rules
            .entry((norm(name), qtype))
            .or_insert(DnsRule {
                answer: DnsAnswer::NoData,
                latency,
                truncate_udp: false,
                secure: false,
                ttl: DEFAULT_TTL,
            })
            .answer = answer;
    }

    /// Change only the latency of an existing rule.
    pub fn set_latency(&self, name: &str, qtype: QueryType, latency: Duration) {
        if let Some(rule) = self.state().rules.get_mut(&(norm(name), qtype)) {
            rule.latency = latency;
        }
    }

    /// Truncate UDP answers for `name`/`qtype` (or stop doing so).
    pub fn set_truncate_udp(&self, name: &str, qtype: QueryType, on: bool) {
        if let Some(rule) = self.state().rules.get_mut(&(norm(name), qtype)) {
            rule.truncate_udp = on;
        }
    }

    /// Forget every rule for `name`: it answers NXDOMAIN.
    pub fn remove(&self, name: &str) {
        let name = norm(name);
        self.state().rules.retain(|(n, _), _| *n != name);
    }

    /// Queries received for `name`/`qtype`, over any transport.
    pub fn queries(&self, name: &str, qtype: QueryType) -> usize {
        let name = norm(name);
        self.state()
            .log
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype)
            .count()
    }

    /// Queries received for `name`/`qtype` over `via`.
    pub fn queries_via(&self, name: &str, qtype: QueryType, via: Via) -> usize {
        let name = norm(name);
        self.state()
            .log
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype && q.via == via)
            .count()
    }

    /// Queries received for `name`/`qtype` that asked for DNSSEC.
    pub fn dnssec_queries(&self, name: &str, qtype: QueryType) -> usize {
        let name = norm(name);
        self.state()
            .log
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype && q.dnssec)
            .count()
    }

    /// Queries received of type `qtype`, any name.
    pub fn queries_of(&self, qtype: QueryType) -> usize {
        self.state().log.iter().filter(|q| q.qtype == qtype).count()
    }

    /// TXT queries for `_mta-sts.<domain>`.
    pub fn txt_queries(&self, domain: &str) -> usize {
        self.queries(&format!("_mta-sts.{domain}"), QueryType::Txt)
    }

    /// Every query received, in order.
    pub fn log(&self) -> Vec<QueryLog> {
        self.state().log.clone()
    }

    /// Total queries received.
    pub fn total(&self) -> usize {
        self.state().log.len()
    }

    /// The response to `query` (wire bytes) and its latency; `None` to
    /// drop it (unparsable, or scripted [`DnsAnswer::Drop`]).
    fn respond(&self, sim: &Sim, query: &[u8], via: Via) -> Option<(Vec<u8>, Duration)> {
        let query = Message::from_vec(query).ok()?;
        let question = query.queries.first()?.clone();
        let name = norm(&question.name().to_ascii());
        let qtype = qtype_of(question.query_type());
        let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_query(question.clone());
        let dnssec = query.metadata.authentic_data
            || query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            resp.set_edns(edns);
        }
        let rule = {
            let mut st = self.state();
            if let Some(qtype) = qtype {
                st.log.push(QueryLog {
                    at: sim.elapsed(),
                    name: name.clone(),
                    qtype,
                    via,
                    dnssec,
                });
            }
            let rule = qtype.and_then(|t| st.rules.get(&(name.clone(), t)).cloned());
            let known = st.rules.keys().any(|(n, _)| *n == name);
            let latency = st.default_latency;
            let mut rule = rule.unwrap_or(DnsRule {
                answer: if known {
                    DnsAnswer::NoData
                } else {
                    DnsAnswer::NxDomain
                },
                latency,
                truncate_udp: false,
                secure: false,
                ttl: DEFAULT_TTL,
            });
            if matches!(rule.answer, DnsAnswer::NoData | DnsAnswer::NxDomain) && st.signed(&name) {
                rule.secure = true;
            }
            if st.not_validating {
                rule.secure = false;
            }
            rule
        };
        let negative = matches!(rule.answer, DnsAnswer::NoData | DnsAnswer::NxDomain);
        resp.metadata.authentic_data = dnssec && rule.secure;
        if negative {
            // The negative TTL (RFC 2308 §5) comes from the SOA.
            let soa = SOA::new(Name::root(), Name::root(), 1, 3600, 600, 86_400, rule.ttl);
            resp.add_authority(Record::from_rdata(Name::root(), rule.ttl, RData::SOA(soa)));
        }
        if via == Via::Udp && rule.truncate_udp {
            resp.metadata.truncation = true;
            return Some((resp.to_vec().expect("sim DNS: encode"), rule.latency));
        }
        let owner = Name::from_ascii(format!("{name}.")).expect("sim DNS: owner name");
        match &rule.answer {
            DnsAnswer::Drop => return None,
            DnsAnswer::NxDomain => resp.metadata.response_code = ResponseCode::NXDomain,
            DnsAnswer::ServFail => resp.metadata.response_code = ResponseCode::ServFail,
            DnsAnswer::NoData => {}
            DnsAnswer::Txt(strings) => {
                for s in strings {
                    let parts: Vec<&[u8]> = match s.as_bytes() {
                        [] => vec![&b""[..]],
                        b => b.chunks(255).collect(),
                    };
                    let data = RData::TXT(TXT::from_bytes(parts));
                    resp.add_answer(Record::from_rdata(owner.clone(), rule.ttl, data));
                }
            }
            DnsAnswer::Addrs(addrs) => {
                for addr in addrs {
                    let data = match (addr, qtype) {
                        (IpAddr::V4(a), Some(QueryType::A)) => RData::A(A(*a)),
                        (IpAddr::V6(a), Some(QueryType::Aaaa)) => RData::AAAA(AAAA(*a)),
                        _ => continue,
                    };
                    resp.add_answer(Record::from_rdata(owner.clone(), rule.ttl, data));
                }
            }
            DnsAnswer::Mx(list) => {
                for (preference, exchange) in list {
                    let exchange = if exchange == "." {
                        Name::root()
                    } else {
                        Name::from_ascii(format!("{}.", norm(exchange))).expect("sim DNS: MX name")
                    };
                    let data = RData::MX(MX::new(*preference, exchange));
                    resp.add_answer(Record::from_rdata(owner.clone(), rule.ttl, data));
                }
            }
            DnsAnswer::Tlsa(list) => {
                for r in list {
                    let data = RData::TLSA(TLSA::new(
                        CertUsage::from(r.usage),
                        Selector::from(r.selector),
                        Matching::from(r.matching),
                        r.data.clone(),
                    ));
                    resp.add_answer(Record::from_rdata(owner.clone(), rule.ttl, data));
                }
            }
        }
        Some((resp.to_vec().expect("sim DNS: encode"), rule.latency))
    }

    /// Take one datagram query; the reply (if any) reaches `reply_to`
    /// after the rule's latency.
    pub(super) fn handle_udp(&self, sim: &Sim, query: Vec<u8>, reply_to: InboxHandle) {
        let Some((bytes, latency)) = self.respond(sim, &query, Via::Udp) else {
            return;
        };
        let rt = sim.clone();
        sim.spawn(
            async move {
                rt.sleep(latency).await;
                reply_to.deliver(bytes);
            }
            .boxed(),
        );
    }

    /// Serve length-prefixed queries on `stream` (RFC 1035 §4.2.2) until
    /// the client closes it.
    pub(super) async fn serve_tcp(self, sim: Sim, mut stream: PipeEnd) {
        loop {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut msg).await.is_err() {
                return;
            }
            let Some((bytes, latency)) = self.respond(&sim, &msg, Via::Tcp) else {
                continue;
            };
            sim.sleep(latency).await;
            let len = u16::try_from(bytes.len()).expect("sim DNS: TCP answer over 64 KiB");
            let mut out = len.to_be_bytes().to_vec();
            out.extend_from_slice(&bytes);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}
