//! One socketmap connection's protocol state, sans IO (socketmap_table(5);
//! docs/ARCHITECTURE.md "Connections"): bytes in, requests out; replies in
//! (in any order), bytes out in request order. It enforces the limits: the
//! request size, the replies a client may leave pending, the bytes it may
//! make the daemon hold, the `PERM` reply then a lingering close after a
//! framing error, and the time rules (idle, read and write-stall timeouts,
//! the stop's quiet period and deadline). Time is an argument, quinn-proto
//! style: the loop reads the clock, sleeps until
//! [`Connection::poll_timeout`] and calls [`Connection::handle_timeout`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::{split_request, Reply, MAX_REPLY};
use crate::config::Limits;
use crate::netstring::{encoded_len, Decoder, DEFAULT_MAX_REQUEST};

/// A request's place in its connection's order; quoted back with its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(u64);

/// A request borrowed from the connection's input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRef<'a> {
    /// The map name (selects the zone).
    pub name: &'a str,
    /// The lookup key, unnormalised.
    pub key: &'a str,
}

/// Bytes a connection may hold for its client before it takes no more
/// requests (docs/ARCHITECTURE.md "Connections"): its replies not yet
/// written, plus [`MAX_REPLY_FRAME`] for each reply still looked up. Checked
/// before each request, so a client that sends but never reads makes the
/// daemon hold at most this plus one reply, however many requests one read
/// brings.
const MAX_HELD: usize = 256 * 1024;

/// The most one reply takes once encoded: [`MAX_REPLY`] bytes of payload
/// and its netstring framing (socketmap_table(5)).
const MAX_REPLY_FRAME: usize = encoded_len(MAX_REPLY);

/// After a framing error, the input discarded at most before closing: the
/// `PERM` reply is not destroyed by the reset that closing a socket with
/// unread input sends (docs/ARCHITECTURE.md "Connections").
const LINGER_BYTES: usize = 64 * 1024;

/// After a framing error, how long the connection discards input at most
/// before closing (see [`LINGER_BYTES`]).
pub const LINGER: Duration = Duration::from_secs(1);

/// After a stop, a connection whose client has sent nothing for this long
/// takes no more requests (docs/ARCHITECTURE.md "Connections", "Stopping").
pub const QUIET: Duration = Duration::from_millis(250);

/// Longest wait honoured: larger settings mean "never" (an `Instant` plus
/// a duration near `u64::MAX` seconds would overflow).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `t + d`, at most [`FOREVER`] later: a deadline that any configured
/// duration can give (docs/ARCHITECTURE.md "Connections").
pub fn capped_after(t: Instant, d: Duration) -> Instant {
    // A clock that cannot count a century ahead does not occur.
    t.checked_add(d.min(FOREVER)).unwrap_or(t)
}

/// `t + d`, or `None` (never) past [`FOREVER`].
fn after(t: Instant, d: Duration) -> Option<Instant> {
    if d >= FOREVER {
        return None;
    }
    t.checked_add(d)
}

/// The limits of one connection (docs/ARCHITECTURE.md "Connections").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Requests over this many bytes are a framing error.
    pub max_request: usize,
    /// Requests awaiting their replies before reading pauses.
    pub max_pending: usize,
    /// A half-sent request, or replies the client does not read, close the
    /// connection after this.
    pub read_timeout: Duration,
    /// No request and no reply for this long close the connection.
    pub idle_timeout: Duration,
}

impl From<&Limits> for ConnectionLimits {
    /// The configured limits (`max_lookups_per_connection`,
    /// `read_timeout`, `idle_timeout`) with the socketmap request bound.
    fn from(limits: &Limits) -> Self {
        ConnectionLimits {
            max_request: DEFAULT_MAX_REQUEST,
            max_pending: limits.max_lookups_per_connection,
            read_timeout: limits.read_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }
}

/// Why a connection is to be closed ([`Connection::poll_close`]); the loop
/// logs it with [`CloseReason::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Everything owed was written and no more requests will come.
    Finished,
    /// Part of a request came and the rest not within `read_timeout`.
    ReadTimeout(Duration),
    /// Neither a request nor a reply for `idle_timeout`.
    Idle(Duration),
    /// The client has not read its replies for `read_timeout`.
    WriteStall(Duration),
    /// The stop's deadline passed with lookups in flight.
    ShutdownTimeout,
    /// A lingering close after a framing error reached [`LINGER`].
    LingerOver,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Finished => write!(f, "everything owed was written"),
            CloseReason::ReadTimeout(d) => write!(f, "no complete request within {d:?}"),
            CloseReason::Idle(d) => write!(f, "idle for {d:?}"),
            CloseReason::WriteStall(d) => {
                write!(f, "its client has not read its replies for {d:?}")
            }
            CloseReason::ShutdownTimeout => {
                write!(f, "shutdown timeout with lookups in flight")
            }
            CloseReason::LingerOver => {
                write!(f, "its client kept it open after a framing error")
            }
        }
    }
}

impl CloseReason {
    /// The one log line of a closing connection, at a level by how much
    /// an operator needs to know (a stop that cut lookups short warns).
    pub fn log(&self) {
        let level = match self {
            CloseReason::Finished => log::Level::Trace,
            CloseReason::Idle(_) | CloseReason::LingerOver => log::Level::Debug,
            CloseReason::ReadTimeout(_) | CloseReason::WriteStall(_) => log::Level::Info,
            CloseReason::ShutdownTimeout => log::Level::Warn,
        };
        log::log!(level, "closing a connection: {self}");
    }
}

/// When a connection must be acted on without any event.
#[derive(Debug)]
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
    /// Close the connection now.
    Close(CloseReason),
}

/// The state of one connection.
#[derive(Debug)]
pub struct Connection {
    decoder: Decoder,
    outbox: Outbox,
    /// No more requests will be taken (end of input, framing error, or
    /// shutdown).
    input_done: bool,
    max_pending: usize,
    /// The longest frame a request can take: the decoder holds at most one
    /// partial frame while requests are taken.
    max_frame: usize,
    /// Input discarded after a framing error.
    discarded: usize,
    /// After a framing error: the client closed its side, the daemon
    /// stopped, or [`LINGER_BYTES`] were discarded; close once written.
    drained: bool,
    timers: Timers,
    /// Set by a deadline that closes the connection.
    closed: Option<CloseReason>,
    /// The framing error was reported by [`Connection::poll_failed`].
    failure_reported: bool,
}

/// Replies on their way out, in request order.
#[derive(Debug, Default)]
struct Outbox {
    /// Replies not yet encoded, oldest first; `None` while still looked up.
    slots: VecDeque<Option<Reply>>,
    /// The sequence number of `slots[0]`.
    first: u64,
    /// Slots still `None`: replies owed whose size is not known yet.
    unknown: usize,
    /// The encoded size of the replies waiting in `slots`.
    waiting: usize,
    out: Vec<u8>,
    written: usize,
    /// The `PERM` reply to send after the queued ones, then close.
    fatal: Option<Reply>,
    /// The `PERM` reply was encoded.
    failed: bool,
}

impl Outbox {
    /// Encode the replies first in line, then the `PERM` once nothing
    /// precedes it.
    fn flush(&mut self) {
        while let Some(Some(_)) = self.slots.front() {
            if let Some(Some(reply)) = self.slots.pop_front() {
                self.waiting = self.waiting.saturating_sub(reply.frame_len());
                reply.encode_into(&mut self.out);
            }
            self.first += 1;
        }
        if self.slots.is_empty() {
            if let Some(fatal) = self.fatal.take() {
                fatal.encode_into(&mut self.out);
                self.failed = true;
            }
        }
    }

    fn unwritten(&self) -> &[u8] {
        self.out.get(self.written..).unwrap_or_default()
    }

    /// What the connection holds for its client: the output buffer, the
    /// replies waiting behind an earlier one, and the most each reply
    /// still looked up can take.
    fn held(&self) -> usize {
        self.out
            .len()
            .saturating_add(self.waiting)
            .saturating_add(self.unknown.saturating_mul(MAX_REPLY_FRAME))
    }
}

impl Connection {
    /// A connection opened at `now` under `limits`.
    pub fn new(limits: ConnectionLimits, now: Instant) -> Self {
        Connection {
            decoder: Decoder::new(limits.max_request),
            outbox: Outbox::default(),
            input_done: false,
            max_pending: limits.max_pending.max(1),
            max_frame: encoded_len(limits.max_request),
            discarded: 0,
            drained: false,
            timers: Timers {
                idle_timeout: limits.idle_timeout,
                read_timeout: limits.read_timeout,
                last_input: now,
                last_active: now,
                stalled_since: None,
                stop: None,
                linger: None,
            },
            closed: None,
            failure_reported: false,
        }
    }

    /// Bytes received from the client at `now` (after a framing error,
    /// discarded).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if !bytes.is_empty() {
            self.timers.last_input = now;
            self.timers.last_active = now;
        }
        if self.failed() {
            self.discarded = self.discarded.saturating_add(bytes.len());
            self.drained |= self.discarded >= LINGER_BYTES;
        } else if !self.input_done {
            self.decoder.push(bytes);
        }
    }

    /// The client closed its side, or the daemon stops taking requests
    /// (shutdown): requests already complete are still answered, and a
    /// lingering close ends.
    pub fn handle_end_of_input(&mut self) {
        self.input_done = true;
        self.drained = true;
    }

    /// True while another request may be taken: fewer than `max_pending`
    /// open and less than [`MAX_HELD`] held.
    fn has_room(&self) -> bool {
        self.outbox.slots.len() < self.max_pending && self.outbox.held() < MAX_HELD
    }

    /// The next complete request, if any and if there is room for its
    /// reply (fewer than `max_pending` open, less than [`MAX_HELD`] held).
    /// A malformed one ends the input: the queued replies, then `PERM`,
    /// then a lingering close.
    pub fn poll_request(&mut self) -> Option<(Seq, RequestRef<'_>)> {
        if self.failed() || !self.has_room() {
            return None;
        }
        let outbox = &mut self.outbox;
        let parsed = match self.decoder.next_frame_ref() {
            Ok(None) => return None,
            Ok(Some(frame)) => split_request(frame).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok((name, key)) => {
                let seq = Seq(outbox.first + outbox.slots.len() as u64);
                outbox.slots.push_back(None);
                outbox.unknown += 1;
                Some((seq, RequestRef { name, key }))
            }
            Err(why) => {
                outbox.fatal = Some(Reply::Perm(format!("malformed request: {why}")));
                outbox.flush();
                self.input_done = true;
                None
            }
        }
    }

    /// The reply to request `seq`; replies that are now first in line are
    /// encoded for [`Connection::transmit`].
    pub fn handle_reply(&mut self, seq: Seq, reply: Reply) {
        let outbox = &mut self.outbox;
        let slot = seq
            .0
            .checked_sub(outbox.first)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|i| outbox.slots.get_mut(i));
        if let Some(slot @ None) = slot {
            outbox.unknown = outbox.unknown.saturating_sub(1);
            outbox.waiting = outbox.waiting.saturating_add(reply.frame_len());
            *slot = Some(reply);
        }
        outbox.flush();
    }

    /// The bytes to write now (empty: nothing to write).
    pub fn transmit(&self) -> &[u8] {
        self.outbox.unwritten()
    }

    /// `n` bytes of [`Connection::transmit`] were written at `now`.
    pub fn handle_written(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.timers.last_active = now;
            self.timers.stalled_since = None;
        }
        let outbox = &mut self.outbox;
        outbox.written = (outbox.written + n).min(outbox.out.len());
        if outbox.written == outbox.out.len() {
            outbox.out.clear();
            outbox.written = 0;
        } else if outbox.written >= outbox.out.len() / 2 {
            // A client that reads slowly never empties the buffer: drop
            // what was written once it dominates (the move is amortised
            // over those bytes), so [`MAX_HELD`] counts what is unwritten.
            outbox.out.drain(..outbox.written);
            outbox.written = 0;
        }
        if self.transmit().is_empty() {
            self.timers.stalled_since = None;
        }
    }

    /// At `now` the socket took none of [`Connection::transmit`]: the
    /// client is not reading, and the write-stall timeout runs from the
    /// first such time until a write makes progress.
    pub fn handle_write_blocked(&mut self, now: Instant) {
        if !self.transmit().is_empty() {
            self.timers.stalled_since.get_or_insert(now);
        }
    }

    /// The daemon stops: requests keep being taken until the client has
    /// been quiet for [`QUIET`], and the connection is closed at `deadline`
    /// at the latest (docs/ARCHITECTURE.md "Stopping").
    pub fn begin_stop(&mut self, deadline: Instant) {
        self.timers.stop.get_or_insert(deadline);
    }

    /// The earliest time [`Connection::handle_timeout`] must be called
    /// without any other event; `None`: no deadline. Every deadline it
    /// returns is acted on when it comes (so a loop never spins on one).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let t = &self.timers;
        let stalled = t.stalled_since.and_then(|s| after(s, t.read_timeout));
        let other = match t.stop {
            Some(stop) if self.input_done => Some(stop),
            Some(stop) => Some(after(t.last_input, QUIET).map_or(stop, |q| q.min(stop))),
            // Waiting for lookups, which have their own timeouts (a partial
            // request behind them is timed once they are answered), or for
            // the client to read its replies.
            None if self.input_done || self.pending() > 0 || t.stalled_since.is_some() => None,
            None if self.has_partial_request() => after(t.last_input, t.read_timeout),
            None => after(t.last_active, t.idle_timeout),
        };
        [stalled, other, t.linger].into_iter().flatten().min()
    }

    /// What passed deadlines mean at `now`: the same rules as
    /// [`Connection::poll_timeout`], so a deadline that passed is acted on
    /// or replaced by a later one.
    fn expired(&self, now: Instant) -> Expired {
        let t = &self.timers;
        let passed = |since: Instant, d: Duration| after(since, d).is_some_and(|x| now >= x);
        if t.linger.is_some_and(|l| now >= l) {
            return Expired::Close(CloseReason::LingerOver);
        }
        if t.stalled_since.is_some_and(|s| passed(s, t.read_timeout)) {
            return Expired::Close(CloseReason::WriteStall(t.read_timeout));
        }
        if let Some(stop) = t.stop {
            if !self.input_done && (passed(t.last_input, QUIET) || now >= stop) {
                return Expired::EndInput;
            }
            if now >= stop {
                return Expired::Close(CloseReason::ShutdownTimeout);
            }
            return Expired::Nothing;
        }
        if self.input_done || self.pending() > 0 || t.stalled_since.is_some() {
            return Expired::Nothing;
        }
        if self.has_partial_request() {
            if passed(t.last_input, t.read_timeout) {
                return Expired::Close(CloseReason::ReadTimeout(t.read_timeout));
            }
        } else if passed(t.last_active, t.idle_timeout) {
            return Expired::Close(CloseReason::Idle(t.idle_timeout));
        }
        Expired::Nothing
    }

    /// Act on the deadlines passed at `now`: end the input after the stop's
    /// quiet period, or mark the connection to close
    /// ([`Connection::poll_close`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        match self.expired(now) {
            Expired::Nothing => {}
            Expired::EndInput => self.handle_end_of_input(),
            Expired::Close(reason) => self.closed = Some(reason),
        }
    }

    /// True once, when the loop must shut down writing: the `PERM` after a
    /// framing error is written and the lingering close begins at `now`
    /// (it ends at [`LINGER`] later, through
    /// [`Connection::poll_timeout`], or sooner; see
    /// [`Connection::is_lingering`]).
    pub fn poll_shutdown_write(&mut self, now: Instant) -> bool {
        if self.is_lingering() && self.timers.linger.is_none() {
            self.timers.linger = Some(capped_after(now, LINGER));
            return true;
        }
        false
    }

    /// `Some` when the loop must close the connection now, and why.
    pub fn poll_close(&self) -> Option<CloseReason> {
        match self.closed {
            Some(reason) => Some(reason),
            None if self.is_finished() => Some(CloseReason::Finished),
            None => None,
        }
    }

    /// True once, after a framing error: the loop counts and logs it (its
    /// `PERM` is queued).
    pub fn poll_failed(&mut self) -> bool {
        if self.failed() && !self.failure_reported {
            self.failure_reported = true;
            return true;
        }
        false
    }

    /// True when the driver should read: input open and room for more
    /// requests (so the client is reading its replies), or discarding input
    /// in a lingering close.
    pub fn wants_input(&self) -> bool {
        if self.failed() {
            return self.is_lingering();
        }
        // Requests held back stay in the decoder; it holds less than one
        // frame plus one read.
        !self.input_done && self.has_room() && self.decoder.buffered() < self.max_frame
    }

    /// True when part of a request has arrived and the rest has not (the
    /// read timeout applies, not the idle timeout).
    fn has_partial_request(&self) -> bool {
        !self.input_done && self.decoder.buffered() > 0
    }

    /// Requests taken and not yet answered.
    pub fn pending(&self) -> usize {
        self.outbox.slots.len()
    }

    /// True after a framing error once the `PERM` reply is written and
    /// until the client closes its side or [`LINGER_BYTES`] were discarded:
    /// the driver shuts down writing, reads and discards input
    /// ([`Connection::wants_input`]), and closes after [`LINGER`] at the
    /// latest ([`Connection::poll_shutdown_write`]). Closing at once would reset the connection while the
    /// client's unread input is queued, destroying the reply.
    pub fn is_lingering(&self) -> bool {
        self.outbox.failed && self.transmit().is_empty() && !self.drained
    }

    /// True when everything owed has been written and no more requests
    /// will come: close the connection. Requests held back while the
    /// connection held too much are still owed after the end of input.
    pub fn is_finished(&self) -> bool {
        self.input_done
            && (self.failed() || !self.decoder.has_frame())
            && self.outbox.slots.is_empty()
            && self.outbox.fatal.is_none()
            && self.transmit().is_empty()
            && !self.is_lingering()
    }

    /// True when the input ended with a protocol error (its `PERM` is
    /// queued or written).
    pub fn failed(&self) -> bool {
        self.outbox.failed || self.outbox.fatal.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netstring::encode;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    /// The instant the test connections open at.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    /// A connection of `max_request` and `max_pending`, opened at
    /// [`t0`], with the default timeouts.
    fn limited(max_request: usize, max_pending: usize) -> Connection {
        let limits = ConnectionLimits {
            max_request,
            max_pending,
            ..ConnectionLimits::from(&Limits::default())
        };
        Connection::new(limits, t0())
    }

    fn conn() -> Connection {
        limited(DEFAULT_MAX_REQUEST, 16)
    }

    fn take(c: &mut Connection) -> Vec<(Seq, String, String)> {
        std::iter::from_fn(|| {
            c.poll_request()
                .map(|(s, r)| (s, r.name.to_owned(), r.key.to_owned()))
        })
        .collect()
    }

    fn out(c: &mut Connection) -> Vec<u8> {
        let bytes = c.transmit().to_vec();
        c.handle_written(bytes.len(), t0());
        bytes
    }

    fn ok(v: &str) -> Reply {
        Reply::Ok(v.into())
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut c = conn();
        c.handle_input(&encode(b"postfix a.example"), t0());
        c.handle_input(&encode(b"postfix b.example"), t0());
        let reqs = take(&mut c);
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            (reqs[0].1.as_str(), reqs[0].2.as_str()),
            ("postfix", "a.example")
        );
        // The second answers first: nothing goes out until the first does.
        c.handle_reply(reqs[1].0, ok("b"));
        assert!(c.transmit().is_empty());
        c.handle_reply(reqs[0].0, ok("a"));
        assert_eq!(out(&mut c), b"4:OK a,4:OK b,".to_vec());
        c.handle_end_of_input();
        assert!(c.is_finished());
    }

    #[test]
    fn framing_error_answers_queued_then_perm_then_finishes() {
        let mut c = conn();
        c.handle_input(&encode(b"postfix a.example"), t0());
        c.handle_input(b"x:garbage", t0());
        let reqs = take(&mut c);
        assert_eq!(reqs.len(), 1);
        assert!(c.failed());
        assert!(!c.wants_input());
        assert!(!c.is_finished());
        c.handle_reply(reqs[0].0, Reply::NotFound);
        let bytes = out(&mut c);
        assert!(bytes.starts_with(b"9:NOTFOUND ,"));
        assert!(String::from_utf8_lossy(&bytes).contains("PERM malformed request"));
        assert!(c.is_lingering());
        c.handle_end_of_input();
        assert!(c.is_finished());
    }

    /// After a framing error the reply goes out, then the connection
    /// lingers: it reads and discards input (so closing does not reset the
    /// connection and destroy the reply) until the client closes its side
    /// or 64 KiB were discarded.
    #[test]
    fn framing_error_lingers_until_end_of_input_or_enough_discarded() {
        let mut c = conn();
        c.handle_input(b"20000:", t0());
        assert!(take(&mut c).is_empty());
        // Not before the reply is written.
        assert!(!c.is_lingering() && !c.wants_input() && !c.is_finished());
        assert!(String::from_utf8_lossy(&out(&mut c)).contains("PERM"));
        assert!(c.is_lingering() && c.wants_input() && !c.is_finished());
        c.handle_input(&[b'x'; 20_000], t0());
        assert!(take(&mut c).is_empty(), "discarded input is no request");
        assert!(c.transmit().is_empty());
        assert!(c.is_lingering() && c.wants_input());
        c.handle_input(&vec![b'x'; LINGER_BYTES - 20_000], t0());
        assert!(!c.is_lingering() && !c.wants_input() && c.is_finished());

        let mut c = conn();
        c.handle_input(b"nospace-but-long-enough", t0());
        c.handle_input(&encode(b"nospace"), t0());
        take(&mut c);
        out(&mut c);
        assert!(c.is_lingering());
        c.handle_end_of_input();
        assert!(!c.is_lingering() && c.is_finished());
    }

    /// Answers of `len` bytes, as a fresh hit gets them at once.
    fn answer_all(c: &mut Connection, len: usize) -> usize {
        let mut n = 0;
        while let Some((seq, _)) = c.poll_request() {
            c.handle_reply(seq, ok(&"m".repeat(len)));
            n += 1;
        }
        n
    }

    /// One read brings many requests whose replies are known at once: the
    /// bound on what the connection holds is checked per request, so only
    /// the first few are taken; the rest wait in the input until the client
    /// reads, and no more input is read meanwhile.
    #[test]
    fn held_bytes_are_checked_per_request() {
        let mut c = conn();
        let input: Vec<u8> = (0..200)
            .flat_map(|i| encode(format!("p k{i}.example").as_bytes()))
            .collect();
        assert!(input.len() < 8192, "one read's worth");
        c.handle_input(&input, t0());
        let first = answer_all(&mut c, 36_000);
        assert!(first > 0 && first < 10, "{first} taken");
        assert!(c.outbox.held() <= MAX_HELD + MAX_REPLY_FRAME);
        assert!(!c.wants_input());
        // A partial write frees nothing while most is unwritten ...
        c.handle_written(1000, t0());
        assert_eq!(answer_all(&mut c, 36_000), 0);
        // ... the client reading everything lets the next requests in.
        out(&mut c);
        assert!(answer_all(&mut c, 36_000) > 0);
    }

    /// Requests held back when the client closed its side are still
    /// answered: the connection is not finished while they wait.
    #[test]
    fn end_of_input_still_answers_requests_held_back() {
        let mut c = conn();
        for i in 0..20 {
            c.handle_input(&encode(format!("p k{i}.example").as_bytes()), t0());
        }
        c.handle_end_of_input();
        let mut answered = 0;
        loop {
            answered += answer_all(&mut c, 36_000);
            out(&mut c);
            if c.is_finished() {
                break;
            }
        }
        assert_eq!(answered, 20);
    }

    /// Each reply still owed counts at the largest a reply can be.
    #[test]
    fn owed_replies_count_at_their_bound() {
        let mut c = conn();
        for i in 0..20 {
            c.handle_input(&encode(format!("p k{i}.example").as_bytes()), t0());
        }
        let owed = take(&mut c);
        assert_eq!(owed.len(), MAX_HELD.div_ceil(MAX_REPLY_FRAME));
        assert!(!c.wants_input());
        c.handle_reply(owed[0].0, Reply::NotFound);
        out(&mut c);
        assert_eq!(take(&mut c).len(), 1);
        // A reply known but waiting behind an earlier one counts at its size.
        let open = owed.len();
        c.handle_reply(owed[open - 1].0, Reply::NotFound);
        assert!(c.transmit().is_empty());
        assert_eq!(take(&mut c).len(), 1);
        assert_eq!(c.outbox.waiting, Reply::NotFound.frame_len());
    }

    #[test]
    fn request_without_space_is_perm() {
        let mut c = conn();
        c.handle_input(&encode(b"nospace"), t0());
        assert!(take(&mut c).is_empty());
        // No request pending: the PERM is owed at once.
        assert!(String::from_utf8_lossy(c.transmit()).contains("PERM"));
        out(&mut c);
        c.handle_end_of_input();
        assert!(c.is_finished());
    }

    #[test]
    fn pending_bound_stops_taking_requests() {
        let mut c = limited(DEFAULT_MAX_REQUEST, 2);
        for k in ["a", "b", "c"] {
            c.handle_input(&encode(format!("p {k}.example").as_bytes()), t0());
        }
        let first = take(&mut c);
        assert_eq!(first.len(), 2);
        assert!(!c.wants_input());
        c.handle_reply(first[0].0, Reply::NotFound);
        let third = take(&mut c);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].2, "c.example");
    }

    #[test]
    fn stale_or_unknown_seq_is_ignored() {
        let mut c = conn();
        c.handle_input(&encode(b"p a.example"), t0());
        let reqs = take(&mut c);
        c.handle_reply(Seq(99), ok("x"));
        assert!(c.transmit().is_empty());
        c.handle_reply(reqs[0].0, ok("a"));
        c.handle_reply(reqs[0].0, ok("again"));
        assert_eq!(out(&mut c), b"4:OK a,".to_vec());
    }

    #[test]
    fn request_over_limit_is_perm_before_its_body() {
        let mut c = conn();
        c.handle_input(b"10001:", t0());
        assert!(take(&mut c).is_empty());
        let bytes = String::from_utf8(out(&mut c)).unwrap();
        assert!(
            bytes.contains("PERM malformed request") && bytes.contains("10001"),
            "{bytes}"
        );
        // Nothing more is taken.
        c.handle_input(&encode(b"p a.example"), t0());
        assert!(take(&mut c).is_empty());
        assert!(c.transmit().is_empty());
    }

    #[test]
    fn http_on_the_socket_is_perm() {
        let mut c = conn();
        c.handle_input(b"GET / HTTP/1.1\r\n", t0());
        assert!(take(&mut c).is_empty());
        assert!(String::from_utf8_lossy(c.transmit()).contains("PERM"));
    }

    proptest! {
        /// Any bytes: at most one PERM, always last, never a panic.
        #[test]
        fn at_most_one_perm_and_it_is_last(chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..12),
                "[a-z]{1,5} [a-z.]{0,10}".prop_map(|s| encode(s.as_bytes())),
            ],
            0..12,
        )) {
            let mut c = limited(30, 64);
            let mut written = Vec::new();
            for chunk in &chunks {
                c.handle_input(chunk, t0());
                while let Some((seq, _)) = c.poll_request() {
                    c.handle_reply(seq, Reply::NotFound);
                }
                written.extend(out(&mut c));
            }
            let text = String::from_utf8_lossy(&written);
            let perms = text.matches("PERM ").count();
            prop_assert!(perms <= 1);
            if perms == 1 {
                prop_assert!(text.trim_end_matches(',').rsplit(",").next().unwrap_or("").contains("PERM") || text.ends_with(','));
                prop_assert!(c.is_lingering() || c.is_finished());
                c.handle_end_of_input();
                prop_assert!(c.is_finished());
            }
        }

        /// Every request gets exactly one reply, in request order, whatever
        /// the input split and the order the replies come back in.
        #[test]
        fn one_reply_per_request_in_order(
            keys in proptest::collection::vec("[a-z]{1,8}", 1..20),
            cuts in proptest::collection::vec(1usize..7, 1..40),
            order_seed in any::<u64>(),
        ) {
            let mut input = Vec::new();
            for k in &keys {
                input.extend(encode(format!("p {k}").as_bytes()));
            }
            let mut c = limited(DEFAULT_MAX_REQUEST, 4);
            let mut open: Vec<(Seq, String)> = Vec::new();
            let mut written = Vec::new();
            let mut rest = &input[..];
            let mut i = 0;
            let mut seed = order_seed;
            while !rest.is_empty() || !open.is_empty() {
                if c.wants_input() && !rest.is_empty() {
                    let n = cuts[i % cuts.len()].min(rest.len());
                    i += 1;
                    c.handle_input(&rest[..n], t0());
                    rest = &rest[n..];
                }
                while let Some((seq, r)) = c.poll_request() {
                    open.push((seq, r.key.to_owned()));
                }
                if !open.is_empty() && (seed % 3 == 0 || rest.is_empty() || !c.wants_input()) {
                    let pick = (seed as usize) % open.len();
                    let (seq, key) = open.swap_remove(pick);
                    c.handle_reply(seq, Reply::Ok(key.into()));
                }
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                written.extend(out(&mut c));
            }
            c.handle_end_of_input();
            prop_assert!(c.is_finished());
            let mut expected = Vec::new();
            for k in &keys {
                expected.extend(encode(format!("OK {k}").as_bytes()));
            }
            prop_assert_eq!(written, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the input split, the order replies come back in, their
        /// sizes and how much the client reads at a time: the connection
        /// never holds more than its bound plus one reply, its input buffer
        /// never more than one frame plus one read, and every request gets
        /// exactly one reply, in order.
        #[test]
        fn held_bytes_stay_bounded(
            n in 1usize..80,
            ops in proptest::collection::vec(0u8..4, 0..400),
            reads in proptest::collection::vec(1usize..9000, 1..8),
            writes in proptest::collection::vec(1usize..200_000, 1..8),
            sizes in proptest::collection::vec(
                prop_oneof![Just(1usize), Just(36_000), Just(MAX_REPLY - 3)], 1..8),
            seed in any::<u64>(),
        ) {
            const MAX_REQUEST: usize = 100;
            let max_read = reads.iter().copied().max().unwrap_or(0);
            let input: Vec<u8> = (0..n)
                .flat_map(|i| encode(format!("p {i}").as_bytes()))
                .collect();
            let mut c = limited(MAX_REQUEST, 64);
            let mut rest = &input[..];
            let mut open: Vec<(Seq, usize)> = Vec::new();
            let mut client = Decoder::new(MAX_REPLY);
            let mut answered = 0usize;
            let mut seed = seed;
            for step in 0usize.. {
                prop_assert!(step < 100_000, "no progress");
                // After the chosen operations, a fair cycle that always progresses.
                let op = ops.get(step).copied().unwrap_or((step % 4) as u8);
                let pick = seed as usize;
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                match op {
                    0 if c.wants_input() && !rest.is_empty() => {
                        let k = reads[step % reads.len()].min(rest.len());
                        c.handle_input(&rest[..k], t0());
                        rest = &rest[k..];
                    }
                    1 => {
                        while let Some((seq, r)) = c.poll_request() {
                            let key: usize = r.key.parse().map_err(|_| TestCaseError::fail("key"))?;
                            open.push((seq, key));
                        }
                    }
                    2 if !open.is_empty() => {
                        let (seq, key) = open.swap_remove(pick % open.len());
                        let len = sizes[pick % sizes.len()];
                        let value = format!("{key} {}", "v".repeat(len.saturating_sub(12)));
                        c.handle_reply(seq, Reply::Ok(value.into()));
                    }
                    3 => {
                        let k = writes[step % writes.len()].min(c.transmit().len());
                        client.push(&c.transmit()[..k]);
                        c.handle_written(k, t0());
                        while let Some(frame) = client.next_frame().map_err(|e| TestCaseError::fail(e.to_string()))? {
                            let text = String::from_utf8_lossy(&frame);
                            let want = format!("OK {answered} ");
                            prop_assert!(text.starts_with(&want), "{} for {}", &text[..want.len().min(text.len())], answered);
                            answered += 1;
                        }
                    }
                    _ => {}
                }
                prop_assert!(c.outbox.held() <= MAX_HELD + MAX_REPLY_FRAME, "held {}", c.outbox.held());
                let slots = &c.outbox.slots;
                prop_assert_eq!(c.outbox.unknown, slots.iter().filter(|s| s.is_none()).count());
                prop_assert_eq!(c.outbox.waiting, slots.iter().flatten().map(Reply::frame_len).sum::<usize>());
                prop_assert!(c.decoder.buffered() <= encoded_len(MAX_REQUEST) + max_read);
                if answered == n {
                    break;
                }
            }
            prop_assert!(rest.is_empty() && open.is_empty() && c.transmit().is_empty());
            c.handle_end_of_input();
            prop_assert!(c.is_finished());
        }
    }

    const IDLE: Duration = Duration::from_secs(60);
    const READ: Duration = Duration::from_secs(10);
    const SEC: Duration = Duration::from_secs(1);

    /// A connection opened at [`t0`] with `pending` requests taken and not
    /// answered, `partial` bytes of a further request, and its input
    /// closed or not.
    fn timed(pending: bool, partial: bool, input_closed: bool) -> Connection {
        let limits = ConnectionLimits {
            max_request: DEFAULT_MAX_REQUEST,
            max_pending: 100,
            read_timeout: READ,
            idle_timeout: IDLE,
        };
        let mut c = Connection::new(limits, t0());
        if pending {
            c.handle_input(b"21:postfix a.example.net,", t0());
            assert!(c.poll_request().is_some());
        }
        if partial {
            c.handle_input(b"21:postfix b.ex", t0());
        }
        if input_closed {
            c.handle_end_of_input();
        }
        c
    }

    /// Input last at t0, output at t0 + 1 s, a write stall from t0 + 2 s,
    /// a stop due at t0 + 5 s.
    fn with_timers(mut c: Connection, stalled: bool, stop: bool) -> Connection {
        c.timers.last_input = t0();
        c.timers.last_active = t0() + SEC;
        c.timers.stalled_since = stalled.then(|| t0() + 2 * SEC);
        c.timers.stop = stop.then(|| t0() + 5 * SEC);
        c
    }

    /// In every state, the deadline the loop waits for is acted on when it
    /// comes: a deadline that passes and means nothing would be handed back
    /// unchanged, and the loop would spin on it.
    #[test]
    fn every_deadline_is_acted_on() {
        for bits in 0..64u8 {
            let [pending, partial, stalled, stop, closed, linger] =
                [0, 1, 2, 3, 4, 5].map(|i| bits & (1 << i) != 0);
            let mut c = with_timers(timed(pending, partial, closed), stalled, stop);
            c.timers.linger = linger.then(|| t0() + LINGER);
            if let Some(at) = c.poll_timeout() {
                let state = format!(
                    "pending {pending} partial {partial} stalled {stalled} stop {stop} closed {closed} linger {linger}"
                );
                assert_ne!(c.expired(at), Expired::Nothing, "{state}");
                let (input_done, _) = (c.input_done, c.handle_timeout(at));
                assert!(
                    c.poll_close().is_some() || c.input_done != input_done,
                    "{state}"
                );
            }
        }
    }

    /// The rules themselves: which timeout applies in which state.
    #[test]
    fn which_timeout_applies() {
        let idle = |p, q| with_timers(timed(p, q, false), false, false);
        assert_eq!(idle(false, false).poll_timeout(), Some(t0() + SEC + IDLE));
        assert_eq!(idle(false, true).poll_timeout(), Some(t0() + READ));
        // Lookups pending: their own timeouts apply, also to a request
        // that arrives partly behind them.
        assert_eq!(idle(true, false).poll_timeout(), None);
        assert_eq!(idle(true, true).poll_timeout(), None);
        let mut c = idle(false, true);
        c.handle_timeout(t0() + READ);
        assert_eq!(c.poll_close(), Some(CloseReason::ReadTimeout(READ)));
        let mut c = idle(false, false);
        c.handle_timeout(t0() + IDLE);
        assert_eq!(c.poll_close(), None, "not before idle_timeout");
        c.handle_timeout(t0() + SEC + IDLE);
        assert_eq!(c.poll_close(), Some(CloseReason::Idle(IDLE)));
        assert_eq!(c.poll_timeout(), None, "closed: no more deadlines");
        // Replies the client does not read: read_timeout from the stall,
        // and no partial-request timer while reading is held up.
        let mut c = with_timers(timed(false, true, false), true, false);
        let at = t0() + 2 * SEC + READ;
        assert_eq!(c.poll_timeout(), Some(at));
        c.handle_timeout(at);
        assert_eq!(c.poll_close(), Some(CloseReason::WriteStall(READ)));
        // After a stop: the client's quiet period ends the input, then the
        // stop's deadline closes.
        let mut c = with_timers(timed(true, false, false), false, true);
        assert_eq!(c.poll_timeout(), Some(t0() + QUIET));
        c.handle_timeout(t0() + QUIET);
        assert!(c.input_done && c.poll_close().is_none());
        assert_eq!(c.poll_timeout(), Some(t0() + 5 * SEC));
        c.handle_timeout(t0() + 5 * SEC);
        assert_eq!(c.poll_close(), Some(CloseReason::ShutdownTimeout));
    }

    /// The write-stall timer runs from the first write the socket refused
    /// until a write makes progress.
    #[test]
    fn a_stall_counts_from_the_first_refused_write() {
        let mut c = timed(false, false, false);
        c.handle_input(&encode(b"p a.example"), t0());
        let (seq, _) = c.poll_request().expect("a request");
        c.handle_reply(seq, Reply::NotFound);
        c.handle_write_blocked(t0() + SEC);
        c.handle_write_blocked(t0() + 2 * SEC);
        assert_eq!(c.poll_timeout(), Some(t0() + SEC + READ));
        c.handle_written(1, t0() + 3 * SEC);
        assert_eq!(c.poll_timeout(), Some(t0() + 3 * SEC + IDLE), "progress");
        c.handle_write_blocked(t0() + 4 * SEC);
        assert_eq!(c.poll_timeout(), Some(t0() + 4 * SEC + READ));
        let rest = c.transmit().len();
        c.handle_written(rest, t0() + 5 * SEC);
        assert_eq!(c.poll_timeout(), Some(t0() + 5 * SEC + IDLE));
    }

    /// A lingering close: writing is shut down once, when the `PERM` is
    /// written, and the connection closes at [`LINGER`] after, whatever
    /// else waits; the framing error is reported once.
    #[test]
    fn lingering_close_ends_at_its_deadline() {
        let mut c = timed(false, false, false);
        c.timers.idle_timeout = Duration::MAX;
        c.handle_input(b"x", t0());
        assert!(c.poll_request().is_none());
        assert!(c.poll_failed() && !c.poll_failed());
        assert!(!c.poll_shutdown_write(t0()), "the PERM is not written yet");
        let n = c.transmit().len();
        c.handle_written(n, t0());
        assert!(c.is_lingering());
        assert_eq!(c.poll_timeout(), None);
        assert!(c.poll_shutdown_write(t0()) && !c.poll_shutdown_write(t0()));
        assert_eq!(c.poll_timeout(), Some(t0() + LINGER));
        assert_eq!(c.expired(t0()), Expired::Nothing);
        c.handle_timeout(t0() + LINGER);
        assert_eq!(c.poll_close(), Some(CloseReason::LingerOver));
    }

    /// Timeouts too large to add to a clock reading mean "never", not a
    /// panic (the config accepts any number of seconds).
    #[test]
    fn huge_timeouts_never_expire() {
        let mut c = timed(false, false, false);
        c.timers.idle_timeout = Duration::MAX;
        c.timers.read_timeout = Duration::MAX;
        assert_eq!(c.poll_timeout(), None);
        c.handle_input(b"21:postfix b.ex", t0());
        assert_eq!(c.poll_timeout(), None);
        c.timers.stalled_since = Some(t0());
        assert_eq!(c.expired(t0() + IDLE), Expired::Nothing);
        assert!(capped_after(t0(), Duration::MAX) > t0() + IDLE);
    }
}
