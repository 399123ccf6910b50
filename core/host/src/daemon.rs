//! The two programs' main flow, written once over a [`Driver`]: what a
//! runtime must supply (listeners, signals, transport, Redis connection).
//! The drivers implement the trait and call [`daemon_main`]/[`query_main`].

use crate::serve::{Listener, Server};
use crate::{dns_settings, policy_tls_roots, sd_notify, DaemonSetup};
use crate::{open_redis, PostgresBackend, SqliteBackend};
use futures::future::BoxFuture;
use futures::stream::BoxStream as Incoming;
use futures::StreamExt;
use mta_sts_core::cache::{Store, StoreError};
use mta_sts_core::config::{CacheConfig, Config, RedisTarget, SqliteOptions};
use mta_sts_core::service::{
    run_proactive_refresh, start_stack, BoxStream, CacheAdmin, DnsTargets, Runtime, Shutdown,
    ShutdownTrigger, Stack, Transport,
};
use std::io;
use std::sync::Arc;

/// Accepted connections, as a stream.
pub type Connections = Incoming<'static, io::Result<BoxStream>>;

/// What a runtime supplies to the programs.
pub trait Driver: Send + Sync + 'static {
    /// The runtime's spawn, timers and clock.
    type Rt: Runtime;
    /// The runtime.
    fn runtime(&self) -> Self::Rt;
    /// UDP/TCP/TLS for DNS and policy fetches, validating with `tls`, a
    /// connector built once that every TLS connection reuses
    /// ([`crate::SocketTransport`] over the runtime's [`crate::Sockets`]).
    fn transport(&self, roots: crate::TlsRoots) -> Arc<dyn Transport>;
    /// Accept loop input for a bound, non-blocking TCP listener.
    fn tcp_incoming(&self, listener: std::net::TcpListener) -> io::Result<Connections>;
    /// Accept loop input for a bound, non-blocking Unix listener.
    fn unix_incoming(&self, listener: std::os::unix::net::UnixListener) -> io::Result<Connections>;
    /// Completes on SIGTERM or SIGINT.
    fn stop_signal(&self) -> io::Result<BoxFuture<'static, ()>>;
    /// One item per SIGHUP (reopen the log, reload the config).
    fn hangup_signals(&self) -> io::Result<futures::stream::BoxStream<'static, ()>>;
}

/// `mta-sts-daemon`: serve until SIGTERM/SIGINT. Returns the exit status:
/// 0 after a graceful stop, 1 when start-up fails.
pub async fn daemon_main<D: Driver>(driver: D, setup: DaemonSetup) -> i32 {
    if setup.args.check_config {
        return crate::startup::check_config(&driver, &setup.config_path).await;
    }
    match run_daemon(&driver, &setup).await {
        Ok(()) => 0,
        Err(e) => {
            crate::startup::fatal(setup.args.logfile.is_some(), &e);
            1
        }
    }
}

async fn run_daemon<D: Driver>(driver: &D, setup: &DaemonSetup) -> Result<(), String> {
    let config = setup.config.clone();
    let (trigger, shutdown) = ShutdownTrigger::new();
    let stop = driver
        .stop_signal()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // SIGHUP is caught from the start: a logrotate run while the daemon
    // starts up must not kill it (the default action); one that comes
    // before the reloader exists is acted on once it does.
    let hangups = driver
        .hangup_signals()
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    let rt = driver.runtime();
    rt.spawn(Box::pin(async move {
        stop.await;
        log::info!("stop signal received: finishing in-flight requests");
        sd_notify("STOPPING=1");
        trigger.fire();
    }));
    // Files only root may read (CA bundle) are read before dropping privileges.
    let network = Network::prepare(driver, &config)?;
    let (listeners, place) = match crate::listen::activated_listeners(&setup.activation)? {
        Some(listeners) => {
            let place = format!("{} socket(s) from the service manager", listeners.len());
            (listeners, place)
        }
        None => match &config.path {
            Some(path) => (
                vec![Listener::Unix(crate::bind_unix(path, config.mode)?)],
                path.display().to_string(),
            ),
            None => (
                vec![Listener::Tcp(crate::bind_tcp(
                    &config.host,
                    config.port,
                    config.reuse_port,
                )?)],
                format!("{}:{}", config.host, config.port),
            ),
        },
    };
    let admin = match &config.metrics {
        Some(listen) => Some(crate::admin_http::bind(listen)?),
        None => None,
    };
    setup.after_bind()?;
    let stack = start_with(driver, config.clone(), network, shutdown.clone()).await?;
    let server = Server::start(listeners, stack.service.clone(), config.shutdown_timeout)
        .map_err(|e| format!("cannot serve on {place}: {e}"))?;
    if let Some(bound) = admin {
        let index = stack.caches.index.clone();
        let state = crate::admin_http::AdminState {
            metrics: stack.metrics.clone(),
            admin: CacheAdmin::new(
                Some(index.clone()),
                stack.caches.store.clone(),
                crate::unix_ms,
            ),
            import_limit: mta_sts_core::admin::import_limit(config.cache.memory_size()),
            cache_entries: Box::new(move || index.len()),
            open_connections: server.open_connections(),
        };
        let at = crate::admin_http::serve(bound, state)?;
        log::info!("metrics on {at}");
    }
    let checker = crate::dnssec::Checker::new(
        rt.clone(),
        stack.dns.clone(),
        stack.metrics.clone(),
        config.clone(),
    );
    let on_reload = checker.clone();
    let mut reloader = crate::reload::Reloader {
        path: setup.config_path.clone(),
        current: config.clone(),
        service: stack.service.clone(),
        engine: stack.engine.clone(),
        recheck_dnssec: Box::new(move |config| on_reload.check(config)),
    };
    rt.spawn(Box::pin(hangups.for_each(move |()| {
        reloader.hangup();
        futures::future::ready(())
    })));
    crate::memory::start_upkeep(stack.metrics.clone());
    log::info!("listening on {place}");
    setup.ready();
    // After READY, never before: the check waits on the resolver. The
    // configuration in force: a SIGHUP may have come first.
    checker.check_current();
    shutdown.await;
    let grace = config.shutdown_timeout;
    let drained = unblock(&rt, move || server.stop(grace)).await;
    if !drained {
        log::warn!("shutdown timeout: closing connections with requests in flight");
    }
    log::info!("stopped");
    Ok(())
}

/// Run blocking `work` on the runtime's blocking pool and await it.
async fn unblock<R: Runtime, T: Send + Default + 'static>(
    rt: &R,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = futures::channel::oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        let _ = tx.send(work());
    }));
    rx.await.unwrap_or_default()
}

/// Start the resolver for `config` on `driver`'s runtime: cache backend,
/// engine and (when enabled) proactive refresh. `serve` the returned
/// service on any listener; `shutdown` stops the background refresh.
pub async fn start<D: Driver>(
    driver: &D,
    config: Arc<Config>,
    shutdown: Shutdown,
) -> Result<Stack<D::Rt>, String> {
    let network = Network::prepare(driver, &config)?;
    start_with(driver, config, network, shutdown).await
}

/// The transport and nameservers, set up from files (CA bundle,
/// /etc/resolv.conf) that may be readable only before privileges drop.
struct Network {
    transport: Arc<dyn Transport>,
    dns: DnsTargets,
}

impl Network {
    /// The daemon's one place that sets up the policy TLS client: the roots
    /// are read now (before privileges drop), the connector is built at the
    /// first fetch and shared. Only at start: the file may be readable only
    /// by root, so a reload leaves the `resolver` section as it is and logs
    /// that it needs a restart (`reload::needs_restart`).
    fn prepare<D: Driver>(driver: &D, config: &Config) -> Result<Network, String> {
        let transport = driver.transport(policy_tls_roots(config)?);
        let dns = dns_settings(config);
        if let Some(warning) = mta_sts_core::dane::nameserver_warning(config, &dns.servers) {
            log::warn!("{warning}");
        }
        Ok(Network { transport, dns })
    }
}

async fn start_with<D: Driver>(
    driver: &D,
    config: Arc<Config>,
    network: Network,
    shutdown: Shutdown,
) -> Result<Stack<D::Rt>, String> {
    let rt = driver.runtime();
    let store = open_store(driver, &config).await?;
    let stack = start_stack(
        rt.clone(),
        network.transport,
        network.dns,
        config.clone(),
        store,
    );
    let proactive = &config.proactive_policy_fetching;
    if proactive.enabled {
        let task = run_proactive_refresh(
            rt.clone(),
            stack.engine.clone(),
            stack.caches.clone(),
            proactive.clone(),
            config.default_zone.timeout,
            shutdown,
        );
        rt.spawn(Box::pin(task));
    }
    Ok(stack)
}

/// The SQLite store, or, when the file cannot be used, a stand-in that
/// retries it: the daemon starts anyway and answers from memory and the
/// network. A corrupt file is moved aside (never deleted) and a new one made.
async fn open_sqlite<R: Runtime>(rt: R, options: &SqliteOptions) -> Arc<dyn Store> {
    let file = options.filename.display().to_string();
    let first = match SqliteBackend::open(rt.clone(), options).await {
        Err(StoreError::CorruptFile { path, reason }) => {
            let aside = crate::sqlite::move_aside(&options.filename, crate::unix_ms());
            match aside {
                Ok(moved) => log::error!(
                    "sqlite cache {path} is corrupt ({reason}): moved to {}, starting a new one",
                    moved.display()
                ),
                Err(e) => log::error!(
                    "sqlite cache {path} is corrupt ({reason}), cannot move it aside: {e}"
                ),
            }
            SqliteBackend::open(rt.clone(), options).await
        }
        other => other,
    };
    match first {
        Ok(backend) => {
            log::info!("cache: sqlite {file}");
            Arc::new(backend)
        }
        Err(e) => {
            log::error!(
                "{e}; serving from memory and the network, retrying the file every {} s",
                crate::reopen::RETRY_OPEN_MS / 1000
            );
            let options = options.clone();
            let opener_rt = rt.clone();
            let open: crate::reopen::Opener = Box::new(move || {
                let (rt, options) = (opener_rt.clone(), options.clone());
                Box::pin(async move {
                    let store = SqliteBackend::open(rt, &options).await?;
                    Ok(Arc::new(store) as Arc<dyn Store>)
                })
            });
            Arc::new(crate::reopen::Reopening::closed(
                format!("sqlite cache {file}"),
                open,
                Box::new(move || rt.unix_ms()),
            ))
        }
    }
}

/// The persistent store named by the config (`None` for `internal`).
pub(crate) async fn open_store<D: Driver>(
    driver: &D,
    config: &Config,
) -> Result<Option<Arc<dyn Store>>, String> {
    Ok(match &config.cache {
        CacheConfig::Internal { .. } => None,
        CacheConfig::Sqlite(options) => Some(open_sqlite(driver.runtime(), options).await),
        CacheConfig::Postgres(options) => {
            let backend = PostgresBackend::open(driver.runtime(), options)
                .await
                .map_err(|e| e.to_string())?;
            log::info!("cache: postgres {}", backend.describe());
            Some(Arc::new(backend))
        }
        CacheConfig::Redis(options) => {
            let backend = open_redis(driver.runtime(), options)
                .await
                .map_err(|e| e.to_string())?;
            match &options.target {
                RedisTarget::Url(url) => log::info!("cache: redis {url}"),
                RedisTarget::Sentinel {
                    sentinels,
                    master_name,
                } => log::info!(
                    "cache: redis_sentinel master {master_name:?} via {} sentinel(s)",
                    sentinels.len()
                ),
            }
            Some(Arc::new(backend))
        }
    })
}
