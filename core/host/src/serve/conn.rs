//! One connection as its event loop sees it: read when readable, answer
//! fresh hits at once, hand misses to the loop, write what the socket takes,
//! and the one deadline that applies now (docs/ARCHITECTURE.md
//! "Connections"). The socket is non-blocking; nothing here waits.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mta_sts_core::config::Limits;
use mta_sts_core::netstring::DEFAULT_MAX_REQUEST;
use mta_sts_core::service::{ConfigView, Miss, Service};
use mta_sts_core::socketmap::{Connection, Reply, Seq};

use super::Stream;

/// After a stop, a connection with nothing pending is closed once its
/// client has sent nothing for this long.
pub(super) const QUIET: Duration = Duration::from_millis(250);

/// What the loop does with a connection after a step.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Wait for these events, or until `deadline`.
    Wait {
        read: bool,
        write: bool,
        deadline: Option<Instant>,
    },
    /// Close it (everything owed was written, or it is given up).
    Close,
}

/// One client connection.
pub(super) struct Conn {
    stream: Box<dyn Stream>,
    proto: Connection,
    view: ConfigView,
    idle_timeout: Duration,
    read_timeout: Duration,
    /// The last bytes received.
    last_input: Instant,
    /// The last bytes received or written: the idle timeout counts from it.
    last_active: Instant,
    /// Since when replies wait for a client that does not read them.
    stalled_since: Option<Instant>,
    /// The stop's deadline, once the daemon stops.
    stop: Option<Instant>,
    /// No more requests will be read (end of input, a framing error, or
    /// the client quiet after a stop).
    input_closed: bool,
    warned: bool,
}

impl Conn {
    /// A connection accepted at `now` under `limits`, already stopping
    /// when `stop` is set.
    pub(super) fn new(
        stream: Box<dyn Stream>,
        limits: &Limits,
        view: ConfigView,
        now: Instant,
        stop: Option<Instant>,
    ) -> Conn {
        Conn {
            stream,
            proto: Connection::new(DEFAULT_MAX_REQUEST, limits.max_lookups_per_connection),
            view,
            idle_timeout: limits.idle_timeout,
            read_timeout: limits.read_timeout,
            last_input: now,
            last_active: now,
            stalled_since: None,
            stop,
            input_closed: false,
            warned: false,
        }
    }

    /// The socket, for the loop's registration.
    pub(super) fn stream(&self) -> &dyn Stream {
        &*self.stream
    }

    /// The socket is readable: read once (the loop is level-triggered, so
    /// more is reported again). An error means the connection is over.
    pub(super) fn on_readable(&mut self, buf: &mut [u8], now: Instant) -> io::Result<()> {
        if !self.proto.wants_input() {
            return Ok(());
        }
        match self.stream.read(buf) {
            Ok(0) => {
                self.proto.handle_end_of_input();
                self.input_closed = true;
            }
            Ok(n) => {
                self.last_input = now;
                self.last_active = now;
                self.proto.handle_input(buf.get(..n).unwrap_or_default());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
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
        self.stop.get_or_insert(deadline);
    }

    /// Answer what can be answered (misses go to `miss`), write what the
    /// socket takes, and say what to wait for.
    pub(super) fn step(
        &mut self,
        service: &Service,
        miss: &mut dyn FnMut(Seq, Miss),
        now: Instant,
    ) -> io::Result<Next> {
        while let Some((seq, request)) = self.proto.poll_request() {
            match service.answer_now(&mut self.view, request.name, request.key) {
                Ok(reply) => self.proto.handle_reply(seq, reply),
                Err(m) => miss(seq, m),
            }
        }
        if self.proto.failed() && !self.warned {
            self.warned = true;
            self.input_closed = true;
            service.metrics().perm();
            log::warn!("malformed request: answering what was queued, then PERM and close");
        }
        self.write(now)?;
        if self.proto.is_finished() {
            return Ok(Next::Close);
        }
        let unwritten = !self.proto.transmit().is_empty();
        Ok(Next::Wait {
            read: self.proto.wants_input(),
            write: unwritten,
            deadline: self.deadline(),
        })
    }

    fn write(&mut self, now: Instant) -> io::Result<()> {
        loop {
            let out = self.proto.transmit();
            if out.is_empty() {
                self.stalled_since = None;
                return Ok(());
            }
            match self.stream.write(out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.proto.handle_written(n);
                    self.last_active = now;
                    self.stalled_since = None;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.stalled_since.get_or_insert(now);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The earliest time something must happen without any event.
    fn deadline(&self) -> Option<Instant> {
        let stalled = self.stalled_since.map(|t| t + self.read_timeout);
        let other = match self.stop {
            Some(stop) if self.input_closed => Some(stop),
            Some(stop) => Some(stop.min(self.last_input + QUIET)),
            // Waiting for lookups, which have their own timeouts, or for
            // the client to read its replies (reading is paused meanwhile).
            None if self.input_closed || stalled.is_some() => None,
            None if self.proto.has_partial_request() => Some(self.last_input + self.read_timeout),
            None if self.proto.pending() > 0 => None,
            None => Some(self.last_active + self.idle_timeout),
        };
        match (stalled, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A deadline passed: true to close the connection now (the reason is
    /// logged), false to step again.
    pub(super) fn on_deadline(&mut self, now: Instant) -> bool {
        if self
            .stalled_since
            .is_some_and(|t| now >= t + self.read_timeout)
        {
            log::info!(
                "closing a connection: its client has not read its replies for {:?}",
                self.read_timeout
            );
            return true;
        }
        if let Some(stop) = self.stop {
            if !self.input_closed && (now >= self.last_input + QUIET || now >= stop) {
                self.proto.handle_end_of_input();
                self.input_closed = true;
            } else if now >= stop {
                log::warn!("shutdown timeout: closing a connection with lookups in flight");
                return true;
            }
            return false;
        }
        if self.input_closed || self.proto.pending() > 0 || self.stalled_since.is_some() {
            return false;
        }
        if self.proto.has_partial_request() {
            if now >= self.last_input + self.read_timeout {
                log::info!(
                    "closing a connection: no complete request within {:?}",
                    self.read_timeout
                );
                return true;
            }
        } else if now >= self.last_active + self.idle_timeout {
            log::debug!("closing an idle connection after {:?}", self.idle_timeout);
            return true;
        }
        false
    }
}
