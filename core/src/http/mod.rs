//! The HTTPS policy fetch at the HTTP/1.1 layer (RFC 8461 §3.3): the `GET` request bytes and an incremental, bounded
//! parser for the response (head via `httparse`, Content-Length, chunked and
//! close-delimited bodies per RFC 9112 §6–7).
//!
//! Sans-IO: the driver writes [`build_policy_request`] to the TLS stream,
//! feeds whatever it reads to [`ResponseParser::feed`] and calls
//! [`ResponseParser::finish`] at EOF.

use thiserror::Error;

mod head;
mod parser;
#[cfg(test)]
mod tests;

pub use parser::ResponseParser;

/// Largest policy body accepted (RFC 8461 §3.3 suggests senders limit the
/// policy size; RFC 8461 §3.3 sets 64 KiB).
pub const MAX_POLICY_BODY: usize = 64 * 1024;

/// Path of the policy file on `mta-sts.<domain>` (RFC 8461 §3.2).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// Largest response head (status line and headers) accepted, in bytes
/// (RFC 8461 §3.3: every buffer is bounded).
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest number of header fields accepted in a response head.
pub const MAX_HEADERS: usize = 64;

/// Largest chunk-size line (size plus chunk extensions, RFC 9112 §7.1.1).
pub(crate) const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Largest total size of the trailer section (RFC 9112 §7.1.2).
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;

/// Longest `Location` or header excerpt kept for an error message, so a
/// hostile server cannot flood the log.
pub(crate) const MAX_EXCERPT: usize = 200;

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

/// A header value as text for an error message, shortened and lossy.
pub(crate) fn excerpt(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .take(MAX_EXCERPT)
        .collect()
}
