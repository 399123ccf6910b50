//! Accepting connections: one blocking accept loop per listener, each
//! connection handed to the least loaded connection loop, at most
//! `max_connections` open (more wait in the listen backlog), a short pause
//! when descriptors run out (never a busy loop), and the stop: no more
//! accepting, every open connection drained.
//!
//! An accept thread waits in poll(2) on its listening socket and on a wake
//! pipe that the stop closes. Waking it with a connection to the listener's
//! own address does not work: with `reuse_port` another daemon on the same
//! port (a standby during a restart, README.md "Deploy") may be handed that
//! connection, and on a Unix socket path a standby that took the path over
//! always is, so the stopping daemon never woke. Nor may the stop
//! shutdown(2) the listener: a socket-activated one is systemd's too, and
//! must stay open for the next start.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mta_sts_core::config::Limits;
use mta_sts_core::service::Service;

use super::event_loop::Loops;
use super::registry::Registry;
use super::{Context, Stream};
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
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// The running server.
pub struct Server {
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    loops: Arc<Loops>,
    acceptors: Vec<JoinHandle<()>>,
    /// The write end of the wake pipe: dropping it makes the read end,
    /// which every accept thread polls, readable (end of file).
    wake: UnixStream,
}

impl Server {
    /// Serve `listeners` with `service`: each gets an accept thread, and
    /// the connections a loop per core.
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let loops = Arc::new(Loops::start(cores, &ctx)?);
        let mut acceptors = Vec::new();
        let (wake, woken) = UnixStream::pair()?;
        let woken = Arc::new(woken);
        for listener in listeners {
            // Accept threads wait in poll(2), then accept without blocking:
            // another process on the same socket may have taken the
            // connection. The accepted sockets are made non-blocking for
            // the loops (Linux does not pass O_NONBLOCK on).
            match &listener {
                Listener::Tcp(l) => l.set_nonblocking(true)?,
                Listener::Unix(l) => l.set_nonblocking(true)?,
            }
            let ctx = ctx.clone();
            let loops = loops.clone();
            let woken = woken.clone();
            let thread = std::thread::Builder::new()
                .name("mta-sts-accept".into())
                .spawn(move || {
                    let wait = Wait {
                        listener: listener.fd(),
                        wake: woken.as_raw_fd(),
                    };
                    match &listener {
                        Listener::Tcp(l) => accept_loop(&ctx, &loops, wait, || {
                            let (s, _) = l.accept()?;
                            s.set_nonblocking(true)?;
                            // Replies are small and latency-bound.
                            let _ = s.set_nodelay(true);
                            Ok(s)
                        }),
                        Listener::Unix(l) => accept_loop(&ctx, &loops, wait, || {
                            let (s, _) = l.accept()?;
                            s.set_nonblocking(true)?;
                            Ok(s)
                        }),
                    }
                })?;
            acceptors.push(thread);
        }
        Ok(Server {
            ctx,
            registry,
            loops,
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
        self.loops.wake_all();
        drop(self.wake);
        for thread in self.acceptors {
            let _ = thread.join();
        }
        self.registry.wait_empty(limit)
    }
}

/// The descriptors an accept thread polls: its listening socket and the
/// read end of the wake pipe.
struct Wait {
    listener: RawFd,
    wake: RawFd,
}

impl Wait {
    /// Block until a connection may be waiting (`Ok(true)`) or the stop
    /// closed the wake pipe (`Ok(false)`).
    fn ready(&self) -> io::Result<bool> {
        let mut fds = [
            libc::pollfd {
                fd: self.listener,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfd for the call;
            // both descriptors stay open while the accept thread runs (the
            // thread owns the listener and shares the wake end).
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if rc >= 0 {
                return Ok(fds[1].revents == 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn accept_loop<S, A>(ctx: &Arc<Context>, loops: &Loops, wait: Wait, mut accept: A)
where
    S: Stream,
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
        match wait.ready() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                log::warn!("waiting for connections failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        }
        match accept() {
            Ok(stream) => {
                if ctx.registry.stopping() {
                    return;
                }
                // Counted before a loop takes it, so a burst of accepts
                // cannot overshoot `max_connections`.
                ctx.registry.add();
                let limits = ctx.limits.read().unwrap_or_else(|p| p.into_inner()).clone();
                loops.adopt(Box::new(stream), limits, ctx);
            }
            // Interrupted, or another process took the connection.
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}
