//! The two programs' main flow, written once over a [`Driver`]: what a
//! runtime must supply (listeners, signals, transport, Redis connection).
//! The drivers implement the trait and call [`daemon_main`]/[`query_main`].

use crate::serve::{Listener, Server};
use crate::{dns_settings, load_config, parse_or_exit, policy_tls_roots, sd_notify, DaemonSetup};
use crate::{open_redis, SqliteBackend};
use futures::future::BoxFuture;
use futures::stream::BoxStream as Incoming;
use mta_sts_core::cache::{Store, StoreError};
use mta_sts_core::cli::{parse_query_args, QueryArgs};
use mta_sts_core::config::{CacheConfig, Config, SqliteOptions};
use mta_sts_core::dane::{self, DaneFailure, DaneResult};
use mta_sts_core::domain::normalize_key;
use mta_sts_core::service::{
    lookup_dane, run_proactive_refresh, run_query, start_stack, with_timeout, BoxStream, DaneQuery,
    DnsClient, DnsTargets, QueryOutcome, Runtime, Shutdown, ShutdownTrigger, Stack, Transport,
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
}

/// `mta-sts-daemon`: serve until SIGTERM/SIGINT. Returns the exit status:
/// 0 after a graceful stop, 1 when start-up fails.
pub async fn daemon_main<D: Driver>(driver: D, setup: DaemonSetup) -> i32 {
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
    let rt = driver.runtime();
    rt.spawn(Box::pin(async move {
        stop.await;
        log::info!("stop signal received: finishing in-flight requests");
        sd_notify("STOPPING=1");
        trigger.fire();
    }));
    // Files only root may read (CA bundle) are read before dropping privileges.
    let network = Network::prepare(driver, &config)?;
    let (listeners, place) = match crate::listen::activated_listeners()? {
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
    setup.after_bind()?;
    let stack = start_with(driver, config.clone(), network, shutdown.clone()).await?;
    let server = Server::start(
        listeners,
        stack.service.clone(),
        config.limits.clone(),
        config.shutdown_timeout,
    )
    .map_err(|e| format!("cannot serve on {place}: {e}"))?;
    log::info!("listening on {place}");
    setup.ready();
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
    /// first fetch and shared. A config reload calls this again, so a new
    /// `resolver.ca_file` takes effect.
    fn prepare<D: Driver>(driver: &D, config: &Config) -> Result<Network, String> {
        let transport = driver.transport(policy_tls_roots(config)?);
        let dns = dns_settings(config);
        if let Some(warning) = dane::nameserver_warning(config, &dns.servers) {
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
async fn open_store<D: Driver>(
    driver: &D,
    config: &Config,
) -> Result<Option<Arc<dyn Store>>, String> {
    Ok(match &config.cache {
        CacheConfig::Internal { .. } => None,
        CacheConfig::Sqlite(options) => Some(open_sqlite(driver.runtime(), options).await),
        CacheConfig::Redis(options) => {
            let backend = open_redis(driver.runtime(), options)
                .await
                .map_err(|e| e.to_string())?;
            log::info!("cache: redis {}", options.url);
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
    let transport = match policy_tls_roots(&config) {
        Ok(roots) => driver.transport(roots),
        Err(e) => {
            eprintln!("mta-sts-query: {e}");
            return 2;
        }
    };
    let targets = dns_settings(&config);
    let with_dane = args.dane || config.default_zone.dane;
    if with_dane {
        let mut dane_config = config.clone();
        dane_config.default_zone.dane = true;
        if let Some(warning) = dane::nameserver_warning(&dane_config, &targets.servers) {
            log::warn!("{warning}");
        }
    }
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
    // Bounded like a daemon lookup: the default zone's timeout (4 s), for
    // each side of the two that run at once.
    let limit = config.default_zone.timeout;
    let rt = driver.runtime();
    let sts = async {
        with_timeout(&rt, limit, query)
            .await
            .unwrap_or_else(|| QueryOutcome::FetchError(format!("timed out after {limit:?}")))
    };
    let domain = normalize_key(&args.domain).ok().filter(|_| with_dane);
    let dane = async {
        let domain = domain.as_ref()?;
        let result = with_timeout(&rt, limit, lookup_dane(&dns, domain)).await;
        Some(result.unwrap_or_else(|| DaneResult::failed(DaneFailure::Timeout)))
    };
    let (outcome, dane) = futures::join!(sts, dane);
    let (text, json, code) = match dane {
        Some(dane) => {
            let report = DaneQuery {
                sts: outcome,
                dane,
                opts: config.default_zone.reply_options(),
            };
            (
                report.to_text(&args.domain),
                report.to_json(&args.domain),
                report.exit_code(),
            )
        }
        None => (
            outcome.to_text(&args.domain),
            outcome.to_json(&args.domain),
            outcome.exit_code(),
        ),
    };
    if args.json {
        println!("{json}");
    } else {
        print!("{text}");
    }
    code
}
