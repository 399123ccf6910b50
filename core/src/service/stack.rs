//! Wiring shared by the drivers: DNS client, engine and socketmap service
//! from a config, a runtime and a transport.

use super::{
    CacheBackend, DnsClient, Engine, EngineHandle, EngineSettings, Runtime, Service, Transport,
};
use crate::config::Config;
use crate::resolve::ResolverSettings;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Seconds a failed fetch for a domain and id is not retried (DESIGN.md).
pub const RETRY_AFTER_FAILURE: u64 = 300;

/// The running resolver: what connections and background tasks use.
pub struct Stack<R: Runtime> {
    /// The DNS client (also used by `mta-sts-query`).
    pub dns: Arc<DnsClient<R>>,
    /// The engine's handle.
    pub engine: EngineHandle,
    /// The socketmap service.
    pub service: Arc<Service>,
}

/// Where the stub resolver sends its queries and how patiently.
#[derive(Debug, Clone)]
pub struct DnsTargets {
    /// Nameservers, tried in order.
    pub servers: Vec<SocketAddr>,
    /// Rounds over the nameservers.
    pub attempts: u32,
    /// Bound of one try.
    pub try_timeout: Duration,
}

/// Start the engine for `config` on `rt`, with `cache` as its backend.
pub fn start_stack<R: Runtime>(
    rt: R,
    transport: Arc<dyn Transport>,
    dns: DnsTargets,
    config: Arc<Config>,
    cache: Arc<dyn CacheBackend>,
) -> Stack<R> {
    let dns = Arc::new(DnsClient::new(
        rt.clone(),
        transport.clone(),
        dns.servers,
        dns.attempts,
        dns.try_timeout,
    ));
    let cache_size = match config.cache {
        crate::config::CacheConfig::Internal { cache_size } => cache_size,
        _ => crate::config::DEFAULT_CACHE_SIZE,
    };
    let settings = EngineSettings {
        resolver: ResolverSettings {
            cache_grace: config.cache_grace.as_secs(),
            retry_after_failure: RETRY_AFTER_FAILURE,
            memory_limit: cache_size,
        },
        policy_port: config.resolver.policy_port,
        user_agent: config.resolver.user_agent.clone(),
    };
    let engine = Engine::start(rt, dns.clone(), transport, cache, settings);
    let service = Arc::new(Service::new(config, engine.clone()));
    Stack {
        dns,
        engine,
        service,
    }
}
