//! Netstring framing as used by Postfix socketmap_table(5): `<len>:<bytes>,`
//! (D. J. Bernstein, "Netstrings"; socketmap_table(5)).
//!
//! [`parse`] is a zero-copy, httparse-style parser over a byte slice;
//! [`Decoder`] buffers a byte stream on top of it. The length prefix is
//! checked digit by digit, so an oversized or malformed frame is refused
//! before its body is waited for, let alone buffered.

use std::ops::Range;

/// Largest request payload the daemon accepts by default: a request
/// over 10,000 bytes is refused (docs/ARCHITECTURE.md "Connections").
pub const DEFAULT_MAX_REQUEST: usize = 10_000;

/// Why a byte stream is not a valid netstring (djb "Netstrings").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstringError {
    /// A byte other than an ASCII digit or `:` appeared in the length prefix.
    #[error("bad netstring length: unexpected byte 0x{byte:02x}")]
    BadLength {
        /// The offending byte.
        byte: u8,
    },
    /// The length prefix has no digits (`:` came first).
    #[error("bad netstring length: empty length prefix")]
    EmptyLength,
    /// The length prefix has more digits than any length up to the limit needs.
    #[error("netstring length prefix longer than {max_digits} digits")]
    TooManyDigits {
        /// Digits needed to write the limit.
        max_digits: usize,
    },
    /// The announced length exceeds the limit.
    #[error("netstring length {announced} exceeds limit {max}")]
    TooLong {
        /// The length prefix as received (every digit already buffered, at
        /// most 20, then `...`), not cut where the limit was passed.
        announced: String,
        /// The limit in force.
        max: usize,
    },
    /// The payload is not followed by `,`.
    #[error("netstring missing terminating comma (found 0x{found:02x})")]
    MissingComma {
        /// The byte found where `,` was expected.
        found: u8,
    },
}

/// Outcome of [`parse`] on a buffer that is not (yet) invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed to complete the first netstring.
    Partial,
    /// The first netstring is complete.
    Complete {
        /// Where the payload lies in the buffer.
        payload: Range<usize>,
        /// Bytes of the buffer taken by the whole netstring, comma included.
        consumed: usize,
    },
}

/// Number of decimal digits needed to write `n` (at least 1).
const fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// The digits at the start of `buf` for an error message: at most 20, then
/// `...` when more digits follow.
fn announced(buf: &[u8]) -> String {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    let shown = buf.get(..digits.min(20)).unwrap_or_default();
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if digits > 20 {
        text.push_str("...");
    }
    text
}

/// Bytes the netstring of a `payload_len`-byte payload takes: length
/// digits, `:`, payload, `,` (djb "Netstrings").
pub const fn encoded_len(payload_len: usize) -> usize {
    decimal_digits(payload_len) + payload_len + 2
}

/// Parse the netstring at the start of `buf`, whose payload may be at most
/// `max_len` bytes (djb "Netstrings"; socketmap_table(5)).
///
/// Errors are reported as soon as the bytes already present prove them,
/// without waiting for the rest of the frame.
pub fn parse(buf: &[u8], max_len: usize) -> Result<Parsed, NetstringError> {
    let max_digits = decimal_digits(max_len);
    let mut len: usize = 0;
    let mut digits = 0;
    let mut colon = None;
    for (i, &byte) in buf.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                digits += 1;
                if digits > max_digits {
                    return Err(NetstringError::TooManyDigits { max_digits });
                }
                // Saturation cannot hide an overflow: the check below fires.
                len = len
                    .saturating_mul(10)
                    .saturating_add(usize::from(byte - b'0'));
                if len > max_len {
                    return Err(NetstringError::TooLong {
                        announced: announced(buf),
                        max: max_len,
                    });
                }
            }
            b':' if digits == 0 => return Err(NetstringError::EmptyLength),
            b':' => {
                colon = Some(i);
                break;
            }
            _ => return Err(NetstringError::BadLength { byte }),
        }
    }
    let Some(colon) = colon else {
        return Ok(Parsed::Partial);
    };
    let start = colon + 1;
    // `len <= max_len`, and a buffer holding `start + len` bytes exists, so
    // these additions only overflow for absurd limits; treat that as Partial.
    let Some(end) = start.checked_add(len) else {
        return Ok(Parsed::Partial);
    };
    match buf.get(end) {
        None => Ok(Parsed::Partial),
        Some(b',') => Ok(Parsed::Complete {
            payload: start..end,
            consumed: end + 1,
        }),
        Some(&found) => Err(NetstringError::MissingComma { found }),
    }
}

/// Append the netstring of the concatenation of `parts` to `out`, with no
/// allocation beyond growing `out` (djb "Netstrings").
pub fn encode_parts_into(parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(encoded_len(len));
    let mut digits = [0u8; 20];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        // `n % 10` fits a digit.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
    out.push(b':');
    for part in parts {
        out.extend_from_slice(part);
    }
    out.push(b',');
}

/// Append the netstring encoding of `payload` to `out` (djb "Netstrings").
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    encode_parts_into(&[payload], out);
}

/// The netstring encoding of `payload` (djb "Netstrings").
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(payload, &mut out);
    out
}

/// Incremental netstring decoder over a byte stream (socketmap_table(5)):
/// accepts the input split anywhere, yields frames in order, and once it has
/// seen an error keeps returning it.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are already consumed; dropping them
    /// lazily keeps pipelined frames from costing a memmove each.
    start: usize,
    max_len: usize,
    failed: Option<NetstringError>,
}

impl Decoder {
    /// A decoder accepting payloads of at most `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max_len,
            failed: None,
        }
    }

    /// Append received bytes. Ignored once the stream has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Compact only when the consumed part dominates, so the cost of the
        // move is amortised over the frames that were consumed.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete payload, `Ok(None)` when more bytes are needed, or
    /// the framing error (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, NetstringError> {
        self.next_frame_ref().map(|f| f.map(<[u8]>::to_vec))
    }

    /// [`Decoder::next_frame`] without copying: the payload borrowed from
    /// the decoder's buffer, valid until the next call.
    pub fn next_frame_ref(&mut self) -> Result<Option<&[u8]>, NetstringError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match parse(pending, self.max_len) {
            Ok(Parsed::Partial) => Ok(None),
            Ok(Parsed::Complete { payload, consumed }) => {
                let at = self.start;
                self.start += consumed;
                let range = (at + payload.start)..(at + payload.end);
                Ok(Some(self.buf.get(range).unwrap_or_default()))
            }
            Err(err) => {
                self.failed = Some(err.clone());
                // Nothing after a framing error can be trusted; free it.
                self.buf = Vec::new();
                self.start = 0;
                Err(err)
            }
        }
    }

    /// True when [`Decoder::next_frame_ref`] has a frame or an error to
    /// return, without returning it.
    pub fn has_frame(&self) -> bool {
        self.failed.is_some()
            || !matches!(
                parse(self.buf.get(self.start..).unwrap_or_default(), self.max_len),
                Ok(Parsed::Partial)
            )
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_complete_frame() {
        let buf = b"5:hello,rest";
        assert_eq!(
            parse(buf, 10),
            Ok(Parsed::Complete {
                payload: 2..7,
                consumed: 8
            })
        );
    }

    #[test]
    fn empty_payload() {
        assert_eq!(
            parse(b"0:,", 10),
            Ok(Parsed::Complete {
                payload: 2..2,
                consumed: 3
            })
        );
    }

    #[test]
    fn partial_is_not_an_error() {
        for buf in [&b""[..], b"1", b"12", b"12:", b"12:hello world"] {
            assert_eq!(parse(buf, 100), Ok(Parsed::Partial), "{buf:?}");
        }
    }

    #[test]
    fn length_errors_are_immediate() {
        assert_eq!(
            parse(b"x", 100),
            Err(NetstringError::BadLength { byte: b'x' })
        );
        assert_eq!(
            parse(b"1x", 100),
            Err(NetstringError::BadLength { byte: b'x' })
        );
        assert_eq!(parse(b":", 100), Err(NetstringError::EmptyLength));
        // 101 > 100 is known after the third digit, before ':' arrives.
        assert_eq!(
            parse(b"101", 100),
            Err(NetstringError::TooLong {
                announced: "101".into(),
                max: 100
            })
        );
        assert_eq!(
            parse(b"999", 100),
            Err(NetstringError::TooLong {
                announced: "999".into(),
                max: 100
            })
        );
        // Leading zeros cannot stretch the prefix indefinitely.
        assert_eq!(
            parse(b"0000", 100),
            Err(NetstringError::TooManyDigits { max_digits: 3 })
        );
        assert_eq!(
            parse(b"10001:", DEFAULT_MAX_REQUEST),
            Err(NetstringError::TooLong {
                announced: "10001".into(),
                max: DEFAULT_MAX_REQUEST
            })
        );
        // The whole announced length is reported, not where it passed the limit.
        assert_eq!(
            parse(b"999999999:", DEFAULT_MAX_REQUEST)
                .unwrap_err()
                .to_string(),
            "netstring length 999999999 exceeds limit 10000"
        );
        assert!(parse(&[b'9'; 40], DEFAULT_MAX_REQUEST)
            .unwrap_err()
            .to_string()
            .contains("99999999999999999999... exceeds"));
    }

    #[test]
    fn limit_is_inclusive() {
        let frame = encode(&[b'a'; 100]);
        assert!(matches!(parse(&frame, 100), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn missing_comma() {
        assert_eq!(
            parse(b"3:abcd", 10),
            Err(NetstringError::MissingComma { found: b'd' })
        );
    }

    #[test]
    fn encode_examples() {
        assert_eq!(encode(b"hello world!"), b"12:hello world!,");
        assert_eq!(encode(b""), b"0:,");
        let mut out = b"3:abc,".to_vec();
        encode_into(b"de", &mut out);
        assert_eq!(out, b"3:abc,2:de,");
    }

    #[test]
    fn decoder_pipelined_and_split() {
        let mut d = Decoder::new(DEFAULT_MAX_REQUEST);
        d.push(b"3:abc,2:d");
        assert_eq!(d.next_frame(), Ok(Some(b"abc".to_vec())));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"e,0:,");
        assert_eq!(d.next_frame(), Ok(Some(b"de".to_vec())));
        assert_eq!(d.next_frame(), Ok(Some(Vec::new())));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_error_is_sticky() {
        let mut d = Decoder::new(10);
        d.push(b"2:ok,x");
        assert_eq!(d.next_frame(), Ok(Some(b"ok".to_vec())));
        let err = NetstringError::BadLength { byte: b'x' };
        assert_eq!(d.next_frame(), Err(err.clone()));
        d.push(b"2:ok,");
        assert_eq!(d.next_frame(), Err(err));
        assert_eq!(d.buffered(), 0);
    }

    proptest! {
        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..20_000) {
            if let Ok(Parsed::Complete { payload, consumed }) = parse(&buf, max) {
                prop_assert!(payload.end < consumed && consumed <= buf.len());
                prop_assert!(payload.len() <= max);
            }
        }

        #[test]
        fn parse_never_panics_digits(buf in "[0-9:,]{0,24}", max in any::<usize>()) {
            let _ = parse(buf.as_bytes(), max);
        }

        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..16)) {
            let mut d = Decoder::new(20);
            for chunk in &chunks {
                d.push(chunk);
                while let Ok(Some(_)) = d.next_frame() {}
            }
        }

        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..=300)) {
            let encoded = encode(&payload);
            let Ok(Parsed::Complete { payload: range, consumed }) = parse(&encoded, 300) else {
                return Err(TestCaseError::fail("not complete"));
            };
            prop_assert_eq!(consumed, encoded.len());
            prop_assert_eq!(&encoded[range], &payload[..]);
        }

        #[test]
        fn any_split_gives_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
            one_byte in any::<bool>(),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                encode_into(f, &mut stream);
            }
            let mut points: Vec<usize> = if one_byte {
                (0..=stream.len()).collect()
            } else {
                cuts.iter().map(|c| c.index(stream.len() + 1)).collect()
            };
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = Decoder::new(40);
            let mut got = Vec::new();
            for w in points.windows(2) {
                d.push(&stream[w[0]..w[1]]);
                while let Some(frame) = d.next_frame().map_err(|e| TestCaseError::fail(e.to_string()))? {
                    got.push(frame);
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
