//! MTA-STS policy file grammar and validation (RFC 8461 §3.2), mx pattern
//! matching (§4.1) and rendering to a Postfix TLS policy reply.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::is_valid_hostname;

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
    pub lines: PolicyLines,
}

/// The lines of a policy, in order, kept as one text with `\n` between
/// them: one allocation per cached policy rather than one per line
/// (docs/ARCHITECTURE.md "Cache"). A line never holds `\n` or is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyLines(Box<str>);

impl PolicyLines {
    /// The lines, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split('\n').filter(|l| !l.is_empty())
    }

    /// How many lines there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when there is no line.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last line, if any.
    pub fn last(&self) -> Option<&str> {
        self.iter().last()
    }

    /// Append `line` (a `\n` in it becomes a space; an empty line is
    /// dropped).
    pub fn push(&mut self, line: &str) {
        *self = self.iter().chain(std::iter::once(line)).collect();
    }

    /// Remove every line.
    pub fn clear(&mut self) {
        self.0 = Box::default();
    }
}

impl<S: AsRef<str>> FromIterator<S> for PolicyLines {
    fn from_iter<I: IntoIterator<Item = S>>(lines: I) -> Self {
        let mut text = String::new();
        for line in lines {
            let line = line.as_ref();
            if line.is_empty() {
                continue;
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.extend(line.chars().map(|c| if c == '\n' { ' ' } else { c }));
        }
        PolicyLines(text.into_boxed_str())
    }
}

impl From<Vec<String>> for PolicyLines {
    fn from(lines: Vec<String>) -> Self {
        lines.into_iter().collect()
    }
}

impl<const N: usize> PartialEq<[&str; N]> for PolicyLines {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl PartialEq<Vec<&str>> for PolicyLines {
    fn eq(&self, other: &Vec<&str>) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl<'a> IntoIterator for &'a PolicyLines {
    type Item = &'a str;
    type IntoIter = Box<dyn Iterator<Item = &'a str> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Zone options that shape the Postfix reply (docs/ARCHITECTURE.md "Replies").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyOptions {
    /// Treat `testing` like `enforce`.
    pub strict_testing: bool,
    /// Append ` servername=hostname`.
    pub require_sni: bool,
    /// Append the Postfix 3.10+ TLSRPT attributes.
    pub tlsrpt: bool,
}

impl Mode {
    /// The policy-file spelling (RFC 8461 §3.2 `sts-policy-mode-value`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest reply value (the text after `OK `) [`render_reply`] produces:
/// Postfix refuses socketmap replies over 100,000 bytes, and the `OK `
/// prefix and netstring framing need the rest (socketmap_table(5)).
pub const MAX_REPLY_VALUE: usize = 99_990;

/// Longest piece of policy text quoted in an error message, so a hostile
/// policy cannot flood the log.
const MAX_EXCERPT: usize = 100;

/// Why a policy file is invalid (RFC 8461 §3.2). An invalid policy is
/// treated like a failed fetch. The messages are meant for a mail
/// administrator reading a log line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// The body is not UTF-8 (RFC 8461 §3.2: the policy is UTF-8 text).
    #[error("policy file is not valid UTF-8")]
    NotUtf8,
    /// A non-empty line without `:`.
    #[error("policy line {0:?} is not of the form `key: value`")]
    MalformedLine(String),
    /// No `version` line.
    #[error("policy has no `version` line")]
    MissingVersion,
    /// `version` is not `STSv1`.
    #[error("policy version {0:?} is not STSv1")]
    BadVersion(String),
    /// No `mode` line.
    #[error("policy has no `mode` line")]
    MissingMode,
    /// `mode` is not `enforce`, `testing` or `none`.
    #[error("policy mode {0:?} is not enforce, testing or none")]
    BadMode(String),
    /// No `max_age` line.
    #[error("policy has no `max_age` line")]
    MissingMaxAge,
    /// `max_age` is not 1 to 10 decimal digits.
    #[error("policy max_age {0:?} is not a number of 1 to 10 digits")]
    BadMaxAge(String),
    /// Mode `enforce` or `testing` without any `mx` line.
    #[error("policy in enforce or testing mode lists no mx")]
    NoMx,
    /// An `mx` value that is not a host name or `*.` host name pattern.
    #[error("policy mx {0:?} is not a host name or `*.` pattern")]
    BadMx(String),
}

/// Parses and validates a policy file (RFC 8461 §3.2). Lines end in LF or CRLF; each non-empty line is `key: value`,
/// both trimmed. For repeated `version`, `mode` and `max_age` the first
/// wins; every `mx` counts; unknown keys are ignored but kept in `lines`.
pub fn parse_policy(body: &[u8]) -> Result<Policy, PolicyError> {
    let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotUtf8)?;
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    let mut lines = String::new();
    for line in text.split('\n').map(str::trim_ascii) {
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| PolicyError::MalformedLine(excerpt(line)))?;
        let value = value.trim_ascii();
        // Keys are case-sensitive (RFC 8461 §3.2 ABNF uses %s strings).
        match key.trim_ascii() {
            "version" => {
                version.get_or_insert(value);
            }
            "mode" => {
                mode.get_or_insert(value);
            }
            "max_age" => {
                max_age.get_or_insert(value);
            }
            "mx" => mx.push(parse_mx(value)?),
            _ => {}
        }
        if !lines.is_empty() {
            lines.push('\n');
        }
        lines.push_str(line);
    }
    match version {
        None => return Err(PolicyError::MissingVersion),
        Some("STSv1") => {}
        Some(other) => return Err(PolicyError::BadVersion(excerpt(other))),
    }
    let mode = match mode.ok_or(PolicyError::MissingMode)? {
        "enforce" => Mode::Enforce,
        "testing" => Mode::Testing,
        "none" => Mode::None,
        other => return Err(PolicyError::BadMode(excerpt(other))),
    };
    let max_age = parse_max_age(max_age.ok_or(PolicyError::MissingMaxAge)?)?;
    require_mx(mode, &mx)?;
    Ok(Policy {
        mode,
        max_age,
        mx,
        lines: PolicyLines(lines.into_boxed_str()),
    })
}

/// `sts-policy-max-age-value = 1*10DIGIT` (RFC 8461 §3.2), capped to
/// [`MAX_AGE_CAP`].
fn parse_max_age(value: &str) -> Result<u64, PolicyError> {
    let bad = || PolicyError::BadMaxAge(excerpt(value));
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds: u64 = value.parse().map_err(|_| bad())?;
    Ok(seconds.min(MAX_AGE_CAP))
}

/// `sts-policy-mx-value = ["*."] Domain` (RFC 8461 §3.2), returned
/// lowercased. IP literals (here: a last label of only digits, which covers
/// dotted IPv4; IPv6 and `[...]` fail the host name check) are refused.
/// The one check of an mx pattern, for a fetched policy and a stored one.
pub(crate) fn parse_mx(value: &str) -> Result<String, PolicyError> {
    let pattern = value.to_ascii_lowercase();
    let host = pattern.strip_prefix("*.").unwrap_or(&pattern);
    let numeric_tld = host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !is_valid_hostname(host) || numeric_tld {
        return Err(PolicyError::BadMx(excerpt(value)));
    }
    Ok(pattern)
}

/// `enforce` and `testing` need at least one `mx` (RFC 8461 §3.2); the one
/// check, for a fetched policy and a stored one.
pub(crate) fn require_mx(mode: Mode, mx: &[String]) -> Result<(), PolicyError> {
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::NoMx);
    }
    Ok(())
}

/// True when MX host `host` matches policy pattern `pattern` (RFC 8461
/// §4.1): exact match, or `*.example.com` matching exactly one extra
/// left-most label. Case-insensitive; a trailing dot on `host` is ignored.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    match pattern.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| {
            !label.is_empty() && !parent.is_empty() && rest.eq_ignore_ascii_case(parent)
        }),
        None => !host.is_empty() && host.eq_ignore_ascii_case(pattern),
    }
}

/// The Postfix TLS policy for `policy` (docs/ARCHITECTURE.md "Replies";
/// Postfix `smtp_tls_policy_maps` syntax, TLSRPT attributes of Postfix
/// 3.10+ per RFC 8460 §4.3). `None` means answer `NOTFOUND`: mode `none`,
/// or `testing` without `strict_testing`. Otherwise the value after `OK `,
/// at most [`MAX_REPLY_VALUE`] bytes.
pub fn render_reply(policy: &Policy, domain: &str, opts: ReplyOptions) -> Option<String> {
    match policy.mode {
        Mode::Enforce => {}
        Mode::Testing if opts.strict_testing => {}
        Mode::Testing | Mode::None => return None,
    }
    // Postfix's `match=` spells `*.example.com` as `.example.com`.
    let mut seen = HashSet::new();
    let matches: Vec<&str> = policy
        .mx
        .iter()
        .map(|p| p.strip_prefix('*').unwrap_or(p))
        .filter(|p| seen.insert(*p))
        .collect();
    let mut reply = format!("secure match={}", matches.join(":"));
    if opts.require_sni {
        reply.push_str(" servername=hostname");
    }
    if !opts.tlsrpt {
        return Some(reply);
    }
    let base = reply.len();
    reply.push_str(" policy_type=sts policy_domain=");
    reply.push_str(domain);
    for pattern in &policy.mx {
        reply.push_str(" mx_host_pattern=");
        reply.push_str(pattern);
    }
    let without_strings = reply.len();
    // A brace or control character would end or corrupt Postfix's
    // `{ name = value }` attribute, letting the policy inject attributes:
    // such lines (never valid version/mode/max_age/mx lines) are left out.
    for line in policy.lines.iter().filter(|l| is_safe_attribute(l)) {
        reply.push_str(" { policy_string = ");
        reply.push_str(line);
        reply.push_str(" }");
    }
    // Stay under Postfix's reply limit: first drop the policy strings; if
    // the patterns alone are still too long (thousands of mx lines), drop
    // every TLSRPT attribute. Never keep `policy_type` without a pattern or
    // string: Postfix 3.10.0 to 3.10.5 crash on it.
    if reply.len() > MAX_REPLY_VALUE {
        reply.truncate(without_strings);
    }
    if reply.len() > MAX_REPLY_VALUE {
        reply.truncate(base);
    }
    Some(reply)
}

/// True when `line` can sit inside a Postfix `{ name = value }` attribute.
fn is_safe_attribute(line: &str) -> bool {
    !line
        .chars()
        .any(|c| c == '{' || c == '}' || (c.is_control() && c != '\t'))
}

/// Policy text quoted in an error message, shortened.
fn excerpt(text: &str) -> String {
    text.chars().take(MAX_EXCERPT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::normalize_key;
    use crate::http::MAX_POLICY_BODY;
    use proptest::prelude::*;

    /// The example policy of RFC 8461 §3.2.
    const RFC_EXAMPLE: &str = "version: STSv1\n\
                               mode: enforce\n\
                               mx: mail.example.com\n\
                               mx: *.example.net\n\
                               mx: backupmx.example.com\n\
                               max_age: 604800\n";

    fn policy(text: &str) -> Result<Policy, PolicyError> {
        parse_policy(text.as_bytes())
    }

    fn opts(strict_testing: bool, require_sni: bool, tlsrpt: bool) -> ReplyOptions {
        ReplyOptions {
            strict_testing,
            require_sni,
            tlsrpt,
        }
    }

    #[test]
    fn rfc_example() {
        let p = policy(RFC_EXAMPLE).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert_eq!(
            p.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert_eq!(p.lines.len(), 6);
        assert_eq!(p.lines.iter().next(), Some("version: STSv1"));
        assert_eq!(p.lines.iter().nth(3), Some("mx: *.example.net"));
    }

    #[test]
    fn policy_lines_keep_order_and_stay_one_line_each() {
        let mut lines: PolicyLines = ["version: STSv1", "", "mode: testing"]
            .into_iter()
            .collect();
        assert_eq!(lines, ["version: STSv1", "mode: testing"]);
        lines.push("x-note: two\nlines");
        lines.push("");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines.last(), Some("x-note: two lines"));
        let copied: PolicyLines = lines.iter().collect();
        assert_eq!(copied, lines);
        lines.clear();
        assert!(lines.is_empty());
        assert_eq!(lines.iter().count(), 0);
    }

    #[test]
    fn crlf_and_lf_give_the_same_policy() {
        let crlf = RFC_EXAMPLE.replace('\n', "\r\n");
        assert_eq!(policy(&crlf).unwrap(), policy(RFC_EXAMPLE).unwrap());
        // No final line ending, blank lines and surrounding whitespace.
        let loose =
            "\r\n  version :STSv1 \r\n\r\nmode:\tenforce\nmx:  MAIL.Example.COM\nmax_age: 86400";
        let p = policy(loose).unwrap();
        assert_eq!(p.mx, ["mail.example.com"]);
        assert_eq!(p.max_age, 86_400);
        assert_eq!(
            p.lines,
            [
                "version :STSv1",
                "mode:\tenforce",
                "mx:  MAIL.Example.COM",
                "max_age: 86400"
            ]
        );
    }

    #[test]
    fn unknown_keys_ignored_but_kept() {
        let p = policy(&format!("{RFC_EXAMPLE}x-future: something: else\n")).unwrap();
        assert_eq!(p.lines.last().unwrap(), "x-future: something: else");
        assert_eq!(p.mx.len(), 3);
    }

    #[test]
    fn keys_are_case_sensitive() {
        let text = RFC_EXAMPLE.replace("mode:", "Mode:");
        assert_eq!(policy(&text), Err(PolicyError::MissingMode));
    }

    #[test]
    fn first_of_repeated_keys_wins() {
        let p = policy(&format!(
            "{RFC_EXAMPLE}mode: none\nmax_age: 1\nversion: STSv2\n"
        ))
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        let p = policy(&format!("mode: testing\n{RFC_EXAMPLE}")).unwrap();
        assert_eq!(p.mode, Mode::Testing);
    }

    #[test]
    fn max_age_rules() {
        let with = |age: &str| policy(&RFC_EXAMPLE.replace("604800", age));
        assert_eq!(with("31557601").unwrap().max_age, MAX_AGE_CAP);
        assert_eq!(with("9999999999").unwrap().max_age, MAX_AGE_CAP);
        assert_eq!(with("0").unwrap().max_age, 0);
        assert_eq!(with("0000000060").unwrap().max_age, 60);
        for bad in ["10000000000", "", "-1", "+1", "1d", "1 2", "٣"] {
            assert_eq!(
                with(bad),
                Err(PolicyError::BadMaxAge(bad.into())),
                "{bad:?}"
            );
        }
        let missing = RFC_EXAMPLE.replace("max_age: 604800\n", "");
        assert_eq!(policy(&missing), Err(PolicyError::MissingMaxAge));
    }

    #[test]
    fn mx_required_unless_mode_none() {
        let enforce = "version: STSv1\nmode: enforce\nmax_age: 86400\n";
        assert_eq!(policy(enforce), Err(PolicyError::NoMx));
        let testing = enforce.replace("enforce", "testing");
        assert_eq!(policy(&testing), Err(PolicyError::NoMx));
        let none = policy(&enforce.replace("enforce", "none")).unwrap();
        assert_eq!(none.mode, Mode::None);
        assert!(none.mx.is_empty());
    }

    #[test]
    fn version_and_mode_rules() {
        assert_eq!(
            policy(&RFC_EXAMPLE.replace("STSv1", "STSv2")),
            Err(PolicyError::BadVersion("STSv2".into()))
        );
        assert_eq!(
            policy(&RFC_EXAMPLE.replace("version: STSv1\n", "")),
            Err(PolicyError::MissingVersion)
        );
        for bad in ["Enforce", "reject", ""] {
            assert_eq!(
                policy(&RFC_EXAMPLE.replace("mode: enforce", &format!("mode: {bad}"))),
                Err(PolicyError::BadMode(bad.into()))
            );
        }
    }

    #[test]
    fn bad_mx_values() {
        for bad in [
            "192.0.2.1",
            "[192.0.2.1]",
            "2001:db8::1",
            "mail.example.com.",
            "mail..example.com",
            "*",
            "*.",
            "*.*.example.com",
            "mail.*.example.com",
            "-mail.example.com",
            "mäil.example.com",
            "mail example.com",
            "",
        ] {
            let text = RFC_EXAMPLE.replace("mx: mail.example.com", &format!("mx: {bad}"));
            assert!(
                matches!(policy(&text), Err(PolicyError::BadMx(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn malformed_input() {
        assert_eq!(
            policy(&format!("{RFC_EXAMPLE}garbage\n")),
            Err(PolicyError::MalformedLine("garbage".into()))
        );
        assert_eq!(
            parse_policy(b"version: STSv1\xff\n"),
            Err(PolicyError::NotUtf8)
        );
        assert_eq!(policy(""), Err(PolicyError::MissingVersion));
        assert_eq!(
            policy("<html><body>hello</body></html>"),
            Err(PolicyError::MalformedLine(
                "<html><body>hello</body></html>".into()
            ))
        );
    }

    #[test]
    fn mx_matching() {
        assert!(mx_matches("mail.example.com", "mail.example.com"));
        assert!(mx_matches("mail.example.com", "MAIL.Example.com."));
        assert!(!mx_matches("mail.example.com", "mail2.example.com"));
        assert!(!mx_matches("mail.example.com", "example.com"));
        assert!(mx_matches("*.example.net", "mx1.example.net"));
        assert!(mx_matches("*.example.net", "MX1.EXAMPLE.NET."));
        // Exactly one extra label (RFC 8461 §4.1).
        assert!(!mx_matches("*.example.net", "example.net"));
        assert!(!mx_matches("*.example.net", "a.b.example.net"));
        assert!(!mx_matches("*.example.net", ".example.net"));
        assert!(!mx_matches("*.example.net", "mx1.example.network"));
        assert!(!mx_matches("mail.example.com", ""));
        assert!(!mx_matches("*.", "a."));
    }

    fn two_mx(mode: &str) -> Policy {
        policy(&format!(
            "version: STSv1\nmode: {mode}\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n"
        ))
        .unwrap()
    }

    #[test]
    fn reply_enforce() {
        let p = two_mx("enforce");
        assert_eq!(
            render_reply(&p, "example.com", opts(false, true, false)).unwrap(),
            "secure match=mail.example.com:.example.net servername=hostname"
        );
        assert_eq!(
            render_reply(&p, "example.com", opts(false, false, false)).unwrap(),
            "secure match=mail.example.com:.example.net"
        );
        // strict_testing does not change an enforce policy.
        assert_eq!(
            render_reply(&p, "example.com", opts(true, true, false)),
            render_reply(&p, "example.com", opts(false, true, false))
        );
    }

    #[test]
    fn reply_testing_and_none() {
        let testing = two_mx("testing");
        assert_eq!(
            render_reply(&testing, "example.com", opts(false, true, false)),
            None
        );
        assert_eq!(
            render_reply(&testing, "example.com", opts(false, true, true)),
            None
        );
        assert_eq!(
            render_reply(&testing, "example.com", opts(true, true, false)).unwrap(),
            "secure match=mail.example.com:.example.net servername=hostname"
        );
        let none = policy("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        for strict in [false, true] {
            assert_eq!(
                render_reply(&none, "example.com", opts(strict, true, true)),
                None
            );
        }
    }

    #[test]
    fn reply_deduplicates_match_in_policy_order() {
        let p = policy(
            "version: STSv1\nmode: enforce\nmx: b.example.com\nmx: *.example.com\n\
             mx: B.example.com\nmx: a.example.com\nmax_age: 60\n",
        )
        .unwrap();
        assert_eq!(
            render_reply(&p, "example.com", opts(false, false, false)).unwrap(),
            "secure match=b.example.com:.example.com:a.example.com"
        );
    }

    #[test]
    fn reply_tlsrpt() {
        let p = two_mx("enforce");
        assert_eq!(
            render_reply(&p, "example.com", opts(false, true, true)).unwrap(),
            "secure match=mail.example.com:.example.net servername=hostname \
             policy_type=sts policy_domain=example.com \
             mx_host_pattern=mail.example.com mx_host_pattern=*.example.net \
             { policy_string = version: STSv1 } { policy_string = mode: enforce } \
             { policy_string = mx: mail.example.com } { policy_string = mx: *.example.net } \
             { policy_string = max_age: 86400 }"
        );
        let no_sni = render_reply(&p, "example.com", opts(false, false, true)).unwrap();
        assert!(no_sni.starts_with("secure match=mail.example.com:.example.net policy_type=sts "));
    }

    #[test]
    fn reply_tlsrpt_leaves_out_unsafe_lines() {
        let p = policy(&format!(
            "{RFC_EXAMPLE}x: }} servername=evil {{\nx-ok: fine\n"
        ))
        .unwrap();
        let reply = render_reply(&p, "example.com", opts(false, true, true)).unwrap();
        assert!(!reply.contains("evil"));
        assert!(reply.ends_with(" { policy_string = x-ok: fine }"));
    }

    #[test]
    fn reply_tlsrpt_fits_postfix_limit() {
        // 25 KB of short unknown lines: each costs 22 more bytes as a policy
        // string, so the reply would be over 99,990 bytes; the strings are
        // dropped and the rest kept.
        let filler = "x: y\n".repeat(5000);
        let p = policy(&format!("{RFC_EXAMPLE}{filler}")).unwrap();
        let reply = render_reply(&p, "example.com", opts(false, true, true)).unwrap();
        assert!(reply.len() <= MAX_REPLY_VALUE);
        assert!(!reply.contains("policy_string"));
        assert!(reply.ends_with("mx_host_pattern=backupmx.example.com"));
        // Thousands of mx lines: the patterns alone are too long, and
        // `policy_type` without a pattern or string crashes Postfix 3.10.0
        // to 3.10.5, so every TLSRPT attribute goes.
        let many: String = (0..3000)
            .map(|i| format!("mx: mx{i}.example.com\n"))
            .collect();
        let p = policy(&format!("{RFC_EXAMPLE}{many}")).unwrap();
        let reply = render_reply(&p, "example.com", opts(false, true, true)).unwrap();
        assert!(reply.len() <= MAX_REPLY_VALUE);
        assert_eq!(
            Some(reply),
            render_reply(&p, "example.com", opts(false, true, false))
        );
    }

    #[test]
    fn errors_read_well_in_a_log() {
        assert_eq!(
            PolicyError::BadMode("reject".into()).to_string(),
            "policy mode \"reject\" is not enforce, testing or none"
        );
        assert_eq!(Mode::Testing.to_string(), "testing");
    }

    /// A reply value split the way Postfix reads a TLS policy
    /// (`smtp_tls_policy_maps`: words separated by white space or commas,
    /// a `{ name = value }` group kept whole; no nested braces here, none
    /// being sent): `(braced, name, value)` for each word, the level word
    /// with an empty value. `Err` for a brace that is not balanced.
    fn postfix_words(reply: &str) -> Result<Vec<(bool, &str, &str)>, String> {
        let is_sep = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n' | ',');
        let mut words = Vec::new();
        let mut rest = reply.trim_start_matches(is_sep);
        while !rest.is_empty() {
            let (word, braced, after) = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or(format!("unclosed brace in {rest:?}"))?;
                if inner[..end].contains('{') {
                    return Err(format!("nested brace in {rest:?}"));
                }
                (&inner[..end], true, &inner[end + 1..])
            } else {
                let end = rest.find(is_sep).unwrap_or(rest.len());
                (&rest[..end], false, &rest[end..])
            };
            if !braced && word.contains(['{', '}']) {
                return Err(format!("stray brace in {word:?}"));
            }
            let (name, value) = word.split_once('=').unwrap_or((word, ""));
            words.push((braced, name.trim_ascii(), value.trim_ascii()));
            rest = after.trim_start_matches(is_sep);
        }
        Ok(words)
    }

    #[test]
    fn postfix_words_split_like_postfix() {
        assert_eq!(
            postfix_words("secure match=a:b, { policy_string = x: y = z }").unwrap(),
            [
                (false, "secure", ""),
                (false, "match", "a:b"),
                (true, "policy_string", "x: y = z")
            ]
        );
        assert!(postfix_words("secure { a = b").is_err());
        assert!(postfix_words("secure { a = { b } }").is_err());
        assert!(postfix_words("secure a=}").is_err());
    }

    /// `count` generated policy lines of one kind (distinct where an index
    /// makes them so): short mx names, one wildcard mx repeated, long
    /// unknown lines, unknown lines with braces, control characters or
    /// non-ASCII text.
    fn line_run() -> impl Strategy<Value = Vec<String>> {
        (
            0u8..6,
            "[a-zA-Z]{1,6}",
            "[ -~\\t\\r\\x01\\x7f{}ü]{0,30}",
            1usize..5000,
        )
            .prop_map(|(kind, stem, text, count)| {
                (0..count)
                    .map(|i| match kind {
                        0 => format!("mx: m{i}.{stem}.xy"),
                        1 => format!("mx: *.{stem}.example"),
                        2 => format!("x-long{i}: {}", text.repeat(100)),
                        3 => format!("x-{stem}: {text}"),
                        4 => format!("x-ü{i}: ü{text}"),
                        _ => "x: y".to_owned(),
                    })
                    .collect()
            })
    }

    /// Generated policy bodies of up to [`MAX_POLICY_BODY`] bytes, the most
    /// a fetch accepts: the required lines, then runs of [`line_run`] for
    /// as long as they fit.
    fn policy_body() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just("enforce"), Just("testing"), Just("none")],
            proptest::collection::vec(line_run(), 0..5),
        )
            .prop_map(|(mode, runs)| {
                let mut body =
                    format!("version: STSv1\nmode: {mode}\nmx: *.first.example\nmax_age: 86400\n");
                for line in runs.iter().flatten() {
                    if body.len() + line.len() + 1 > MAX_POLICY_BODY {
                        break;
                    }
                    body.push_str(line);
                    body.push('\n');
                }
                body
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every reply is one Postfix reads as intended (docs/ARCHITECTURE.md
        /// "Replies"): within its size limit, a non-empty ASCII `match=`
        /// list, only attributes Postfix knows, balanced braces, and the
        /// TLSRPT attributes (Postfix 3.10+, RFC 8460 §4.4) only when the
        /// zone asks, only whole (type, A-label domain and at least one
        /// pattern or string) and never `policy_failure`.
        #[test]
        fn replies_are_what_postfix_accepts(
            body in policy_body(),
            domain in prop_oneof!["[a-z0-9]{1,10}\\.example", "[a-zäöü]{1,10}\\.bücher"]
                .prop_filter_map("a domain", |key| normalize_key(&key).ok()),
            strict_testing in any::<bool>(),
            require_sni in any::<bool>(),
            tlsrpt in any::<bool>(),
        ) {
            let p = parse_policy(body.as_bytes()).unwrap();
            let domain = domain.as_str();
            let reply = render_reply(&p, domain, opts(strict_testing, require_sni, tlsrpt));
            let secure = p.mode == Mode::Enforce || (p.mode == Mode::Testing && strict_testing);
            prop_assert_eq!(reply.is_some(), secure);
            let Some(reply) = reply else { return Ok(()) };
            prop_assert!(reply.len() <= MAX_REPLY_VALUE, "{} bytes", reply.len());
            prop_assert!(!reply.contains("policy_failure"));
            let words = postfix_words(&reply).map_err(TestCaseError::fail)?;
            prop_assert_eq!(words[0], (false, "secure", ""));
            // The match list: each policy pattern once (`*.x` as `.x`), nothing else.
            prop_assert_eq!((words[1].0, words[1].1), (false, "match"));
            let listed: Vec<&str> = words[1].2.split(':').collect();
            let distinct: HashSet<&str> = listed.iter().copied().collect();
            prop_assert_eq!(distinct.len(), listed.len(), "a pattern twice: {:?}", listed);
            let postfix_form = |m: &str| match m.strip_prefix("*.") {
                Some(parent) => format!(".{parent}"),
                None => m.to_owned(),
            };
            let wanted: HashSet<String> = p.mx.iter().map(|m| postfix_form(m)).collect();
            let got: HashSet<String> = listed.iter().map(|m| (*m).to_owned()).collect();
            prop_assert_eq!(got, wanted);
            prop_assert!(!listed.is_empty());
            prop_assert!(listed.iter().all(|m| !m.is_empty() && m.is_ascii()));
            let rest = &words[2..];
            let sni = rest.first() == Some(&(false, "servername", "hostname"));
            prop_assert_eq!(sni, require_sni);
            let tls = &rest[usize::from(sni)..];
            if !tlsrpt {
                prop_assert!(tls.is_empty(), "{:?}", tls);
                for name in ["policy_type", "policy_domain", "mx_host_pattern", "policy_string"] {
                    prop_assert!(!reply.contains(name));
                }
                return Ok(());
            }
            // What the attributes cost: a cut is only allowed when they do not fit.
            let with_patterns = reply.len()
                + " policy_type=sts policy_domain=".len()
                + domain.len()
                + p.mx.iter().map(|m| " mx_host_pattern=".len() + m.len()).sum::<usize>();
            if tls.is_empty() {
                prop_assert!(with_patterns > MAX_REPLY_VALUE, "TLSRPT cut though it fits");
                return Ok(());
            }
            prop_assert_eq!(tls[0], (false, "policy_type", "sts"));
            prop_assert_eq!(tls[1], (false, "policy_domain", domain));
            prop_assert!(domain.is_ascii());
            let sent: Vec<&str> = tls[2..]
                .iter()
                .take_while(|w| !w.0 && w.1 == "mx_host_pattern")
                .map(|w| w.2)
                .collect();
            // Every pattern as published (RFC 8460 §4.4), ASCII host names.
            prop_assert!(sent.iter().eq(p.mx.iter()));
            prop_assert!(sent.iter().all(|m| m.is_ascii()));
            let strings = &tls[2 + sent.len()..];
            prop_assert!(!sent.is_empty() || !strings.is_empty());
            let safe = p.lines.iter().filter(|l| is_safe_attribute(l)).count();
            if strings.len() < safe {
                let all = reply.len()
                    + p.lines
                        .iter()
                        .filter(|l| is_safe_attribute(l))
                        .map(|l| " { policy_string = ".len() + l.len() + " }".len())
                        .sum::<usize>();
                prop_assert!(all > MAX_REPLY_VALUE, "policy strings cut though they fit");
            }
            for word in strings {
                prop_assert!(word.0 && word.1 == "policy_string", "{:?}", word);
                prop_assert!(p.lines.iter().any(|l| l == word.2), "{:?}", word);
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_policy(&body);
        }

        #[test]
        fn never_panics_on_policy_like_text(
            lines in proptest::collection::vec(
                "(version|mode|max_age|mx|x)? ?:? ?[a-zA-Z0-9.*:_ -]{0,20}\r?", 0..12)
        ) {
            let text = lines.join("\n");
            if let Ok(p) = parse_policy(text.as_bytes()) {
                let _ = render_reply(&p, "example.com", opts(true, true, true));
            }
        }

        #[test]
        fn valid_policies_round_trip(
            mode in prop_oneof![Just("enforce"), Just("testing"), Just("none")],
            max_age in 0u64..10_000_000_000,
            hosts in proptest::collection::vec("(\\*\\.)?[a-z][a-z0-9-]{0,8}[a-z0-9]\\.[a-z]{2,6}", 1..5),
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = format!("version: STSv1{eol}mode: {mode}{eol}max_age: {max_age}{eol}");
            for h in &hosts {
                text.push_str(&format!("mx: {h}{eol}"));
            }
            let p = parse_policy(text.as_bytes()).unwrap();
            prop_assert_eq!(p.mode.as_str(), mode);
            prop_assert_eq!(p.max_age, max_age.min(MAX_AGE_CAP));
            prop_assert_eq!(&p.mx, &hosts);
            // Every published host pattern matches a host it describes.
            for h in &hosts {
                let host = h.replace('*', "mx");
                prop_assert!(p.mx.iter().any(|pat| mx_matches(pat, &host)));
            }
        }
    }
}
