//! Percent-decoding (RFC 3986 §2.1), for the `dsn` parser and the rule
//! that finds credentials in URLs (`redact`): one reading of `%XX` for both.

/// `text` with each `%XX` replaced by its byte; `None` when an escape is
/// cut short or not hex, or the bytes are not UTF-8.
pub(super) fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
