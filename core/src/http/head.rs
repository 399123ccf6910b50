//! The response head: status, headers and the RFC 8461 §3.3 acceptance
//! rules (status 200 only, no redirects, `text/plain`, size limit), and how
//! the body is framed (RFC 9112 §6.3).

use super::{excerpt, HttpError, MAX_HEAD, MAX_HEADERS};

/// How the body of an accepted response is delimited (RFC 9112 §6.3).
pub(super) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Outcome of parsing one complete response head.
pub(super) enum Head {
    /// A 1xx interim response of this many bytes, to be skipped.
    Interim(usize),
    /// The final response head of this many bytes and its body framing.
    Final(usize, Framing),
}

/// Parses a complete response head at the start of `buf`, if httparse finds
/// one, and applies the RFC 8461 §3.3 acceptance rules to a final response.
pub(super) fn inspect_head(buf: &[u8], max_body: usize) -> Result<Option<Head>, HttpError> {
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
pub(super) fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// True when the media type is `text/plain`, case-insensitive, parameters
/// such as `charset=utf-8` allowed (RFC 8461 §3.3, RFC 9110 §8.3.1).
pub(super) fn is_text_plain(value: &[u8]) -> bool {
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type.trim_ascii().eq_ignore_ascii_case(b"text/plain")
}

/// Body framing from Transfer-Encoding and Content-Length (RFC 9112 §6.3):
/// `chunked` wins over a length; no framing header means read until close.
pub(super) fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
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
pub(super) fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::InvalidContentLength)
}
