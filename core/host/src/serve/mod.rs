//! The socketmap server of the programs: accept threads hand connections
//! to a loop per core (mio: epoll, kqueue, event ports or poll(2)), which
//! answers fresh hits straight from the shared index on its own thread and
//! leaves only lookups to the async runtime (docs/ARCHITECTURE.md
//! "Connections": measured against a thread per connection and an async
//! task per connection). Postfix holds at most a few hundred connections,
//! each sending one request at a time.
//!
//! The protocol logic is the sans-IO `socketmap::Connection` and
//! `service::Service`; this module only moves bytes and enforces time.

mod acceptor;
mod conn;
mod event_loop;
mod registry;

pub use acceptor::{Listener, Server};

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpStream, UnixStream};

use mta_sts_core::service::Service;

use registry::Registry;

/// What the accept threads and the loops share.
struct Context {
    /// Answers requests.
    service: Arc<Service>,
    /// The count of open connections and the stop flag.
    registry: Arc<Registry>,
    /// How long a stop may take in all (`shutdown_timeout`).
    shutdown_timeout: Duration,
}

/// A connected client socket, non-blocking: TCP or Unix.
pub trait Stream: Read + Write + mio::event::Source + Send + 'static {
    /// Send the end of output (a lingering close after a framing error).
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Stream for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
