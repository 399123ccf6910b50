//! Runtime-agnostic async glue: the loops that drive the sans-IO state
//! machines over a few small traits the IO drivers implement (anything both
//! drivers would write twice lives here; docs/ARCHITECTURE.md "Layers").
//! No runtime, socket or clock type appears in this module: the driver
//! hands in a [`Runtime`] (spawn, timers, clock) and a [`Transport`]
//! (UDP/TCP/TLS connections).

mod admin;
mod answer;
mod connection;
mod dane;
mod dns_client;
mod engine;
mod fetch;
mod proactive;
mod query;
mod server;
mod shutdown;
mod stack;
mod time;
mod udp_pool;

pub use admin::{export_line, parse_export_line, summary_line, utc, AdminError, CacheAdmin};
pub use answer::{ConfigView, Miss, MonoClock, Service, WallClock};
pub use connection::serve_connection;
pub use dane::{check_dnssec, lookup_dane};
pub use dns_client::{DnsClient, DnsLookupError};
pub use engine::{Engine, EngineHandle, EngineSettings};
pub use fetch::{fetch_policy, lookup_txt, FetchError};
pub use proactive::run_proactive_refresh;
pub use query::{run_query, DaneQuery, QueryOutcome};
pub use server::serve;
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use stack::{start_stack, Caches, DnsTargets, Stack};
pub use time::with_timeout;

use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncWrite};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// True for errors that say a local resource ran out (file descriptors,
/// buffers, memory, ephemeral ports), not that the network failed.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    // EMFILE and ENFILE (the same numbers on every Unix), and ENOBUFS,
    // which is not: std gives them no stable ErrorKind. The numbers are
    // each system's <errno.h>, as the libc crate has them.
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc",
            target_arch = "sparc64"
        ))
    ))]
    const ENOBUFS: i32 = 105;
    #[cfg(any(
        all(
            any(target_os = "linux", target_os = "android"),
            any(target_arch = "mips", target_arch = "mips64")
        ),
        target_os = "solaris",
        target_os = "illumos"
    ))]
    const ENOBUFS: i32 = 132;
    // The BSDs, macOS, and Linux on SPARC.
    #[cfg(not(any(
        all(
            any(target_os = "linux", target_os = "android"),
            not(any(target_arch = "sparc", target_arch = "sparc64"))
        ),
        target_os = "solaris",
        target_os = "illumos"
    )))]
    const ENOBUFS: i32 = 55;
    e.raw_os_error()
        .is_some_and(|code| [EMFILE, ENFILE, ENOBUFS].contains(&code))
        // ENOMEM and EADDRNOTAVAIL everywhere.
        || matches!(
            e.kind(),
            io::ErrorKind::OutOfMemory | io::ErrorKind::AddrNotAvailable
        )
}

/// A byte stream (TCP or TLS) as the core sees it.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// A boxed byte stream handed out by a [`Transport`].
pub type BoxStream = Box<dyn ByteStream>;

/// What the core needs from an async runtime: tasks, timers and the clock.
/// The driver reads the clock; the state machines only receive its values.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Run a future to completion in the background.
    fn spawn(&self, fut: BoxFuture<'static, ()>);
    /// Run blocking work (SQLite) off the async executor.
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>);
    /// A future that completes after `d`.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    /// Monotonic time, for deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock Unix milliseconds, for policy lifetimes (RFC 8461 §3.2
    /// `max_age`) and `cache_grace`.
    fn unix_ms(&self) -> u64;
}

/// A connected UDP socket for one DNS exchange (random source port).
#[async_trait::async_trait]
pub trait Datagram: Send + Sync {
    /// Send one datagram to the connected peer.
    async fn send(&self, buf: &[u8]) -> io::Result<()>;
    /// Receive one datagram from the connected peer.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
}

/// What the core needs from the network: DNS transports and TLS connections.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// A UDP socket bound to a random local port and connected to `server`.
    async fn udp_connect(&self, server: SocketAddr) -> io::Result<Box<dyn Datagram>>;
    /// A plain TCP connection (DNS over TCP after truncation, RFC 7766).
    async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<BoxStream>;
    /// A TLS 1.2+ connection to `addr` with SNI and certificate validation
    /// for `server_name` (RFC 8461 §3.3), against the configured roots.
    async fn tls_connect(&self, addr: SocketAddr, server_name: &str) -> io::Result<BoxStream>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_exhaustion_is_local_network_errors_are_not() {
        assert!(is_local_exhaustion(&io::Error::from_raw_os_error(24)));
        assert!(is_local_exhaustion(&io::Error::from(
            io::ErrorKind::OutOfMemory
        )));
        // Out of ephemeral ports, by kind: the errno differs per system.
        assert!(is_local_exhaustion(&io::Error::from(
            io::ErrorKind::AddrNotAvailable
        )));
        assert!(!is_local_exhaustion(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
        assert!(!is_local_exhaustion(&io::Error::from_raw_os_error(111)));
    }
}
