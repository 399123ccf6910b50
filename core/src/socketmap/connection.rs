//! One socketmap connection's protocol state, sans IO (socketmap_table(5);
//! docs/ARCHITECTURE.md "Connections"): bytes in, requests out; replies in
//! (in any order), bytes out in request order. It enforces the limits: the
//! request size, the replies a client may leave pending, and the `PERM`
//! reply then close after a framing error.

use std::collections::VecDeque;

use super::{split_request, Reply};
use crate::netstring::Decoder;

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

/// Output waiting to be written beyond which no more input is read: a client
/// that sends but never reads cannot make the daemon buffer without bound.
const MAX_UNWRITTEN: usize = 256 * 1024;

/// The state of one connection.
#[derive(Debug)]
pub struct Connection {
    decoder: Decoder,
    outbox: Outbox,
    /// No more requests will be taken (end of input, framing error, or
    /// shutdown).
    input_done: bool,
    max_pending: usize,
}

/// Replies on their way out, in request order.
#[derive(Debug, Default)]
struct Outbox {
    /// Replies not yet encoded, oldest first; `None` while still looked up.
    slots: VecDeque<Option<Reply>>,
    /// The sequence number of `slots[0]`.
    first: u64,
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
        }
    }

    /// Bytes received from the client.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if !self.input_done {
            self.decoder.push(bytes);
        }
    }

    /// The client closed its side, or the daemon stops taking requests
    /// (shutdown): requests already complete are still answered.
    pub fn handle_end_of_input(&mut self) {
        self.input_done = true;
    }

    /// The next complete request, if any and if fewer than `max_pending`
    /// are open. A malformed one ends the input: the queued replies, then
    /// `PERM`, then close.
    pub fn poll_request(&mut self) -> Option<(Seq, RequestRef<'_>)> {
        let outbox = &mut self.outbox;
        if outbox.fatal.is_some() || outbox.failed || outbox.slots.len() >= self.max_pending {
            return None;
        }
        let parsed = match self.decoder.next_frame_ref() {
            Ok(None) => return None,
            Ok(Some(frame)) => split_request(frame).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok((name, key)) => {
                let seq = Seq(outbox.first + outbox.slots.len() as u64);
                outbox.slots.push_back(None);
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
        }
    }

    /// True when the driver should read: input open, room for more
    /// requests, and the client is reading its replies.
    pub fn wants_input(&self) -> bool {
        !self.input_done
            && self.outbox.slots.len() < self.max_pending
            && self.outbox.unwritten().len() < MAX_UNWRITTEN
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

    /// True when everything owed has been written and no more requests
    /// will come: close the connection.
    pub fn is_finished(&self) -> bool {
        self.input_done
            && self.outbox.slots.is_empty()
            && self.outbox.fatal.is_none()
            && self.transmit().is_empty()
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
        assert!(c.is_finished());
    }

    #[test]
    fn request_without_space_is_perm() {
        let mut c = conn();
        c.handle_input(&encode(b"nospace"));
        assert!(take(&mut c).is_empty());
        // No request pending: the PERM is owed at once.
        assert!(String::from_utf8_lossy(c.transmit()).contains("PERM"));
        out(&mut c);
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
        // Nothing more is read.
        c.handle_input(&encode(b"p a.example"));
        assert!(take(&mut c).is_empty());
        assert!(c.is_finished());
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
}
