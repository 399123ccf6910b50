//! Where and how to connect (README.md "Configuration reference",
//! `cache.type: postgres`): the keyword options over the `dsn`, as asyncpg
//! merges them, then the `PG*` environment variables, then libpq's
//! defaults; TLS through native-tls as `sslmode` asks.

use std::time::Duration;

use mta_sts_core::cache::StoreError;
use mta_sts_core::config::{weak_sslmode_warning, PostgresOptions, Secret, SslMode};
use postgres_native_tls::MakeTlsConnector;

use crate::tls::add_pem_roots;

/// Where the Python original's asyncpg looks when no host is given: the
/// usual Unix-socket directories, then `localhost`.
const DEFAULT_HOSTS: [&str; 4] = [
    "/run/postgresql",
    "/var/run/postgresql",
    "/tmp",
    "localhost",
];

/// A resolved connection target.
#[derive(Clone)]
pub(super) struct Target {
    /// Everything but the connect timeout, set per attempt.
    pub(super) config: postgres::Config,
    /// `None` when `sslmode` is `disable`.
    pub(super) tls: Option<MakeTlsConnector>,
    /// For log lines: `user@host,host:port/db`.
    pub(super) describe: String,
    /// Why the TLS settings leave the connection open to interception
    /// ([`weak_sslmode_warning`]), logged once at start.
    pub(super) warning: Option<String>,
}

fn first<T: Clone>(candidates: &[&[T]]) -> Vec<T> {
    candidates
        .iter()
        .find(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

fn split(list: Option<String>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn sslmode(text: &str) -> Option<SslMode> {
    mta_sts_core::config::parse_dsn(&format!("sslmode={text}"))
        .ok()
        .and_then(|d| d.sslmode)
}

/// The native-tls connector for `mode`: `prefer`/`allow`/`require` encrypt
/// without checking the certificate unless `root` is given (as libpq),
/// `verify-ca` checks the chain, `verify-full` the chain and the name.
/// `root` is a PEM file; every certificate in it is trusted.
fn connector_for(
    mode: SslMode,
    root: Option<&str>,
) -> Result<Option<native_tls::TlsConnector>, StoreError> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = root {
        let pem = std::fs::read(path)
            .map_err(|e| StoreError::Backend(format!("postgres sslrootcert {path}: {e}")))?;
        add_pem_roots(&mut builder, &pem)
            .map_err(|e| StoreError::Backend(format!("postgres sslrootcert {path}: {e}")))?;
    }
    let verify_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) || root.is_some();
    builder.danger_accept_invalid_certs(!verify_chain);
    builder.danger_accept_invalid_hostnames(mode != SslMode::VerifyFull);
    let connector = builder
        .build()
        .map_err(|e| StoreError::Backend(format!("postgres TLS: {e}")))?;
    Ok(Some(connector))
}

/// Resolve `options` with the environment `env` (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `USER`).
pub(super) fn resolve(
    options: &PostgresOptions,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Target, StoreError> {
    let dsn = options.dsn.clone().unwrap_or_default();
    let env_hosts = split(env("PGHOST"));
    let defaults: Vec<String> = DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect();
    let hosts = first(&[&options.hosts, &dsn.hosts, &env_hosts, &defaults]);
    let env_ports: Vec<u16> = split(env("PGPORT"))
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let ports = first(&[&options.ports, &dsn.ports, &env_ports, &[5432]]);
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(StoreError::Backend(format!(
            "postgres: {} ports for {} hosts",
            ports.len(),
            hosts.len()
        )));
    }
    let user = options
        .user
        .clone()
        .or(dsn.user)
        .or_else(|| env("PGUSER"))
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "postgres".to_owned());
    let password = options
        .password
        .clone()
        .or(dsn.password)
        .or_else(|| env("PGPASSWORD").map(Secret::new));
    let database = options
        .database
        .clone()
        .or(dsn.dbname)
        .or_else(|| env("PGDATABASE"))
        .unwrap_or_else(|| user.clone());
    let mode = dsn
        .sslmode
        .or_else(|| env("PGSSLMODE").as_deref().and_then(sslmode))
        .unwrap_or(SslMode::Prefer);
    let mut config = postgres::Config::new();
    for host in &hosts {
        config.host(host);
    }
    for port in &ports {
        config.port(*port);
    }
    config
        .user(&user)
        .dbname(&database)
        .application_name(
            dsn.application_name
                .as_deref()
                .unwrap_or("mta-sts-resolver"),
        )
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(60))
        .ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
    if let Some(password) = &password {
        config.password(password.expose());
    }
    if let Some(timeout) = dsn.connect_timeout {
        config.connect_timeout(timeout);
    }
    let describe = format!(
        "{user}@{}:{}/{database}",
        hosts.join(","),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(Target {
        config,
        tls: connector_for(mode, dsn.sslrootcert.as_deref())?.map(MakeTlsConnector::new),
        describe,
        warning: weak_sslmode_warning(mode, &hosts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_sts_core::config::parse_dsn;
    use mta_sts_tests::{TestCa, Validity};
    use std::net::{TcpListener, TcpStream};

    fn options(dsn: Option<&str>) -> PostgresOptions {
        PostgresOptions {
            dsn: dsn.map(|d| parse_dsn(d).unwrap()),
            hosts: Vec::new(),
            ports: Vec::new(),
            user: None,
            password: None,
            database: None,
            min_size: 1,
            max_size: 2,
            timeout: Duration::from_secs(5),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn keywords_override_the_dsn() {
        let mut o = options(Some("postgresql://a:pw@dbhost:5433/one?sslmode=disable"));
        o.user = Some("b".into());
        o.database = Some("two".into());
        let t = resolve(&o, no_env).unwrap();
        assert_eq!(t.describe, "b@dbhost:5433/two");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
        assert!(t.tls.is_none());
        o.hosts = vec!["/run/pg".into()];
        o.ports = vec![6000];
        assert_eq!(resolve(&o, no_env).unwrap().describe, "b@/run/pg:6000/two");
    }

    #[test]
    fn environment_then_defaults() {
        let env = |k: &str| match k {
            "PGHOST" => Some("/sock".to_owned()),
            "PGUSER" => Some("envuser".to_owned()),
            "PGSSLMODE" => Some("disable".to_owned()),
            _ => None,
        };
        let t = resolve(&options(None), env).unwrap();
        assert_eq!(t.describe, "envuser@/sock:5432/envuser");
        assert!(t.tls.is_none());
        let t = resolve(&options(None), |k| (k == "USER").then(|| "me".to_owned())).unwrap();
        assert_eq!(
            t.describe,
            "me@/run/postgresql,/var/run/postgresql,/tmp,localhost:5432/me"
        );
        // TLS when the server offers it, by default.
        assert!(t.tls.is_some());
    }

    #[test]
    fn port_count_must_fit_the_hosts() {
        let mut o = options(None);
        o.hosts = vec!["a".into(), "b".into(), "c".into()];
        o.ports = vec![1, 2];
        assert!(resolve(&o, no_env).is_err());
        o.ports = vec![1, 2, 3];
        assert_eq!(
            resolve(&o, no_env).unwrap().describe,
            "postgres@a,b,c:1,2,3/postgres"
        );
    }

    /// Whether a client with the `verify-full` connector for a root file
    /// holding `roots` completes a handshake with a server whose
    /// certificate `issuer` signed for `localhost`.
    fn handshake_with(roots: &[&TestCa], issuer: &TestCa) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("root.pem");
        let pem: String = roots.iter().map(|ca| ca.ca_pem()).collect();
        std::fs::write(&file, pem).expect("write roots");
        let connector = connector_for(SslMode::VerifyFull, file.to_str())
            .expect("connector")
            .expect("TLS on");
        let acceptor =
            native_tls::TlsAcceptor::new(issuer.identity(&["localhost"], Validity::Valid))
                .expect("acceptor");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().expect("accept");
            tcp.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            // The client's verdict is what the test reads.
            let _ = acceptor.accept(tcp);
        });
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let result = connector
            .connect("localhost", tcp)
            .map(drop)
            .map_err(|e| e.to_string());
        server.join().expect("server thread");
        result
    }

    #[test]
    fn every_certificate_of_sslrootcert_is_trusted() {
        let (first, second, other) = (
            TestCa::new("first pg CA"),
            TestCa::new("second pg CA"),
            TestCa::new("unrelated CA"),
        );
        // The second certificate of the file signed the server's.
        handshake_with(&[&first, &second], &second).expect("second root trusted");
        handshake_with(&[&first, &second], &first).expect("first root trusted");
        // And the chain is checked: a root that did not sign it fails.
        assert!(handshake_with(&[&first, &second], &other).is_err());
    }

    #[test]
    fn root_file_without_a_certificate_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("root.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let o = options(Some(&format!(
            "sslmode=verify-full sslrootcert={}",
            file.display()
        )));
        let e = resolve(&o, no_env).err().expect("an error").to_string();
        assert!(e.contains("no certificate found"), "{e}");
    }

    #[test]
    fn weak_sslmode_for_a_remote_host_is_reported() {
        let t = resolve(&options(Some("postgresql://u:pw@db.example/mta")), no_env).unwrap();
        let warning = t.warning.expect("a warning");
        assert!(
            warning.contains("sslmode prefer for db.example:"),
            "{warning}"
        );
        assert!(!warning.contains("pw"), "{warning}");
        let env = |k: &str| (k == "PGSSLMODE").then(|| "verify-full".to_owned());
        let full = options(Some("postgresql://u:pw@db.example/mta"));
        assert_eq!(resolve(&full, env).unwrap().warning, None);
        assert_eq!(resolve(&options(None), no_env).unwrap().warning, None);
    }

    #[test]
    fn missing_root_certificate_is_an_error() {
        let o = options(Some("sslmode=verify-full sslrootcert=/nonexistent/ca.pem"));
        assert!(resolve(&o, no_env).is_err());
    }
}
