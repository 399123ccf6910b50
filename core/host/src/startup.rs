//! Program start-up shared by the drivers: command line, logging, config
//! file, nameservers, TLS roots, pidfile.

use crate::listen::SocketActivation;
use crate::privileges::ServiceIds;
use crate::{init_logging, sd_notify};
use mta_sts_core::cli::{self, CliError, CliOutcome, DaemonArgs};
use mta_sts_core::config::{CacheConfig, Config};
use mta_sts_core::dns::parse_resolv_conf;
use mta_sts_core::service::DnsTargets;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Exit status for bad command lines (as Python's argparse).
const EXIT_USAGE: i32 = 2;
/// Exit status for start-up failures (bad config, cannot bind).
const EXIT_FAILURE: i32 = 1;

/// The daemon after argument parsing, logging set-up and config loading.
pub struct DaemonSetup {
    /// The command line.
    pub args: DaemonArgs,
    /// The config file read (reread on SIGHUP).
    pub config_path: std::path::PathBuf,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Listeners handed over by systemd, taken from the environment first.
    pub activation: SocketActivation,
    /// The ids of `-u`/`-g`, switched to after binding.
    pub service_ids: Option<ServiceIds>,
}

/// Parse the daemon's command line, start logging, load the config. Prints
/// help/version and exits 0, or prints the error and exits non-zero.
pub fn prepare_daemon() -> DaemonSetup {
    // First, while this is the only thread: the environment is changed.
    let activation = SocketActivation::take_from_env();
    crate::memory::limit_arenas();
    let args = parse_or_exit(cli::parse_daemon_args(
        std::env::args_os().skip(1).collect(),
    ));
    let level = args.verbosity.to_log_filter();
    if let Err(e) = init_logging(level, args.logfile.as_deref(), args.log_format) {
        let path = args.logfile.unwrap_or_default();
        eprintln!(
            "mta-sts-daemon: cannot open log file {}: {e}",
            path.display()
        );
        std::process::exit(EXIT_FAILURE);
    }
    let path = config_path(&args.config, args.config_given);
    if args.check_config {
        // `daemon_main` checks it: the DNSSEC check needs the runtime.
        return DaemonSetup {
            args,
            config_path: path,
            config: Arc::new(Config::default()),
            activation,
            service_ids: None,
        };
    }
    let mut config = match load_config(&path) {
        Ok(config) => config,
        Err(e) => {
            fatal(args.logfile.is_some(), &e);
            std::process::exit(EXIT_FAILURE);
        }
    };
    crate::logging::use_config_log_format(config.log_format);
    let service_ids =
        match crate::privileges::service_ids(args.user.as_deref(), args.group.as_deref()) {
            Ok(ids) => ids,
            Err(e) => {
                fatal(args.logfile.is_some(), &e);
                std::process::exit(EXIT_FAILURE);
            }
        };
    match service_ids {
        Some(ids) => crate::listen::give_sockets_to(ids),
        // SAFETY: geteuid(2) cannot fail.
        None if unsafe { libc::geteuid() } == 0 => log::warn!(
            "running as root: give -u USER to run as a service user once the sockets are bound"
        ),
        None => {}
    }
    if let Some(nofile) = crate::fdlimit::raise_nofile() {
        log::debug!("file descriptor limit: {nofile}");
        if let Some(warning) = crate::fdlimit::fit(&mut config.limits, nofile) {
            log::warn!("{warning}");
        }
    }
    DaemonSetup {
        args,
        config_path: path,
        config: Arc::new(config),
        activation,
        service_ids,
    }
}

/// Report a fatal start-up error once on stderr, and in the log file too
/// when there is one (without a file the log is stderr: said once).
pub fn fatal(logs_to_file: bool, error: &str) {
    if logs_to_file {
        log::error!("{error}");
    }
    eprintln!("mta-sts-daemon: {error}");
}

impl DaemonSetup {
    /// After the listening socket is bound and before the cache is
    /// opened (so its files belong to the service user): pidfile, then
    /// privilege drop.
    pub fn after_bind(&self) -> Result<(), String> {
        if let Some(path) = &self.args.pidfile {
            write_pidfile(path)?;
        }
        match &self.service_ids {
            Some(ids) => ids.switch(),
            None => Ok(()),
        }
    }

    /// Everything is up: tell systemd (`Type=notify`).
    pub fn ready(&self) {
        log::info!("ready");
        sd_notify("READY=1");
    }
}

/// The value of a parsed command line, or exit: 0 after help/version,
/// 2 after printing a usage error.
pub fn parse_or_exit<T>(parsed: Result<CliOutcome<T>, CliError>) -> T {
    match parsed {
        Ok(CliOutcome::Run(args)) => args,
        Ok(CliOutcome::Help(text)) | Ok(CliOutcome::Version(text)) => {
            println!("{text}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// The config file to read: `given` as is when `-c` named it; otherwise
/// the default, or the Python original README's location when only that
/// one exists (logged).
pub fn config_path(given: &Path, explicit: bool) -> std::path::PathBuf {
    choose_config(
        given,
        explicit,
        Path::new(mta_sts_core::cli::FALLBACK_CONFIG),
    )
}

fn choose_config(given: &Path, explicit: bool, fallback: &Path) -> std::path::PathBuf {
    if !explicit && !given.exists() && fallback.exists() {
        log::info!(
            "{} not found, using {}",
            given.display(),
            fallback.display()
        );
        return fallback.to_owned();
    }
    given.to_owned()
}

/// `mta-sts-daemon --check-config`: read and validate `path` and what it
/// names (the CA file), print every problem with its key path; 0 when
/// the daemon would start with it, 1 otherwise. With a zone that has
/// `dane: true` it then runs the DNSSEC self-check and prints its verdict
/// (a resolver that does not validate is a warning: the daemon starts).
pub async fn check_config<D: crate::Driver>(driver: &D, path: &Path) -> i32 {
    let (code, config) = check_config_file(path);
    if code == 0 && config.dane_enabled() {
        let check = check_dnssec_with(driver, &config).await;
        let kind = if check.is_validating() {
            "ok"
        } else {
            "warning"
        };
        println!("{}: {kind}: DNSSEC check: {check}", path.display());
    }
    code
}

/// The DNSSEC self-check over `driver`'s transport to the config's
/// nameservers (printed by the caller, not logged).
async fn check_dnssec_with<D: crate::Driver>(
    driver: &D,
    config: &Config,
) -> mta_sts_core::dane::DnssecCheck {
    let transport = driver.transport(TlsRoots { ca_pem: None });
    let dns = dns_settings(config).client(driver.runtime(), transport);
    crate::dnssec::run(&dns, config).await
}

/// The file part of [`check_config`]: the status and the configuration read.
fn check_config_file(path: &Path) -> (i32, Config) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            println!("{}: {e}", path.display());
            return (1, Config::default());
        }
    };
    let checked = Config::check(&text);
    for w in &checked.warnings {
        println!("{}: warning: {w}", path.display());
    }
    for e in &checked.errors {
        println!("{}: error: {e}", path.display());
    }
    if !checked.errors.is_empty() {
        return (1, checked.config);
    }
    if let CacheConfig::Postgres(options) = &checked.config.cache {
        match crate::postgres::check_options(options) {
            Ok(Some(warning)) => println!("{}: warning: {warning}", path.display()),
            Ok(None) => {}
            Err(e) => {
                println!("{}: error: {e}", path.display());
                return (1, checked.config);
            }
        }
    }
    let code = match policy_tls_roots(&checked.config).and_then(|roots| roots.connector()) {
        Ok(_) => {
            println!("{}: ok", path.display());
            0
        }
        Err(e) => {
            println!("{}: error: {e}", path.display());
            1
        }
    };
    (code, checked.config)
}

/// Read and validate the YAML config at `path`. A missing file means the
/// defaults (logged); unknown keys are logged as warnings.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!(
                "config file {} not found: using the defaults",
                path.display()
            );
            return Ok(Config::default());
        }
        Err(e) => return Err(format!("cannot read config file {}: {e}", path.display())),
    };
    let loaded =
        Config::from_yaml(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    for warning in &loaded.warnings {
        log::warn!("config file {}: {warning}", path.display());
    }
    Ok(loaded.config)
}

/// Nameservers from the config's `resolver.nameservers`, else from
/// /etc/resolv.conf (with its `timeout`/`attempts` options either way).
pub fn dns_settings(config: &Config) -> DnsTargets {
    let resolv =
        parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let servers = if config.resolver.nameservers.is_empty() {
        resolv
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    } else {
        config.resolver.nameservers.clone()
    };
    DnsTargets {
        servers,
        attempts: resolv.attempts,
        try_timeout: resolv.timeout,
    }
}

/// What the policy TLS client trusts: the system roots, or only the
/// configured CA file, read at start (it may be readable only before
/// privileges drop) and checked to hold PEM certificates.
#[derive(Clone, Debug)]
pub struct TlsRoots {
    ca_pem: Option<(std::path::PathBuf, Vec<u8>)>,
}

/// Read and check `resolver.ca_file` (when set) for [`TlsRoots`].
pub fn policy_tls_roots(config: &Config) -> Result<TlsRoots, String> {
    let ca_pem = match &config.resolver.ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("resolver.ca_file {}: {e}", path.display()))?;
            if !pem
                .windows(b"-----BEGIN CERTIFICATE-----".len())
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(format!(
                    "resolver.ca_file {}: no certificate found",
                    path.display()
                ));
            }
            Some((path.clone(), pem))
        }
    };
    Ok(TlsRoots { ca_pem })
}

impl TlsRoots {
    /// The TLS client for policy hosts: TLS 1.2 or newer, these roots
    /// (RFC 8461 §3.3). Building it parses the roots and makes the OpenSSL
    /// context, the costly part of a TLS connection: the transport builds
    /// it once, at the first policy fetch (so an idle daemon never loads
    /// the roots), and every fetch shares it.
    pub fn connector(&self) -> Result<native_tls::TlsConnector, String> {
        let mut builder = native_tls::TlsConnector::builder();
        builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some((path, pem)) = &self.ca_pem {
            crate::tls::add_pem_roots(&mut builder, pem)
                .map_err(|e| format!("resolver.ca_file {}: {e}", path.display()))?;
            builder.disable_built_in_roots(true);
        }
        builder.build().map_err(|e| format!("TLS set-up: {e}"))
    }
}

/// Write our process id to `path`, as root, in a directory the service
/// user may own: never through a link (`files::open_for_writing`).
pub fn write_pidfile(path: &Path) -> Result<(), String> {
    use std::io::Write;
    crate::files::open_for_writing(path, false)
        .and_then(|mut file| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| format!("pidfile {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_falls_back_to_the_postfix_directory_only_when_alone() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("mta-sts-daemon.yml");
        let fallback = dir.path().join("postfix-mta-sts-daemon.yml");
        // Neither exists: the default (then the defaults are used).
        assert_eq!(choose_config(&default, false, &fallback), default);
        std::fs::write(&fallback, "").unwrap();
        assert_eq!(choose_config(&default, false, &fallback), fallback);
        // -c given: never replaced.
        assert_eq!(choose_config(&default, true, &fallback), default);
        std::fs::write(&default, "").unwrap();
        assert_eq!(choose_config(&default, false, &fallback), default);
    }
}
