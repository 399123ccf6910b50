//! The daemon's YAML configuration (DESIGN.md "Configuration"): the model,
//! its defaults and validation with errors that name the key path.
//!
//! Files written for the Python `postfix-mta-sts-resolver` 1.5 load
//! unchanged. Those were read by PyYAML (YAML 1.1) while `serde_yaml` 0.9 is
//! YAML 1.2, so the document is read into a [`serde_yaml::Value`] and walked
//! by small typed readers that restore the YAML 1.1 readings users rely on:
//! `mode: 0666` is octal, and `yes/no/on/off` are booleans.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::policy::ReplyOptions;

/// The whole daemon configuration (DESIGN.md "Configuration").
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
}

/// Policy cache backend (DESIGN.md "Configuration", `cache.type`).
#[derive(Debug, Clone, PartialEq)]
pub enum CacheConfig {
    /// In-memory LRU cache (`type: internal`).
    Internal {
        /// Maximum number of cached domains (`options.cache_size`, 10000).
        cache_size: usize,
    },
    /// SQLite file (`type: sqlite`).
    Sqlite(SqliteOptions),
    /// Redis server (`type: redis`).
    Redis(RedisOptions),
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

/// `cache.options` for `type: sqlite` (DESIGN.md "Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteOptions {
    /// Database file (required).
    pub filename: PathBuf,
    /// Connections in the blocking pool (default 4).
    pub threads: usize,
    /// SQLite busy timeout (default 5 s).
    pub timeout: Duration,
}

/// `cache.options` for `type: redis` (DESIGN.md "Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct RedisOptions {
    /// Server URL (required): `redis://`, `rediss://` or `unix://`.
    pub url: String,
    /// Key prefix (ours, default `mta-sts:`).
    pub prefix: String,
    /// Timeout of one command (default 5 s).
    pub socket_timeout: Duration,
    /// Timeout of connecting (default 5 s).
    pub socket_connect_timeout: Duration,
    /// Upper bound on pooled connections (default: the driver's choice).
    pub max_connections: Option<usize>,
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
}

/// Per-zone options (`default_zone`, `zones.<name>`; DESIGN.md "Replies for a policy").
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
}

/// Our additive `resolver` section (DESIGN.md "Testing": the programs are
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
}

/// A parsed configuration and the warnings found while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration, defaults filled in.
    pub config: Config,
    /// One line per ignored key, each naming its key path.
    pub warnings: Vec<String>,
}

/// Why a configuration file was rejected (DESIGN.md "Configuration").
/// Every variant but `Syntax` carries the key path, e.g. `zones.myzone.timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML (or holds more than one document).
    #[error("invalid YAML: {0}")]
    Syntax(String),
    /// A value of the wrong kind.
    #[error("{path}: expected {expected}, got {got}")]
    WrongType {
        /// Key path.
        path: String,
        /// What the key takes.
        expected: &'static str,
        /// The value found, rendered for the message.
        got: String,
    },
    /// A value of the right kind outside its allowed range or form.
    #[error("{path}: {reason}")]
    Invalid {
        /// Key path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A required key is absent.
    #[error("{path}: required {context}")]
    Missing {
        /// Key path.
        path: String,
        /// When it is required, e.g. `for the sqlite cache`.
        context: &'static str,
    },
    /// `cache.type` names no backend we have.
    #[error("{path}: unknown cache type {got:?} (expected internal, sqlite or redis)")]
    UnknownCacheType {
        /// Key path (`cache.type`).
        path: String,
        /// The type given.
        got: String,
    },
}

impl ConfigError {
    /// The key path the error is about (`None` for YAML syntax errors).
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Syntax(_) => None,
            ConfigError::WrongType { path, .. }
            | ConfigError::Invalid { path, .. }
            | ConfigError::Missing { path, .. }
            | ConfigError::UnknownCacheType { path, .. } => Some(path),
        }
    }
}

/// Default `cache.options.cache_size` of the internal cache.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// Default Redis key prefix (ours).
pub const DEFAULT_REDIS_PREFIX: &str = "mta-sts:";

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
        }
    }
}

impl Config {
    /// Parses and validates a configuration file (DESIGN.md "Configuration").
    /// An empty document means all defaults; unknown keys become warnings.
    pub fn from_yaml(text: &str) -> Result<Loaded, ConfigError> {
        let root: Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let mut reader = Reader::default();
        let config = reader.config(&root)?;
        Ok(Loaded {
            config,
            warnings: reader.warnings,
        })
    }

    /// The options for socketmap name `name`: its entry in `zones` (exact
    /// match), else `default_zone` (DESIGN.md "Socketmap").
    pub fn zone(&self, name: &str) -> &ZoneConfig {
        self.zones.get(name).unwrap_or(&self.default_zone)
    }
}

impl ZoneConfig {
    /// The reply shaping options of this zone (DESIGN.md "Replies for a policy").
    pub fn reply_options(&self) -> ReplyOptions {
        ReplyOptions {
            strict_testing: self.strict_testing,
            require_sni: self.require_sni,
            tlsrpt: self.tlsrpt,
        }
    }
}

/// Known keys of each section; anything else is warned about and ignored.
const TOP_KEYS: &[&str] = &[
    "host",
    "port",
    "path",
    "mode",
    "reuse_port",
    "shutdown_timeout",
    "cache_grace",
    "cache",
    "proactive_policy_fetching",
    "default_zone",
    "zones",
    "resolver",
];
const CACHE_KEYS: &[&str] = &["type", "options"];
const INTERNAL_KEYS: &[&str] = &["cache_size"];
const SQLITE_KEYS: &[&str] = &["filename", "threads", "timeout"];
const REDIS_KEYS: &[&str] = &[
    "url",
    "prefix",
    "socket_timeout",
    "socket_connect_timeout",
    "max_connections",
];
const PROACTIVE_KEYS: &[&str] = &["enabled", "interval", "concurrency_limit", "grace_ratio"];
const ZONE_KEYS: &[&str] = &["strict_testing", "timeout", "require_sni", "tlsrpt"];
const RESOLVER_KEYS: &[&str] = &["nameservers", "ca_file", "policy_port", "user_agent"];

/// Path shown for errors about the document itself.
const ROOT: &str = "(top level)";

/// A section of the document: its mapping (absent or `~` reads as empty)
/// and its key path.
struct Section<'a> {
    map: Option<&'a Mapping>,
    path: String,
}

impl<'a> Section<'a> {
    /// The value of `key`, treating `key: ~` like an absent key (PyYAML
    /// files often leave a key empty to mean "default").
    fn get(&self, key: &str) -> (Option<&'a Value>, String) {
        let value = self
            .map
            .and_then(|m| m.get(key))
            .filter(|v| !matches!(v, Value::Null));
        (value, join(&self.path, key))
    }
}

/// Walks the YAML value, collecting warnings.
#[derive(Default)]
struct Reader {
    warnings: Vec<String>,
}

impl Reader {
    fn config(&mut self, root: &Value) -> Result<Config, ConfigError> {
        let top = self.section(Some(root), ROOT.to_owned(), TOP_KEYS)?;
        let mut config = Config::default();
        if let Some(host) = string(top.get("host"))? {
            if host.is_empty() {
                return Err(invalid(&top.get("host").1, "must not be empty"));
            }
            config.host = host;
        }
        if let Some(port) = port(top.get("port"))? {
            config.port = port;
        }
        // Python checks `cfg.get('path')`: an empty path means TCP.
        config.path = string(top.get("path"))?
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        config.mode = mode(top.get("mode"))?;
        if config.mode.is_some() && config.path.is_none() {
            self.warn(&top.get("mode").1, "only applies with `path`, ignored");
        }
        if let Some(b) = boolean(top.get("reuse_port"))? {
            config.reuse_port = b;
        }
        if let Some(d) = seconds(top.get("shutdown_timeout"), false)? {
            config.shutdown_timeout = d;
        }
        // Zero is meaningful: re-check the TXT id on every request.
        if let Some(d) = seconds(top.get("cache_grace"), true)? {
            config.cache_grace = d;
        }
        config.cache = self.cache(top.get("cache"))?;
        config.proactive_policy_fetching = self.proactive(top.get("proactive_policy_fetching"))?;
        config.default_zone = self.zone(top.get("default_zone"))?;
        config.zones = self.zones(top.get("zones"))?;
        config.resolver = self.resolver(top.get("resolver"))?;
        Ok(config)
    }

    /// Opens a mapping section and warns about its unknown keys.
    fn section<'a>(
        &mut self,
        value: Option<&'a Value>,
        path: String,
        known: &[&str],
    ) -> Result<Section<'a>, ConfigError> {
        self.section_with(value, path, known, "unknown key, ignored")
    }

    /// [`Reader::section`] with the warning to give for unknown keys.
    fn section_with<'a>(
        &mut self,
        value: Option<&'a Value>,
        path: String,
        known: &[&str],
        unknown: &str,
    ) -> Result<Section<'a>, ConfigError> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(other) => return Err(wrong_type(&path, "a mapping", other)),
        };
        for key in map.iter().flat_map(|m| m.keys()) {
            match key {
                Value::String(k) if known.contains(&k.as_str()) => {}
                Value::String(k) => self.warn(&join(&path, k), unknown),
                other => self.warn(&join(&path, &render(other)), unknown),
            }
        }
        Ok(Section { map, path })
    }

    fn warn(&mut self, path: &str, message: &str) {
        self.warnings.push(format!("{path}: {message}"));
    }

    fn cache(
        &mut self,
        (value, path): (Option<&Value>, String),
    ) -> Result<CacheConfig, ConfigError> {
        let cache = self.section(value, path, CACHE_KEYS)?;
        let type_at = cache.get("type");
        let kind = string(type_at.clone())?.unwrap_or_else(|| "internal".to_owned());
        let (options, options_path) = cache.get("options");
        match kind.as_str() {
            "internal" => {
                let opts = self.section(options, options_path, INTERNAL_KEYS)?;
                let cache_size = count(opts.get("cache_size"))?.unwrap_or(DEFAULT_CACHE_SIZE);
                Ok(CacheConfig::Internal { cache_size })
            }
            "sqlite" => {
                let opts = self.section(options, options_path, SQLITE_KEYS)?;
                let filename = required(opts.get("filename"), "for the sqlite cache")?;
                Ok(CacheConfig::Sqlite(SqliteOptions {
                    filename: PathBuf::from(filename),
                    threads: count(opts.get("threads"))?.unwrap_or(4),
                    timeout: seconds(opts.get("timeout"), false)?.unwrap_or(Duration::from_secs(5)),
                }))
            }
            "redis" => self.redis(options, options_path).map(CacheConfig::Redis),
            _ => Err(ConfigError::UnknownCacheType {
                path: type_at.1,
                got: kind,
            }),
        }
    }

    fn redis(
        &mut self,
        options: Option<&Value>,
        path: String,
    ) -> Result<RedisOptions, ConfigError> {
        // Python passes every other option to redis-py; we cannot honour
        // them, so say which ones are dropped rather than failing.
        let opts = self.section_with(
            options,
            path,
            REDIS_KEYS,
            "redis option not supported, ignored",
        )?;
        let url_at = opts.get("url");
        let url = required(url_at.clone(), "for the redis cache")?;
        if !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                &url_at.1,
                "must start with redis://, rediss:// or unix://",
            ));
        }
        let five = Duration::from_secs(5);
        Ok(RedisOptions {
            url,
            prefix: string(opts.get("prefix"))?.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned()),
            socket_timeout: seconds(opts.get("socket_timeout"), false)?.unwrap_or(five),
            socket_connect_timeout: seconds(opts.get("socket_connect_timeout"), false)?
                .unwrap_or(five),
            max_connections: count(opts.get("max_connections"))?,
        })
    }

    fn proactive(
        &mut self,
        (value, path): (Option<&Value>, String),
    ) -> Result<ProactiveConfig, ConfigError> {
        let s = self.section(value, path, PROACTIVE_KEYS)?;
        let d = ProactiveConfig::default();
        let grace_at = s.get("grace_ratio");
        let grace_ratio = number(grace_at.clone())?.unwrap_or(d.grace_ratio);
        if !(grace_ratio.is_finite() && grace_ratio > 0.0) {
            return Err(invalid(&grace_at.1, "must be a number greater than zero"));
        }
        Ok(ProactiveConfig {
            enabled: boolean(s.get("enabled"))?.unwrap_or(d.enabled),
            interval: seconds(s.get("interval"), false)?.unwrap_or(d.interval),
            concurrency_limit: count(s.get("concurrency_limit"))?.unwrap_or(d.concurrency_limit),
            grace_ratio,
        })
    }

    /// A zone; missing keys (or an empty body) take the built-in defaults.
    fn zone(&mut self, (value, path): (Option<&Value>, String)) -> Result<ZoneConfig, ConfigError> {
        let s = self.section(value, path, ZONE_KEYS)?;
        let d = ZoneConfig::default();
        Ok(ZoneConfig {
            strict_testing: boolean(s.get("strict_testing"))?.unwrap_or(d.strict_testing),
            timeout: seconds(s.get("timeout"), false)?.unwrap_or(d.timeout),
            require_sni: boolean(s.get("require_sni"))?.unwrap_or(d.require_sni),
            tlsrpt: boolean(s.get("tlsrpt"))?.unwrap_or(d.tlsrpt),
        })
    }

    fn zones(
        &mut self,
        (value, path): (Option<&Value>, String),
    ) -> Result<BTreeMap<String, ZoneConfig>, ConfigError> {
        let map = match value {
            None => return Ok(BTreeMap::new()),
            Some(Value::Mapping(m)) => m,
            Some(other) => return Err(wrong_type(&path, "a mapping of zone names", other)),
        };
        let mut zones = BTreeMap::new();
        for (key, body) in map {
            let Value::String(name) = key else {
                return Err(wrong_type(&path, "zone names to be strings", key));
            };
            let zone = self.zone((Some(body), join(&path, name)))?;
            zones.insert(name.clone(), zone);
        }
        Ok(zones)
    }

    fn resolver(
        &mut self,
        (value, path): (Option<&Value>, String),
    ) -> Result<ResolverConfig, ConfigError> {
        let s = self.section(value, path, RESOLVER_KEYS)?;
        let mut r = ResolverConfig::default();
        let (servers, servers_path) = s.get("nameservers");
        match servers {
            None => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{servers_path}[{i}]");
                    r.nameservers.push(nameserver(item, &at)?);
                }
            }
            // A single address is a common shorthand for a one-item list.
            Some(item) => r.nameservers.push(nameserver(item, &servers_path)?),
        }
        r.ca_file = string(s.get("ca_file"))?
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        if let Some(p) = port(s.get("policy_port"))? {
            r.policy_port = p;
        }
        if let Some(ua) = string(s.get("user_agent"))? {
            r.user_agent = ua;
        }
        Ok(r)
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent == ROOT {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A value as quoted in messages: strings in quotes, others as written.
fn render(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn wrong_type(path: &str, expected: &'static str, got: &Value) -> ConfigError {
    ConfigError::WrongType {
        path: path.to_owned(),
        expected,
        got: render(got),
    }
}

fn invalid(path: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The typed readers below take `(value, path)` as returned by
/// [`Section::get`] and return `None` when the key is absent.
type At<'a> = (Option<&'a Value>, String);

fn string((value, path): At<'_>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(&path, "a string", other)),
    }
}

fn required((value, path): At<'_>, context: &'static str) -> Result<String, ConfigError> {
    match string((value, path.clone()))? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ConfigError::Missing { path, context }),
    }
}

/// A boolean, accepting the YAML 1.1 words PyYAML reads as booleans.
fn boolean((value, path): At<'_>) -> Result<Option<bool>, ConfigError> {
    const EXPECTED: &str = "a boolean (true/false, yes/no, on/off)";
    match value {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(Some(true)),
            "false" | "no" | "n" | "off" => Ok(Some(false)),
            _ => Err(wrong_type(&path, EXPECTED, &Value::String(s.clone()))),
        },
        Some(other) => Err(wrong_type(&path, EXPECTED, other)),
    }
}

/// A non-negative whole number.
fn whole((value, path): At<'_>) -> Result<Option<(u64, String)>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(|u| (u, path))),
        Some(other) => Err(wrong_type(&path, "a whole number", other)),
    }
}

/// A count of at least one (sizes, limits, threads).
fn count(at: At<'_>) -> Result<Option<usize>, ConfigError> {
    match whole(at)? {
        None => Ok(None),
        Some((n, path)) => match usize::try_from(n) {
            Ok(n) if n > 0 => Ok(Some(n)),
            Ok(_) => Err(invalid(&path, "must be at least 1")),
            Err(_) => Err(invalid(&path, "is too large")),
        },
    }
}

fn port(at: At<'_>) -> Result<Option<u16>, ConfigError> {
    match whole(at)? {
        None => Ok(None),
        Some((n, path)) => match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(invalid(&path, &format!("port {n} out of range 1..65535"))),
        },
    }
}

/// Any finite number, integer or float.
fn number((value, path): At<'_>) -> Result<Option<f64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64().filter(|f| f.is_finite()) {
            Some(f) => Ok(Some(f)),
            None => Err(wrong_type(
                &path,
                "a finite number",
                &Value::Number(n.clone()),
            )),
        },
        Some(other) => Err(wrong_type(&path, "a number", other)),
    }
}

/// A duration in seconds (`4`, `0.5`); zero only where `allow_zero`.
fn seconds((value, path): At<'_>, allow_zero: bool) -> Result<Option<Duration>, ConfigError> {
    let secs = match value {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()),
        Some(_) => None,
    };
    let Some(secs) = secs else {
        let got = value.map(render).unwrap_or_default();
        return Err(ConfigError::WrongType {
            path,
            expected: "a number of seconds",
            got,
        });
    };
    if secs < 0.0 || (secs == 0.0 && !allow_zero) {
        let bound = if allow_zero {
            "negative"
        } else {
            "zero or negative"
        };
        return Err(invalid(&path, &format!("must not be {bound}, got {secs}")));
    }
    match Duration::try_from_secs_f64(secs) {
        // A positive value below a nanosecond would silently become zero.
        Ok(d) if d.is_zero() && !allow_zero => Err(invalid(&path, "is below one nanosecond")),
        Ok(d) => Ok(Some(d)),
        Err(_) => Err(invalid(&path, "is too large")),
    }
}

/// Unix permission bits. PyYAML reads `0666` as octal; serde_yaml leaves
/// it a string, so strings of digits are read as octal (like chmod), with
/// an optional `0o`. Numbers are taken as they are (`438`, `0o666`).
fn mode((value, path): At<'_>) -> Result<Option<u32>, ConfigError> {
    let bits = match value {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().and_then(|u| u32::try_from(u).ok()),
        Some(Value::String(s)) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                None
            } else {
                u32::from_str_radix(digits, 8).ok()
            }
        }
        Some(_) => None,
    };
    match bits {
        Some(b) if b <= 0o7777 => Ok(Some(b)),
        Some(b) => Err(invalid(&path, &format!("permissions {b:o} exceed 7777"))),
        None => Err(wrong_type(
            &path,
            "octal permissions such as 0666",
            value.unwrap_or(&Value::Null),
        )),
    }
}

/// A nameserver: `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`; port 53 by default.
fn nameserver(value: &Value, path: &str) -> Result<SocketAddr, ConfigError> {
    const EXPECTED: &str = "a nameserver address such as 127.0.0.1, ::1 or [::1]:5353";
    let Value::String(text) = value else {
        return Err(wrong_type(path, EXPECTED, value));
    };
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            bare.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .ok_or_else(|| wrong_type(path, EXPECTED, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(text: &str) -> Loaded {
        match Config::from_yaml(text) {
            Ok(l) => l,
            Err(e) => panic!("config should load: {e}\n{text}"),
        }
    }

    fn error(text: &str) -> ConfigError {
        match Config::from_yaml(text) {
            Ok(l) => panic!("config should be rejected: {l:?}\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_and_comment_only_and_null_mean_defaults() {
        for text in [
            "",
            "\n\n",
            "# nothing here\n  # at all\n",
            "~",
            "null\n",
            "---\n",
        ] {
            let loaded = load(text);
            assert_eq!(loaded.config, Config::default(), "{text:?}");
            assert!(loaded.warnings.is_empty());
        }
    }

    #[test]
    fn every_default() {
        let c = Config::default();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 8461);
        assert_eq!(c.path, None);
        assert_eq!(c.mode, None);
        assert!(c.reuse_port);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(c.cache_grace, Duration::from_secs(60));
        assert_eq!(c.cache, CacheConfig::Internal { cache_size: 10_000 });
        let p = &c.proactive_policy_fetching;
        assert!(!p.enabled);
        assert_eq!(p.interval, Duration::from_secs(86_400));
        assert_eq!(p.concurrency_limit, 100);
        assert_eq!(p.grace_ratio, 2.0);
        let z = &c.default_zone;
        assert!(!z.strict_testing && z.require_sni && !z.tlsrpt);
        assert_eq!(z.timeout, Duration::from_secs(4));
        assert!(c.zones.is_empty());
        assert!(c.resolver.nameservers.is_empty());
        assert_eq!(c.resolver.ca_file, None);
        assert_eq!(c.resolver.policy_port, 443);
        assert!(c.resolver.user_agent.starts_with("mta-sts-resolver-rs/"));
    }

    #[test]
    fn every_key_set() {
        let text = r#"
host: 0.0.0.0
port: 18461
path: /run/mta-sts.sock
mode: 0660
reuse_port: false
shutdown_timeout: 7.5
cache_grace: 0
cache:
  type: sqlite
  options:
    filename: /var/lib/mta-sts/cache.db
    threads: 2
    timeout: 1
proactive_policy_fetching:
  enabled: true
  interval: 3600
  concurrency_limit: 10
  grace_ratio: 1.5
default_zone:
  strict_testing: true
  timeout: 0.5
  require_sni: false
  tlsrpt: true
zones:
  myzone:
    strict_testing: false
    timeout: 10
resolver:
  nameservers: ["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353", "[2001:db8::1]"]
  ca_file: /tmp/ca.pem
  policy_port: 8443
  user_agent: test-agent
"#;
        let loaded = load(text);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 18461);
        assert_eq!(c.path, Some(PathBuf::from("/run/mta-sts.sock")));
        assert_eq!(c.mode, Some(0o660));
        assert!(!c.reuse_port);
        assert_eq!(c.shutdown_timeout, Duration::from_millis(7500));
        assert_eq!(c.cache_grace, Duration::ZERO);
        assert_eq!(
            c.cache,
            CacheConfig::Sqlite(SqliteOptions {
                filename: PathBuf::from("/var/lib/mta-sts/cache.db"),
                threads: 2,
                timeout: Duration::from_secs(1),
            })
        );
        assert_eq!(
            c.proactive_policy_fetching,
            ProactiveConfig {
                enabled: true,
                interval: Duration::from_secs(3600),
                concurrency_limit: 10,
                grace_ratio: 1.5,
            }
        );
        assert_eq!(
            c.default_zone,
            ZoneConfig {
                strict_testing: true,
                timeout: Duration::from_millis(500),
                require_sni: false,
                tlsrpt: true,
            }
        );
        // Keys missing from a zone take the built-in defaults, not default_zone's.
        assert_eq!(
            c.zones.get("myzone"),
            Some(&ZoneConfig {
                timeout: Duration::from_secs(10),
                ..ZoneConfig::default()
            })
        );
        let ns: Vec<String> = c
            .resolver
            .nameservers
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            ns,
            [
                "127.0.0.1:53",
                "127.0.0.1:5353",
                "[::1]:53",
                "[::1]:5353",
                "[2001:db8::1]:53"
            ]
        );
        assert_eq!(c.resolver.ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(c.resolver.policy_port, 8443);
        assert_eq!(c.resolver.user_agent, "test-agent");
    }

    #[test]
    fn redis_options() {
        let text = "cache:\n  type: redis\n  options:\n    url: redis://127.0.0.1:6379/0\n    \
                    prefix: 'x:'\n    socket_timeout: 2\n    socket_connect_timeout: 3\n    \
                    max_connections: 25\n    password: secret\n";
        let loaded = load(text);
        assert_eq!(
            loaded.config.cache,
            CacheConfig::Redis(RedisOptions {
                url: "redis://127.0.0.1:6379/0".to_owned(),
                prefix: "x:".to_owned(),
                socket_timeout: Duration::from_secs(2),
                socket_connect_timeout: Duration::from_secs(3),
                max_connections: Some(25),
            })
        );
        assert_eq!(
            loaded.warnings,
            ["cache.options.password: redis option not supported, ignored"]
        );
        let minimal = load("cache: {type: redis, options: {url: 'unix:///run/redis.sock'}}");
        let CacheConfig::Redis(r) = minimal.config.cache else {
            panic!("expected redis");
        };
        assert_eq!(r.prefix, "mta-sts:");
        assert_eq!(r.socket_timeout, Duration::from_secs(5));
        assert_eq!(r.socket_connect_timeout, Duration::from_secs(5));
        assert_eq!(r.max_connections, None);
    }

    #[test]
    fn sqlite_defaults_and_internal_size() {
        let c = load("cache: {type: sqlite, options: {filename: c.db}}").config;
        assert_eq!(
            c.cache,
            CacheConfig::Sqlite(SqliteOptions {
                filename: PathBuf::from("c.db"),
                threads: 4,
                timeout: Duration::from_secs(5),
            })
        );
        let c = load("cache: {type: internal, options: {cache_size: 5}}").config;
        assert_eq!(c.cache, CacheConfig::Internal { cache_size: 5 });
        // `cache:` with only options, or nothing at all, is the internal cache.
        let c = load("cache:\n  options:\n    cache_size: 7\n").config;
        assert_eq!(c.cache, CacheConfig::Internal { cache_size: 7 });
    }

    #[test]
    fn pyyaml_octal_mode_forms() {
        for (text, bits) in [
            ("mode: 0666", 0o666),
            ("mode: 0o666", 0o666),
            ("mode: \"0666\"", 0o666),
            ("mode: '0o600'", 0o600),
            ("mode: 438", 438), // PyYAML reads a plain 438 as decimal
            ("mode: 0", 0),
        ] {
            let c = load(&format!("path: /s\n{text}\n")).config;
            assert_eq!(c.mode, Some(bits), "{text}");
        }
        assert_eq!(error("mode: 0999").path(), Some("mode"));
        assert_eq!(error("mode: rw").path(), Some("mode"));
        assert_eq!(error("mode: 0o77777").path(), Some("mode"));
        assert_eq!(error("mode: -1").path(), Some("mode"));
    }

    #[test]
    fn mode_without_path_warns() {
        let loaded = load("mode: 0666");
        assert_eq!(loaded.config.mode, Some(0o666));
        assert_eq!(loaded.warnings, ["mode: only applies with `path`, ignored"]);
        // An empty path means TCP, as in Python's `if cfg.get('path')`.
        assert_eq!(load("path: ''").config.path, None);
    }

    #[test]
    fn pyyaml_booleans() {
        for (word, b) in [
            ("yes", true),
            ("Yes", true),
            ("ON", true),
            ("on", true),
            ("y", true),
            ("True", true),
            ("no", false),
            ("NO", false),
            ("off", false),
            ("n", false),
            ("false", false),
        ] {
            let c = load(&format!(
                "reuse_port: {word}\ndefault_zone: {{tlsrpt: {word}}}"
            ))
            .config;
            assert_eq!(c.reuse_port, b, "{word}");
            assert_eq!(c.default_zone.tlsrpt, b, "{word}");
        }
        let e = error("reuse_port: maybe");
        assert_eq!(
            e.to_string(),
            "reuse_port: expected a boolean (true/false, yes/no, on/off), got \"maybe\""
        );
        assert_eq!(error("reuse_port: 1").path(), Some("reuse_port"));
    }

    #[test]
    fn zone_with_empty_body_takes_defaults() {
        for text in [
            "zones:\n  myzone:\n",
            "zones: {myzone: }",
            "zones: {myzone: ~}",
            "zones: {myzone: {}}",
        ] {
            let loaded = load(text);
            assert_eq!(
                loaded.config.zones.get("myzone"),
                Some(&ZoneConfig::default()),
                "{text}"
            );
        }
        assert!(load("zones:").config.zones.is_empty());
    }

    #[test]
    fn zone_lookup_exact_else_default() {
        let c = load("default_zone: {timeout: 9}\nzones: {strict: {strict_testing: yes}}").config;
        assert!(c.zone("strict").strict_testing);
        assert_eq!(c.zone("strict").timeout, Duration::from_secs(4));
        assert_eq!(c.zone("other").timeout, Duration::from_secs(9));
        assert!(!c.zone("Strict").strict_testing, "exact match only");
        assert_eq!(
            c.zone("strict").reply_options(),
            ReplyOptions {
                strict_testing: true,
                require_sni: true,
                tlsrpt: false
            }
        );
    }

    #[test]
    fn unknown_keys_are_warnings_with_paths() {
        let loaded = load(
            "colour: blue\ncache: {type: internal, options: {cache_size: 3, ttl: 5}, extra: 1}\n\
             default_zone: {nope: 1}\nzones: {z: {strict: true}}\n\
             proactive_policy_fetching: {enable: true}\nresolver: {dns: x}\n1: 2\n",
        );
        assert_eq!(
            loaded.warnings,
            [
                "colour: unknown key, ignored",
                "1: unknown key, ignored",
                "cache.extra: unknown key, ignored",
                "cache.options.ttl: unknown key, ignored",
                "proactive_policy_fetching.enable: unknown key, ignored",
                "default_zone.nope: unknown key, ignored",
                "zones.z.strict: unknown key, ignored",
                "resolver.dns: unknown key, ignored",
            ]
        );
        assert_eq!(loaded.config.cache, CacheConfig::Internal { cache_size: 3 });
    }

    #[test]
    fn each_validation_error_names_its_key() {
        for (text, path) in [
            ("port: 0", "port"),
            ("port: 65536", "port"),
            ("port: -1", "port"),
            ("port: '8461'", "port"),
            ("port: 84.5", "port"),
            ("host: ''", "host"),
            ("host: [a]", "host"),
            ("shutdown_timeout: 0", "shutdown_timeout"),
            ("shutdown_timeout: -3", "shutdown_timeout"),
            ("cache_grace: -1", "cache_grace"),
            ("cache_grace: .nan", "cache_grace"),
            ("zones: {myzone: {timeout: abc}}", "zones.myzone.timeout"),
            ("zones: {myzone: {timeout: 0}}", "zones.myzone.timeout"),
            ("zones: {myzone: {timeout: 1e300}}", "zones.myzone.timeout"),
            ("zones: {myzone: {timeout: 1e-12}}", "zones.myzone.timeout"),
            ("zones: {myzone: 5}", "zones.myzone"),
            ("zones: [a]", "zones"),
            ("zones: {1: {}}", "zones"),
            ("default_zone: {require_sni: 2}", "default_zone.require_sni"),
            ("cache: {type: foo}", "cache.type"),
            ("cache: {type: sqlite}", "cache.options.filename"),
            (
                "cache: {type: sqlite, options: {filename: ''}}",
                "cache.options.filename",
            ),
            (
                "cache: {type: sqlite, options: {filename: a, threads: 0}}",
                "cache.options.threads",
            ),
            ("cache: {type: redis, options: {}}", "cache.options.url"),
            (
                "cache: {type: redis, options: {url: 'http://x'}}",
                "cache.options.url",
            ),
            (
                "cache: {options: {cache_size: 0}}",
                "cache.options.cache_size",
            ),
            ("cache: {options: [1]}", "cache.options"),
            ("cache: internal", "cache"),
            (
                "proactive_policy_fetching: {grace_ratio: 0}",
                "proactive_policy_fetching.grace_ratio",
            ),
            (
                "proactive_policy_fetching: {grace_ratio: -1}",
                "proactive_policy_fetching.grace_ratio",
            ),
            (
                "proactive_policy_fetching: {interval: 0}",
                "proactive_policy_fetching.interval",
            ),
            (
                "proactive_policy_fetching: {concurrency_limit: 0}",
                "proactive_policy_fetching.concurrency_limit",
            ),
            (
                "resolver: {nameservers: [127.0.0.1, 'dns.example']}",
                "resolver.nameservers[1]",
            ),
            (
                "resolver: {nameservers: ['1.2.3.4:99999']}",
                "resolver.nameservers[0]",
            ),
            ("resolver: {nameservers: [53]}", "resolver.nameservers[0]"),
            ("resolver: {policy_port: 0}", "resolver.policy_port"),
            ("[1, 2]", "(top level)"),
            ("just a string", "(top level)"),
        ] {
            let e = error(text);
            assert_eq!(e.path(), Some(path), "{text}: {e}");
            assert!(e.to_string().starts_with(path), "{e}");
        }
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(
            error("zones:\n  myzone:\n    timeout: abc\n").to_string(),
            "zones.myzone.timeout: expected a number of seconds, got \"abc\""
        );
        assert_eq!(
            error("cache: {type: foo}").to_string(),
            "cache.type: unknown cache type \"foo\" (expected internal, sqlite or redis)"
        );
        assert_eq!(
            error("cache: {type: sqlite}").to_string(),
            "cache.options.filename: required for the sqlite cache"
        );
        assert_eq!(
            error("port: 0").to_string(),
            "port: port 0 out of range 1..65535"
        );
        assert!(matches!(error("a: [1"), ConfigError::Syntax(_)));
        assert!(matches!(error("a: 1\na: 2"), ConfigError::Syntax(_)));
    }

    #[test]
    fn nameserver_single_string_and_forms() {
        let c = load("resolver:\n  nameservers: 10.0.0.1:5300\n").config;
        assert_eq!(c.resolver.nameservers, ["10.0.0.1:5300".parse().unwrap()]);
        let c = load("resolver: {nameservers: [], ca_file: ''}").config;
        assert!(c.resolver.nameservers.is_empty());
        assert_eq!(c.resolver.ca_file, None);
    }

    #[test]
    fn examples_parse_without_warnings() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config_examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config_examples exists") {
            let path = entry.expect("readable dir").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable example");
            let loaded =
                Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                loaded.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                loaded.warnings
            );
            seen += 1;
        }
        assert!(seen >= 5, "expected the five example files, found {seen}");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(text in any::<String>()) {
            let _ = Config::from_yaml(&text);
        }

        #[test]
        fn never_panics_on_yaml_like_text(text in "[a-z_:{}\\[\\], \n0-9.'\"~-]{0,80}") {
            let _ = Config::from_yaml(&text);
        }

        #[test]
        fn written_values_read_back(
            port in 1u16..,
            reuse in any::<bool>(),
            millis in 1u64..10_000_000,
            mode in 0u32..=0o7777,
            size in 1usize..1_000_000,
            zone in "[a-z][a-z0-9_-]{0,10}",
        ) {
            let text = format!(
                "port: {port}\nreuse_port: {}\npath: /s\nmode: 0{mode:o}\n\
                 cache: {{options: {{cache_size: {size}}}}}\n\
                 zones:\n  {zone}:\n    timeout: {}\n",
                if reuse { "yes" } else { "off" },
                millis as f64 / 1000.0,
            );
            let c = Config::from_yaml(&text).map_err(|e| TestCaseError::fail(e.to_string()))?.config;
            prop_assert_eq!(c.port, port);
            prop_assert_eq!(c.reuse_port, reuse);
            prop_assert_eq!(c.mode, Some(mode));
            prop_assert_eq!(&c.cache, &CacheConfig::Internal { cache_size: size });
            prop_assert_eq!(c.zone(&zone).timeout, Duration::from_millis(millis));
        }
    }
}
