//! MTA-STS policy file grammar and validation (RFC 8461 §3.2), mx pattern
//! matching (§4.1) and rendering to a Postfix TLS policy reply.

use serde::{Deserialize, Serialize};

/// Largest `max_age` honoured (RFC 8461 §3.2: 31557600 seconds, one year).
pub const MAX_AGE_CAP: u64 = 31_557_600;

/// Policy mode (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sending MTAs must not deliver to hosts failing validation.
    Enforce,
    /// Report failures but deliver anyway.
    Testing,
    /// No active policy.
    None,
}

/// A validated policy (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode`.
    pub mode: Mode,
    /// `max_age` in seconds, already capped to [`MAX_AGE_CAP`].
    pub max_age: u64,
    /// `mx` patterns as published (lowercased), in policy order, e.g.
    /// `mail.example.com` or `*.example.net`.
    pub mx: Vec<String>,
    /// Every non-empty policy line as published (trimmed of the line ending),
    /// in order: the TLSRPT `policy_string` values (RFC 8460 §4.4).
    pub lines: Vec<String>,
}

/// Zone options that shape the Postfix reply (DESIGN "Replies for a policy").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyOptions {
    /// Treat `testing` like `enforce`.
    pub strict_testing: bool,
    /// Append ` servername=hostname`.
    pub require_sni: bool,
    /// Append the Postfix 3.10+ TLSRPT attributes.
    pub tlsrpt: bool,
}
