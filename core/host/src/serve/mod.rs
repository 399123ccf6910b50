//! The socketmap server of the programs: one thread per connection
//! answering fresh hits straight from the shared index, the async runtime
//! only for lookups (docs/ARCHITECTURE.md "Connections": measured against
//! an async task per connection, this serves cached lookups at close to what
//! a bare thread-per-connection server does). Postfix holds at most a few
//! hundred connections, each sending one request at a time.
//!
//! The protocol logic is the sans-IO `socketmap::Connection` and
//! `service::Service`; this module only moves bytes and enforces time.

mod acceptor;
mod conn;
mod registry;

pub use acceptor::{Listener, Server};

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected client socket: TCP or Unix.
pub trait Stream: Read + Write + Send + 'static {
    /// The descriptor (for `shutdown(2)` at stop).
    fn fd(&self) -> RawFd;
    /// `SO_RCVTIMEO`.
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()>;
    /// `SO_SNDTIMEO`.
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, d)
    }
}

impl Stream for UnixStream {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, d)
    }
}
