//! [`Transport`] on tokio's sockets and tokio-native-tls.

use mta_sts_core::service::{BoxStream, Datagram, Transport};
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// UDP/TCP sockets and TLS connections for DNS and policy fetches.
pub struct TokioTransport {
    tls: tokio_native_tls::TlsConnector,
}

impl TokioTransport {
    /// A transport validating policy hosts with `tls`.
    pub fn new(tls: native_tls::TlsConnector) -> Self {
        TokioTransport { tls: tls.into() }
    }
}

struct TokioDatagram(UdpSocket);

#[async_trait::async_trait]
impl Datagram for TokioDatagram {
    async fn send(&self, buf: &[u8]) -> io::Result<()> {
        self.0.send(buf).await.map(|_| ())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf).await
    }
}

#[async_trait::async_trait]
impl Transport for TokioTransport {
    async fn udp_connect(&self, server: SocketAddr) -> io::Result<Box<dyn Datagram>> {
        // Port 0: the kernel picks a random source port (RFC 5452 §9.2).
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        Ok(Box::new(TokioDatagram(socket)))
    }

    async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<BoxStream> {
        Ok(Box::new(TcpStream::connect(addr).await?.compat()))
    }

    async fn tls_connect(&self, addr: SocketAddr, server_name: &str) -> io::Result<BoxStream> {
        let tcp = TcpStream::connect(addr).await?;
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(io::Error::other)?;
        Ok(Box::new(tls.compat()))
    }
}
