//! SIGHUP: reopen the log file (after log rotation), reload the config and
//! run the DNSSEC self-check again (also when the new config is refused).
//! Zones, `cache_grace`, the limits, `log_format` and
//! `resolver.dnssec_test_name` take effect at once, without dropping connections or the
//! cache; what needs a restart (listen
//! address, cache, the `resolver` section with its `ca_file`, ...) is
//! logged as such and left as it is: the daemon may no longer be allowed
//! to read what it read at start, before dropping privileges.

use std::path::PathBuf;
use std::sync::Arc;

use mta_sts_core::config::Config;
use mta_sts_core::service::{EngineHandle, Service};

/// What a reload changes.
pub struct Reloader {
    /// The config file.
    pub path: PathBuf,
    /// The configuration in force.
    pub current: Arc<Config>,
    /// Answers with the zones.
    pub service: Arc<Service>,
    /// Holds `cache_grace` and `max_lookups`.
    pub engine: EngineHandle,
    /// Runs the DNSSEC self-check for the configuration applied, in the
    /// background (docs/ARCHITECTURE.md "Operations").
    pub recheck_dnssec: Box<dyn FnMut(Arc<Config>) + Send>,
}

impl Reloader {
    /// Handle one SIGHUP.
    pub fn hangup(&mut self) {
        if let Err(e) = crate::logging::reopen_log() {
            log::error!("cannot reopen the log file: {e}");
        }
        let mut new = match crate::load_config(&self.path) {
            Ok(config) => config,
            Err(e) => {
                log::error!("config reload failed, keeping the running configuration: {e}");
                // The resolver may have changed all the same: check it again.
                (self.recheck_dnssec)(self.current.clone());
                return;
            }
        };
        crate::logging::use_config_log_format(new.log_format);
        for what in needs_restart(&self.current, &new) {
            log::warn!("config reload: {what} changed; it takes effect after a restart");
        }
        if let Some(nofile) = crate::fdlimit::raise_nofile() {
            if let Some(warning) = crate::fdlimit::fit(&mut new.limits, nofile) {
                log::warn!("{warning}");
            }
        }
        // Keep what cannot change while running, take the rest; of the
        // resolver, only the self-check's test name (it opens nothing).
        let mut resolver = self.current.resolver.clone();
        resolver.dnssec_test_name = new.resolver.dnssec_test_name.clone();
        let applied = Config {
            resolver,
            cache_grace: new.cache_grace,
            default_zone: new.default_zone.clone(),
            zones: new.zones.clone(),
            limits: new.limits.clone(),
            log_format: new.log_format,
            ..(*self.current).clone()
        };
        let applied = Arc::new(applied);
        self.service.reload(applied.clone());
        self.engine
            .update(applied.cache_grace, applied.limits.max_lookups);
        self.current = applied.clone();
        (self.recheck_dnssec)(applied);
        log::info!(
            "configuration reloaded from {} ({} zone(s), cache_grace {:?})",
            self.path.display(),
            self.current.zones.len(),
            self.current.cache_grace
        );
    }
}

/// The settings that differ between `old` and `new` but only take effect
/// at start.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |what: &'static str, differs: bool| {
        if differs {
            changed.push(what);
        }
    };
    check(
        "the listen address (host, port, path, mode, reuse_port)",
        (&old.host, old.port, &old.path, old.mode, old.reuse_port)
            != (&new.host, new.port, &new.path, new.mode, new.reuse_port),
    );
    check("cache", old.cache != new.cache);
    check(
        "proactive_policy_fetching",
        old.proactive_policy_fetching != new.proactive_policy_fetching,
    );
    // `dnssec_test_name` applies at once (the self-check asks it anew).
    let mut old_resolver = old.resolver.clone();
    old_resolver.dnssec_test_name = new.resolver.dnssec_test_name.clone();
    check(
        "resolver (nameservers, ca_file, policy_port, user_agent)",
        old_resolver != new.resolver,
    );
    check("metrics", old.metrics != new.metrics);
    check(
        "shutdown_timeout",
        old.shutdown_timeout != new.shutdown_timeout,
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_are_named() {
        let old = Config::default();
        let mut new = Config {
            cache_grace: std::time::Duration::from_secs(5),
            ..Config::default()
        };
        new.limits.idle_timeout = std::time::Duration::from_secs(5);
        assert!(needs_restart(&old, &new).is_empty());
        new.port = 1;
        new.cache = mta_sts_core::config::CacheConfig::Internal { cache_size: 5 };
        assert_eq!(
            needs_restart(&old, &new),
            vec![
                "the listen address (host, port, path, mode, reuse_port)",
                "cache"
            ]
        );
    }

    /// The self-check's test name is asked anew at each check: a reload
    /// applies it and names no restart.
    #[test]
    fn a_new_dnssec_test_name_needs_no_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.resolver.dnssec_test_name = Some("dnssec-failed.org".into());
        assert!(needs_restart(&old, &new).is_empty());
    }

    /// A new `resolver.ca_file` is read at the next start only (the file
    /// may be readable only before privileges drop): a reload names it.
    #[test]
    fn a_new_ca_file_needs_a_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.resolver.ca_file = Some("/etc/ssl/other.pem".into());
        assert_eq!(
            needs_restart(&old, &new),
            vec!["resolver (nameservers, ca_file, policy_port, user_agent)"]
        );
    }
}
