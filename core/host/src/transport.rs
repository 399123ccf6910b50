//! The [`Transport`] of both drivers, written once over the few socket
//! calls a runtime supplies ([`Sockets`]): the UDP source address choice,
//! and the policy-fetch TLS connect (RFC 8461 §3.3) with one shared
//! connector (see [`crate::tls`]).

use futures::io::{AsyncRead, AsyncWrite};
use mta_sts_core::service::{BoxStream, Datagram, Transport};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// A runtime's sockets: what differs between the drivers' transports.
pub trait Sockets: Send + Sync + 'static {
    /// The runtime's TCP stream, seen as a futures-io stream.
    type Tcp: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Open a TCP connection to `addr`.
    fn tcp_connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Bind a UDP socket to `local`, connect it to `server`.
    fn udp_connect(
        &self,
        local: SocketAddr,
        server: SocketAddr,
    ) -> impl Future<Output = io::Result<Box<dyn Datagram>>> + Send;
}

/// UDP/TCP sockets of a runtime and TLS connections through one shared
/// connector, for DNS and policy fetches.
pub struct SocketTransport<K> {
    sockets: K,
    roots: crate::TlsRoots,
    tls: std::sync::OnceLock<Result<native_tls::TlsConnector, String>>,
}

impl<K: Sockets> SocketTransport<K> {
    /// A transport on `sockets`, validating policy hosts against `roots`
    /// with a connector built at the first policy fetch and shared by all.
    pub fn new(sockets: K, roots: crate::TlsRoots) -> Self {
        SocketTransport {
            sockets,
            roots,
            tls: std::sync::OnceLock::new(),
        }
    }

    fn connector(&self) -> io::Result<&native_tls::TlsConnector> {
        match self.tls.get_or_init(|| self.roots.connector()) {
            Ok(tls) => Ok(tls),
            Err(e) => Err(io::Error::other(e.clone())),
        }
    }
}

/// The unspecified address of `server`'s family, port 0: the kernel picks
/// a random source port (RFC 5452 §9.2).
fn udp_local_addr(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

#[async_trait::async_trait]
impl<K: Sockets> Transport for SocketTransport<K> {
    async fn udp_connect(&self, server: SocketAddr) -> io::Result<Box<dyn Datagram>> {
        self.sockets
            .udp_connect(udp_local_addr(server), server)
            .await
    }

    async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<BoxStream> {
        Ok(Box::new(self.sockets.tcp_connect(addr).await?))
    }

    async fn tls_connect(&self, addr: SocketAddr, server_name: &str) -> io::Result<BoxStream> {
        let tls = self.connector()?;
        let tcp = self.sockets.tcp_connect(addr).await?;
        Ok(Box::new(crate::tls::connect(tls, server_name, tcp).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_source_is_any_address_of_the_servers_family_on_a_kernel_port() {
        let v4: SocketAddr = "192.0.2.1:53".parse().expect("v4");
        let v6: SocketAddr = "[2001:db8::1]:53".parse().expect("v6");
        assert_eq!(udp_local_addr(v4), "0.0.0.0:0".parse().expect("any v4"));
        assert_eq!(udp_local_addr(v6), "[::]:0".parse().expect("any v6"));
    }
}
