//! One socketmap connection's protocol state, sans IO (socketmap_table(5);
//! docs/ARCHITECTURE.md "Connections"): bytes in, requests out; replies in
//! (in any order), bytes out in request order. It enforces the limits: the
//! request size, the replies a client may leave pending, the bytes it may
//! make the daemon hold, and the `PERM` reply then a lingering close after
//! a framing error.

use std::collections::VecDeque;
use std::time::Duration;

use super::{split_request, Reply, MAX_REPLY};
use crate::netstring::{encoded_len, Decoder};

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

/// After a framing error, how long the driver discards input at most
/// before closing (see [`LINGER_BYTES`]); the driver keeps the clock.
pub const LINGER: Duration = Duration::from_secs(1);

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
    /// A connection refusing requests over `max_request` bytes and reading
    /// no more while `max_pending` requests await their replies.
    pub fn new(max_request: usize, max_pending: usize) -> Self {
        Connection {
            decoder: Decoder::new(max_request),
            outbox: Outbox::default(),
            input_done: false,
            max_pending: max_pending.max(1),
            max_frame: encoded_len(max_request),
            discarded: 0,
            drained: false,
        }
    }

    /// Bytes received from the client (after a framing error, discarded).
    pub fn handle_input(&mut self, bytes: &[u8]) {
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

    /// `n` bytes of [`Connection::transmit`] were written.
    pub fn handle_written(&mut self, n: usize) {
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
    /// driver's read timeout applies, not its idle timeout).
    pub fn has_partial_request(&self) -> bool {
        !self.input_done && self.decoder.buffered() > 0
    }

    /// True once no more requests will be read: the client closed its
    /// side, the daemon stopped taking requests, or a request was malformed.
    pub fn input_ended(&self) -> bool {
        self.input_done
    }

    /// Requests taken and not yet answered.
    pub fn pending(&self) -> usize {
        self.outbox.slots.len()
    }

    /// True after a framing error once the `PERM` reply is written and
    /// until the client closes its side or [`LINGER_BYTES`] were discarded:
    /// the driver shuts down writing, reads and discards input
    /// ([`Connection::wants_input`]), and closes after [`LINGER`] at the
    /// latest. Closing at once would reset the connection while the
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
    use crate::netstring::{encode, DEFAULT_MAX_REQUEST};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    fn conn() -> Connection {
        Connection::new(DEFAULT_MAX_REQUEST, 16)
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
        c.handle_written(bytes.len());
        bytes
    }

    fn ok(v: &str) -> Reply {
        Reply::Ok(v.into())
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut c = conn();
        c.handle_input(&encode(b"postfix a.example"));
        c.handle_input(&encode(b"postfix b.example"));
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
        c.handle_input(&encode(b"postfix a.example"));
        c.handle_input(b"x:garbage");
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
        c.handle_input(b"20000:");
        assert!(take(&mut c).is_empty());
        // Not before the reply is written.
        assert!(!c.is_lingering() && !c.wants_input() && !c.is_finished());
        assert!(String::from_utf8_lossy(&out(&mut c)).contains("PERM"));
        assert!(c.is_lingering() && c.wants_input() && !c.is_finished());
        c.handle_input(&[b'x'; 20_000]);
        assert!(take(&mut c).is_empty(), "discarded input is no request");
        assert!(c.transmit().is_empty());
        assert!(c.is_lingering() && c.wants_input());
        c.handle_input(&vec![b'x'; LINGER_BYTES - 20_000]);
        assert!(!c.is_lingering() && !c.wants_input() && c.is_finished());

        let mut c = conn();
        c.handle_input(b"nospace-but-long-enough");
        c.handle_input(&encode(b"nospace"));
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
        c.handle_input(&input);
        let first = answer_all(&mut c, 36_000);
        assert!(first > 0 && first < 10, "{first} taken");
        assert!(c.outbox.held() <= MAX_HELD + MAX_REPLY_FRAME);
        assert!(!c.wants_input());
        // A partial write frees nothing while most is unwritten ...
        c.handle_written(1000);
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
            c.handle_input(&encode(format!("p k{i}.example").as_bytes()));
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
            c.handle_input(&encode(format!("p k{i}.example").as_bytes()));
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
        c.handle_input(&encode(b"nospace"));
        assert!(take(&mut c).is_empty());
        // No request pending: the PERM is owed at once.
        assert!(String::from_utf8_lossy(c.transmit()).contains("PERM"));
        out(&mut c);
        c.handle_end_of_input();
        assert!(c.is_finished());
    }

    #[test]
    fn pending_bound_stops_taking_requests() {
        let mut c = Connection::new(DEFAULT_MAX_REQUEST, 2);
        for k in ["a", "b", "c"] {
            c.handle_input(&encode(format!("p {k}.example").as_bytes()));
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
        c.handle_input(&encode(b"p a.example"));
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
        c.handle_input(b"10001:");
        assert!(take(&mut c).is_empty());
        let bytes = String::from_utf8(out(&mut c)).unwrap();
        assert!(
            bytes.contains("PERM malformed request") && bytes.contains("10001"),
            "{bytes}"
        );
        // Nothing more is taken.
        c.handle_input(&encode(b"p a.example"));
        assert!(take(&mut c).is_empty());
        assert!(c.transmit().is_empty());
    }

    #[test]
    fn http_on_the_socket_is_perm() {
        let mut c = conn();
        c.handle_input(b"GET / HTTP/1.1\r\n");
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
            let mut c = Connection::new(30, 64);
            let mut written = Vec::new();
            for chunk in &chunks {
                c.handle_input(chunk);
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
            let mut c = Connection::new(DEFAULT_MAX_REQUEST, 4);
            let mut open: Vec<(Seq, String)> = Vec::new();
            let mut written = Vec::new();
            let mut rest = &input[..];
            let mut i = 0;
            let mut seed = order_seed;
            while !rest.is_empty() || !open.is_empty() {
                if c.wants_input() && !rest.is_empty() {
                    let n = cuts[i % cuts.len()].min(rest.len());
                    i += 1;
                    c.handle_input(&rest[..n]);
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
            let mut c = Connection::new(MAX_REQUEST, 64);
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
                        c.handle_input(&rest[..k]);
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
                        c.handle_written(k);
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
}
