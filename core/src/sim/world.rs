//! The scripted network as a [`Transport`]: nameservers reached over
//! datagrams (and TCP after truncation), policy hosts reached by
//! `tls_connect`. Addresses that nobody scripted swallow datagrams and
//! refuse connections.

use super::dns::DnsServer;
use super::https::{HostBehaviour, HttpsReply, HttpsServers};
use super::net::{duplex, DatagramPeer, SimDatagram, PIPE_CAPACITY};
use super::Sim;
use crate::dns::QueryType;
use crate::service::{BoxStream, Datagram, Runtime, Transport};
use futures::FutureExt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

/// The address of the sim's nameserver.
pub const NAMESERVER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 53), 53));

/// The scripted world: one DNS server (at every address in its
/// nameserver list) and the policy hosts. Clone it freely.
#[derive(Clone)]
pub struct World {
    sim: Sim,
    /// The DNS server's script and counters.
    pub dns: DnsServer,
    /// The policy servers' script and counters.
    pub https: HttpsServers,
    nameservers: Arc<Vec<SocketAddr>>,
}

impl World {
    /// A world whose DNS server answers at [`NAMESERVER`].
    pub fn new(sim: &Sim) -> Self {
        World::with_nameservers(sim, vec![NAMESERVER])
    }

    /// A world whose DNS server answers at each of `nameservers`.
    pub fn with_nameservers(sim: &Sim, nameservers: Vec<SocketAddr>) -> Self {
        World {
            sim: sim.clone(),
            dns: DnsServer::default(),
            https: HttpsServers::default(),
            nameservers: Arc::new(nameservers),
        }
    }

    /// The world as the core's transport.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    /// Publish an MTA-STS domain: TXT `_mta-sts.<domain>` with `id`
    /// (RFC 8461 §3.1), an A record for `mta-sts.<domain>` and a policy
    /// server there answering `body` after `latency` (§3.3).
    pub fn publish(&self, domain: &str, id: &str, body: &str, latency: Duration) {
        self.publish_host(
            domain,
            id,
            HostBehaviour::Serve(HttpsReply::ok(body, latency)),
        );
    }

    /// [`World::publish`] with any behaviour of the policy host.
    pub fn publish_host(&self, domain: &str, id: &str, behaviour: HostBehaviour) {
        let host = format!("mta-sts.{domain}");
        let addr = self.https.addr_of(&host);
        self.dns.set_sts_id(domain, id);
        self.dns.set(
            &host,
            QueryType::A,
            super::dns::DnsAnswer::Addrs(vec![addr]),
        );
        self.https.set(&host, behaviour);
    }

    /// Replace what `mta-sts.<domain>` serves.
    pub fn set_policy(&self, domain: &str, behaviour: HostBehaviour) {
        self.https.set(&format!("mta-sts.{domain}"), behaviour);
    }

    /// Policy fetches from `mta-sts.<domain>` so far.
    pub fn fetches(&self, domain: &str) -> usize {
        self.https.fetches(&format!("mta-sts.{domain}"))
    }

    /// Virtual times of the policy fetches from `mta-sts.<domain>`.
    pub fn fetch_times(&self, domain: &str) -> Vec<Duration> {
        let host = format!("mta-sts.{domain}");
        self.https
            .log()
            .into_iter()
            .filter(|f| f.host == host)
            .map(|f| f.at)
            .collect()
    }

    /// TXT queries for `_mta-sts.<domain>` so far.
    pub fn txt_queries(&self, domain: &str) -> usize {
        self.dns.txt_queries(domain)
    }

    fn is_nameserver(&self, addr: SocketAddr) -> bool {
        self.nameservers.contains(&addr)
    }
}

#[async_trait::async_trait]
impl Transport for World {
    async fn udp_connect(&self, server: SocketAddr) -> io::Result<Box<dyn Datagram>> {
        let peer: Option<DatagramPeer> = self.is_nameserver(server).then(|| {
            let (dns, sim) = (self.dns.clone(), self.sim.clone());
            let peer: DatagramPeer =
                Arc::new(move |query, reply_to| dns.handle_udp(&sim, query, reply_to));
            peer
        });
        Ok(Box::new(SimDatagram::new(peer)))
    }

    async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<BoxStream> {
        if !self.is_nameserver(addr) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("sim: nothing listens at {addr}"),
            ));
        }
        let (client, server) = duplex(PIPE_CAPACITY);
        let task = self.dns.clone().serve_tcp(self.sim.clone(), server);
        self.sim.spawn(task.boxed());
        Ok(Box::new(client))
    }

    async fn tls_connect(&self, addr: SocketAddr, server_name: &str) -> io::Result<BoxStream> {
        let ip: IpAddr = addr.ip();
        self.https.connect(&self.sim, ip, server_name).await
    }
}
