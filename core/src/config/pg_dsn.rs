//! The `dsn` option of the `postgres` cache: a libpq connection string,
//! either a URI (`postgresql://user:pw@host:port,host2/db?sslmode=require`,
//! a Unix-socket directory as a percent-encoded host or `?host=/run/...`)
//! or `key=value` pairs (`host=/run/postgresql dbname=mta`), as libpq and
//! asyncpg read them (PostgreSQL documentation, "Connection Strings").

use std::time::Duration;

use super::Secret;

/// `sslmode` (PostgreSQL documentation, "SSL Support"), as asyncpg reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server insists (taken as `prefer`).
    Allow,
    /// TLS when the server offers it, no certificate check.
    Prefer,
    /// TLS always, no certificate check (unless `sslrootcert` is given).
    Require,
    /// TLS always, the certificate chain checked.
    VerifyCa,
    /// TLS always, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The name as written in a connection string.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// True for a host whose connection stays on this machine: a Unix-socket
/// directory (an absolute path, or libpq's `@` abstract namespace),
/// `localhost` or a loopback address (`domain::is_loopback_host`).
pub fn is_local_host(host: &str) -> bool {
    host.starts_with('/') || host.starts_with('@') || crate::domain::is_loopback_host(host)
}

/// The warning for connecting to `hosts` with `mode`, when any of them is
/// not local ([`is_local_host`]) and `mode` is below `verify-full`: only
/// `verify-full` checks that the server is the one named (PostgreSQL
/// documentation, "SSL Support", "Protection Provided in Different
/// Modes"), so anyone on the path could read the cache or write forged
/// policies (`mode: none`) into it.
pub fn weak_sslmode_warning(mode: SslMode, hosts: &[String]) -> Option<String> {
    let remote: Vec<&str> = hosts
        .iter()
        .map(String::as_str)
        .filter(|h| !is_local_host(h))
        .collect();
    (mode != SslMode::VerifyFull && !remote.is_empty()).then(|| {
        format!(
            "postgres: sslmode {} for {}: the connection is not protected against \
             interception, and whoever intercepts it can read the cache or forge policies \
             in it; use sslmode=verify-full (with sslrootcert for a private CA)",
            mode.name(),
            remote.join(",")
        )
    })
}

/// What a connection string says; absent parts are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgDsn {
    /// Host names, addresses or Unix-socket directories (absolute paths).
    pub hosts: Vec<String>,
    /// Ports: one, or one per host.
    pub ports: Vec<u16>,
    /// `user`.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<Secret>,
    /// `dbname`.
    pub dbname: Option<String>,
    /// `sslmode`.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`: PEM file of trusted roots.
    pub sslrootcert: Option<String>,
    /// `connect_timeout` in seconds.
    pub connect_timeout: Option<Duration>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// Parameters we do not use (named in a warning).
    pub ignored: Vec<String>,
}

/// Why a connection string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    /// Not `postgres://`/`postgresql://` and not `key=value` pairs.
    #[error("neither a postgresql:// URI nor key=value pairs")]
    Form,
    /// A `%` escape that is not two hex digits, or bytes that are not UTF-8.
    #[error("bad percent-encoding")]
    Escape,
    /// A quoted value without its closing quote.
    #[error("unterminated quoted value")]
    Quote,
    /// A parameter value of the wrong form. The value is not quoted: a
    /// password with an unencoded `/` splits a URI elsewhere than meant,
    /// and a piece of it would read as a port.
    #[error("bad value for {key}")]
    Value {
        /// The parameter.
        key: String,
    },
}

/// Parse a libpq connection string (URI or `key=value` form).
pub fn parse_dsn(text: &str) -> Result<PgDsn, DsnError> {
    let text = text.trim();
    let pairs = match ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
    {
        Some(rest) => uri_pairs(rest)?,
        None if text.contains('=') => keyword_pairs(text)?,
        None => return Err(DsnError::Form),
    };
    let mut dsn = PgDsn::default();
    for (key, value) in pairs {
        apply(&mut dsn, &key, value)?;
    }
    Ok(dsn)
}

fn bad(key: &str) -> DsnError {
    DsnError::Value {
        key: key.to_owned(),
    }
}

fn apply(dsn: &mut PgDsn, key: &str, value: String) -> Result<(), DsnError> {
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match key {
        "host" | "hostaddr" => dsn.hosts = list(&value),
        "port" => {
            dsn.ports = list(&value)
                .iter()
                .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(key))?;
        }
        "user" => dsn.user = Some(value),
        "password" => dsn.password = Some(Secret::new(value)),
        "dbname" => dsn.dbname = Some(value),
        "sslmode" => dsn.sslmode = Some(SslMode::parse(&value).ok_or_else(|| bad(key))?),
        "sslrootcert" => dsn.sslrootcert = Some(value),
        "connect_timeout" => {
            let secs: u64 = value.trim().parse().map_err(|_| bad(key))?;
            // libpq: zero (or less) means wait forever; 1 means 2.
            dsn.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2)));
        }
        "application_name" => dsn.application_name = Some(value),
        _ => dsn.ignored.push(key.to_owned()),
    }
    Ok(())
}

/// `text` percent-decoded, or the DSN error a bad escape is.
fn percent_decode(text: &str) -> Result<String, DsnError> {
    super::percent::decode(text).ok_or(DsnError::Escape)
}

/// `[user[:password]@][host[:port][,...]][/dbname][?param=value&...]`.
fn uri_pairs(rest: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut pairs = Vec::new();
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            pairs.push(("user".to_owned(), percent_decode(user)?));
        }
        if let Some(p) = password {
            pairs.push(("password".to_owned(), percent_decode(p)?));
        }
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for spec in hostlist.split(',').filter(|s| !s.is_empty()) {
        // `[v6]:port`, `host:port`, or a host alone.
        let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("host"))?;
            (addr, after.strip_prefix(':'))
        } else {
            match spec.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (spec, None),
            }
        };
        if !host.is_empty() {
            hosts.push(percent_decode(host)?);
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            ports.push(p.to_owned());
        }
    }
    if !hosts.is_empty() {
        pairs.push(("host".to_owned(), hosts.join(",")));
    }
    if !ports.is_empty() {
        pairs.push(("port".to_owned(), ports.join(",")));
    }
    if !path.is_empty() {
        pairs.push(("dbname".to_owned(), percent_decode(path)?));
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = param.split_once('=').ok_or_else(|| bad(param))?;
        pairs.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(pairs)
}

/// `key = value` pairs separated by spaces; a value may be single-quoted,
/// and `\` escapes the next character.
fn keyword_pairs(text: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return Err(DsnError::Form);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(DsnError::Quote),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(DsnError::Quote)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pythons_example_uri_with_a_socket_directory() {
        let d = parse_dsn("postgres://user@%2Frun%2Fpostgresql/user").unwrap();
        assert_eq!(d.hosts, ["/run/postgresql"]);
        assert_eq!(d.user.as_deref(), Some("user"));
        assert_eq!(d.dbname.as_deref(), Some("user"));
        assert!(d.ports.is_empty() && d.password.is_none() && d.sslmode.is_none());
    }

    #[test]
    fn full_uri() {
        let d = parse_dsn(
            "postgresql://mta%40x:p%3Aw@db1.example:5433,[::1]:5434/mta%20sts\
             ?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=10&target_session_attrs=any",
        )
        .unwrap();
        assert_eq!(d.user.as_deref(), Some("mta@x"));
        assert_eq!(d.password.as_ref().map(Secret::expose), Some("p:w"));
        assert_eq!(d.hosts, ["db1.example", "::1"]);
        assert_eq!(d.ports, [5433, 5434]);
        assert_eq!(d.dbname.as_deref(), Some("mta sts"));
        assert_eq!(d.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(d.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(d.ignored, ["target_session_attrs"]);
    }

    #[test]
    fn uri_with_host_in_the_query_and_nothing_else() {
        let d = parse_dsn("postgresql:///mta?host=/var/run/postgresql&port=5432").unwrap();
        assert_eq!(d.hosts, ["/var/run/postgresql"]);
        assert_eq!(d.ports, [5432]);
        assert_eq!(d.dbname.as_deref(), Some("mta"));
        assert_eq!(parse_dsn("postgres://").unwrap(), PgDsn::default());
    }

    #[test]
    fn keyword_form() {
        let d = parse_dsn(
            r"host=/tmp port = 5433 dbname='my db' password='it\'s' user=mta sslmode=disable",
        )
        .unwrap();
        assert_eq!(d.hosts, ["/tmp"]);
        assert_eq!(d.ports, [5433]);
        assert_eq!(d.dbname.as_deref(), Some("my db"));
        assert_eq!(d.password.as_ref().map(Secret::expose), Some("it's"));
        assert_eq!(d.user.as_deref(), Some("mta"));
        assert_eq!(d.sslmode, Some(SslMode::Disable));
    }

    #[test]
    fn errors() {
        assert_eq!(parse_dsn("mysql://x"), Err(DsnError::Form));
        assert_eq!(parse_dsn("host"), Err(DsnError::Form));
        assert_eq!(parse_dsn("host='x"), Err(DsnError::Quote));
        assert_eq!(parse_dsn("postgresql://%zz/db"), Err(DsnError::Escape));
        assert!(matches!(parse_dsn("port=0"), Err(DsnError::Value { .. })));
        assert!(matches!(
            parse_dsn("postgresql://h:99999/db"),
            Err(DsnError::Value { .. })
        ));
        assert!(matches!(
            parse_dsn("sslmode=maybe"),
            Err(DsnError::Value { .. })
        ));
        assert!(matches!(
            parse_dsn("postgresql://[::1/db"),
            Err(DsnError::Value { .. })
        ));
    }

    #[test]
    fn local_hosts() {
        for host in [
            "/run/postgresql",
            "@abstract",
            "localhost",
            "LocalHost.",
            "127.0.0.1",
            "127.5.6.7",
            "::1",
        ] {
            assert!(is_local_host(host), "{host}");
        }
        for host in [
            "db.example",
            "10.0.0.5",
            "::2",
            "localhost.example",
            "db.localhost",
            "run/postgresql",
            "",
        ] {
            assert!(!is_local_host(host), "{host}");
        }
    }

    #[test]
    fn sslmode_below_verify_full_for_a_remote_host_warns() {
        let hosts = |h: &[&str]| h.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        let local = hosts(&["/run/postgresql", "localhost", "::1"]);
        let mixed = hosts(&["/run/postgresql", "db.example", "10.0.0.5"]);
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
        ] {
            assert_eq!(weak_sslmode_warning(mode, &local), None);
            let warning = weak_sslmode_warning(mode, &mixed).expect("a warning");
            assert!(
                warning.contains(&format!("sslmode {} for db.example,10.0.0.5:", mode.name())),
                "{warning}"
            );
            assert_eq!(SslMode::parse(mode.name()), Some(mode));
        }
        assert_eq!(weak_sslmode_warning(SslMode::VerifyFull, &mixed), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_dsn(&s);
            let _ = parse_dsn(&format!("postgresql://{s}"));
        }
    }
}
