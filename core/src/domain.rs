//! Socketmap key normalisation and domain validity (docs/ARCHITECTURE.md "The path of one request",
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

/// Maps keyed by `Domain` can be searched with a `&str` (no allocation).
impl std::borrow::Borrow<str> for Domain {
    fn borrow(&self) -> &str {
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

/// True when `host` (a name or an address, without brackets or port) can
/// only mean this machine: `localhost` or a loopback address. Names below
/// `localhost` are not counted: client libraries may resolve them through
/// ordinary DNS. The one rule for "local" wherever a host name decides
/// trust (the metrics listener's `Host` check, PostgreSQL's TLS warning).
pub fn is_loopback_host(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a string is not an already-normalised domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a normalised domain name: {0:?}")]
pub struct InvalidDomain(pub String);

impl Domain {
    /// Validate an already-normalised ASCII name: lowercase, no trailing
    /// dot, and [`is_valid_hostname`] (RFC 1035 §2.3.4 lengths).
    /// Keys from Postfix go through [`normalize_key`] instead.
    pub fn new(name: &str) -> Result<Self, InvalidDomain> {
        if is_valid_hostname(name) && !name.bytes().any(|b| b.is_ascii_uppercase()) {
            Ok(Domain(name.to_owned()))
        } else {
            Err(InvalidDomain(name.to_owned()))
        }
    }

    /// A domain from the text of one that was a `Domain` before (a cache
    /// key kept as shared text), not validated again.
    pub(crate) fn from_trusted(name: &str) -> Self {
        Domain(name.to_owned())
    }

    /// The policy host `mta-sts.<domain>` (RFC 8461 §3.3).
    pub fn policy_host(&self) -> String {
        format!("mta-sts.{}", self.0)
    }

    /// The TXT record name `_mta-sts.<domain>` (RFC 8461 §3.1).
    pub fn txt_name(&self) -> String {
        format!("_mta-sts.{}", self.0)
    }
}

impl std::str::FromStr for Domain {
    type Err = InvalidDomain;

    /// Same as [`Domain::new`] (docs/ARCHITECTURE.md "The path of one request").
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::new(s)
    }
}

/// Why a socketmap key gets `NOTFOUND ` without any lookup
/// (docs/ARCHITECTURE.md "The path of one request").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    /// The key starts with `.`: Postfix probing for a parent-domain entry.
    #[error("parent domain probe")]
    ParentDomainProbe,
    /// The key is an IPv4 or IPv6 address literal, not a domain.
    #[error("IP address literal")]
    IpLiteral,
    /// The key is not a valid DNS name (RFC 1035 §2.3.4).
    #[error("invalid domain name")]
    InvalidName,
    /// IDNA (UTS 46) conversion to A-labels failed.
    #[error("IDNA conversion failed")]
    Idna,
}

/// Strip one or more trailing dots (absolute-name form, RFC 1034 §3.1).
fn strip_trailing_dots(name: &str) -> &str {
    name.trim_end_matches('.')
}

/// True for a port number as Postfix writes it after `host:`.
fn is_port(port: &str) -> bool {
    (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
}

/// The host part of a key: `[host]:port`, `[host]` and `host:port` become
/// `host`. Returns `IpLiteral` for bracketed or bare IPv6 address literals.
fn host_part(key: &str) -> Result<&str, KeyRejection> {
    if let Some(rest) = key.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(KeyRejection::InvalidName)?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return Err(KeyRejection::InvalidName);
        }
        // Postfix writes IPv6 literals as `[ipv6:...]` (RFC 5321 §4.1.3).
        let is_v6_tag = host
            .get(..5)
            .is_some_and(|tag| tag.eq_ignore_ascii_case("ipv6:"));
        if is_v6_tag || host.parse::<std::net::IpAddr>().is_ok() {
            return Err(KeyRejection::IpLiteral);
        }
        return Ok(host);
    }
    // A bare IPv6 address has several colons: not `host:port`.
    if key.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(KeyRejection::IpLiteral);
    }
    match key.split_once(':') {
        None => Ok(key),
        Some((host, port)) if is_port(port) => Ok(host),
        Some(_) => Err(KeyRejection::InvalidName),
    }
}

/// True when `name` looks like an IPv4 address: a dotted quad, or any name
/// whose last label is all digits. No top-level domain is numeric (RFC 3696
/// §2), and resolvers would read `127.1` as an address.
fn looks_like_ipv4(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// Normalise a socketmap key to the domain whose MTA-STS policy applies
/// (docs/ARCHITECTURE.md "The path of one request"; RFC 8461 §4.1; UTS 46 for U-labels).
/// The result, lowercase A-labels without trailing dot, is the cache key.
pub fn normalize_key(key: &str) -> Result<Domain, KeyRejection> {
    if key.starts_with('.') {
        return Err(KeyRejection::ParentDomainProbe);
    }
    let host = strip_trailing_dots(host_part(key)?);
    if looks_like_ipv4(host) {
        return Err(KeyRejection::IpLiteral);
    }
    // UTS 46 lowercases, maps (e.g. fullwidth forms, `。` to `.`) and
    // converts U-labels to A-labels; pure ASCII passes through lowercased.
    let ascii = idna::domain_to_ascii(host).map_err(|_| KeyRejection::Idna)?;
    // Mapping can create new trailing dots or digits (`１.２.３.４`).
    let ascii = strip_trailing_dots(&ascii);
    if looks_like_ipv4(ascii) {
        return Err(KeyRejection::IpLiteral);
    }
    Domain::new(ascii).map_err(|_| KeyRejection::InvalidName)
}

/// The key itself when it already is a normalised domain (lowercase
/// letters, digits, `-`, `_` and dots, no `xn--` label, valid, not numeric):
/// the common case, answered without allocating. `None` means "call
/// [`normalize_key`]", not "invalid".
pub fn already_normal(key: &str) -> Option<&str> {
    let plain = key.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
    });
    let normal = plain
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("xn--")
        && is_valid_hostname(key)
        && !looks_like_ipv4(key);
    normal.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(key: &str) -> String {
        match normalize_key(key) {
            Ok(d) => d.as_str().to_owned(),
            Err(e) => panic!("{key:?} rejected: {e:?}"),
        }
    }

    #[test]
    fn plain_and_case_and_trailing_dots() {
        assert_eq!(ok("example.com"), "example.com");
        assert_eq!(ok("MAIL.Example.COM"), "mail.example.com");
        assert_eq!(ok("example.com."), "example.com");
        assert_eq!(ok("example.com..."), "example.com");
        assert_eq!(ok("_sub.example.com"), "_sub.example.com");
    }

    #[test]
    fn ports_and_brackets_stripped() {
        assert_eq!(ok("[mail.example.com]:25"), "mail.example.com");
        assert_eq!(ok("[mail.example.com]"), "mail.example.com");
        assert_eq!(ok("mail.example.com:587"), "mail.example.com");
        assert_eq!(ok("Example.COM.:25"), "example.com");
        assert_eq!(
            normalize_key("example.com:"),
            Err(KeyRejection::InvalidName)
        );
        assert_eq!(
            normalize_key("example.com:smtp"),
            Err(KeyRejection::InvalidName)
        );
        assert_eq!(
            normalize_key("[example.com"),
            Err(KeyRejection::InvalidName)
        );
        assert_eq!(
            normalize_key("[example.com]x"),
            Err(KeyRejection::InvalidName)
        );
    }

    #[test]
    fn parent_domain_probe() {
        assert_eq!(
            normalize_key(".example.com"),
            Err(KeyRejection::ParentDomainProbe)
        );
        assert_eq!(normalize_key("."), Err(KeyRejection::ParentDomainProbe));
    }

    #[test]
    fn ip_literals() {
        for key in [
            "1.2.3.4",
            "1.2.3.4.",
            "1.2.3.4:25",
            "[1.2.3.4]",
            "[1.2.3.4]:25",
            "2001:db8::1",
            "::1",
            "[ipv6:2001:db8::1]",
            "[IPv6:2001:db8::1]:25",
            "[2001:db8::1]:25",
            "[2001:db8::1]",
            "127.1",
            "１.２.３.４",
        ] {
            assert_eq!(normalize_key(key), Err(KeyRejection::IpLiteral), "{key}");
        }
    }

    #[test]
    fn invalid_names() {
        let label63 = "a".repeat(63);
        let label64 = "a".repeat(64);
        assert_eq!(
            ok(&format!("{label63}.example")),
            format!("{label63}.example")
        );
        assert_eq!(
            normalize_key(&format!("{label64}.example")),
            Err(KeyRejection::InvalidName)
        );
        // 4 * 63 + 3 dots = 255; trim to 253 and 254 octets.
        let long = [label63.as_str(); 4].join(".");
        let name253 = long.get(2..).unwrap_or_default();
        let name254 = long.get(1..).unwrap_or_default();
        assert_eq!(ok(name253), name253);
        assert_eq!(ok(&format!("{name253}.")), name253);
        assert_eq!(normalize_key(name254), Err(KeyRejection::InvalidName));
        for key in [
            "",
            "a..b",
            "exa mple.com",
            "-a.example",
            "a-.example",
            "a/b",
            "[]",
            "a:b:c",
        ] {
            assert_eq!(
                normalize_key(key),
                Err(KeyRejection::InvalidName),
                "{key:?}"
            );
        }
    }

    #[test]
    fn idna_to_a_labels() {
        assert_eq!(ok("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("BÜCHER.example."), "xn--bcher-kva.example");
        assert_eq!(ok("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(ok("[bücher.example]:25"), "xn--bcher-kva.example");
        // Ideographic full stop is a label separator under UTS 46.
        assert_eq!(ok("bücher。example"), "xn--bcher-kva.example");
        assert_eq!(normalize_key("xn--a.example"), Err(KeyRejection::Idna));
        // Length limits apply to the A-label form.
        // 61 characters, but its A-label is longer than 63 octets.
        let u = format!("{}ü", "a".repeat(60));
        assert_eq!(
            normalize_key(&format!("{u}.example")),
            Err(KeyRejection::InvalidName)
        );
    }

    #[test]
    fn domain_new_and_names() {
        let d: Domain = "example.com".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.policy_host(), "mta-sts.example.com");
        assert_eq!(d.txt_name(), "_mta-sts.example.com");
        assert!(Domain::new("Example.com").is_err());
        assert!(Domain::new("example.com.").is_err());
        assert!(Domain::new("").is_err());
        assert!("bücher.example".parse::<Domain>().is_err());
    }

    #[test]
    fn already_normal_only_for_plain_names() {
        assert_eq!(already_normal("mail.example.com"), Some("mail.example.com"));
        assert_eq!(already_normal("_sub.example.com"), Some("_sub.example.com"));
        for key in [
            "Example.com",
            "example.com.",
            ".example.com",
            "example.com:25",
            "[example.com]",
            "1.2.3.4",
            "xn--bcher-kva.example",
            "b\u{fc}cher.example",
            "",
        ] {
            assert_eq!(already_normal(key), None, "{key}");
        }
    }

    proptest! {
        /// The fast path never disagrees with the full normalisation.
        #[test]
        fn already_normal_agrees_with_normalize_key(key in "[a-z0-9._:\\[\\]-]{0,30}") {
            if let Some(fast) = already_normal(&key) {
                prop_assert_eq!(normalize_key(&key).map(|d| d.as_str().to_owned()), Ok(fast.to_owned()));
            }
        }

        #[test]
        fn normalize_never_panics_and_is_idempotent(key in any::<String>()) {
            if let Ok(d) = normalize_key(&key) {
                prop_assert!(is_valid_hostname(d.as_str()));
                prop_assert_eq!(normalize_key(d.as_str()), Ok(d.clone()));
            }
        }

        #[test]
        fn normalize_keylike_inputs(key in "[.\\[]?[a-zA-Z0-9ü_\\-.:]{0,20}\\]?(:[0-9]{1,3})?\\.?") {
            if let Ok(d) = normalize_key(&key) {
                prop_assert!(is_valid_hostname(d.as_str()));
                prop_assert_eq!(normalize_key(d.as_str()), Ok(d.clone()));
            }
        }
    }
}
