//! Wiring shared by the drivers: DNS client, index, lookup coordinator and
//! socketmap service from a config, a runtime and a transport.

use super::{DnsClient, Engine, EngineHandle, EngineSettings, Runtime, Service, Transport};
use crate::cache::{PolicyIndex, Store};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::resolve::{ResolverSettings, RETRY_AFTER_FAILURE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The running resolver: what connections and background tasks use.
pub struct Stack<R: Runtime> {
    /// The DNS client (also used by `mta-sts-query`).
    pub dns: Arc<DnsClient<R>>,
    /// The lookup coordinator's handle.
    pub engine: EngineHandle,
    /// The socketmap service.
    pub service: Arc<Service>,
    /// The caches the stack answers from.
    pub caches: Caches,
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
}

/// The shared in-memory index and the persistent store behind it, if any.
#[derive(Clone)]
pub struct Caches {
    /// What connections answer fresh hits from.
    pub index: Arc<PolicyIndex>,
    /// SQLite or Redis (`None` for the internal cache).
    pub store: Option<Arc<dyn Store>>,
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

impl DnsTargets {
    /// The stub resolver asking these nameservers over `transport`
    /// (resolv.conf's servers, `attempts`, `timeout`).
    pub fn client<R: Runtime>(self, rt: R, transport: Arc<dyn Transport>) -> DnsClient<R> {
        DnsClient::new(rt, transport, self.servers, self.attempts, self.try_timeout)
    }
}

/// Start the coordinator for `config` on `rt`, over `store` (if any)
/// behind an index of `cache_size` domains.
pub fn start_stack<R: Runtime>(
    rt: R,
    transport: Arc<dyn Transport>,
    dns: DnsTargets,
    config: Arc<Config>,
    store: Option<Arc<dyn Store>>,
) -> Stack<R> {
    let metrics = Arc::new(Metrics::new(config.zones.keys().map(String::as_str)));
    let dns = Arc::new(
        dns.client(rt.clone(), transport.clone())
            .with_metrics(metrics.clone()),
    );
    let cache_size = config.cache.memory_size();
    let index = Arc::new(PolicyIndex::new(cache_size, config.cache_grace));
    let settings = EngineSettings {
        resolver: ResolverSettings {
            cache_grace: config.cache_grace,
            retry_after_failure: RETRY_AFTER_FAILURE,
            memory_limit: cache_size,
            persistent: store.is_some(),
            max_lookups: config.limits.max_lookups,
        },
        policy_port: config.resolver.policy_port,
        user_agent: config.resolver.user_agent.clone(),
        metrics: metrics.clone(),
    };
    let engine = Engine::start(
        rt.clone(),
        dns.clone(),
        transport,
        index.clone(),
        store.clone(),
        settings,
    );
    let (wall, mono) = (rt.clone(), rt.clone());
    let service = Arc::new(Service::new(
        config,
        index.clone(),
        engine.clone(),
        Arc::new(move || wall.unix_ms()),
        Arc::new(move || mono.now()),
        metrics.clone(),
    ));
    Stack {
        dns,
        engine,
        service,
        caches: Caches { index, store },
        metrics,
    }
}
