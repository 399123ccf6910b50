//! `mta-sts-daemon` on smol: bind, serve socketmap, stop on SIGTERM/SIGINT.

use crate::{listen, SmolRuntime, SmolTransport};
use futures::StreamExt;
use mta_sts_core::config::{CacheConfig, Config};
use mta_sts_core::host::{self, DaemonSetup};
use mta_sts_core::service::{
    run_proactive_refresh, serve, start_stack, CacheBackend, MemoryBackend, Shutdown,
    ShutdownTrigger, SqliteBackend, Stack,
};
use std::sync::Arc;

/// The program: parse the command line, load the config, run until a
/// signal. Exits 0 after a graceful stop, 1 when start-up fails.
pub fn main() -> ! {
    let setup = host::prepare_daemon();
    let code = smol::block_on(run(setup));
    std::process::exit(code)
}

async fn run(setup: DaemonSetup) -> i32 {
    match run_inner(&setup).await {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            eprintln!("mta-sts-daemon: {e}");
            1
        }
    }
}

async fn run_inner(setup: &DaemonSetup) -> Result<(), String> {
    let config = setup.config.clone();
    let (trigger, shutdown) = ShutdownTrigger::new();
    let signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    smol::spawn(async move {
        let mut signals = signals;
        if let Some(Ok(signal)) = signals.next().await {
            log::info!("received {signal:?}: stopping");
        }
        host::sd_notify("STOPPING=1");
        trigger.fire();
    })
    .detach();

    let grace = config.shutdown_timeout;
    let rt = SmolRuntime;
    match &config.path {
        Some(path) => {
            let listener = listen::unix(path, config.mode)?;
            setup.after_bind()?;
            let stack = start(config.clone(), shutdown.clone()).await?;
            log::info!("listening on {}", path.display());
            setup.ready();
            serve(rt, listener.incoming(), stack.service, shutdown, grace).await;
        }
        None => {
            let listener = listen::tcp(&config.host, config.port, config.reuse_port)?;
            setup.after_bind()?;
            let stack = start(config.clone(), shutdown.clone()).await?;
            log::info!("listening on {}:{}", config.host, config.port);
            setup.ready();
            serve(rt, listener.incoming(), stack.service, shutdown, grace).await;
        }
    }
    log::info!("stopped");
    Ok(())
}

/// Start the resolver for `config` on smol: engine, cache backend and (when
/// enabled) proactive refresh. Usable by an application embedding the
/// resolver; `serve` the returned service on any listener.
pub async fn start(config: Arc<Config>, shutdown: Shutdown) -> Result<Stack<SmolRuntime>, String> {
    let rt = SmolRuntime;
    let transport = Arc::new(SmolTransport::new(host::policy_tls_connector(&config)?));
    let cache = open_cache(&config).await?;
    let stack = start_stack(
        rt,
        transport,
        host::dns_settings(&config),
        config.clone(),
        cache.clone(),
    );
    let proactive = &config.proactive_policy_fetching;
    if proactive.enabled {
        let task = run_proactive_refresh(
            rt,
            stack.engine.clone(),
            cache,
            proactive.clone(),
            config.default_zone.timeout,
            shutdown,
        );
        smol::spawn(task).detach();
    }
    Ok(stack)
}

async fn open_cache(config: &Config) -> Result<Arc<dyn CacheBackend>, String> {
    match &config.cache {
        CacheConfig::Internal { cache_size } => Ok(Arc::new(MemoryBackend::new(*cache_size))),
        CacheConfig::Sqlite(_) | CacheConfig::Redis(_) => {
            Err("cache type not supported yet".into())
        }
    }
}
