//! The HTTPS policy fetch at the HTTP/1.1 layer (RFC 8461 §3.3; DESIGN.md
//! "Policy fetch"): the `GET` request bytes and an incremental, bounded
//! parser for the response (head via `httparse`, Content-Length, chunked and
//! close-delimited bodies per RFC 9112 §6–7).
//!
//! Sans-IO: the driver writes [`build_policy_request`] to the TLS stream,
//! feeds whatever it reads to [`ResponseParser::feed`] and calls
//! [`ResponseParser::finish`] at EOF.

use thiserror::Error;

/// Largest policy body accepted (RFC 8461 §3.3 suggests senders limit the
/// policy size; DESIGN.md "Policy fetch" sets 64 KiB).
pub const MAX_POLICY_BODY: usize = 64 * 1024;

/// Path of the policy file on `mta-sts.<domain>` (RFC 8461 §3.2).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// Largest response head (status line and headers) accepted, in bytes
/// (DESIGN.md "Policy fetch": every buffer is bounded).
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest number of header fields accepted in a response head.
pub const MAX_HEADERS: usize = 64;

/// Largest chunk-size line (size plus chunk extensions, RFC 9112 §7.1.1).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Largest total size of the trailer section (RFC 9112 §7.1.2).
const MAX_TRAILERS: usize = 16 * 1024;

/// Longest `Location` or header excerpt kept for an error message, so a
/// hostile server cannot flood the log.
const MAX_EXCERPT: usize = 200;

/// The policy request (RFC 8461 §3.3): `GET /.well-known/mta-sts.txt` over
/// HTTP/1.1 to `host` (`mta-sts.<domain>`), asking the server to close the
/// connection after the response so a close-delimited body is unambiguous.
/// No `Accept-Encoding` is sent: the body must arrive without content coding.
pub fn build_policy_request(host: &str, user_agent: &str) -> Vec<u8> {
    format!(
        "GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// What the parser knows after some input (RFC 8461 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More input is needed; not an error.
    Partial,
    /// The response is complete and acceptable: the policy body.
    Complete(Vec<u8>),
}

/// Why a policy response was refused (RFC 8461 §3.3). The messages are meant
/// for a mail administrator reading a log line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    /// A status other than 200 (RFC 8461 §3.3: only 200 is a policy).
    #[error("policy server answered HTTP status {0}, expected 200")]
    Status(u16),
    /// A 3xx redirect, which RFC 8461 §3.3 forbids following.
    #[error("policy server redirected (HTTP {status}) to {location:?}; redirects are not followed (RFC 8461 §3.3)")]
    Redirect {
        /// The 3xx status code.
        status: u16,
        /// The `Location` header (empty if absent), shortened for logging.
        location: String,
    },
    /// The response had no `Content-Type` (RFC 8461 §3.3 requires `text/plain`).
    #[error("policy response has no Content-Type, expected text/plain")]
    MissingContentType,
    /// The media type is not `text/plain` (RFC 8461 §3.3).
    #[error("policy response has Content-Type {0:?}, expected text/plain")]
    ContentType(String),
    /// The body is (or is declared) larger than the limit.
    #[error("policy body is larger than the {limit}-byte limit")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The status line and headers exceed [`MAX_HEAD`] bytes.
    #[error("policy response headers are larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("policy response has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// The response head is not valid HTTP/1.x.
    #[error("policy response is not valid HTTP/1.1: {0}")]
    Malformed(String),
    /// A `Content-Length` that is not a decimal number, or conflicting ones
    /// (RFC 9112 §6.3).
    #[error("policy response has an invalid Content-Length")]
    InvalidContentLength,
    /// A transfer coding other than `chunked` (none is requested).
    #[error("policy response uses unsupported Transfer-Encoding {0:?}")]
    UnsupportedTransferEncoding(String),
    /// A malformed chunk size line, chunk terminator or trailer (RFC 9112 §7.1).
    #[error("policy response has a malformed chunked body")]
    InvalidChunk,
    /// The connection closed before the response was complete.
    #[error("connection closed before the policy response was complete")]
    Truncated,
    /// `feed` or `finish` was called after the response was already returned.
    #[error("policy response was already complete")]
    Finished,
}

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

/// How the body of an accepted response is delimited (RFC 9112 §6.3).
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Outcome of parsing one complete response head.
enum Head {
    /// A 1xx interim response of this many bytes, to be skipped.
    Interim(usize),
    /// The final response head of this many bytes and its body framing.
    Final(usize, Framing),
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

/// Parses a complete response head at the start of `buf`, if httparse finds
/// one, and applies the RFC 8461 §3.3 acceptance rules to a final response.
fn inspect_head(buf: &[u8], max_body: usize) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let status = response.code.unwrap_or(0);
    let headers = response.headers;
    // 101 Switching Protocols is final and never asked for: refused below.
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(Head::Interim(len)));
    }
    if (300..400).contains(&status) {
        let location = header(headers, "location").map(excerpt).unwrap_or_default();
        return Err(HttpError::Redirect { status, location });
    }
    if status != 200 {
        return Err(HttpError::Status(status));
    }
    let content_type = header(headers, "content-type").ok_or(HttpError::MissingContentType)?;
    if !is_text_plain(content_type) {
        return Err(HttpError::ContentType(excerpt(content_type)));
    }
    let framing = framing(headers)?;
    if let Framing::Length(n) = framing {
        if n > max_body as u64 {
            // Refused on the declared length, before reading the body.
            return Err(HttpError::BodyTooLarge { limit: max_body });
        }
    }
    Ok(Some(Head::Final(len, framing)))
}

/// The first value of header `name` (case-insensitive).
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// True when the media type is `text/plain`, case-insensitive, parameters
/// such as `charset=utf-8` allowed (RFC 8461 §3.3, RFC 9110 §8.3.1).
fn is_text_plain(value: &[u8]) -> bool {
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type.trim_ascii().eq_ignore_ascii_case(b"text/plain")
}

/// Body framing from Transfer-Encoding and Content-Length (RFC 9112 §6.3):
/// `chunked` wins over a length; no framing header means read until close.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(
                h.value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity")),
            );
            // Only plain `chunked` is acceptable: we never ask for a content
            // coding and cannot decode one.
            if codings.len() > 1 || codings.iter().any(|c| !c.eq_ignore_ascii_case(b"chunked")) {
                return Err(HttpError::UnsupportedTransferEncoding(excerpt(h.value)));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            // Repeated headers must agree, else the length is ambiguous.
            if length.is_some_and(|prev| prev != n) {
                return Err(HttpError::InvalidContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match (codings.is_empty(), length) {
        (false, _) => Framing::Chunked,
        (true, Some(n)) => Framing::Length(n),
        (true, None) => Framing::UntilClose,
    })
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6); overflow is invalid.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::InvalidContentLength)
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

/// A header value as text for an error message, shortened and lossy.
fn excerpt(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .take(MAX_EXCERPT)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OK_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
    const POLICY: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n";

    /// Feeds `input` in one piece, then EOF if still partial.
    fn run(input: &[u8]) -> Result<Vec<u8>, HttpError> {
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        match p.feed(input)? {
            Progress::Complete(body) => Ok(body),
            Progress::Partial => p.finish(),
        }
    }

    /// Feeds `input` in pieces of `step` bytes, then EOF if still partial.
    fn run_split(input: &[u8], step: usize) -> Result<Vec<u8>, HttpError> {
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        for piece in input.chunks(step) {
            if let Progress::Complete(body) = p.feed(piece)? {
                return Ok(body);
            }
        }
        p.finish()
    }

    fn with_length(body: &str) -> String {
        format!("{OK_HEAD}Content-Length: {}\r\n\r\n{body}", body.len())
    }

    fn chunked_policy() -> String {
        format!(
            "{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n\
             10;name=value\r\nversion: STSv1\r\n\r\n\
             {:x}\r\n{}\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n",
            POLICY.len() - 16,
            &POLICY[16..]
        )
    }

    #[test]
    fn request_is_http11_get_of_well_known_path() {
        let req = build_policy_request("mta-sts.example.com", "mta-sts-resolver/0.1");
        assert_eq!(
            req,
            b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n\
              User-Agent: mta-sts-resolver/0.1\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn content_length_body() {
        let input = with_length(POLICY) + "trailing garbage ignored";
        assert_eq!(run(input.as_bytes()).unwrap(), POLICY.as_bytes());
    }

    #[test]
    fn content_length_completes_without_eof() {
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        let input = with_length(POLICY);
        assert_eq!(
            p.feed(input.as_bytes()),
            Ok(Progress::Complete(POLICY.as_bytes().to_vec()))
        );
        assert_eq!(p.feed(b"x"), Err(HttpError::Finished));
        assert_eq!(p.finish(), Err(HttpError::Finished));
    }

    #[test]
    fn empty_content_length_body() {
        assert_eq!(run(with_length("").as_bytes()).unwrap(), b"");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        assert_eq!(run(chunked_policy().as_bytes()).unwrap(), POLICY.as_bytes());
    }

    #[test]
    fn chunked_with_bare_lf_and_uppercase_hex() {
        let input = format!("{OK_HEAD}Transfer-Encoding: Chunked\r\n\r\nA\nversion: S\n0\n\n");
        assert_eq!(run(input.as_bytes()).unwrap(), b"version: S");
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let input = format!(
            "{OK_HEAD}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        assert_eq!(run(input.as_bytes()).unwrap(), b"hello");
    }

    #[test]
    fn body_delimited_by_close() {
        let input = format!("{OK_HEAD}\r\n{POLICY}");
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        assert_eq!(p.feed(input.as_bytes()), Ok(Progress::Partial));
        assert_eq!(p.finish().unwrap(), POLICY.as_bytes());
    }

    #[test]
    fn one_byte_at_a_time_gives_same_body() {
        for input in [
            with_length(POLICY),
            chunked_policy(),
            format!("{OK_HEAD}\r\n{POLICY}"),
            format!("HTTP/1.1 100 Continue\r\n\r\n{}", with_length(POLICY)),
        ] {
            assert_eq!(run_split(input.as_bytes(), 1).unwrap(), POLICY.as_bytes());
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        let input = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n{}",
            with_length(POLICY)
        );
        assert_eq!(run(input.as_bytes()).unwrap(), POLICY.as_bytes());
    }

    #[test]
    fn switching_protocols_is_refused() {
        let input = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        assert_eq!(run(input.as_bytes()), Err(HttpError::Status(101)));
    }

    #[test]
    fn not_found_is_refused() {
        let input =
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run(input.as_bytes()), Err(HttpError::Status(404)));
    }

    #[test]
    fn redirects_are_refused_not_followed() {
        for status in [301, 302, 307, 308] {
            let input = format!(
                "HTTP/1.1 {status} Moved\r\nLocation: https://evil.example/mta-sts.txt\r\n\r\n"
            );
            assert_eq!(
                run(input.as_bytes()),
                Err(HttpError::Redirect {
                    status,
                    location: "https://evil.example/mta-sts.txt".into()
                })
            );
        }
        let err = run(b"HTTP/1.1 302 Found\r\n\r\n").unwrap_err();
        assert_eq!(
            err,
            HttpError::Redirect {
                status: 302,
                location: String::new()
            }
        );
        assert!(err.to_string().contains("redirects are not followed"));
    }

    #[test]
    fn content_type_must_be_text_plain() {
        let html = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n{POLICY}");
        assert_eq!(
            run(html.as_bytes()),
            Err(HttpError::ContentType("text/html".into()))
        );
        let plainer = "HTTP/1.1 200 OK\r\nContent-Type: text/plainer\r\n\r\nx";
        assert!(matches!(
            run(plainer.as_bytes()),
            Err(HttpError::ContentType(_))
        ));
        let missing = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(run(missing.as_bytes()), Err(HttpError::MissingContentType));
    }

    #[test]
    fn content_type_parameters_and_case_accepted() {
        for ct in [
            "text/plain; charset=utf-8",
            "TEXT/PLAIN",
            "Text/Plain;charset=\"UTF-8\"",
        ] {
            let input =
                format!("HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\nContent-Length: 2\r\n\r\nok");
            assert_eq!(run(input.as_bytes()).unwrap(), b"ok", "{ct}");
        }
    }

    #[test]
    fn large_body_refused_by_content_length_before_reading() {
        let input = format!("{OK_HEAD}Content-Length: 200000\r\n\r\n");
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        assert_eq!(
            p.feed(input.as_bytes()),
            Err(HttpError::BodyTooLarge {
                limit: MAX_POLICY_BODY
            })
        );
        let huge = format!("{OK_HEAD}Content-Length: 18446744073709551615\r\n\r\n");
        assert!(matches!(
            run(huge.as_bytes()),
            Err(HttpError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn large_chunked_body_refused_while_streaming() {
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        let head = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n");
        assert_eq!(p.feed(head.as_bytes()), Ok(Progress::Partial));
        let chunk = format!("1000\r\n{}\r\n", "a".repeat(0x1000));
        let mut result = Ok(Progress::Partial);
        for _ in 0..50 {
            result = p.feed(chunk.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(HttpError::BodyTooLarge {
                limit: MAX_POLICY_BODY
            })
        );
        // A single chunk declared bigger than the limit is refused at once.
        let big = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n30D40\r\n");
        assert!(matches!(
            run(big.as_bytes()),
            Err(HttpError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn large_body_by_close_refused_while_streaming() {
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        let head = format!("{OK_HEAD}\r\n");
        assert_eq!(p.feed(head.as_bytes()), Ok(Progress::Partial));
        let block = vec![b'a'; 8192];
        let mut fed = 0;
        let err = loop {
            match p.feed(&block) {
                Ok(_) => fed += block.len(),
                Err(e) => break e,
            }
            assert!(fed <= 200_000);
        };
        assert_eq!(
            err,
            HttpError::BodyTooLarge {
                limit: MAX_POLICY_BODY
            }
        );
        assert!(fed <= MAX_POLICY_BODY);
    }

    #[test]
    fn body_of_exactly_the_limit_is_accepted() {
        let body = "a".repeat(MAX_POLICY_BODY);
        assert_eq!(
            run(with_length(&body).as_bytes()).unwrap().len(),
            MAX_POLICY_BODY
        );
        let by_close = format!("{OK_HEAD}\r\n{body}");
        assert_eq!(run(by_close.as_bytes()).unwrap().len(), MAX_POLICY_BODY);
    }

    #[test]
    fn truncated_bodies() {
        let short = format!("{OK_HEAD}Content-Length: 100\r\n\r\nversion: STSv1");
        assert_eq!(run(short.as_bytes()), Err(HttpError::Truncated));
        let chunk = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhel");
        assert_eq!(run(chunk.as_bytes()), Err(HttpError::Truncated));
        let no_last = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        assert_eq!(run(no_last.as_bytes()), Err(HttpError::Truncated));
        let no_end = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\n");
        assert_eq!(run(no_end.as_bytes()), Err(HttpError::Truncated));
        assert_eq!(
            run(b"HTTP/1.1 200 OK\r\nContent-"),
            Err(HttpError::Truncated)
        );
        assert_eq!(run(b""), Err(HttpError::Truncated));
    }

    #[test]
    fn invalid_content_length() {
        for cl in [
            "abc",
            "-1",
            "+5",
            "1 2",
            "5, 5",
            "",
            "99999999999999999999999",
        ] {
            let input = format!("{OK_HEAD}Content-Length: {cl}\r\n\r\n");
            assert_eq!(
                run(input.as_bytes()),
                Err(HttpError::InvalidContentLength),
                "{cl:?}"
            );
        }
        let conflict = format!("{OK_HEAD}Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(
            run(conflict.as_bytes()),
            Err(HttpError::InvalidContentLength)
        );
        let same = format!("{OK_HEAD}Content-Length: 2\r\nContent-Length: 2\r\n\r\nab");
        assert_eq!(run(same.as_bytes()).unwrap(), b"ab");
    }

    #[test]
    fn invalid_chunks() {
        for body in [
            "zz\r\n",
            "\r\n",
            "-1\r\n",
            "11111111111111111\r\n",
            "5\r\nhelloXX\r\n",
        ] {
            let input = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n{body}");
            assert_eq!(
                run(input.as_bytes()),
                Err(HttpError::InvalidChunk),
                "{body:?}"
            );
        }
        // Endless trailers are cut off.
        let trailers = format!(
            "{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\n{}",
            "X-T: 1\r\n".repeat(MAX_TRAILERS / 8)
        );
        assert_eq!(run(trailers.as_bytes()), Err(HttpError::InvalidChunk));
        // An endless chunk extension is cut off.
        let ext = format!(
            "{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5;{}",
            "x".repeat(MAX_CHUNK_LINE)
        );
        assert_eq!(run(ext.as_bytes()), Err(HttpError::InvalidChunk));
    }

    #[test]
    fn unsupported_transfer_encoding() {
        for te in ["gzip", "gzip, chunked", "chunked, chunked"] {
            let input = format!("{OK_HEAD}Transfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(
                    run(input.as_bytes()),
                    Err(HttpError::UnsupportedTransferEncoding(_))
                ),
                "{te}"
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            run(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            run(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\n\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn endless_head_is_cut_off() {
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n"), Ok(Progress::Partial));
        let filler = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let err = loop {
            if let Err(e) = p.feed(filler) {
                break e;
            }
        };
        // The head never ends: the byte cap trips, not the header count.
        assert_eq!(err, HttpError::HeadTooLarge);
        let mut many = String::from(OK_HEAD);
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(run(many.as_bytes()), Err(HttpError::TooManyHeaders));
    }

    #[test]
    fn errors_read_well_in_a_log() {
        assert_eq!(
            HttpError::Status(404).to_string(),
            "policy server answered HTTP status 404, expected 200"
        );
        assert_eq!(
            HttpError::BodyTooLarge { limit: 65536 }.to_string(),
            "policy body is larger than the 65536-byte limit"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            max_body in 0usize..256,
        ) {
            let mut p = ResponseParser::new(max_body);
            for piece in &pieces {
                if p.feed(piece).is_err() {
                    break;
                }
            }
            let _ = p.finish();
        }

        #[test]
        fn never_panics_after_a_valid_head(
            tail in proptest::collection::vec(any::<u8>(), 0..256),
            chunked in any::<bool>(),
        ) {
            let head = if chunked {
                format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n")
            } else {
                format!("{OK_HEAD}\r\n")
            };
            let mut p = ResponseParser::new(128);
            let _ = p.feed(head.as_bytes());
            let _ = p.feed(&tail);
            let _ = p.finish();
        }

        #[test]
        fn any_split_gives_the_same_body(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            chunk_len in 1usize..50,
            cuts in proptest::collection::vec(0usize..2000, 0..8),
            form in 0u8..3,
        ) {
            let mut input = match form {
                0 => format!("{OK_HEAD}Content-Length: {}\r\n\r\n", body.len()).into_bytes(),
                1 => format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n").into_bytes(),
                _ => format!("{OK_HEAD}\r\n").into_bytes(),
            };
            if form == 1 {
                for chunk in body.chunks(chunk_len) {
                    input.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
                    input.extend_from_slice(chunk);
                    input.extend_from_slice(b"\r\n");
                }
                input.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
            } else {
                input.extend_from_slice(&body);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.push(0);
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut p = ResponseParser::new(MAX_POLICY_BODY);
            let mut got = None;
            for pair in cuts.windows(2) {
                if let [a, b] = pair {
                    if let Progress::Complete(b) = p.feed(&input[*a..*b]).unwrap() {
                        got = Some(b);
                        break;
                    }
                }
            }
            let got = match got {
                Some(b) => b,
                None => p.finish().unwrap(),
            };
            prop_assert_eq!(got, body);
        }
    }
}
