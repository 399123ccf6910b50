//! Accepting connections: one blocking accept loop per listener, a thread
//! per connection, at most `max_connections` open (more wait in the listen
//! backlog), a short pause when descriptors run out (never a busy loop),
//! and the stop: no more accepting, every open connection drained.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mta_sts_core::config::Limits;
use mta_sts_core::service::Service;

use super::conn::{self, Context};
use super::registry::Registry;

/// Stack of a connection thread: the request path needs little, and only
/// the touched pages count towards memory.
const CONN_STACK: usize = 256 * 1024;
/// Pause after a failed accept (out of descriptors, ...): at most ten
/// warnings a second, and the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound listening socket.
pub enum Listener {
    /// TCP (`host`/`port`).
    Tcp(TcpListener),
    /// Unix (`path`).
    Unix(UnixListener),
}

impl Listener {
    /// Where a stop connects to wake the accept loop.
    fn wake_target(&self) -> Option<WakeTarget> {
        match self {
            Listener::Tcp(l) => {
                let mut addr = l.local_addr().ok()?;
                if addr.ip().is_unspecified() {
                    let loopback: std::net::IpAddr = match addr {
                        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    };
                    addr.set_ip(loopback);
                }
                Some(WakeTarget::Tcp(addr))
            }
            Listener::Unix(l) => l
                .local_addr()
                .ok()?
                .as_pathname()
                .map(|p| WakeTarget::Unix(p.to_owned())),
        }
    }
}

enum WakeTarget {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The running server.
pub struct Server {
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    acceptors: Vec<JoinHandle<()>>,
    wake: Vec<WakeTarget>,
}

impl Server {
    /// Serve `listeners` with `service`: each gets an accept thread.
    pub fn start(
        listeners: Vec<Listener>,
        service: Arc<Service>,
        limits: Limits,
        shutdown_timeout: Duration,
    ) -> io::Result<Server> {
        let registry = Arc::new(Registry::default());
        let ctx = Arc::new(Context {
            service,
            registry: registry.clone(),
            limits: std::sync::RwLock::new(limits),
            shutdown_timeout,
        });
        let mut acceptors = Vec::new();
        let mut wake = Vec::new();
        for listener in listeners {
            // Accept threads block in accept(2).
            match &listener {
                Listener::Tcp(l) => l.set_nonblocking(false)?,
                Listener::Unix(l) => l.set_nonblocking(false)?,
            }
            if let Some(target) = listener.wake_target() {
                wake.push(target);
            }
            let ctx = ctx.clone();
            let thread = std::thread::Builder::new()
                .name("mta-sts-accept".into())
                .spawn(move || match listener {
                    Listener::Tcp(l) => accept_loop(&ctx, || {
                        l.accept().map(|(s, _)| {
                            // Replies are small and latency-bound.
                            let _ = s.set_nodelay(true);
                            s
                        })
                    }),
                    Listener::Unix(l) => accept_loop(&ctx, || l.accept().map(|(s, _)| s)),
                })?;
            acceptors.push(thread);
        }
        Ok(Server {
            ctx,
            registry,
            acceptors,
            wake,
        })
    }

    /// Sets the limits of connections accepted from then on (config
    /// reload).
    pub fn limits_setter(&self) -> Box<dyn Fn(Limits) + Send + Sync> {
        let ctx = self.ctx.clone();
        Box::new(move |limits| {
            *ctx.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
        })
    }

    /// Reads how many connections are open (for the metrics endpoint).
    pub fn open_connections(&self) -> Box<dyn Fn() -> usize + Send + Sync> {
        let registry = self.registry.clone();
        Box::new(move || registry.len())
    }

    /// Stop: accept no more, answer what every open connection has sent or
    /// sends until it is quiet, close each after its last reply. Waits up to
    /// `limit` for the connections; true when all closed in time.
    pub fn stop(self, limit: Duration) -> bool {
        self.registry.stop();
        for target in &self.wake {
            // A connection of our own wakes a blocked accept; it sees the
            // flag and ends (the connection is dropped unserved).
            let _ = match target {
                WakeTarget::Tcp(addr) => {
                    TcpStream::connect_timeout(addr, Duration::from_secs(1)).map(drop)
                }
                WakeTarget::Unix(path) => UnixStream::connect(path).map(drop),
            };
        }
        for thread in self.acceptors {
            let _ = thread.join();
        }
        self.registry.wait_empty(limit)
    }
}

fn accept_loop<S, A>(ctx: &Arc<Context>, mut accept: A)
where
    S: super::Stream,
    A: FnMut() -> io::Result<S>,
{
    loop {
        let max = ctx
            .limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .max_connections;
        ctx.registry.wait_below(max);
        if ctx.registry.stopping() {
            return;
        }
        match accept() {
            Ok(stream) => {
                if ctx.registry.stopping() {
                    return;
                }
                // Counted before its thread starts, so a burst of accepts
                // cannot overshoot `max_connections`.
                let id = ctx.registry.add(stream.fd());
                let ctx2 = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("mta-sts-conn".into())
                    .stack_size(CONN_STACK)
                    .spawn(move || conn::serve(stream, id, &ctx2));
                if let Err(e) = spawned {
                    // The closure and its socket are gone: unregistered
                    // after the descriptor closed, which is harmless here
                    // (Registry::stop may shutdown(2) a closed fd number).
                    ctx.registry.remove(id);
                    log::warn!("cannot start a connection thread, closing it: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}
