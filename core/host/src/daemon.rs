//! The two programs' main flow, written once over a [`Driver`]: what a
//! runtime must supply (listeners, signals, transport, Redis connection).
//! The drivers implement the trait and call [`daemon_main`]/[`query_main`].

use crate::{
    dns_settings, load_config, parse_or_exit, policy_tls_connector, sd_notify, DaemonSetup,
};
use crate::{open_redis, PostgresBackend, SqliteBackend};
use futures::future::BoxFuture;
use futures::stream::BoxStream as Incoming;
use mta_sts_core::cache::Store;
use mta_sts_core::cli::{parse_query_args, QueryArgs};
use mta_sts_core::config::{CacheConfig, Config, RedisTarget};
use mta_sts_core::service::{
    run_proactive_refresh, run_query, serve, start_stack, with_timeout, BoxStream, DnsClient,
    DnsTargets, QueryOutcome, Runtime, Shutdown, ShutdownTrigger, Stack, Transport,
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
    /// UDP/TCP/TLS for DNS and policy fetches, validating with `tls`.
    fn transport(&self, tls: native_tls::TlsConnectorBuilder)
        -> Result<Arc<dyn Transport>, String>;
    /// Accept loop input for a bound, non-blocking TCP listener.
    fn tcp_incoming(&self, listener: std::net::TcpListener) -> io::Result<Connections>;
    /// Accept loop input for a bound, non-blocking Unix listener.
    fn unix_incoming(&self, listener: std::os::unix::net::UnixListener) -> io::Result<Connections>;
    /// Completes on SIGTERM or SIGINT.
    fn stop_signal(&self) -> io::Result<BoxFuture<'static, ()>>;
}

/// `mta-sts-daemon`: serve until SIGTERM/SIGINT. Returns the exit status:
/// 0 after a graceful stop, 1 when start-up fails.
pub async fn daemon_main<D: Driver>(driver: D, setup: DaemonSetup) -> i32 {
    match run_daemon(&driver, &setup).await {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            eprintln!("mta-sts-daemon: {e}");
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
    let rt = driver.runtime();
    rt.spawn(Box::pin(async move {
        stop.await;
        log::info!("stop signal received: finishing in-flight requests");
        sd_notify("STOPPING=1");
        trigger.fire();
    }));
    // Files only root may read (CA bundle) are read before dropping privileges.
    let network = Network::prepare(driver, &config)?;
    let (incoming, place) = match &config.path {
        Some(path) => {
            let listener = crate::bind_unix(path, config.mode)?;
            let incoming = driver
                .unix_incoming(listener)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            (incoming, path.display().to_string())
        }
        None => {
            let listener = crate::bind_tcp(&config.host, config.port, config.reuse_port)?;
            let place = format!("{}:{}", config.host, config.port);
            let incoming = driver
                .tcp_incoming(listener)
                .map_err(|e| format!("cannot listen on {place}: {e}"))?;
            (incoming, place)
        }
    };
    setup.after_bind()?;
    let stack = start_with(driver, config.clone(), network, shutdown.clone()).await?;
    log::info!("listening on {place}");
    setup.ready();
    serve(
        rt,
        incoming,
        stack.service,
        shutdown,
        config.shutdown_timeout,
    )
    .await;
    log::info!("stopped");
    Ok(())
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
    fn prepare<D: Driver>(driver: &D, config: &Config) -> Result<Network, String> {
        let transport = driver.transport(policy_tls_connector(config)?)?;
        Ok(Network {
            transport,
            dns: dns_settings(config),
        })
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

/// The persistent store named by the config (`None` for `internal`).
async fn open_store<D: Driver>(
    driver: &D,
    config: &Config,
) -> Result<Option<Arc<dyn Store>>, String> {
    Ok(match &config.cache {
        CacheConfig::Internal { .. } => None,
        CacheConfig::Sqlite(options) => {
            let backend = SqliteBackend::open(driver.runtime(), options)
                .await
                .map_err(|e| e.to_string())?;
            log::info!("cache: sqlite {}", options.filename.display());
            Some(Arc::new(backend))
        }
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

/// The query program's arguments, parsed (or help/usage printed and exit).
pub fn query_args() -> QueryArgs {
    let args = parse_or_exit(parse_query_args(std::env::args_os().skip(1).collect()));
    let _ = crate::init_logging(args.verbosity.to_log_filter(), None);
    args
}

/// `mta-sts-query`: look the domain up once and print what was found.
/// Returns the exit status: 0 valid policy (or NOT_CHANGED), 1 no policy,
/// 2 fetch error or bad arguments.
pub async fn query_main<D: Driver>(driver: D, args: QueryArgs) -> i32 {
    let config = match &args.config {
        Some(path) => match load_config(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("mta-sts-query: {e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    let transport = match policy_tls_connector(&config).and_then(|tls| driver.transport(tls)) {
        Ok(transport) => transport,
        Err(e) => {
            eprintln!("mta-sts-query: {e}");
            return 2;
        }
    };
    let targets = dns_settings(&config);
    let dns = DnsClient::new(
        driver.runtime(),
        transport.clone(),
        targets.servers,
        targets.attempts,
        targets.try_timeout,
    );
    let query = run_query(
        &dns,
        transport.as_ref(),
        &args.domain,
        args.known_id.as_deref(),
        config.resolver.policy_port,
        &config.resolver.user_agent,
    );
    // Bounded like a daemon lookup: the default zone's timeout (4 s).
    let limit = config.default_zone.timeout;
    let outcome = with_timeout(&driver.runtime(), limit, query)
        .await
        .unwrap_or_else(|| QueryOutcome::FetchError(format!("timed out after {limit:?}")));
    if args.json {
        println!("{}", outcome.to_json(&args.domain));
    } else {
        print!("{}", outcome.to_text(&args.domain));
    }
    outcome.exit_code()
}
