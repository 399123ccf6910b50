//! Proactive policy refresh (RFC 8461 §5.1 "pre-fetch"; config
//! `proactive_policy_fetching`): every `interval`, re-check the cached
//! domains not checked for `interval / grace_ratio`, at most
//! `concurrency_limit` at once. The round's time is kept in the cache so a
//! restart does not start a storm.

use super::{CacheBackend, EngineHandle, Runtime, Shutdown};
use crate::config::ProactiveConfig;
use futures::future::{select, Either};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Run refresh rounds until `shutdown`. `timeout` bounds each domain's lookup.
pub async fn run_proactive_refresh<R: Runtime>(
    rt: R,
    engine: EngineHandle,
    cache: Arc<dyn CacheBackend>,
    settings: ProactiveConfig,
    timeout: Duration,
    shutdown: Shutdown,
) {
    let interval = settings.interval.as_secs().max(1);
    let min_age = (settings.interval.as_secs_f64() / settings.grace_ratio).max(0.0) as u64;
    loop {
        let wall = rt.wall();
        let last = match cache.proactive_ts().await {
            Ok(ts) => ts.unwrap_or(0),
            Err(e) => {
                log::warn!("proactive refresh: cannot read the last round's time: {e}");
                0
            }
        };
        let due = last.saturating_add(interval);
        if wall < due {
            let wait = Duration::from_secs(due - wall);
            if let Either::Right(_) = select(rt.sleep(wait), shutdown.clone()).await {
                return;
            }
            continue;
        }
        let domains = match cache.stale(wall.saturating_sub(min_age)).await {
            Ok(domains) => domains,
            Err(e) => {
                log::warn!("proactive refresh: cannot list cached domains: {e}");
                Vec::new()
            }
        };
        log::info!("proactive refresh: re-checking {} domain(s)", domains.len());
        let round = futures::stream::iter(domains)
            .map(|domain| {
                let engine = engine.clone();
                async move {
                    let answer = engine.refresh(domain.clone(), timeout).await;
                    log::debug!("proactive refresh of {domain}: {}", answer.reason);
                }
            })
            .buffer_unordered(settings.concurrency_limit.max(1))
            .for_each(|()| async {});
        if let Either::Right(_) = select(Box::pin(round), shutdown.clone()).await {
            return;
        }
        if let Err(e) = cache.set_proactive_ts(wall).await {
            log::warn!("proactive refresh: cannot record the round's time: {e}");
        }
    }
}
