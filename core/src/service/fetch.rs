//! The network half of a lookup: the `_mta-sts` TXT query (RFC 8461 §3.1)
//! and the HTTPS policy fetch (§3.3), turned into the resolve state
//! machine's inputs.

use super::{with_timeout, DnsClient, DnsLookupError, Runtime, Transport};
use crate::dns::DnsFailure;
use crate::dns::{Answer, QueryType};
use crate::domain::Domain;
use crate::http::{build_policy_request, HttpError, Progress, ResponseParser, MAX_POLICY_BODY};
use crate::policy::{parse_policy, Policy, PolicyError};
use crate::resolve::{Failure, NoPolicy, TxtResult};
use crate::txt::parse_sts_records;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Query the `_mta-sts` TXT record of `domain` and classify the outcome.
pub async fn lookup_txt<R: Runtime>(dns: &DnsClient<R>, domain: &Domain) -> TxtResult {
    match dns.query(&domain.txt_name(), QueryType::Txt).await {
        Ok(Answer::Txt(records)) => match parse_sts_records(&records) {
            Ok(record) => TxtResult::Id(record.id),
            Err(e) => TxtResult::NoPolicy(NoPolicy::Record(e)),
        },
        Ok(Answer::NoRecords(kind)) => TxtResult::NoPolicy(NoPolicy::NoRecord(kind)),
        Ok(Answer::Addresses(_) | Answer::Mx(_) | Answer::Tlsa(_) | Answer::Soa) => {
            TxtResult::Error(Failure::Txt(DnsFailure::UnexpectedAnswer))
        }
        Err(e) => TxtResult::Error(Failure::Txt(e.into())),
    }
}

/// Why a policy could not be fetched (RFC 8461 §3.3).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The policy host's addresses could not be resolved.
    #[error("policy host {host}: {source}")]
    Dns {
        /// `mta-sts.<domain>`.
        host: String,
        /// The DNS failure.
        source: DnsLookupError,
    },
    /// The policy host has no A/AAAA record.
    #[error("policy host {0} has no address")]
    NoAddress(String),
    /// TCP/TLS connection or certificate validation failed, or the stream broke.
    #[error("policy host {host}: {source}")]
    Io {
        /// `mta-sts.<domain>`.
        host: String,
        /// The IO or TLS error.
        source: std::io::Error,
    },
    /// The HTTP response was refused (status, type, size, framing).
    #[error("policy fetch: {0}")]
    Http(#[from] HttpError),
    /// The policy file is invalid (§3.2).
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Failure {
        match e {
            FetchError::Dns { host, source } => Failure::HostDns {
                host,
                cause: source.into(),
            },
            FetchError::NoAddress(host) => Failure::NoAddress(host),
            FetchError::Io { host, source } if super::is_local_exhaustion(&source) => {
                Failure::Local(format!("policy host {host}: {source}"))
            }
            FetchError::Io { host, source } => Failure::Connect {
                host,
                reason: source.to_string(),
            },
            FetchError::Http(e) => Failure::Http(e),
            FetchError::Policy(e) => Failure::Policy(e),
        }
    }
}

/// How long connecting to one of several addresses of a policy host may
/// take before the next is tried; the last address has whatever is left of
/// the lookup's time.
const CONNECT_ATTEMPT_LIMIT: Duration = Duration::from_secs(1);

/// Fetch and validate `https://mta-sts.<domain>/.well-known/mta-sts.txt`,
/// connecting to `port` (443 outside tests).
pub async fn fetch_policy<R: Runtime>(
    dns: &DnsClient<R>,
    transport: &dyn Transport,
    domain: &Domain,
    port: u16,
    user_agent: &str,
) -> Result<Policy, FetchError> {
    let host = domain.policy_host();
    let addrs = resolve_host(dns, &host).await?;
    let last = addrs.len().saturating_sub(1);
    let mut last_io = None;
    for (i, ip) in addrs.into_iter().enumerate() {
        let connect = transport.tls_connect(SocketAddr::new(ip, port), &host);
        // All but the last address get a bounded slice: an address that
        // drops packets must not hold the fetch until the lookup deadline.
        let connected = if i < last {
            with_timeout(dns.runtime(), CONNECT_ATTEMPT_LIMIT, connect)
                .await
                .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()))
        } else {
            connect.await
        };
        match connected {
            Ok(stream) => {
                let body = exchange(stream, &host, user_agent)
                    .await
                    .map_err(|e| match e {
                        Exchange::Io(source) => FetchError::Io {
                            host: host.clone(),
                            source,
                        },
                        Exchange::Http(e) => FetchError::Http(e),
                    })?;
                return Ok(parse_policy(&body)?);
            }
            Err(source) => {
                log::debug!("policy host {host} at {ip}: {source}");
                last_io = Some(source);
            }
        }
    }
    Err(match last_io {
        Some(source) => FetchError::Io { host, source },
        None => FetchError::NoAddress(host),
    })
}

async fn resolve_host<R: Runtime>(
    dns: &DnsClient<R>,
    host: &str,
) -> Result<Vec<IpAddr>, FetchError> {
    // A and AAAA at once: the slower of the two, not the sum.
    let (v4, v6) = futures::join!(
        dns.query(host, QueryType::A),
        dns.query(host, QueryType::Aaaa)
    );
    let mut addrs = Vec::new();
    let mut first_error = None;
    for result in [v4, v6] {
        match result {
            Ok(Answer::Addresses(found)) => addrs.extend(found),
            Ok(_) => {}
            Err(source) => first_error = first_error.or(Some(source)),
        }
    }
    match (addrs.is_empty(), first_error) {
        (false, _) => Ok(addrs),
        (true, Some(source)) => Err(FetchError::Dns {
            host: host.to_owned(),
            source,
        }),
        (true, None) => Err(FetchError::NoAddress(host.to_owned())),
    }
}

enum Exchange {
    Io(std::io::Error),
    Http(HttpError),
}

async fn exchange(
    mut stream: super::BoxStream,
    host: &str,
    user_agent: &str,
) -> Result<Vec<u8>, Exchange> {
    stream
        .write_all(&build_policy_request(host, user_agent))
        .await
        .map_err(Exchange::Io)?;
    stream.flush().await.map_err(Exchange::Io)?;
    let mut parser = ResponseParser::new(MAX_POLICY_BODY);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // Servers that close without a TLS close_notify: EOF all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(Exchange::Io(e)),
        };
        if n == 0 {
            return parser.finish().map_err(Exchange::Http);
        }
        match parser
            .feed(buf.get(..n).unwrap_or_default())
            .map_err(Exchange::Http)?
        {
            Progress::Partial => {}
            Progress::Complete(body) => return Ok(body),
        }
    }
}
