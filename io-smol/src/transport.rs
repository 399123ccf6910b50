//! The smol sockets under the shared [`SocketTransport`]: async-net's TCP
//! stream and UDP socket. TLS, the UDP source address and the connect flow
//! are in `mta-sts-host`, written once for both drivers.

use async_net::{TcpStream, UdpSocket};
use mta_sts_core::service::Datagram;
use mta_sts_host::{SocketTransport, Sockets};
use std::io;
use std::net::SocketAddr;

/// async-net's sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolSockets;

/// UDP/TCP sockets and TLS connections for DNS and policy fetches, on smol.
pub type SmolTransport = SocketTransport<SmolSockets>;

struct SmolDatagram(UdpSocket);

#[async_trait::async_trait]
impl Datagram for SmolDatagram {
    async fn send(&self, buf: &[u8]) -> io::Result<()> {
        self.0.send(buf).await.map(|_| ())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf).await
    }
}

impl Sockets for SmolSockets {
    type Tcp = TcpStream;

    async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }

    async fn udp_connect(
        &self,
        local: SocketAddr,
        server: SocketAddr,
    ) -> io::Result<Box<dyn Datagram>> {
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        Ok(Box::new(SmolDatagram(socket)))
    }
}
