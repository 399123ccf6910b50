//! One connection as its event loop sees it: read when readable, answer
//! fresh hits at once, hand misses to the loop, write what the socket takes,
//! and wait until the connection's next deadline; every rule, time rules
//! included, is the sans-IO [`Connection`]'s (docs/ARCHITECTURE.md
//! "Connections"). The socket is non-blocking; nothing here waits.
//!
//! Readiness is reported in edges (mio): the connection keeps whether its
//! socket was last seen readable and writable, set by the loop's events and
//! cleared when the socket says it has no more.

use std::io::{self, ErrorKind};
use std::time::Instant;

use mta_sts_core::config::Limits;
use mta_sts_core::metrics::QueuedReplies;
use mta_sts_core::service::{ConfigView, Miss, Service};
use mta_sts_core::socketmap::{Connection, ConnectionLimits, Reply, Seq};

pub(super) use mta_sts_core::socketmap::capped_after;

use super::Stream;

/// What the loop does with a connection after a step.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Wait for an event, or until `deadline`.
    Wait { deadline: Option<Instant> },
    /// Close it (everything owed was written, or it is given up).
    Close,
}

/// One client connection.
pub(super) struct Conn {
    stream: Box<dyn Stream>,
    proto: Connection,
    view: ConfigView,
    queued: QueuedReplies,
    /// The socket may have input (or an end of input) to read.
    readable: bool,
    /// The socket may take output.
    writable: bool,
}

/// Whether a read that fills less than its buffer shows the socket drained,
/// and a write that takes less than offered shows it full, so that the
/// next edge will say when that changes: true for mio's epoll and kqueue
/// selectors. Its poll(2) selector (forced with `--cfg
/// mio_unsupported_force_poll_poll`, and the one on other systems) watches
/// a socket again only after a call on it returned `WouldBlock`, so there
/// reading and writing go on until one does (as tokio does).
const SHORT_IO_CLEARS_READINESS: bool = cfg!(all(
    not(mio_unsupported_force_poll_poll),
    any(
        target_os = "android",
        target_os = "illumos",
        target_os = "linux",
        target_os = "redox",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "ios",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "tvos",
        target_os = "visionos",
        target_os = "watchos",
    )
));

impl Conn {
    /// A connection of `service` accepted at `now` under `limits`, already
    /// stopping when `stop` is set.
    pub(super) fn new(
        stream: Box<dyn Stream>,
        limits: &Limits,
        service: &Service,
        now: Instant,
        stop: Option<Instant>,
    ) -> Conn {
        let mut proto = Connection::new(ConnectionLimits::from(limits), now);
        if let Some(deadline) = stop {
            proto.begin_stop(deadline);
        }
        Conn {
            stream,
            proto,
            view: service.config_view(),
            queued: service.metrics().queued_replies(),
            // Input is reported by the event its registration brings; a
            // new socket's empty send buffer takes output.
            readable: false,
            writable: true,
        }
    }

    /// The socket, for the loop's registration.
    pub(super) fn source(&mut self) -> &mut dyn Stream {
        &mut *self.stream
    }

    /// An event said the socket became readable and/or writable.
    pub(super) fn on_ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// The connection takes input now (the protocol has room for it).
    pub(super) fn wants_input(&self) -> bool {
        self.proto.wants_input()
    }

    /// Input may wait in the socket and the connection takes it: no event
    /// will come for it, so the loop reads again.
    pub(super) fn wants_read(&self) -> bool {
        self.readable && self.proto.wants_input()
    }

    /// Read once if the socket may have input and the connection takes it.
    /// An error means the connection is over.
    pub(super) fn on_readable(&mut self, buf: &mut [u8], now: Instant) -> io::Result<()> {
        if !self.wants_read() {
            return Ok(());
        }
        match self.stream.read(buf) {
            Ok(0) => {
                self.readable = false;
                self.proto.handle_end_of_input();
            }
            Ok(n) => {
                if SHORT_IO_CLEARS_READINESS && n < buf.len() {
                    self.readable = false;
                }
                self.proto
                    .handle_input(buf.get(..n).unwrap_or_default(), now);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The reply to a miss this connection handed out.
    pub(super) fn on_reply(&mut self, seq: Seq, reply: Reply) {
        self.proto.handle_reply(seq, reply);
    }

    /// The daemon stops: answer what arrives until the client is quiet,
    /// close by `deadline` at the latest.
    pub(super) fn begin_stop(&mut self, deadline: Instant) {
        self.proto.begin_stop(deadline);
    }

    /// Answer what can be answered (misses go to `miss`), write what the
    /// socket takes, and say what to wait for.
    pub(super) fn step(
        &mut self,
        service: &Service,
        miss: &mut dyn FnMut(Seq, Miss),
        now: Instant,
    ) -> io::Result<Next> {
        // Requests held back while the connection held too much wait in
        // its input with no event to come for them: answer again as long
        // as the socket takes every reply.
        loop {
            service.answer_ready(&mut self.view, &mut self.proto, &mut *miss);
            let answered = !self.proto.transmit().is_empty();
            self.write(now)?;
            if !answered || !self.proto.transmit().is_empty() {
                break;
            }
        }
        if service.settle(&mut self.proto, &mut self.queued).is_some() {
            return Ok(Next::Close);
        }
        if self.proto.poll_shutdown_write(now) {
            self.stream.shutdown_write()?;
        }
        Ok(Next::Wait {
            deadline: self.proto.poll_timeout(),
        })
    }

    fn write(&mut self, now: Instant) -> io::Result<()> {
        loop {
            let out = self.proto.transmit();
            if out.is_empty() {
                return Ok(());
            }
            if !self.writable {
                self.proto.handle_write_blocked(now);
                return Ok(());
            }
            let offered = out.len();
            match self.stream.write(out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.proto.handle_written(n, now);
                    if SHORT_IO_CLEARS_READINESS && n < offered {
                        self.writable = false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.writable = false;
                    self.proto.handle_write_blocked(now);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A deadline passed: true to close the connection now (the reason is
    /// logged), false to step again.
    pub(super) fn on_deadline(&mut self, now: Instant) -> bool {
        self.proto.handle_timeout(now);
        match self.proto.poll_close() {
            Some(reason) => {
                reason.log();
                true
            }
            None => false,
        }
    }
}
