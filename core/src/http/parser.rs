//! The incremental response parser: accepts any split of the input and
//! bounds every buffer (RFC 9112 §6–7 body framings, RFC 8461 §3.3 limits).

use super::head::{inspect_head, Framing, Head};
use super::*;

/// Where the parser is in the response.
#[derive(Debug)]
enum State {
    /// Reading the head; `scanned` bytes of `buf` hold no blank line yet.
    Head { scanned: usize },
    /// Content-Length body with this many bytes still to come.
    Length { remaining: u64 },
    /// No length given: the body ends when the connection closes.
    UntilClose,
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked(Chunk),
    /// The body was returned.
    Done,
}

/// Position inside a chunked body (RFC 9112 §7.1).
#[derive(Debug)]
enum Chunk {
    /// Reading `chunk-size [ chunk-ext ] CRLF`.
    Size,
    /// Reading chunk data with this many bytes still to come.
    Data { remaining: u64 },
    /// Reading the CRLF after chunk data.
    DataEnd,
    /// Reading trailer fields up to the final empty line; `seen` bytes so far.
    Trailers { seen: usize },
}

/// Incremental parser for the policy response (RFC 8461 §3.3). Accepts any
/// split of the input; every buffer is bounded by [`MAX_HEAD`] plus one
/// `feed` slice, or by the body limit.
#[derive(Debug)]
pub struct ResponseParser {
    max_body: usize,
    state: State,
    /// Unparsed head bytes, or the current chunked-coding line.
    buf: Vec<u8>,
    body: Vec<u8>,
}

impl ResponseParser {
    /// A parser accepting bodies of at most `max_body` bytes (normally
    /// [`MAX_POLICY_BODY`]).
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body,
            state: State::Head { scanned: 0 },
            buf: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Feeds the next bytes read from the connection. Returns
    /// [`Progress::Complete`] with the body once a length-delimited or chunked
    /// body has fully arrived (later bytes are ignored); a close-delimited
    /// body completes only in [`finish`](Self::finish).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, HttpError> {
        match self.state {
            State::Done => Err(HttpError::Finished),
            State::Head { scanned } => {
                self.buf.extend_from_slice(bytes);
                match self.parse_head(scanned)? {
                    None => Ok(Progress::Partial),
                    Some((len, framing)) => {
                        // Bytes after the head already belong to the body.
                        let rest = self.buf.split_off(len);
                        self.buf.clear();
                        self.start_body(framing);
                        self.body_bytes(&rest)
                    }
                }
            }
            _ => self.body_bytes(bytes),
        }
    }

    /// Called at EOF: returns the body if the response is complete there (a
    /// close-delimited body), else [`HttpError::Truncated`].
    pub fn finish(&mut self) -> Result<Vec<u8>, HttpError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::UntilClose => Ok(std::mem::take(&mut self.body)),
            State::Done => Err(HttpError::Finished),
            _ => Err(HttpError::Truncated),
        }
    }

    /// Parses the head once `buf` holds a blank line, skipping 1xx interim
    /// responses (RFC 9110 §15.2). Returns the final head's length and framing.
    fn parse_head(&mut self, mut scanned: usize) -> Result<Option<(usize, Framing)>, HttpError> {
        loop {
            // Only run httparse once a blank line can end the head, so
            // one-byte feeds do not re-parse the head on every byte.
            let from = scanned.saturating_sub(2);
            let blank = self
                .buf
                .get(from..)
                .is_some_and(|tail| tail.windows(2).any(|w| w == b"\n\n" || w == b"\n\r"));
            let head = if blank {
                inspect_head(&self.buf, self.max_body)?
            } else {
                None
            };
            match head {
                None => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(HttpError::HeadTooLarge);
                    }
                    self.state = State::Head {
                        scanned: self.buf.len(),
                    };
                    return Ok(None);
                }
                Some(Head::Interim(len)) => {
                    self.buf.drain(..len.min(self.buf.len()));
                    scanned = 0;
                }
                Some(Head::Final(len, framing)) => return Ok(Some((len, framing))),
            }
        }
    }

    /// Enters the body state for an accepted head.
    fn start_body(&mut self, framing: Framing) {
        self.state = match framing {
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
    }

    /// Consumes body bytes in the current state.
    fn body_bytes(&mut self, mut input: &[u8]) -> Result<Progress, HttpError> {
        loop {
            match &mut self.state {
                State::Head { .. } | State::Done => return Err(HttpError::Finished),
                State::Length { remaining } => {
                    take_data(&mut input, remaining, &mut self.body);
                    if *remaining == 0 {
                        return Ok(self.complete());
                    }
                    return Ok(Progress::Partial);
                }
                State::UntilClose => {
                    if self.body.len().saturating_add(input.len()) > self.max_body {
                        return Err(self.too_large());
                    }
                    self.body.extend_from_slice(input);
                    return Ok(Progress::Partial);
                }
                State::Chunked(Chunk::Data { remaining }) => {
                    take_data(&mut input, remaining, &mut self.body);
                    if *remaining > 0 {
                        return Ok(Progress::Partial);
                    }
                    self.state = State::Chunked(Chunk::DataEnd);
                }
                State::Chunked(Chunk::Size) => {
                    let Some(line) = self.take_line(&mut input, MAX_CHUNK_LINE)? else {
                        return Ok(Progress::Partial);
                    };
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        self.state = State::Chunked(Chunk::Trailers { seen: 0 });
                    } else if (self.body.len() as u64).saturating_add(size) > self.max_body as u64 {
                        // Refused on the declared size, before the data arrives.
                        return Err(self.too_large());
                    } else {
                        self.state = State::Chunked(Chunk::Data { remaining: size });
                    }
                }
                State::Chunked(Chunk::DataEnd) => {
                    let Some(line) = self.take_line(&mut input, 2)? else {
                        return Ok(Progress::Partial);
                    };
                    if !line.is_empty() {
                        return Err(HttpError::InvalidChunk);
                    }
                    self.state = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Trailers { seen }) => {
                    let seen = *seen;
                    let budget = MAX_TRAILERS.saturating_sub(seen);
                    let Some(line) = self.take_line(&mut input, budget)? else {
                        return Ok(Progress::Partial);
                    };
                    if line.is_empty() {
                        return Ok(self.complete());
                    }
                    // Trailer fields are read and ignored (RFC 9112 §7.1.2).
                    // Stopping below the cap keeps room for the final CRLF.
                    let seen = seen.saturating_add(line.len() + 2);
                    if seen >= MAX_TRAILERS {
                        return Err(HttpError::InvalidChunk);
                    }
                    self.state = State::Chunked(Chunk::Trailers { seen });
                }
            }
        }
    }

    /// Takes one line (ending in LF, an optional CR before it dropped) from
    /// `input`, buffering a partial line in `buf`. A line longer than `cap`
    /// bytes is a chunked-coding error.
    fn take_line(&mut self, input: &mut &[u8], cap: usize) -> Result<Option<Vec<u8>>, HttpError> {
        let (part, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let (line, rest) = input.split_at(pos);
                *input = rest.get(1..).unwrap_or_default();
                (line, true)
            }
            None => (std::mem::take(input), false),
        };
        if self.buf.len().saturating_add(part.len()) > cap {
            return Err(HttpError::InvalidChunk);
        }
        self.buf.extend_from_slice(part);
        if !complete {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(line))
    }

    /// Marks the response done and hands out the body.
    fn complete(&mut self) -> Progress {
        self.state = State::Done;
        Progress::Complete(std::mem::take(&mut self.body))
    }

    fn too_large(&self) -> HttpError {
        HttpError::BodyTooLarge {
            limit: self.max_body,
        }
    }
}

/// Moves up to `remaining` bytes from `input` into `body`.
fn take_data(input: &mut &[u8], remaining: &mut u64, body: &mut Vec<u8>) {
    let n = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(input.len());
    let (data, rest) = input.split_at(n);
    body.extend_from_slice(data);
    *input = rest;
    *remaining -= n as u64;
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): hex digits, optional
/// whitespace, extensions after `;` ignored. More than 16 digits overflows.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = size.trim_ascii();
    if hex.is_empty() || hex.len() > 16 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(HttpError::InvalidChunk);
    }
    std::str::from_utf8(hex)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or(HttpError::InvalidChunk)
}
