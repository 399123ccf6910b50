//! The stub resolver: UDP with a random ID over a few shared sockets on
//! random source ports, TCP on truncation (RFC 1035 §4.2, RFC 7766),
//! nameservers tried in turn for `attempts` rounds, as glibc does with
//! /etc/resolv.conf.

use super::udp_pool::UdpPool;
use super::{with_timeout, Runtime, Transport};
use crate::dns::{self, Answer, Answered, DnsError, Parsed, QueryType};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why a DNS lookup failed (a fetch error, not "no policy": RFC 8461 §3.1).
#[derive(Debug, thiserror::Error)]
pub enum DnsLookupError {
    /// No nameserver answered in time.
    #[error("DNS timeout")]
    Timeout,
    /// A nameserver answered with an error or an unusable message.
    #[error("DNS error: {0}")]
    Server(#[from] DnsError),
    /// The transport failed (connection refused, network unreachable).
    #[error("DNS transport error: {0}")]
    Io(#[from] std::io::Error),
    /// There is no nameserver to ask.
    #[error("no nameserver configured")]
    NoNameservers,
}

impl From<DnsLookupError> for crate::dns::DnsFailure {
    fn from(e: DnsLookupError) -> Self {
        use crate::dns::DnsFailure;
        match e {
            DnsLookupError::Timeout => DnsFailure::Timeout,
            DnsLookupError::Server(e) => DnsFailure::Server(e),
            DnsLookupError::Io(e) if super::is_local_exhaustion(&e) => {
                DnsFailure::Local(e.to_string())
            }
            DnsLookupError::Io(e) => DnsFailure::Transport(e.to_string()),
            DnsLookupError::NoNameservers => DnsFailure::NoNameservers,
        }
    }
}

/// A DNS stub client over the driver's [`Transport`].
pub struct DnsClient<R: Runtime> {
    rt: R,
    transport: Arc<dyn Transport>,
    servers: Vec<SocketAddr>,
    attempts: u32,
    try_timeout: Duration,
    udp: UdpPool<R>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl<R: Runtime> DnsClient<R> {
    /// A client asking `servers` in turn, `attempts` rounds, each try bounded
    /// by `try_timeout` (resolv.conf `options timeout:`/`attempts:`).
    pub fn new(
        rt: R,
        transport: Arc<dyn Transport>,
        servers: Vec<SocketAddr>,
        attempts: u32,
        try_timeout: Duration,
    ) -> Self {
        DnsClient {
            udp: UdpPool::new(rt.clone(), transport.clone()),
            rt,
            transport,
            servers,
            attempts: attempts.max(1),
            try_timeout,
            metrics: None,
        }
    }

    /// Count every query in `metrics` (by type and response code).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, qtype: QueryType, outcome: &Result<Answered, DnsLookupError>) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let rcode = match outcome {
            Ok(Answered {
                answer: Answer::NoRecords(dns::NoRecordsKind::NxDomain),
                ..
            }) => "NXDOMAIN",
            Ok(_) => "NOERROR",
            Err(DnsLookupError::Timeout) => "timeout",
            Err(DnsLookupError::Server(DnsError::ServFail)) => "SERVFAIL",
            Err(DnsLookupError::Server(DnsError::Refused)) => "REFUSED",
            Err(_) => "error",
        };
        metrics.dns_query(&format!("{qtype:?}").to_ascii_uppercase(), rcode);
    }

    /// The runtime the client runs on (for the fetch's timers).
    pub(super) fn runtime(&self) -> &R {
        &self.rt
    }

    /// Look `name` up; NXDOMAIN and NODATA are answers (`Answer::NoRecords`),
    /// SERVFAIL/REFUSED/timeouts are errors.
    pub async fn query(&self, name: &str, qtype: QueryType) -> Result<Answer, DnsLookupError> {
        let outcome = self.ask(name, qtype, false).await;
        self.count(qtype, &outcome);
        Ok(outcome?.answer)
    }

    /// Look `name` up asking for DNSSEC validation (EDNS0 DO and AD bits,
    /// RFC 6840 §5.7): the answer with its AD bit, TTL and CNAME-expanded
    /// name, for DANE (RFC 7672 §2.1). Errors as [`DnsClient::query`].
    pub async fn query_dnssec(
        &self,
        name: &str,
        qtype: QueryType,
    ) -> Result<Answered, DnsLookupError> {
        let outcome = self.ask(name, qtype, true).await;
        self.count(qtype, &outcome);
        outcome
    }

    async fn ask(
        &self,
        name: &str,
        qtype: QueryType,
        dnssec: bool,
    ) -> Result<Answered, DnsLookupError> {
        let mut last = DnsLookupError::NoNameservers;
        for _ in 0..self.attempts {
            for &server in &self.servers {
                match with_timeout(
                    &self.rt,
                    self.try_timeout,
                    self.exchange(server, name, qtype, dnssec),
                )
                .await
                {
                    Some(Ok(answer)) => return Ok(answer),
                    Some(Err(e)) => {
                        log::debug!("DNS {name} {qtype:?} via {server}: {e}");
                        last = e;
                    }
                    None => {
                        log::debug!("DNS {name} {qtype:?} via {server}: timeout");
                        last = DnsLookupError::Timeout;
                    }
                }
            }
        }
        Err(last)
    }

    /// A query for `name` with a fresh unpredictable id.
    fn new_query(
        &self,
        name: &str,
        qtype: QueryType,
        dnssec: bool,
    ) -> Result<(u16, Vec<u8>), DnsLookupError> {
        let id = self.udp.random_u16();
        Ok((id, dns::build_query_with(id, name, qtype, dnssec)?))
    }

    /// UDP sockets open for queries (bounded: a few per nameserver).
    pub fn open_sockets(&self) -> usize {
        self.udp.open_sockets()
    }

    async fn exchange(
        &self,
        server: SocketAddr,
        name: &str,
        qtype: QueryType,
        dnssec: bool,
    ) -> Result<Answered, DnsLookupError> {
        let (_, mut query) = self.new_query(name, qtype, dnssec)?;
        let mut pending = self.udp.send(server, &mut query).await?;
        let id = pending.id();
        loop {
            let Some(datagram) = pending.answers.next().await else {
                return Err(DnsLookupError::Io(std::io::Error::other(
                    "DNS socket closed",
                )));
            };
            match dns::parse_response_full(&datagram, id, name, qtype) {
                Ok(Parsed::Answered(answer)) => return Ok(answer),
                Ok(Parsed::Truncated) => {
                    return self.exchange_tcp(server, name, qtype, dnssec).await
                }
                // A datagram that is not the answer to our question (late,
                // spoofed): keep waiting for the real one.
                Err(e) if e.is_unrelated() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn exchange_tcp(
        &self,
        server: SocketAddr,
        name: &str,
        qtype: QueryType,
        dnssec: bool,
    ) -> Result<Answered, DnsLookupError> {
        let (id, query) = self.new_query(name, qtype, dnssec)?;
        let mut stream = self.transport.tcp_connect(server).await?;
        stream.write_all(&dns::tcp_frame(&query)).await?;
        stream.flush().await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut msg = vec![0u8; dns::tcp_length(&len).unwrap_or(0)];
        stream.read_exact(&mut msg).await?;
        match dns::parse_response_full(&msg, id, name, qtype)? {
            Parsed::Answered(answer) => Ok(answer),
            Parsed::Truncated => Err(DnsError::Malformed("truncated TCP response".into()).into()),
        }
    }
}
