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
const ZONE_KEYS: &[&str] = &["strict_testing", "timeout", "require_sni", "tlsrpt", "dane"];
const RESOLVER_KEYS: &[&str] = &["nameservers", "ca_file", "policy_port", "user_agent"];

/// Path shown for errors about the document itself.
pub(super) const ROOT: &str = "(top level)";

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
}

impl Reader {
    pub(super) fn config(&mut self, root: &Value) -> Result<Config, ConfigError> {
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
        let limits = &mut config.limits;
        if let Some(n) = count(top.get("max_connections"))? {
            limits.max_connections = n;
        }
        if let Some(n) = count(top.get("max_lookups"))? {
            limits.max_lookups = n;
        }
        if let Some(n) = count(top.get("max_lookups_per_connection"))? {
            limits.max_lookups_per_connection = n;
        }
        if let Some(d) = seconds(top.get("read_timeout"), false)? {
            limits.read_timeout = d;
        }
        if let Some(d) = seconds(top.get("idle_timeout"), false)? {
            limits.idle_timeout = d;
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
