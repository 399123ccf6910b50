//! The scripted policy servers (RFC 8461 §3.3): per policy host an address
//! and a behaviour (a response with its latency, a TLS failure, or
//! silence). `tls_connect` hands the core one end of a pipe whose other end
//! is served by a task speaking plain HTTP/1.1 (TLS is the driver's job).

use super::net::{duplex, PipeEnd, PIPE_CAPACITY};
use super::Sim;
use crate::service::{BoxStream, Runtime};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The HTTP response a policy host sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsReply {
    /// Status code (RFC 8461 §3.3: only 200 is a policy).
    pub status: u16,
    /// `Content-Type` (`None`: no header).
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
    /// Virtual time between the request and the response.
    pub latency: Duration,
}

impl HttpsReply {
    /// `200 OK`, `text/plain`, `body`, answered after `latency`.
    pub fn ok(body: impl Into<String>, latency: Duration) -> Self {
        HttpsReply {
            status: 200,
            content_type: Some("text/plain".into()),
            body: body.into(),
            latency,
        }
    }

    /// The bytes on the wire (HTTP/1.1, Content-Length, then close).
    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} X\r\n", self.status);
        if let Some(ct) = &self.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// How a policy host behaves when the core connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostBehaviour {
    /// Answer the request with this response.
    Serve(HttpsReply),
    /// The TLS connection fails (e.g. certificate validation, §3.3) with
    /// this reason.
    TlsFailure(String),
    /// Accept the connection and never answer.
    Hang,
}

/// A policy body: `version: STSv1`, `mode`, one `mx` line per pattern and
/// `max_age` (RFC 8461 §3.2).
pub fn policy_text(mode: &str, mx: &[&str], max_age: u64) -> String {
    let mut s = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        s.push_str(&format!("mx: {m}\r\n"));
    }
    s.push_str(&format!("max_age: {max_age}\r\n"));
    s
}

/// One connection attempt to a policy host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchLog {
    /// Virtual time of the attempt.
    pub at: Duration,
    /// The name the client validated the certificate for (SNI).
    pub host: String,
    /// The address connected to.
    pub addr: IpAddr,
}

struct Host {
    addr: IpAddr,
    behaviour: HostBehaviour,
}

#[derive(Default)]
struct State {
    hosts: HashMap<String, Host>,
    /// Addresses whose connections never complete (packets dropped).
    blackholes: Vec<IpAddr>,
    next_addr: u8,
    log: Vec<FetchLog>,
    requests: Vec<String>,
}

/// The scripted policy servers. Clone it freely.
#[derive(Clone, Default)]
pub struct HttpsServers {
    state: Arc<Mutex<State>>,
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl HttpsServers {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address of `host`, allocating the next 127.0.0.x on first use.
    pub fn addr_of(&self, host: &str) -> IpAddr {
        let mut st = self.state();
        if let Some(h) = st.hosts.get(&norm(host)) {
            return h.addr;
        }
        st.next_addr = st
            .next_addr
            .checked_add(1)
            .expect("sim: over 255 policy hosts");
        let addr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, st.next_addr));
        st.hosts.insert(
            norm(host),
            Host {
                addr,
                behaviour: HostBehaviour::Hang,
            },
        );
        addr
    }

    /// Make `host` behave as `behaviour` (allocating its address if new).
    pub fn set(&self, host: &str, behaviour: HostBehaviour) {
        self.addr_of(host);
        if let Some(h) = self.state().hosts.get_mut(&norm(host)) {
            h.behaviour = behaviour;
        }
    }

    /// Connections to `addr` never complete, as when a firewall drops
    /// the packets (the caller's deadline must end the attempt).
    pub fn blackhole(&self, addr: IpAddr) {
        self.state().blackholes.push(addr);
    }

    /// Connection attempts to `host` (each is one policy fetch).
    pub fn fetches(&self, host: &str) -> usize {
        let host = norm(host);
        self.state().log.iter().filter(|f| f.host == host).count()
    }

    /// Every connection attempt, in order.
    pub fn log(&self) -> Vec<FetchLog> {
        self.state().log.clone()
    }

    /// Every request head received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// `tls_connect(addr, server_name)` as the scripted world answers it.
    pub(super) async fn connect(
        &self,
        sim: &Sim,
        addr: IpAddr,
        server_name: &str,
    ) -> io::Result<BoxStream> {
        let name = norm(server_name);
        let blackholed = {
            let mut st = self.state();
            st.log.push(FetchLog {
                at: sim.elapsed(),
                host: name.clone(),
                addr,
            });
            st.blackholes.contains(&addr)
        };
        if blackholed {
            futures::future::pending::<()>().await;
        }
        let behaviour = {
            let st = self.state();
            let Some((host, h)) = st.hosts.iter().find(|(_, h)| h.addr == addr) else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("sim: nothing listens at {addr}"),
                ));
            };
            if *host != name {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("sim: certificate of {host} does not match {name}"),
                ));
            }
            h.behaviour.clone()
        };
        let reply = match behaviour {
            HostBehaviour::TlsFailure(why) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
            HostBehaviour::Serve(reply) => Some(reply),
            HostBehaviour::Hang => None,
        };
        let (client, server) = duplex(PIPE_CAPACITY);
        let task = serve(self.clone(), sim.clone(), server, reply);
        sim.spawn(task.boxed());
        Ok(Box::new(client))
    }
}

/// Read the request head, wait the latency, answer and close; or, with no
/// reply, read until the client goes away.
async fn serve(servers: HttpsServers, sim: Sim, mut stream: PipeEnd, reply: Option<HttpsReply>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
        assert!(head.len() <= 16 * 1024, "sim HTTPS: request head too long");
    }
    servers
        .state()
        .requests
        .push(String::from_utf8_lossy(&head).into_owned());
    let Some(reply) = reply else {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        return;
    };
    sim.sleep(reply.latency).await;
    if stream.write_all(&reply.to_bytes()).await.is_ok() {
        let _ = stream.close().await;
    }
}
