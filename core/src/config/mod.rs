//! The daemon's YAML configuration (README.md "Configuration reference"): the model,
//! its defaults and validation with errors that name the key path.
//!
//! Files written for the Python `postfix-mta-sts-resolver` 1.5 load
//! unchanged. Those were read by PyYAML (YAML 1.1) while `serde_yaml` 0.9 is
//! YAML 1.2, so the document is read into a [`serde_yaml::Value`] and walked
//! by small typed readers that restore the YAML 1.1 readings users rely on:
//! `mode: 0666` is octal, and `yes/no/on/off` are booleans.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use crate::policy::ReplyOptions;

mod error;
mod percent;
mod pg_dsn;
mod reader;
mod redact;
#[cfg(test)]
mod tests;
mod values;

pub use error::ConfigError;
pub use pg_dsn::{is_local_host, parse_dsn, weak_sslmode_warning, DsnError, PgDsn, SslMode};
use reader::Reader;
pub use redact::{is_secret_key, redact, Secret, SecretUrl, REDACTED};

/// The whole daemon configuration (README.md "Configuration reference").
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TCP listen address (`host`, default `127.0.0.1`).
    pub host: String,
    /// TCP listen port (`port`, default 8461).
    pub port: u16,
    /// Unix socket path (`path`); when set, `host` and `port` are ignored.
    pub path: Option<PathBuf>,
    /// Unix socket permissions (`mode`, octal as in PyYAML: `0666`).
    pub mode: Option<u32>,
    /// Set `SO_REUSEPORT` on the TCP listener (`reuse_port`, default true).
    pub reuse_port: bool,
    /// How long in-flight requests may finish after SIGTERM (default 20 s).
    pub shutdown_timeout: Duration,
    /// How long after a TXT id check a cached policy is served without
    /// traffic (RFC 8461 §5.1 refresh; `cache_grace`, default 60 s).
    pub cache_grace: Duration,
    /// The policy cache backend (`cache`).
    pub cache: CacheConfig,
    /// Background refresh of cached policies (RFC 8461 §5.1).
    pub proactive_policy_fetching: ProactiveConfig,
    /// Options for socketmap names not listed in `zones`.
    pub default_zone: ZoneConfig,
    /// Options per socketmap name (the `NAME` of a `NAME KEY` request).
    pub zones: BTreeMap<String, ZoneConfig>,
    /// Our additive `resolver` section: DNS, CA and HTTPS client settings.
    pub resolver: ResolverConfig,
    /// Ours: the limits that keep one client or a slow network from
    /// exhausting the daemon.
    pub limits: Limits,
    /// Ours: the metrics and cache administration listener (`metrics`),
    /// off by default.
    pub metrics: Option<MetricsListen>,
    /// Ours: how log lines are written (`log_format: text|json`, default
    /// text) unless `--log-format` says (docs/ARCHITECTURE.md "Logs").
    pub log_format: crate::cli::LogFormat,
}

/// Where the metrics and cache administration HTTP endpoint listens
/// (`metrics: {listen: "127.0.0.1:9461", path: ..., mode: 0600}`, README.md
/// "Metrics"): at least one of the two. TCP serves only `GET /metrics`; the
/// cache is administered only on the Unix socket, whose mode says who may
/// change it (docs/ARCHITECTURE.md "Operations").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsListen {
    /// A loopback TCP address for Prometheus (`listen`).
    pub tcp: Option<SocketAddr>,
    /// A Unix socket for metrics and `/cache` (`path`, `mode`).
    pub unix: Option<AdminSocket>,
}

/// The administration socket (`metrics.path`, `metrics.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSocket {
    /// Its path.
    pub path: PathBuf,
    /// Its permissions (`mode`, default 0600: the daemon's user only).
    pub mode: u32,
}

/// Our additive top-level limits (README.md "Configuration reference").
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open client connections; more wait in the listen backlog
    /// (`max_connections`, default 1000).
    pub max_connections: usize,
    /// Lookups doing network IO at once; more wait in order
    /// (`max_lookups`, default 1000).
    pub max_lookups: usize,
    /// Requests of one connection looked up at once; the connection is not
    /// read further meanwhile (`max_lookups_per_connection`, default 100).
    pub max_lookups_per_connection: usize,
    /// A connection that sent part of a request and nothing more, or whose
    /// client does not read its replies, is closed after this
    /// (`read_timeout`, default 10 s).
    pub read_timeout: Duration,
    /// A connection idle between requests is closed after this
    /// (`idle_timeout`, default 60 s; Postfix reconnects by itself).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            max_lookups: 1000,
            max_lookups_per_connection: 100,
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Policy cache backend (README.md "Configuration reference", `cache.type`).
#[derive(Debug, Clone, PartialEq)]
pub enum CacheConfig {
    /// In-memory LRU cache (`type: internal`).
    Internal {
        /// Maximum number of cached domains (`options.cache_size`, 10000).
        cache_size: usize,
    },
    /// SQLite file (`type: sqlite`).
    Sqlite(SqliteOptions),
    /// Redis server (`type: redis`) or a Redis master found through
    /// Sentinel (`type: redis_sentinel`).
    Redis(RedisOptions),
    /// PostgreSQL database (`type: postgres`).
    Postgres(PostgresOptions),
}

impl CacheConfig {
    /// Domains kept in the shared in-memory index: `cache_size` for the
    /// internal cache; the same default in front of a persistent store.
    pub fn memory_size(&self) -> usize {
        match self {
            CacheConfig::Internal { cache_size } => *cache_size,
            _ => DEFAULT_CACHE_SIZE,
        }
    }
}

/// `cache.options` for `type: sqlite` (README.md "Configuration reference").
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteOptions {
    /// Database file (required).
    pub filename: PathBuf,
    /// Connections in the blocking pool (default 4).
    pub threads: usize,
    /// SQLite busy timeout (default 5 s).
    pub timeout: Duration,
}

/// `cache.options` for `type: redis` and `type: redis_sentinel` (README.md
/// "Configuration reference"), the options the Python original passes on
/// to redis-py that we honour.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisOptions {
    /// Where the server is: a URL, or a master found through Sentinel.
    pub target: RedisTarget,
    /// Key prefix (ours, default empty: the Python original's keys).
    pub prefix: String,
    /// Timeout of one command (default 5 s).
    pub socket_timeout: Duration,
    /// Timeout of connecting (default 5 s).
    pub socket_connect_timeout: Duration,
    /// Upper bound on requests in flight (default: the driver's choice).
    pub max_connections: Option<usize>,
    /// `AUTH` user name (a URL's own wins, as in redis-py's `from_url`).
    pub username: Option<String>,
    /// `AUTH` password (a URL's own wins).
    pub password: Option<Secret>,
    /// Database number (a URL's own wins).
    pub db: Option<i64>,
}

/// Where the Redis server of a `redis` or `redis_sentinel` cache is.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    /// `type: redis`, option `url`: `redis://`, `rediss://` or `unix://`
    /// (it may hold the password: printed redacted).
    Url(SecretUrl),
    /// `type: redis_sentinel`: the master named `sentinel_master_name`, as
    /// the `sentinels` (`[host, port]` pairs) report it.
    Sentinel {
        /// Sentinel addresses, tried in order.
        sentinels: Vec<(String, u16)>,
        /// The monitored master's name.
        master_name: String,
    },
}

impl RedisOptions {
    /// The `cache.type` these options belong to.
    pub fn kind(&self) -> &'static str {
        match self.target {
            RedisTarget::Url(_) => "redis",
            RedisTarget::Sentinel { .. } => "redis_sentinel",
        }
    }
}

/// `cache.options` for `type: postgres` (README.md "Configuration
/// reference"): the asyncpg pool arguments the Python original takes.
/// Keyword options override what `dsn` says, as in asyncpg; what neither
/// gives comes from the `PG*` environment variables or libpq's defaults
/// when the cache opens.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresOptions {
    /// The parsed `dsn` (libpq URI or `key=value` string), if given.
    pub dsn: Option<PgDsn>,
    /// `host`: host names, addresses or Unix-socket directories.
    pub hosts: Vec<String>,
    /// `port`: one, or one per host.
    pub ports: Vec<u16>,
    /// `user`.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<Secret>,
    /// `database`.
    pub database: Option<String>,
    /// Connections opened eagerly once the server answers (default 10).
    pub min_size: usize,
    /// Most connections open at once (default 10).
    pub max_size: usize,
    /// How long to wait for a connection, connecting included (default 5 s).
    pub timeout: Duration,
}

/// `proactive_policy_fetching` (RFC 8461 §5.1: refresh before expiry).
#[derive(Debug, Clone, PartialEq)]
pub struct ProactiveConfig {
    /// Run the background refresh (default false).
    pub enabled: bool,
    /// Time between refresh rounds (default 86400 s).
    pub interval: Duration,
    /// Domains refreshed at once (default 100).
    pub concurrency_limit: usize,
    /// Refresh a policy when checked longer ago than
    /// `interval / grace_ratio` (default 2.0).
    pub grace_ratio: f64,
    /// Stop refreshing a domain not asked for this long; `None` (the
    /// default) means each policy's own `max_age` (docs/ARCHITECTURE.md
    /// "Proactive refresh").
    pub idle_time: Option<Duration>,
}

/// Per-zone options (`default_zone`, `zones.<name>`; docs/ARCHITECTURE.md "Replies").
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    /// Treat `testing` policies like `enforce` (default false).
    pub strict_testing: bool,
    /// Bound on the DNS and HTTPS work of one lookup (default 4 s).
    pub timeout: Duration,
    /// Append ` servername=hostname` to replies (default true).
    pub require_sni: bool,
    /// Append Postfix 3.10+ TLSRPT attributes (RFC 8460; default false).
    pub tlsrpt: bool,
    /// Answer `dane-only`/`dane` for domains with DNSSEC-signed TLSA
    /// records before MTA-STS (RFC 8461 §2, RFC 7672; default false).
    pub dane: bool,
}

/// Our additive `resolver` section (docs/ARCHITECTURE.md "Testing": the programs are
/// pointed at test servers by configuration). Absent means all defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverConfig {
    /// DNS servers; empty means those of `/etc/resolv.conf`. Written
    /// `127.0.0.1`, `127.0.0.1:5353`, `::1` or `[::1]:5353` (port 53 default).
    pub nameservers: Vec<SocketAddr>,
    /// PEM bundle trusted for policy hosts (RFC 8461 §3.3); default: system roots.
    pub ca_file: Option<PathBuf>,
    /// Port of the policy HTTPS server (443; tests point it elsewhere).
    pub policy_port: u16,
    /// `User-Agent` of policy fetches.
    pub user_agent: String,
    /// A name whose DNSSEC signatures are broken on purpose (e.g.
    /// `dnssec-failed.org`): a validating resolver answers it SERVFAIL
    /// (RFC 4035 §5.5), so an answer means it does not validate
    /// (docs/ARCHITECTURE.md "Operations", the DNSSEC self-check). Ours;
    /// absent by default.
    pub dnssec_test_name: Option<String>,
}

/// Everything found while reading a configuration: the configuration
/// (defaults where a key was in error), the warnings and the errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The configuration read; only valid when `errors` is empty.
    pub config: Config,
    /// One line per ignored key, each naming its key path.
    pub warnings: Vec<String>,
    /// Every error, each naming its key path.
    pub errors: Vec<ConfigError>,
}

/// A parsed configuration and the warnings found while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration, defaults filled in.
    pub config: Config,
    /// One line per ignored key, each naming its key path.
    pub warnings: Vec<String>,
}

/// Default `cache.options.cache_size` of the internal cache.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// Default Redis key prefix: none, so the keys are the Python original's.
pub const DEFAULT_REDIS_PREFIX: &str = "";

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".to_owned(),
            port: 8461,
            path: None,
            mode: None,
            reuse_port: true,
            shutdown_timeout: Duration::from_secs(20),
            cache_grace: Duration::from_secs(60),
            cache: CacheConfig::default(),
            proactive_policy_fetching: ProactiveConfig::default(),
            default_zone: ZoneConfig::default(),
            zones: BTreeMap::new(),
            resolver: ResolverConfig::default(),
            limits: Limits::default(),
            metrics: None,
            log_format: crate::cli::LogFormat::Text,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::Internal {
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

impl Default for ProactiveConfig {
    fn default() -> Self {
        ProactiveConfig {
            enabled: false,
            interval: Duration::from_secs(86_400),
            concurrency_limit: 100,
            grace_ratio: 2.0,
            idle_time: None,
        }
    }
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            strict_testing: false,
            timeout: Duration::from_secs(4),
            require_sni: true,
            tlsrpt: false,
            dane: false,
        }
    }
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            ca_file: None,
            policy_port: 443,
            user_agent: concat!("mta-sts-resolver-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
            dnssec_test_name: None,
        }
    }
}

impl Config {
    /// Parses and validates a configuration file (README.md "Configuration reference").
    /// An empty document means all defaults; unknown keys become warnings.
    pub fn from_yaml(text: &str) -> Result<Loaded, ConfigError> {
        let checked = Config::check(text);
        match checked.errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(Loaded {
                config: checked.config,
                warnings: checked.warnings,
            }),
        }
    }

    /// [`Config::from_yaml`] reporting every error and every warning, not
    /// just the first error (`mta-sts-daemon --check-config`).
    pub fn check(text: &str) -> Checked {
        let root: Value = match serde_yaml::from_str(text) {
            Ok(root) => root,
            Err(e) => {
                return Checked {
                    config: Config::default(),
                    warnings: Vec::new(),
                    errors: vec![ConfigError::Syntax(e.to_string())],
                }
            }
        };
        let mut reader = Reader::default();
        let config = reader.config(&root);
        Checked {
            config,
            warnings: reader.warnings,
            errors: reader.errors,
        }
    }

    /// The options for socketmap name `name`: its entry in `zones` (exact
    /// match), else `default_zone` (socketmap_table(5)).
    pub fn zone(&self, name: &str) -> &ZoneConfig {
        self.zones.get(name).unwrap_or(&self.default_zone)
    }

    /// True when any zone (or `default_zone`) has `dane: true`
    /// (RFC 7672: DNSSEC lookups are made).
    pub fn dane_enabled(&self) -> bool {
        self.default_zone.dane || self.zones.values().any(|z| z.dane)
    }
}

impl ZoneConfig {
    /// The reply shaping options of this zone (docs/ARCHITECTURE.md "Replies").
    pub fn reply_options(&self) -> ReplyOptions {
        ReplyOptions {
            strict_testing: self.strict_testing,
            require_sni: self.require_sni,
            tlsrpt: self.tlsrpt,
        }
    }
}
