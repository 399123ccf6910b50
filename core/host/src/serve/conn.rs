//! One connection as its event loop sees it: read when readable, answer
//! fresh hits at once, hand misses to the loop, write what the socket takes,
//! and the one deadline that applies now (docs/ARCHITECTURE.md
//! "Connections"). The socket is non-blocking; nothing here waits.
//!
//! Readiness is reported in edges (mio): the connection keeps whether its
//! socket was last seen readable and writable, set by the loop's events and
//! cleared when the socket says it has no more.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mta_sts_core::config::Limits;
use mta_sts_core::metrics::QueuedReplies;
use mta_sts_core::netstring::DEFAULT_MAX_REQUEST;
use mta_sts_core::service::{ConfigView, Miss, Service};
use mta_sts_core::socketmap::{Connection, Reply, Seq, LINGER};

use super::Stream;

/// After a stop, a connection with nothing pending is closed once its
/// client has sent nothing for this long.
pub(super) const QUIET: Duration = Duration::from_millis(250);

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
    timers: Timers,
    warned: bool,
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

/// Longest wait honoured: larger settings mean "never" (an `Instant` plus
/// a duration near `u64::MAX` seconds would overflow).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `t + d`, at most [`FOREVER`] later.
pub(super) fn capped_after(t: Instant, d: Duration) -> Instant {
    t + d.min(FOREVER)
}

/// `t + d`, or `None` past [`FOREVER`].
pub(super) fn after(t: Instant, d: Duration) -> Option<Instant> {
    if d >= FOREVER {
        return None;
    }
    t.checked_add(d)
}

/// When a connection must be acted on without any event: the sans-IO
/// time rules of one connection.
struct Timers {
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
    /// The end of a lingering close, once writing was shut down after a
    /// framing error.
    linger: Option<Instant>,
}

/// What a passed deadline means.
#[derive(Debug, PartialEq, Eq)]
enum Expired {
    /// Nothing to do yet.
    Nothing,
    /// Take no more requests (the stop's quiet period or deadline).
    EndInput,
    /// Close the connection now (the reason is logged).
    Close,
}

impl Timers {
    /// The earliest time something must happen without any event.
    fn deadline(&self, proto: &Connection) -> Option<Instant> {
        let stalled = self.stalled_since.and_then(|t| after(t, self.read_timeout));
        let other = match self.stop {
            Some(stop) if proto.input_ended() => Some(stop),
            Some(stop) => Some(after(self.last_input, QUIET).map_or(stop, |q| q.min(stop))),
            // Waiting for lookups, which have their own timeouts (a partial
            // request behind them is timed once they are answered), or for
            // the client to read its replies.
            None if proto.input_ended() || proto.pending() > 0 || self.stalled_since.is_some() => {
                None
            }
            None if proto.has_partial_request() => after(self.last_input, self.read_timeout),
            None => after(self.last_active, self.idle_timeout),
        };
        [stalled, other, self.linger].into_iter().flatten().min()
    }

    /// What passed deadlines mean at `now`; the same rules as
    /// [`Timers::deadline`], so a deadline that passed is acted on or
    /// replaced by a later one.
    fn expired(&self, proto: &Connection, now: Instant) -> Expired {
        let passed = |t: Instant, d: Duration| after(t, d).is_some_and(|x| now >= x);
        if self.linger.is_some_and(|t| now >= t) {
            log::debug!("closing a connection after a framing error: its client kept it open");
            return Expired::Close;
        }
        if self
            .stalled_since
            .is_some_and(|t| passed(t, self.read_timeout))
        {
            log::info!(
                "closing a connection: its client has not read its replies for {:?}",
                self.read_timeout
            );
            return Expired::Close;
        }
        if let Some(stop) = self.stop {
            if !proto.input_ended() && (passed(self.last_input, QUIET) || now >= stop) {
                return Expired::EndInput;
            }
            if now >= stop {
                log::warn!("shutdown timeout: closing a connection with lookups in flight");
                return Expired::Close;
            }
            return Expired::Nothing;
        }
        if proto.input_ended() || proto.pending() > 0 || self.stalled_since.is_some() {
            return Expired::Nothing;
        }
        if proto.has_partial_request() {
            if passed(self.last_input, self.read_timeout) {
                log::info!(
                    "closing a connection: no complete request within {:?}",
                    self.read_timeout
                );
                return Expired::Close;
            }
        } else if passed(self.last_active, self.idle_timeout) {
            log::debug!("closing an idle connection after {:?}", self.idle_timeout);
            return Expired::Close;
        }
        Expired::Nothing
    }
}

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
        Conn {
            stream,
            proto: Connection::new(DEFAULT_MAX_REQUEST, limits.max_lookups_per_connection),
            view: service.config_view(),
            timers: Timers {
                idle_timeout: limits.idle_timeout,
                read_timeout: limits.read_timeout,
                last_input: now,
                last_active: now,
                stalled_since: None,
                stop,
                linger: None,
            },
            warned: false,
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
                self.timers.last_input = now;
                self.timers.last_active = now;
                self.proto.handle_input(buf.get(..n).unwrap_or_default());
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
        self.timers.stop.get_or_insert(deadline);
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
        if self.proto.failed() && !self.warned {
            self.warned = true;
            service.metrics().perm();
            log::warn!("malformed request: answering what was queued, then PERM and close");
        }
        self.queued.set(self.proto.transmit().len());
        if self.proto.is_finished() {
            return Ok(Next::Close);
        }
        if self.proto.is_lingering() && self.timers.linger.is_none() {
            self.stream.shutdown_write()?;
            self.timers.linger = Some(capped_after(now, LINGER));
        }
        Ok(Next::Wait {
            deadline: self.timers.deadline(&self.proto),
        })
    }

    fn write(&mut self, now: Instant) -> io::Result<()> {
        loop {
            let out = self.proto.transmit();
            if out.is_empty() {
                self.timers.stalled_since = None;
                return Ok(());
            }
            if !self.writable {
                self.timers.stalled_since.get_or_insert(now);
                return Ok(());
            }
            let offered = out.len();
            match self.stream.write(out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.proto.handle_written(n);
                    self.timers.last_active = now;
                    self.timers.stalled_since = None;
                    if SHORT_IO_CLEARS_READINESS && n < offered {
                        self.writable = false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.writable = false;
                    self.timers.stalled_since.get_or_insert(now);
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
        match self.timers.expired(&self.proto, now) {
            Expired::Nothing => false,
            Expired::EndInput => {
                self.proto.handle_end_of_input();
                false
            }
            Expired::Close => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const READ: Duration = Duration::from_secs(10);

    /// A connection's protocol state: `pending` requests taken and not
    /// answered, and `partial` bytes of a further request.
    fn proto(pending: bool, partial: bool, input_closed: bool) -> Connection {
        let mut proto = Connection::new(DEFAULT_MAX_REQUEST, 100);
        if pending {
            proto.handle_input(b"21:postfix a.example.net,");
            assert!(proto.poll_request().is_some());
        }
        if partial {
            proto.handle_input(b"21:postfix b.ex");
        }
        if input_closed {
            proto.handle_end_of_input();
        }
        proto
    }

    fn timers(t0: Instant, stalled: bool, stop: bool) -> Timers {
        Timers {
            idle_timeout: IDLE,
            read_timeout: READ,
            last_input: t0,
            last_active: t0 + Duration::from_secs(1),
            stalled_since: stalled.then(|| t0 + Duration::from_secs(2)),
            stop: stop.then(|| t0 + Duration::from_secs(5)),
            linger: None,
        }
    }

    /// In every state, the deadline the loop waits for is acted on when it
    /// comes: a deadline that passes and means nothing would be handed back
    /// unchanged, and the loop would spin on it.
    #[test]
    fn every_deadline_is_acted_on() {
        let t0 = Instant::now();
        for bits in 0..64u8 {
            let [pending, partial, stalled, stop, closed, linger] =
                [0, 1, 2, 3, 4, 5].map(|i| bits & (1 << i) != 0);
            let proto = proto(pending, partial, closed);
            let mut timers = timers(t0, stalled, stop);
            timers.linger = linger.then(|| t0 + LINGER);
            if let Some(at) = timers.deadline(&proto) {
                assert_ne!(
                    timers.expired(&proto, at),
                    Expired::Nothing,
                    "pending {pending} partial {partial} stalled {stalled} stop {stop} closed {closed} linger {linger}"
                );
            }
        }
    }

    /// The rules themselves: which timeout applies in which state.
    #[test]
    fn which_timeout_applies() {
        let t0 = Instant::now();
        let idle = timers(t0, false, false);
        assert_eq!(
            idle.deadline(&proto(false, false, false)),
            Some(t0 + Duration::from_secs(1) + IDLE)
        );
        assert_eq!(idle.deadline(&proto(false, true, false)), Some(t0 + READ));
        // Lookups pending: their own timeouts apply, also to a request
        // that arrives partly behind them.
        assert_eq!(idle.deadline(&proto(true, false, false)), None);
        assert_eq!(idle.deadline(&proto(true, true, false)), None);
        // Replies the client does not read: read_timeout from the stall,
        // and no partial-request timer while reading is held up.
        let stalled = timers(t0, true, false);
        let at = t0 + Duration::from_secs(2) + READ;
        assert_eq!(stalled.deadline(&proto(false, true, false)), Some(at));
        assert_eq!(
            stalled.expired(&proto(false, true, false), at),
            Expired::Close
        );
        // After a stop: the client's quiet period ends the input, then the
        // stop's deadline closes.
        let stopping = timers(t0, false, true);
        assert_eq!(
            stopping.deadline(&proto(false, false, false)),
            Some(t0 + QUIET)
        );
        assert_eq!(
            stopping.expired(&proto(false, false, false), t0 + QUIET),
            Expired::EndInput
        );
        let ended = timers(t0, false, true);
        assert_eq!(
            ended.deadline(&proto(true, false, true)),
            Some(t0 + Duration::from_secs(5))
        );
        assert_eq!(
            ended.expired(&proto(true, false, true), t0 + QUIET),
            Expired::Nothing
        );
    }

    /// A lingering close ends at its deadline, whatever else waits.
    #[test]
    fn lingering_close_ends_at_its_deadline() {
        let t0 = Instant::now();
        let mut t = timers(t0, false, false);
        t.idle_timeout = Duration::MAX;
        let mut proto = proto(false, false, false);
        proto.handle_input(b"x");
        assert!(proto.poll_request().is_none());
        proto.handle_written(proto.transmit().len());
        assert!(proto.is_lingering());
        assert_eq!(t.deadline(&proto), None);
        t.linger = Some(t0 + LINGER);
        assert_eq!(t.deadline(&proto), Some(t0 + LINGER));
        assert_eq!(t.expired(&proto, t0), Expired::Nothing);
        assert_eq!(t.expired(&proto, t0 + LINGER), Expired::Close);
    }

    /// Timeouts too large to add to a clock reading mean "never", not a
    /// panic (the config accepts any number of seconds).
    #[test]
    fn huge_timeouts_never_expire() {
        let t0 = Instant::now();
        let mut t = timers(t0, false, false);
        t.idle_timeout = Duration::MAX;
        t.read_timeout = Duration::MAX;
        assert_eq!(t.deadline(&proto(false, false, false)), None);
        assert_eq!(t.deadline(&proto(false, true, false)), None);
        t.stalled_since = Some(t0);
        assert_eq!(
            t.expired(&proto(false, true, false), t0 + IDLE),
            Expired::Nothing
        );
        assert!(capped_after(t0, Duration::MAX) > t0 + IDLE);
    }
}
