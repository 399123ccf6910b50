//! Postfix socketmap protocol, socketmap_table(5): a request is one
//! netstring `NAME KEY`; a reply is one netstring `OK value`, `NOTFOUND `,
//! `TEMP reason`, `TIMEOUT reason` or `PERM reason`. [`Connection`] is one
//! connection's protocol state (docs/ARCHITECTURE.md "Connections").

mod connection;

pub use connection::{
    capped_after, CloseReason, Connection, ConnectionLimits, RequestRef, Seq, LINGER, QUIET,
};

use std::sync::Arc;

use crate::netstring;

/// Largest reply payload Postfix accepts (socketmap_table(5): 100000 bytes).
pub const MAX_REPLY: usize = 100_000;

/// A socketmap lookup request (socketmap_table(5) "PROTOCOL").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The map name; selects the zone.
    pub name: String,
    /// The lookup key: everything after the first space, unnormalised.
    pub key: String,
}

/// Why a request payload is not `NAME KEY` (socketmap_table(5)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The payload has no space separating name and key.
    #[error("request has no space between name and key")]
    MissingSpace,
    /// The name before the space is empty.
    #[error("request has an empty map name")]
    EmptyName,
    /// The payload is not valid UTF-8.
    #[error("request is not valid UTF-8")]
    NotUtf8,
}

/// Split a request payload at its first space into name and key
/// (socketmap_table(5) "PROTOCOL").
pub fn parse_request(payload: &[u8]) -> Result<Request, RequestError> {
    let (name, key) = split_request(payload)?;
    Ok(Request {
        name: name.to_owned(),
        key: key.to_owned(),
    })
}

/// [`parse_request`] without copying.
pub fn split_request(payload: &[u8]) -> Result<(&str, &str), RequestError> {
    let text = std::str::from_utf8(payload).map_err(|_| RequestError::NotUtf8)?;
    let (name, key) = text.split_once(' ').ok_or(RequestError::MissingSpace)?;
    if name.is_empty() {
        return Err(RequestError::EmptyName);
    }
    Ok((name, key))
}

/// A socketmap reply (socketmap_table(5) "PROTOCOL").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK value`: the lookup found `value` (shared: a cached policy's
    /// reply is rendered once).
    Ok(Arc<str>),
    /// `NOTFOUND `: no entry for the key.
    NotFound,
    /// `TEMP reason`: temporary failure.
    Temp(String),
    /// `TIMEOUT reason`: the lookup timed out.
    Timeout(String),
    /// `PERM reason`: permanent failure.
    Perm(String),
}

/// `prefix` followed by as much of `reason` as fits in [`MAX_REPLY`] bytes,
/// cut at a char boundary so the reply stays valid UTF-8.
fn with_reason(prefix: &str, reason: &str) -> Vec<u8> {
    let room = MAX_REPLY.saturating_sub(prefix.len());
    let mut cut = reason.len().min(room);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = Vec::with_capacity(prefix.len() + cut);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(reason.as_bytes().get(..cut).unwrap_or_default());
    out
}

impl Reply {
    /// The reply payload, never longer than [`MAX_REPLY`] bytes
    /// (socketmap_table(5)): an oversized `OK` value becomes a `PERM`
    /// (a truncated policy would be wrong), long reasons are truncated.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Reply::Ok(value) if 3 + value.len() <= MAX_REPLY => with_reason("OK ", value),
            Reply::Ok(_) => with_reason("PERM ", &format!("reply exceeds {MAX_REPLY} bytes")),
            // Postfix expects the trailing space (socketmap_table(5)).
            Reply::NotFound => b"NOTFOUND ".to_vec(),
            Reply::Temp(reason) => with_reason("TEMP ", reason),
            Reply::Timeout(reason) => with_reason("TIMEOUT ", reason),
            Reply::Perm(reason) => with_reason("PERM ", reason),
        }
    }

    /// Bytes [`Reply::encode_into`] appends (at most the netstring of
    /// [`MAX_REPLY`] bytes), without encoding the common replies.
    pub fn frame_len(&self) -> usize {
        let payload = match self {
            Reply::Ok(value) if 3 + value.len() <= MAX_REPLY => 3 + value.len(),
            Reply::NotFound => b"NOTFOUND ".len(),
            other => other.payload().len(),
        };
        netstring::encoded_len(payload)
    }

    /// The reply framed as a netstring, ready to write (socketmap_table(5)).
    pub fn to_netstring(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Append the reply framed as a netstring to `out`; an `OK` or
    /// `NOTFOUND` reply (the common ones) allocates nothing beyond `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok(value) if 3 + value.len() <= MAX_REPLY => {
                netstring::encode_parts_into(&[b"OK ", value.as_bytes()], out)
            }
            Reply::NotFound => netstring::encode_parts_into(&[b"NOTFOUND "], out),
            other => netstring::encode_into(&other.payload(), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(name: &str, key: &str) -> Request {
        Request {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn request_split_at_first_space() {
        assert_eq!(
            parse_request(b"postfix example.com"),
            Ok(req("postfix", "example.com"))
        );
        assert_eq!(parse_request(b"a b c"), Ok(req("a", "b c")));
        assert_eq!(parse_request(b"a "), Ok(req("a", "")));
    }

    #[test]
    fn request_errors() {
        assert_eq!(
            parse_request(b"example.com"),
            Err(RequestError::MissingSpace)
        );
        assert_eq!(parse_request(b""), Err(RequestError::MissingSpace));
        assert_eq!(parse_request(b" example.com"), Err(RequestError::EmptyName));
        assert_eq!(parse_request(b"a \xff"), Err(RequestError::NotUtf8));
    }

    #[test]
    fn reply_payloads() {
        assert_eq!(
            Reply::Ok("secure match=mx.example.com".into()).payload(),
            b"OK secure match=mx.example.com"
        );
        assert_eq!(Reply::NotFound.payload(), b"NOTFOUND ");
        assert_eq!(Reply::Temp("dns".into()).payload(), b"TEMP dns");
        assert_eq!(Reply::Timeout("slow".into()).payload(), b"TIMEOUT slow");
        assert_eq!(Reply::Perm("bad".into()).payload(), b"PERM bad");
        assert_eq!(Reply::NotFound.to_netstring(), b"9:NOTFOUND ,");
    }

    #[test]
    fn ok_at_limit_is_kept() {
        let value = "a".repeat(MAX_REPLY - 3);
        let payload = Reply::Ok(value.into()).payload();
        assert_eq!(payload.len(), MAX_REPLY);
        assert!(payload.starts_with(b"OK a"));
    }

    #[test]
    fn oversized_ok_becomes_perm() {
        let value = "a".repeat(MAX_REPLY - 2);
        assert_eq!(
            Reply::Ok(value.into()).payload(),
            b"PERM reply exceeds 100000 bytes"
        );
    }

    #[test]
    fn long_reason_truncated_at_char_boundary() {
        // 'é' is two bytes; the limit falls in the middle of one.
        let reason = "é".repeat(MAX_REPLY);
        let payload = Reply::Temp(reason).payload();
        assert!(payload.len() <= MAX_REPLY);
        assert_eq!(payload.len(), MAX_REPLY - 1);
        assert!(std::str::from_utf8(&payload).is_ok());
    }

    proptest! {
        #[test]
        fn payload_never_exceeds_limit(s in ".{1,40}", n in 0usize..3) {
            let big = s.repeat(n * 1500);
            for reply in [Reply::NotFound, Reply::Ok(big.clone().into()), Reply::Temp(big.clone()), Reply::Timeout(big.clone()), Reply::Perm(big)] {
                let payload = reply.payload();
                prop_assert!(payload.len() <= MAX_REPLY);
                prop_assert_eq!(reply.frame_len(), reply.to_netstring().len());
                prop_assert!(std::str::from_utf8(&payload).is_ok());
            }
        }

        #[test]
        fn parse_request_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_request(&payload);
        }
    }
}
