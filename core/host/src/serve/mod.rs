//! The socketmap server of the programs: accept threads hand connections
//! to a loop per core (epoll), which answers fresh hits straight from the
//! shared index on its own thread and leaves only lookups to the async
//! runtime (docs/ARCHITECTURE.md "Connections": measured against a thread
//! per connection and an async task per connection). Postfix holds at most
//! a few hundred connections, each sending one request at a time.
//!
//! The protocol logic is the sans-IO `socketmap::Connection` and
//! `service::Service`; this module only moves bytes and enforces time.

mod acceptor;
mod conn;
mod event_loop;
mod registry;

pub use acceptor::{Listener, Server};

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mta_sts_core::config::Limits;
use mta_sts_core::service::Service;

use registry::Registry;

/// What the accept threads and the loops share.
struct Context {
    /// Answers requests.
    service: Arc<Service>,
    /// The count of open connections and the stop flag.
    registry: Arc<Registry>,
    /// Connection limits and timeouts (replaced on a config reload; each
    /// connection keeps those in force when it was accepted).
    limits: RwLock<Limits>,
    /// How long a stop may take in all (`shutdown_timeout`).
    shutdown_timeout: Duration,
}

/// A connected client socket, non-blocking: TCP or Unix.
pub trait Stream: Read + Write + Send + 'static {
    /// The descriptor (for epoll).
    fn fd(&self) -> RawFd;
    /// Send the end of output (a lingering close after a framing error).
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Stream for UnixStream {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}
