//! Accepting connections: one blocking accept loop per listener, each
//! connection handed to the least loaded connection loop, at most
//! `max_connections` open (more wait in the listen backlog), a short pause
//! when descriptors run out (never a busy loop), and the stop: no more
//! accepting, every open connection drained.
//!
//! An accept thread waits (mio) on its listening socket and on a waker that
//! the stop fires. Waking it with a connection to the listener's
//! own address does not work: with `reuse_port` another daemon on the same
//! port (a standby during a restart, README.md "Deploy") may be handed that
//! connection, and on a Unix socket path a standby that took the path over
//! always is, so the stopping daemon never woke. Nor may the stop
//! shutdown(2) the listener: a socket-activated one is systemd's too, and
//! must stay open for the next start.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Poll, Token, Waker};
use mta_sts_core::service::Service;

use super::event_loop::Loops;
use super::registry::Registry;
use super::{Context, Stream};

/// Pause after a failed accept (out of descriptors, ...): at most ten
/// warnings a second, and the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The token of the listening socket in an accept thread's poll.
const LISTENER: Token = Token(0);
/// The token of the stop's waker in an accept thread's poll.
const STOP: Token = Token(1);

/// A bound listening socket.
pub enum Listener {
    /// TCP (`host`/`port`).
    Tcp(TcpListener),
    /// Unix (`path`).
    Unix(UnixListener),
}

/// The running server.
pub struct Server {
    registry: Arc<Registry>,
    loops: Arc<Loops>,
    acceptors: Vec<JoinHandle<()>>,
    /// One per accept thread: firing it wakes the thread to see the stop.
    stops: Vec<Waker>,
}

impl Server {
    /// Serve `listeners` with `service`: each gets an accept thread, and
    /// the connections a loop per core.
    pub fn start(
        listeners: Vec<Listener>,
        service: Arc<Service>,
        shutdown_timeout: Duration,
    ) -> io::Result<Server> {
        let registry = Arc::new(Registry::default());
        let ctx = Arc::new(Context {
            service,
            registry: registry.clone(),
            shutdown_timeout,
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let loops = Arc::new(Loops::start(cores, &ctx)?);
        let mut acceptors = Vec::new();
        let mut stops = Vec::new();
        for listener in listeners {
            // Accept threads wait for readiness, then accept without
            // blocking: another process on the same socket may have taken
            // the connection. mio makes the accepted sockets non-blocking.
            let poll = Poll::new()?;
            stops.push(Waker::new(poll.registry(), STOP)?);
            let ctx = ctx.clone();
            let loops = loops.clone();
            let thread = match listener {
                Listener::Tcp(l) => {
                    l.set_nonblocking(true)?;
                    let l = mio::net::TcpListener::from_std(l);
                    spawn(poll, l, move |poll, l| {
                        accept_loop(&ctx, &loops, poll, l, |l| {
                            let (s, _) = l.accept()?;
                            // Replies are small and latency-bound.
                            let _ = s.set_nodelay(true);
                            Ok(s)
                        })
                    })?
                }
                Listener::Unix(l) => {
                    l.set_nonblocking(true)?;
                    let l = mio::net::UnixListener::from_std(l);
                    spawn(poll, l, move |poll, l| {
                        accept_loop(&ctx, &loops, poll, l, |l| Ok(l.accept()?.0))
                    })?
                }
            };
            acceptors.push(thread);
        }
        Ok(Server {
            registry,
            loops,
            acceptors,
            stops,
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
        for stop in &self.stops {
            if let Err(e) = stop.wake() {
                log::warn!("cannot wake an accept thread: {e}");
            }
        }
        for thread in self.acceptors {
            let _ = thread.join();
        }
        self.registry.wait_empty(limit)
    }
}

/// Register `listener` with `poll` (here, so that a failure fails the
/// start) and run `serve` on an accept thread.
fn spawn<L>(
    poll: Poll,
    mut listener: L,
    serve: impl FnOnce(Poll, &L) + Send + 'static,
) -> io::Result<JoinHandle<()>>
where
    L: Source + Send + 'static,
{
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    std::thread::Builder::new()
        .name("mta-sts-accept".into())
        .spawn(move || serve(poll, &listener))
}

fn accept_loop<L, S, A>(
    ctx: &Arc<Context>,
    loops: &Loops,
    mut poll: Poll,
    listener: &L,
    mut accept: A,
) where
    S: Stream,
    A: FnMut(&L) -> io::Result<S>,
{
    let mut events = Events::with_capacity(4);
    // Readiness is reported on edges: connections may be waiting until an
    // accept says there are none (and at the start, before any edge).
    let mut waiting = true;
    loop {
        // The limits in force (a reload changes them for the connections
        // accepted after it).
        let max = ctx.service.limits().max_connections;
        ctx.registry.wait_below(max);
        if ctx.registry.stopping() {
            return;
        }
        if !waiting {
            match poll.poll(&mut events, None) {
                // The stop is seen at the top of the loop, by its flag: mio's
                // poll(2) backend can swallow the waker's event when it
                // lands during a registration change (an accept that
                // returned WouldBlock), which comes before that check.
                Ok(()) => waiting = events.iter().any(|e| e.token() == LISTENER),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("waiting for connections failed: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
            continue;
        }
        match accept(listener) {
            Ok(stream) => {
                if ctx.registry.stopping() {
                    return;
                }
                // Counted before a loop takes it, so a burst of accepts
                // cannot overshoot `max_connections`.
                ctx.registry.add();
                let limits = ctx.service.limits();
                loops.adopt(Box::new(stream), limits, ctx);
            }
            // None left, or another process took the connection.
            Err(e) if e.kind() == ErrorKind::WouldBlock => waiting = false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the
                // connection still waits, with no new edge to say so.
                log::warn!("accept failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}
