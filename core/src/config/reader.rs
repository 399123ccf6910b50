//! The walk over the YAML document: sections, known keys (anything else is
//! a warning), and the model filled in from the typed value readers.

use serde_yaml::{Mapping, Value};

use super::values::*;
use super::*;

/// Known keys of each section; anything else is warned about and ignored.
const TOP_KEYS: &[&str] = &[
    "host",
    "port",
    "path",
    "mode",
    "reuse_port",
    "shutdown_timeout",
    "max_connections",
    "max_lookups",
    "max_lookups_per_connection",
    "read_timeout",
    "idle_timeout",
    "metrics",
    "cache_grace",
    "cache",
    "proactive_policy_fetching",
    "default_zone",
    "zones",
    "resolver",
    "log_format",
];
const CACHE_KEYS: &[&str] = &["type", "options"];
const INTERNAL_KEYS: &[&str] = &["cache_size"];
const SQLITE_KEYS: &[&str] = &["filename", "threads", "timeout"];
/// Options shared by `redis` and `redis_sentinel`.
const REDIS_COMMON_KEYS: &[&str] = &[
    "prefix",
    "socket_timeout",
    "socket_connect_timeout",
    "max_connections",
    "username",
    "password",
    "db",
];
const REDIS_URL_KEYS: &[&str] = &["url"];
const SENTINEL_KEYS: &[&str] = &["sentinels", "sentinel_master_name"];
const POSTGRES_KEYS: &[&str] = &[
    "dsn", "host", "port", "user", "password", "database", "min_size", "max_size", "timeout",
];
const PROACTIVE_KEYS: &[&str] = &[
    "enabled",
    "interval",
    "concurrency_limit",
    "grace_ratio",
    "idle_time",
];
const ZONE_KEYS: &[&str] = &["strict_testing", "timeout", "require_sni", "tlsrpt", "dane"];
const METRICS_KEYS: &[&str] = &["listen", "path", "mode"];
const RESOLVER_KEYS: &[&str] = &[
    "nameservers",
    "ca_file",
    "policy_port",
    "user_agent",
    "dnssec_test_name",
];

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
pub(super) struct Reader {
    pub(super) warnings: Vec<String>,
    pub(super) errors: Vec<ConfigError>,
}

impl Reader {
    /// Read the whole document. Errors do not stop the walk: every one is
    /// kept in `self.errors` (the key is left at its default), so
    /// `--check-config` can report them all.
    pub(super) fn config(&mut self, root: &Value) -> Config {
        let mut config = Config::default();
        let top = self.section(Some(root), ROOT.to_owned(), TOP_KEYS);
        let Some(top) = self.keep(top) else {
            return config;
        };
        if let Some(host) = self.keep(string(top.get("host"))).flatten() {
            if host.is_empty() {
                self.errors
                    .push(invalid(&top.get("host").1, "must not be empty"));
            } else {
                config.host = host;
            }
        }
        if let Some(port) = self.keep(port(top.get("port"))).flatten() {
            config.port = port;
        }
        // Python checks `cfg.get('path')`: an empty path means TCP.
        config.path = self
            .keep(string(top.get("path")))
            .flatten()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        config.mode = self.keep(mode(top.get("mode"))).flatten();
        if config.mode.is_some() && config.path.is_none() {
            self.warn(&top.get("mode").1, "only applies with `path`, ignored");
        }
        if let Some(b) = self.keep(boolean(top.get("reuse_port"))).flatten() {
            config.reuse_port = b;
        }
        if let Some(d) = self
            .keep(seconds(top.get("shutdown_timeout"), false))
            .flatten()
        {
            config.shutdown_timeout = d;
        }
        if let Some(n) = self.keep(count(top.get("max_connections"))).flatten() {
            config.limits.max_connections = n;
        }
        if let Some(n) = self.keep(count(top.get("max_lookups"))).flatten() {
            config.limits.max_lookups = n;
        }
        if let Some(n) = self
            .keep(count(top.get("max_lookups_per_connection")))
            .flatten()
        {
            config.limits.max_lookups_per_connection = n;
        }
        if let Some(d) = self.keep(seconds(top.get("read_timeout"), false)).flatten() {
            config.limits.read_timeout = d;
        }
        if let Some(d) = self.keep(seconds(top.get("idle_timeout"), false)).flatten() {
            config.limits.idle_timeout = d;
        }
        // Zero is meaningful: re-check the TXT id on every request.
        if let Some(d) = self.keep(seconds(top.get("cache_grace"), true)).flatten() {
            config.cache_grace = d;
        }
        let cache = self.cache(top.get("cache"));
        if let Some(cache) = self.keep(cache) {
            config.cache = cache;
        }
        let proactive = self.proactive(top.get("proactive_policy_fetching"));
        if let Some(p) = self.keep(proactive) {
            config.proactive_policy_fetching = p;
        }
        let default_zone = self.zone(top.get("default_zone"));
        if let Some(z) = self.keep(default_zone) {
            config.default_zone = z;
        }
        let zones = self.zones(top.get("zones"));
        if let Some(z) = self.keep(zones) {
            config.zones = z;
        }
        let resolver = self.resolver(top.get("resolver"));
        if let Some(r) = self.keep(resolver) {
            config.resolver = r;
        }
        let metrics = self.metrics(top.get("metrics"));
        if let Some(m) = self.keep(metrics) {
            config.metrics = m;
        }
        if let Some(f) = self.keep(log_format(top.get("log_format"))).flatten() {
            config.log_format = f;
        }
        config
    }

    /// The value, or `None` with the error kept for the report.
    fn keep<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
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
            "redis" | "redis_sentinel" => self
                .redis(options, options_path, kind == "redis_sentinel")
                .map(CacheConfig::Redis),
            "postgres" => self
                .postgres(options, options_path)
                .map(CacheConfig::Postgres),
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
        sentinel: bool,
    ) -> Result<RedisOptions, ConfigError> {
        // Python passes every other option to redis-py; we cannot honour
        // them, so say which ones are dropped rather than failing.
        let own = if sentinel {
            SENTINEL_KEYS
        } else {
            REDIS_URL_KEYS
        };
        let known: Vec<&str> = REDIS_COMMON_KEYS.iter().chain(own).copied().collect();
        let opts =
            self.section_with(options, path, &known, "redis option not supported, ignored")?;
        let target = if sentinel {
            let master_name = required(
                opts.get("sentinel_master_name"),
                "for the redis_sentinel cache",
            )?;
            let sentinels = sentinel_list(opts.get("sentinels"))?;
            RedisTarget::Sentinel {
                sentinels,
                master_name,
            }
        } else {
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
            RedisTarget::Url(SecretUrl::new(url))
        };
        let five = Duration::from_secs(5);
        let db = match whole(opts.get("db"))? {
            None => None,
            Some((n, at)) => Some(i64::try_from(n).map_err(|_| invalid(&at, "is too large"))?),
        };
        Ok(RedisOptions {
            target,
            prefix: string(opts.get("prefix"))?.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned()),
            socket_timeout: seconds(opts.get("socket_timeout"), false)?.unwrap_or(five),
            socket_connect_timeout: seconds(opts.get("socket_connect_timeout"), false)?
                .unwrap_or(five),
            max_connections: count(opts.get("max_connections"))?,
            username: string(opts.get("username"))?,
            password: string(opts.get("password"))?.map(Secret::new),
            db,
        })
    }

    fn postgres(
        &mut self,
        options: Option<&Value>,
        path: String,
    ) -> Result<PostgresOptions, ConfigError> {
        let opts = self.section_with(
            options,
            path,
            POSTGRES_KEYS,
            "postgres option not supported, ignored",
        )?;
        let dsn_at = opts.get("dsn");
        let dsn = match string(dsn_at.clone())? {
            None => None,
            Some(text) => {
                let dsn = parse_dsn(&text).map_err(|e| invalid(&dsn_at.1, &e.to_string()))?;
                for key in &dsn.ignored {
                    self.warn(
                        &dsn_at.1,
                        &format!("parameter {key:?} not supported, ignored"),
                    );
                }
                Some(dsn)
            }
        };
        let min_size = match whole(opts.get("min_size"))? {
            None => 10,
            Some((n, at)) => usize::try_from(n).map_err(|_| invalid(&at, "is too large"))?,
        };
        let max_size = count(opts.get("max_size"))?.unwrap_or(min_size.max(10));
        if min_size > max_size {
            return Err(invalid(
                &opts.get("min_size").1,
                &format!("must not exceed max_size ({max_size})"),
            ));
        }
        Ok(PostgresOptions {
            dsn,
            hosts: string_or_list(opts.get("host"))?,
            ports: port_or_list(opts.get("port"))?,
            user: string(opts.get("user"))?,
            password: string(opts.get("password"))?.map(Secret::new),
            database: string(opts.get("database"))?,
            min_size,
            max_size,
            timeout: seconds(opts.get("timeout"), false)?.unwrap_or(Duration::from_secs(5)),
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
            idle_time: seconds(s.get("idle_time"), false)?,
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
            dane: boolean(s.get("dane"))?.unwrap_or(d.dane),
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

    /// `metrics: {listen: ADDR, path: PATH, mode: 0600}`, at least one of
    /// `listen` and `path`; the TCP address must be loopback.
    fn metrics(
        &mut self,
        (value, path): (Option<&Value>, String),
    ) -> Result<Option<MetricsListen>, ConfigError> {
        if value.is_none() {
            return Ok(None);
        }
        let m = self.section(value, path.clone(), METRICS_KEYS)?;
        let listen = string(m.get("listen"))?;
        let socket = string(m.get("path"))?;
        let mode = mode(m.get("mode"))?;
        if listen.is_none() && socket.is_none() {
            return Err(invalid(
                &path,
                "give `listen` (a loopback address for /metrics), `path` (a Unix socket for \
                 /metrics and /cache) or both",
            ));
        }
        let tcp = match listen {
            None => None,
            Some(addr) => {
                let at = join(&path, "listen");
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| invalid(&at, &format!("{addr:?} is not an address:port")))?;
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        &at,
                        &format!(
                            "{addr} is not a loopback address (the endpoint has no authentication)"
                        ),
                    ));
                }
                Some(addr)
            }
        };
        Ok(Some(MetricsListen {
            tcp,
            unix: socket.map(|socket| AdminSocket {
                path: PathBuf::from(socket),
                mode: mode.unwrap_or(0o600),
            }),
        }))
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
        let (test_name, test_path) = s.get("dnssec_test_name");
        if let Some(name) = string((test_name, test_path.clone()))? {
            let bare = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
            if !crate::domain::is_valid_hostname(&bare) {
                return Err(invalid(&test_path, "not a DNS host name"));
            }
            r.dnssec_test_name = Some(bare);
        }
        Ok(r)
    }
}
