//! The tokio sockets under the shared [`SocketTransport`]: tokio's TCP
//! stream (as a futures-io stream through tokio-util's compat, so the TLS
//! code in `mta-sts-host` serves both drivers) and UDP socket.

use mta_sts_core::service::Datagram;
use mta_sts_host::{SocketTransport, Sockets};
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// tokio's sockets (used from tasks on the runtime, where they register).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSockets;

/// UDP/TCP sockets and TLS connections for DNS and policy fetches, on tokio.
pub type TokioTransport = SocketTransport<TokioSockets>;

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

impl Sockets for TokioSockets {
    type Tcp = Compat<TcpStream>;

    async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<Compat<TcpStream>> {
        Ok(TcpStream::connect(addr).await?.compat())
    }

    async fn udp_connect(
        &self,
        local: SocketAddr,
        server: SocketAddr,
    ) -> io::Result<Box<dyn Datagram>> {
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        Ok(Box::new(TokioDatagram(socket)))
    }
}
