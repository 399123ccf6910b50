//! Socketmap key normalisation and domain validity (DESIGN "Key normalisation",
//! RFC 8461 §4.1 for the domain whose policy is looked up, UTS 46 for IDNA).

use std::fmt;

/// A normalised destination domain: lowercase A-labels, no trailing dot,
/// a valid DNS name (labels 1..=63 octets, name at most 253 octets).
/// This is also the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// The A-label form, e.g. `xn--bcher-kva.example`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `name` (ASCII, no trailing dot) is a valid DNS host name for
/// our purposes: 1..=253 octets, labels of 1..=63 octets made of letters,
/// digits, `-` and `_`, not starting or ending with `-`.
pub fn is_valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}
