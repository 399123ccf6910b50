//! A loopback DNS server answering from a mutable table (RFC 1035 §4, RFC 7766 for TCP,
//! RFC 6891 §6.2.5 for the UDP payload size), so the daemon's TXT lookup of
//! `_mta-sts.<domain>` (RFC 8461 §3.1) and A/AAAA lookup of `mta-sts.<domain>` run for real.
//!
//! For DANE (RFC 7672) it plays a validating resolver: each record carries a secure flag
//! (DNSSEC-signed), negative answers under a signed zone are secure, and the AD bit is set on
//! a secure answer only when the query asked for it with the EDNS0 DO bit or the AD bit, as
//! validating resolvers do (RFC 6840 §5.7). Negative answers carry an SOA (RFC 2308 §5).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How often blocked threads wake up to check the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Longest CNAME chain followed before giving up (loops in the table).
const MAX_CHAIN: usize = 8;
/// TTL of every answer; the daemon must not depend on it.
const TTL: u32 = 60;

/// One resource record of the table (RFC 1035 §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    /// A TXT record: its character-strings, in order (RFC 1035 §3.3.14); several strings are
    /// how long records are published (RFC 8461 §3.1). Strings over 255 bytes are sent as
    /// several 255-byte strings.
    Txt(Vec<String>),
    /// An IPv4 address (RFC 1035 §3.4.1).
    A(Ipv4Addr),
    /// An IPv6 address (RFC 3596).
    Aaaa(Ipv6Addr),
    /// An alias to another name (RFC 1035 §3.3.1), answered as a chain.
    Cname(String),
    /// A mail exchange: preference and host, `.` for a null MX (RFC 7505).
    Mx(u16, String),
    /// A TLSA record (RFC 6698 §2): usage, selector, matching type, data.
    Tlsa(u8, u8, u8, Vec<u8>),
    /// A name server of the zone (RFC 1035 §3.3.11).
    Ns(String),
    /// The zone's start of authority (RFC 1035 §3.3.13), with fixed values.
    Soa,
}

impl Rec {
    fn record_type(&self) -> RecordType {
        match self {
            Rec::Txt(_) => RecordType::TXT,
            Rec::A(_) => RecordType::A,
            Rec::Aaaa(_) => RecordType::AAAA,
            Rec::Cname(_) => RecordType::CNAME,
            Rec::Mx(..) => RecordType::MX,
            Rec::Tlsa(..) => RecordType::TLSA,
            Rec::Ns(_) => RecordType::NS,
            Rec::Soa => RecordType::SOA,
        }
    }
}

/// A record of the table and whether it is DNSSEC-signed (secure).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    rec: Rec,
    secure: bool,
}

/// A misbehaviour injected for one name (RFC 8461 §3.1: these are fetch errors, not "no policy").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with RCODE SERVFAIL.
    ServFail,
    /// Answer with RCODE REFUSED.
    Refused,
    /// Never answer (the client times out).
    Silent,
    /// Over UDP, answer with TC set and no records whatever the size (RFC 7766 §5), so the
    /// client must retry over TCP; TCP answers normally.
    TruncateUdp,
}

#[derive(Default)]
struct Table {
    records: HashMap<String, Vec<Stored>>,
    faults: HashMap<String, Fault>,
    queries: HashMap<String, usize>,
    /// Queries that asked for DNSSEC (DO or AD bit), per name.
    dnssec_queries: HashMap<String, usize>,
    /// Queries per record type.
    by_type: HashMap<RecordType, usize>,
    /// Zones whose negative answers are secure.
    signed_zones: Vec<String>,
    /// Never set AD (a resolver that does not validate).
    not_validating: bool,
}

impl Table {
    fn signed(&self, name: &str) -> bool {
        self.signed_zones
            .iter()
            .any(|z| name == z || name.ends_with(&format!(".{z}")))
    }
}

struct Shared {
    table: Mutex<Table>,
    stop: AtomicBool,
}

/// Lower-case, no trailing dot: the table's key form.
fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS server on `127.0.0.1:<port>`, UDP and TCP on the same port (RFC 1035 §4.2).
///
/// Unknown names get NXDOMAIN, known names without the asked type get NODATA (NOERROR, empty
/// answer). UDP answers larger than the client's payload size (512 without EDNS) are sent with
/// TC set and no records, so clients must retry over TCP (RFC 7766 §5). Dropping it or
/// calling [`DnsServer::stop`] closes both sockets.
pub struct DnsServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on one free port of 127.0.0.1 and starts serving an empty table.
    pub fn start() -> DnsServer {
        Self::serve(bind_pair())
    }

    /// As [`DnsServer::start`] on a given address (e.g. `127.0.0.1:53` inside a private
    /// network namespace, where resolvers reading /etc/resolv.conf can reach it); fails if
    /// UDP or TCP is taken there.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(udp.local_addr()?)?;
        Ok(Self::serve((udp, tcp)))
    }

    fn serve((udp, tcp): (UdpSocket, TcpListener)) -> DnsServer {
        let addr = udp.local_addr().expect("DNS UDP socket has an address");
        // The root zone is signed, as on the Internet: a validating resolver answers its NS and
        // SOA with AD (Postfix's `dnssec_probe` asks for `. NS`).
        let mut table = Table::default();
        table.records.insert(
            String::new(),
            [Rec::Ns("ns.root.test".into()), Rec::Soa]
                .into_iter()
                .map(|rec| Stored { rec, secure: true })
                .collect(),
        );
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            stop: AtomicBool::new(false),
        });
        let s1 = Arc::clone(&shared);
        let s2 = Arc::clone(&shared);
        let threads = vec![
            std::thread::spawn(move || serve_udp(&s1, &udp)),
            std::thread::spawn(move || serve_tcp(&s2, &tcp)),
        ];
        DnsServer {
            shared,
            addr,
            threads,
        }
    }

    /// The address to configure as the daemon's nameserver (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.shared.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one record to `name`, keeping the others.
    pub fn add(&self, name: &str, rec: Rec) {
        self.table()
            .records
            .entry(norm(name))
            .or_default()
            .push(Stored { rec, secure: false });
    }

    /// Replaces all records of `rec_type` at `name` by `recs` (an empty list leaves the name
    /// known, so its other types still answer NODATA rather than NXDOMAIN).
    pub fn replace(&self, name: &str, rec_type: RecordType, recs: Vec<Rec>) {
        self.replace_with(name, rec_type, recs, false);
    }

    /// As [`DnsServer::replace`], the records DNSSEC-signed (secure) or not.
    pub fn replace_with(&self, name: &str, rec_type: RecordType, recs: Vec<Rec>, secure: bool) {
        let mut t = self.table();
        let list = t.records.entry(norm(name)).or_default();
        list.retain(|r| r.rec.record_type() != rec_type);
        list.extend(recs.into_iter().map(|rec| Stored { rec, secure }));
    }

    /// Marks every record now at `name` DNSSEC-signed (secure) or not.
    pub fn set_secure(&self, name: &str, secure: bool) {
        if let Some(list) = self.table().records.get_mut(&norm(name)) {
            for r in list {
                r.secure = secure;
            }
        }
    }

    /// Makes negative answers (NXDOMAIN, NODATA) for `zone` and every name under it secure:
    /// a signed zone's authenticated denial of existence (RFC 4035 §3.1.3).
    pub fn sign_zone(&self, zone: &str) {
        self.table().signed_zones.push(norm(zone));
    }

    /// With `false`, never sets AD: a resolver that does not validate.
    pub fn set_validating(&self, on: bool) {
        self.table().not_validating = !on;
    }

    /// Replaces the MX records at `name` (`.` as the host is a null MX), signed or not.
    pub fn set_mx(&self, name: &str, mxs: &[(u16, &str)], secure: bool) {
        let recs = mxs
            .iter()
            .map(|(p, h)| Rec::Mx(*p, h.to_string()))
            .collect();
        self.replace_with(name, RecordType::MX, recs, secure);
    }

    /// Replaces the TLSA records at `name` (usage, selector, matching type, data), signed or
    /// not.
    pub fn set_tlsa(&self, name: &str, records: &[(u8, u8, u8, Vec<u8>)], secure: bool) {
        let recs = records
            .iter()
            .map(|(u, s, m, d)| Rec::Tlsa(*u, *s, *m, d.clone()))
            .collect();
        self.replace_with(name, RecordType::TLSA, recs, secure);
    }

    /// Replaces the A records at `name`, signed or not.
    pub fn set_a_with(&self, name: &str, addrs: &[Ipv4Addr], secure: bool) {
        let recs = addrs.iter().map(|a| Rec::A(*a)).collect();
        self.replace_with(name, RecordType::A, recs, secure);
    }

    /// Replaces the TXT records at `name`: one record per inner slice, each made of the given
    /// character-strings (so `&[&["v=STSv1; ", "id=1;"]]` is one record split in two strings).
    pub fn set_txt(&self, name: &str, records: &[&[&str]]) {
        let recs = records
            .iter()
            .map(|strings| Rec::Txt(strings.iter().map(|s| s.to_string()).collect()))
            .collect();
        self.replace(name, RecordType::TXT, recs);
    }

    /// Replaces the A records at `name`.
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        self.replace(
            name,
            RecordType::A,
            addrs.iter().map(|a| Rec::A(*a)).collect(),
        );
    }

    /// Replaces the AAAA records at `name`.
    pub fn set_aaaa(&self, name: &str, addrs: &[Ipv6Addr]) {
        self.replace(
            name,
            RecordType::AAAA,
            addrs.iter().map(|a| Rec::Aaaa(*a)).collect(),
        );
    }

    /// Makes `name` an alias of `target` (replacing any other CNAME of `name`).
    pub fn set_cname(&self, name: &str, target: &str) {
        self.replace(
            name,
            RecordType::CNAME,
            vec![Rec::Cname(target.to_string())],
        );
    }

    /// Forgets every record of `name`: it answers NXDOMAIN again.
    pub fn remove(&self, name: &str) {
        self.table().records.remove(&norm(name));
    }

    /// Answers SERVFAIL for `name` (also when reached through a CNAME) until [`DnsServer::heal`].
    pub fn servfail(&self, name: &str) {
        self.table().faults.insert(norm(name), Fault::ServFail);
    }

    /// Answers REFUSED for `name` until [`DnsServer::heal`].
    pub fn refuse(&self, name: &str) {
        self.table().faults.insert(norm(name), Fault::Refused);
    }

    /// Never answers queries for `name` until [`DnsServer::heal`].
    pub fn silent(&self, name: &str) {
        self.table().faults.insert(norm(name), Fault::Silent);
    }

    /// Truncates every UDP answer for `name` (TCP answers whole) until [`DnsServer::heal`].
    pub fn truncate_udp(&self, name: &str) {
        self.table().faults.insert(norm(name), Fault::TruncateUdp);
    }

    /// Removes the fault injected for `name`.
    pub fn heal(&self, name: &str) {
        self.table().faults.remove(&norm(name));
    }

    /// How many queries (UDP and TCP, any type) asked for `name`.
    pub fn queries(&self, name: &str) -> usize {
        self.table().queries.get(&norm(name)).copied().unwrap_or(0)
    }

    /// How many queries were received in total.
    pub fn total_queries(&self) -> usize {
        self.table().queries.values().sum()
    }

    /// How many queries for `name` asked for DNSSEC (EDNS0 DO or the AD bit).
    pub fn dnssec_queries(&self, name: &str) -> usize {
        self.table()
            .dnssec_queries
            .get(&norm(name))
            .copied()
            .unwrap_or(0)
    }

    /// How many queries of type `rtype` were received, any name.
    pub fn queries_of_type(&self, rtype: RecordType) -> usize {
        self.table().by_type.get(&rtype).copied().unwrap_or(0)
    }

    /// Takes the server down: both sockets are closed when this returns.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds UDP on a free port, then TCP on the same port, retrying on a conflict.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP on 127.0.0.1");
        let Ok(addr) = udp.local_addr() else { continue };
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (udp, tcp);
        }
    }
    panic!("could not bind UDP and TCP on one free port of 127.0.0.1");
}

fn serve_udp(shared: &Shared, sock: &UdpSocket) {
    let _ = sock.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Some(query) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
            continue;
        };
        let Some(resp) = answer(shared, &query, true) else {
            continue;
        };
        let Ok(mut bytes) = resp.to_vec() else {
            continue;
        };
        if bytes.len() > usize::from(query.max_payload()) {
            // Too big for this client's UDP: TC and no records, as servers do (RFC 2181 §9).
            match resp.truncate().to_vec() {
                Ok(b) => bytes = b,
                Err(_) => continue,
            }
        }
        let _ = sock.send_to(&bytes, peer);
    }
}

fn serve_tcp(shared: &Arc<Shared>, listener: &TcpListener) {
    let _ = listener.set_nonblocking(true);
    let mut conns = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = Arc::clone(shared);
                conns.push(std::thread::spawn(move || serve_tcp_conn(&s, stream)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
        conns.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Serves length-prefixed queries (RFC 1035 §4.2.2) until the client closes or the server stops.
fn serve_tcp_conn(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let [hi, lo, rest @ ..] = buf.as_slice() {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let Some(msg) = rest.get(..len) else { break };
            let reply = Message::from_vec(msg)
                .ok()
                .and_then(|q| answer(shared, &q, false))
                .and_then(|r| r.to_vec().ok());
            buf.drain(..2 + len);
            if let Some(bytes) = reply {
                let Ok(len) = u16::try_from(bytes.len()) else {
                    return;
                };
                let mut out = len.to_be_bytes().to_vec();
                out.extend_from_slice(&bytes);
                if stream.write_all(&out).is_err() {
                    return;
                }
            }
        }
    }
}

/// Builds the answer for `query` received over UDP (`udp`) or TCP, or `None` when the name is
/// silent.
fn answer(shared: &Shared, query: &Message, udp: bool) -> Option<Message> {
    let q = query.queries.first()?;
    let qtype = q.query_type();
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.set_edns(edns);
    }

    let mut table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    let mut name = norm(&q.name().to_ascii());
    *table.queries.entry(name.clone()).or_default() += 1;
    *table.by_type.entry(qtype).or_default() += 1;
    // A validating resolver says whether data is secure only when asked (RFC 6840 §5.7).
    let asked =
        query.metadata.authentic_data || query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    if asked {
        *table.dnssec_queries.entry(name.clone()).or_default() += 1;
    }
    let validating = asked && !table.not_validating;
    // Every record of the answer (the chain included) must be secure for AD.
    let mut secure = true;

    // Follow the CNAME chain like a recursive server: aliases then the target's records.
    for _ in 0..MAX_CHAIN {
        match table.faults.get(&name) {
            Some(Fault::Silent) => return None,
            Some(Fault::ServFail) => return Some(error(resp, ResponseCode::ServFail)),
            Some(Fault::Refused) => return Some(error(resp, ResponseCode::Refused)),
            Some(Fault::TruncateUdp) if udp => return Some(resp.truncate()),
            Some(Fault::TruncateUdp) | None => {}
        }
        let Some(recs) = table.records.get(&name) else {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.metadata.authentic_data = validating && secure && table.signed(&name);
            add_soa(&mut resp);
            return Some(resp);
        };
        let alias = recs.iter().find_map(|r| match &r.rec {
            Rec::Cname(t) if qtype != RecordType::CNAME => Some((t.clone(), r.secure)),
            _ => None,
        });
        let owner = Name::from_ascii(format!("{name}.")).ok()?;
        if let Some((target, signed)) = alias {
            let target_name = Name::from_ascii(format!("{}.", norm(&target))).ok()?;
            resp.add_answer(Record::from_rdata(
                owner,
                TTL,
                RData::CNAME(CNAME(target_name)),
            ));
            secure &= signed;
            name = norm(&target);
            continue;
        }
        let matching: Vec<&Stored> = recs
            .iter()
            .filter(|r| r.rec.record_type() == qtype)
            .collect();
        if matching.is_empty() {
            secure &= table.signed(&name);
            add_soa(&mut resp);
        }
        for r in matching {
            secure &= r.secure;
            resp.add_answer(Record::from_rdata(owner.clone(), TTL, rdata(&r.rec)));
        }
        resp.metadata.authentic_data = validating && secure;
        return Some(resp);
    }
    Some(error(resp, ResponseCode::ServFail))
}

/// The SOA of a negative answer, whose TTL and MINIMUM give the negative TTL (RFC 2308 §5).
fn add_soa(resp: &mut Message) {
    resp.add_authority(Record::from_rdata(Name::root(), TTL, RData::SOA(soa())));
}

/// The one SOA record of the world (its root zone's).
fn soa() -> SOA {
    SOA::new(Name::root(), Name::root(), 1, 3600, 600, 86_400, TTL)
}

fn error(mut resp: Message, code: ResponseCode) -> Message {
    resp.answers.clear();
    resp.metadata.response_code = code;
    resp
}

fn rdata(rec: &Rec) -> RData {
    match rec {
        // Strings over 255 bytes cannot be encoded: split them as a zone file would need to.
        Rec::Txt(strings) => RData::TXT(TXT::from_bytes(
            strings
                .iter()
                .flat_map(|s| match s.as_bytes() {
                    [] => vec![&b""[..]],
                    b => b.chunks(255).collect(),
                })
                .collect(),
        )),
        Rec::A(a) => RData::A(A(*a)),
        Rec::Aaaa(a) => RData::AAAA(AAAA(*a)),
        Rec::Cname(t) => RData::CNAME(CNAME(
            Name::from_ascii(format!("{}.", norm(t))).unwrap_or_else(|_| Name::root()),
        )),
        Rec::Mx(preference, host) => {
            let exchange = if host == "." {
                Name::root()
            } else {
                Name::from_ascii(format!("{}.", norm(host))).unwrap_or_else(|_| Name::root())
            };
            RData::MX(MX::new(*preference, exchange))
        }
        Rec::Tlsa(usage, selector, matching, data) => RData::TLSA(TLSA::new(
            CertUsage::from(*usage),
            Selector::from(*selector),
            Matching::from(*matching),
            data.clone(),
        )),
        Rec::Ns(host) => RData::NS(NS(
            Name::from_ascii(format!("{}.", norm(host))).unwrap_or_else(|_| Name::root())
        )),
        Rec::Soa => RData::SOA(soa()),
    }
}
