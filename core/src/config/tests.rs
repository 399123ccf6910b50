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
    assert_eq!(p.idle_time, None);
    let z = &c.default_zone;
    assert!(!z.strict_testing && z.require_sni && !z.tlsrpt && !z.dane);
    assert!(!c.dane_enabled());
    assert_eq!(z.timeout, Duration::from_secs(4));
    assert!(c.zones.is_empty());
    assert!(c.resolver.nameservers.is_empty());
    assert_eq!(c.resolver.ca_file, None);
    assert_eq!(c.resolver.policy_port, 443);
    assert!(c.resolver.user_agent.starts_with("mta-sts-resolver-rs/"));
    assert_eq!(c.resolver.dnssec_test_name, None);
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
  idle_time: 604800
default_zone:
  strict_testing: true
  timeout: 0.5
  require_sni: false
  tlsrpt: true
  dane: true
zones:
  myzone:
    strict_testing: false
    timeout: 10
resolver:
  nameservers: ["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353", "[2001:db8::1]"]
  ca_file: /tmp/ca.pem
  policy_port: 8443
  user_agent: test-agent
  dnssec_test_name: DNSSEC-Failed.org.
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
            idle_time: Some(Duration::from_secs(604_800)),
        }
    );
    assert_eq!(
        c.default_zone,
        ZoneConfig {
            strict_testing: true,
            timeout: Duration::from_millis(500),
            require_sni: false,
            tlsrpt: true,
            dane: true,
        }
    );
    assert!(c.dane_enabled());
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
    assert_eq!(
        c.resolver.dnssec_test_name.as_deref(),
        Some("dnssec-failed.org")
    );
}

#[test]
fn redis_options() {
    let text = "cache:\n  type: redis\n  options:\n    url: redis://127.0.0.1:6379/0\n    \
                    prefix: 'x:'\n    socket_timeout: 2\n    socket_connect_timeout: 3\n    \
                    max_connections: 25\n    password: secret\n    db: 2\n    retry_on_timeout: true\n";
    let loaded = load(text);
    assert_eq!(
        loaded.config.cache,
        CacheConfig::Redis(RedisOptions {
            target: RedisTarget::Url(SecretUrl::new("redis://127.0.0.1:6379/0")),
            prefix: "x:".to_owned(),
            socket_timeout: Duration::from_secs(2),
            socket_connect_timeout: Duration::from_secs(3),
            max_connections: Some(25),
            username: None,
            password: Some(Secret::new("secret")),
            db: Some(2),
        })
    );
    assert_eq!(
        loaded.warnings,
        ["cache.options.retry_on_timeout: redis option not supported, ignored"]
    );
    let minimal = load("cache: {type: redis, options: {url: 'unix:///run/redis.sock'}}");
    let CacheConfig::Redis(r) = minimal.config.cache else {
        panic!("expected redis");
    };
    // No prefix: the Python original's keys.
    assert_eq!(r.prefix, "");
    assert_eq!(r.kind(), "redis");
    assert_eq!(r.socket_timeout, Duration::from_secs(5));
    assert_eq!(r.socket_connect_timeout, Duration::from_secs(5));
    assert_eq!(r.max_connections, None);
    assert_eq!((r.username, r.password, r.db), (None, None, None));
}

/// The Python original's `mta-sts-daemon.yml.redis_sentinel` example.
#[test]
fn redis_sentinel_options() {
    let text = r#"
cache:
  type: redis_sentinel
  options:
    sentinel_master_name: "mymaster"
    sentinels:
      - ["sentinel1", 26379]
      - ["sentinel2", 26379]
      - ["sentinel3", 26379]
    password: "StrongPassword"
    max_connections: 25
    socket_timeout: 1.0
    socket_connect_timeout: 1.0
"#;
    let loaded = load(text);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let CacheConfig::Redis(r) = loaded.config.cache else {
        panic!("expected redis");
    };
    assert_eq!(r.kind(), "redis_sentinel");
    assert_eq!(
        r.target,
        RedisTarget::Sentinel {
            sentinels: vec![
                ("sentinel1".to_owned(), 26379),
                ("sentinel2".to_owned(), 26379),
                ("sentinel3".to_owned(), 26379)
            ],
            master_name: "mymaster".to_owned(),
        }
    );
    assert_eq!(
        r.password.as_ref().map(Secret::expose),
        Some("StrongPassword")
    );
    assert_eq!(r.socket_timeout, Duration::from_secs(1));
    // `url` belongs to `redis` only.
    let w = load("cache: {type: redis_sentinel, options: {sentinel_master_name: m, sentinels: [[h, 1]], url: 'redis://x'}}");
    assert_eq!(
        w.warnings,
        ["cache.options.url: redis option not supported, ignored"]
    );
}

/// The Python original's `mta-sts-daemon.yml.postgres` example, and every
/// asyncpg option we take.
#[test]
fn postgres_options() {
    let c = load(
        "cache:\n  type: postgres\n  options:\n    dsn: postgres://user@%2Frun%2Fpostgresql/user\n",
    )
    .config
    .cache;
    let CacheConfig::Postgres(p) = c else {
        panic!("expected postgres")
    };
    let dsn = p.dsn.as_ref().unwrap();
    assert_eq!(dsn.hosts, ["/run/postgresql"]);
    assert_eq!(dsn.user.as_deref(), Some("user"));
    assert_eq!(
        (p.min_size, p.max_size, p.timeout),
        (10, 10, Duration::from_secs(5))
    );
    assert!(p.hosts.is_empty() && p.ports.is_empty());

    let loaded = load(
        "cache:\n  type: postgres\n  options:\n    host: [db1, /run/postgresql]\n    port: 5433\n    \
         user: mta\n    password: pw\n    database: sts\n    min_size: 0\n    max_size: 3\n    \
         timeout: 1.5\n    command_timeout: 3\n    dsn: 'host=x application_name=a foo=1'\n",
    );
    let CacheConfig::Postgres(p) = loaded.config.cache else {
        panic!("expected postgres")
    };
    assert_eq!(p.hosts, ["db1", "/run/postgresql"]);
    assert_eq!(p.ports, [5433]);
    assert_eq!(p.user.as_deref(), Some("mta"));
    assert_eq!(p.password.as_ref().map(Secret::expose), Some("pw"));
    assert_eq!(p.database.as_deref(), Some("sts"));
    assert_eq!((p.min_size, p.max_size), (0, 3));
    assert_eq!(p.timeout, Duration::from_millis(1500));
    assert_eq!(
        loaded.warnings,
        [
            "cache.options.command_timeout: postgres option not supported, ignored",
            "cache.options.dsn: parameter \"foo\" not supported, ignored",
        ]
    );
    let p = load("cache: {type: postgres, options: {host: 'a, b', port: [1, 2], max_size: 20}}")
        .config
        .cache;
    let CacheConfig::Postgres(p) = p else {
        panic!("expected postgres")
    };
    assert_eq!(p.hosts, ["a", "b"]);
    assert_eq!(p.ports, [1, 2]);
    assert_eq!((p.min_size, p.max_size), (10, 20));
    // Nothing at all is fine too: libpq's defaults.
    assert!(matches!(
        load("cache: {type: postgres}").config.cache,
        CacheConfig::Postgres(_)
    ));
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
fn dane_per_zone_and_its_errors_name_the_key() {
    let c = load("zones: {d: {dane: yes}, plain: {tlsrpt: true}}").config;
    assert!(c.zone("d").dane);
    assert!(!c.zone("plain").dane && !c.default_zone.dane);
    assert!(c.dane_enabled());
    let err = Config::from_yaml("zones: {d: {dane: maybe}}").unwrap_err();
    assert!(err.to_string().contains("zones.d.dane"), "{err}");
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
        ("log_format: yaml", "log_format"),
        ("log_format: [json]", "log_format"),
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
            "cache: {type: redis_sentinel, options: {sentinels: [[h, 1]]}}",
            "cache.options.sentinel_master_name",
        ),
        (
            "cache: {type: redis_sentinel, options: {sentinel_master_name: m}}",
            "cache.options.sentinels",
        ),
        (
            "cache: {type: redis_sentinel, options: {sentinel_master_name: m, sentinels: []}}",
            "cache.options.sentinels",
        ),
        (
            "cache: {type: redis_sentinel, options: {sentinel_master_name: m, sentinels: [[h, 0]]}}",
            "cache.options.sentinels[0][1]",
        ),
        (
            "cache: {type: redis_sentinel, options: {sentinel_master_name: m, sentinels: [h]}}",
            "cache.options.sentinels[0]",
        ),
        ("cache: {type: postgres, options: {dsn: 'mysql://x'}}", "cache.options.dsn"),
        ("cache: {type: postgres, options: {port: [1, x]}}", "cache.options.port[1]"),
        ("cache: {type: postgres, options: {min_size: 5, max_size: 2}}", "cache.options.min_size"),
        ("cache: {type: postgres, options: {max_size: 0}}", "cache.options.max_size"),
        ("cache: {type: postgres, options: {timeout: 0}}", "cache.options.timeout"),
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
            "proactive_policy_fetching: {idle_time: 0}",
            "proactive_policy_fetching.idle_time",
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
        (
            "resolver: {dnssec_test_name: 'a b.example'}",
            "resolver.dnssec_test_name",
        ),
        (
            "resolver: {dnssec_test_name: 5}",
            "resolver.dnssec_test_name",
        ),
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
        "cache.type: unknown cache type \"foo\" (expected internal, sqlite, redis, redis_sentinel or postgres)"
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
        let loaded = Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

#[test]
fn metrics_listener_on_loopback_or_a_unix_socket_or_both() {
    let tcp = Some("127.0.0.1:9461".parse().unwrap());
    let socket = |mode| {
        Some(AdminSocket {
            path: "/run/mta-sts/metrics.sock".into(),
            mode,
        })
    };
    let c = load("metrics:\n  listen: \"127.0.0.1:9461\"\n").config;
    assert_eq!(c.metrics, Some(MetricsListen { tcp, unix: None }));
    let c = load("metrics:\n  path: /run/mta-sts/metrics.sock\n").config;
    assert_eq!(
        c.metrics,
        Some(MetricsListen {
            tcp: None,
            unix: socket(0o600)
        })
    );
    // Both at once: Prometheus scrapes TCP, administration uses the socket.
    let c = load(
        "metrics:\n  listen: \"127.0.0.1:9461\"\n  path: /run/mta-sts/metrics.sock\n  mode: 0660\n",
    )
    .config;
    assert_eq!(
        c.metrics,
        Some(MetricsListen {
            tcp,
            unix: socket(0o660)
        })
    );
    assert_eq!(load("").config.metrics, None);
    for (text, path) in [
        ("metrics:\n  listen: \"0.0.0.0:9461\"\n", "metrics.listen"),
        ("metrics:\n  listen: nonsense\n", "metrics.listen"),
        ("metrics: {}\n", "metrics"),
        ("metrics:\n  mode: 0600\n", "metrics"),
    ] {
        assert_eq!(error(text).path(), Some(path), "{text}");
    }
}

#[test]
fn check_reports_every_error_with_its_path() {
    let checked = Config::check(
        "port: abc\ncache_grace: -1\ndefault_zone:\n  timeout: soon\nzones:\n  z:\n    tlsrpt: maybe\nbogus: 1\n",
    );
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
    let errors = checked.errors;
    let paths: Vec<Option<&str>> = errors.iter().map(|e| e.path()).collect();
    assert_eq!(
        paths,
        vec![
            Some("port"),
            Some("cache_grace"),
            Some("default_zone.timeout"),
            Some("zones.z.tlsrpt")
        ]
    );
    // from_yaml still gives the first.
    assert_eq!(error("port: abc\ncache_grace: -1\n").path(), Some("port"));
}

/// No error or `Debug` output quotes a credential: a password read as a
/// number, a DSN whose password has an unencoded `/` (so a piece of it
/// reads as a port), a URL's or a DSN's password in a parsed config.
#[test]
fn errors_and_debug_never_quote_a_credential() {
    for (yaml, secret) in [
        (
            "cache: {type: redis, options: {url: 'redis://h', password: 84613117}}",
            "84613117",
        ),
        (
            "cache: {type: postgres, options: {password: 84613117}}",
            "84613117",
        ),
        (
            "cache: {type: postgres, options: {dsn: 'postgresql://u:s3cr/etpw@h/db'}}",
            "s3cr",
        ),
    ] {
        let checked = Config::check(yaml);
        assert_eq!(checked.errors.len(), 1, "{yaml}: {:?}", checked.errors);
        let shown = checked.errors[0].to_string();
        assert!(shown.starts_with("cache.options."), "{shown}");
        assert!(!shown.contains(secret), "{yaml}: {shown}");
    }
    for (yaml, secret) in [
        ("cache: {type: redis, options: {url: 'redis://:hunter2@h/0'}}", "hunter2"),
        ("cache: {type: redis, options: {url: 'redis://h/0', password: hunter2}}", "hunter2"),
        (
            "cache: {type: postgres, options: {dsn: 'postgresql://u:hunter2@h/db', password: pw2pw2}}",
            "hunter2",
        ),
        ("cache: {type: postgres, options: {password: pw2pw2}}", "pw2pw2"),
        ("cache: {type: postgres, options: {dsn: \"password='hunter2' host=h\"}}", "hunter2"),
    ] {
        let loaded = Config::from_yaml(yaml).unwrap();
        let shown = format!("{:?}", loaded.config);
        assert!(!shown.contains(secret), "{yaml}: {shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }
}

/// `log_format` (ours): `text` (the default) or `json`; anything else is
/// an error naming the key.
#[test]
fn log_format_text_or_json() {
    use crate::cli::LogFormat;
    assert_eq!(load("").config.log_format, LogFormat::Text);
    assert_eq!(load("log_format: json").config.log_format, LogFormat::Json);
    assert_eq!(load("log_format: text").config.log_format, LogFormat::Text);
    assert_eq!(
        error("log_format: xml").to_string(),
        "log_format: expected text or json"
    );
}
