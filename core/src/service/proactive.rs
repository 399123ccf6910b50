//! Proactive policy refresh (RFC 8461 §5.1 "pre-fetch"; config
//! `proactive_policy_fetching`): every `interval`, re-check the cached
//! domains not checked for `interval / grace_ratio`, at most
//! `concurrency_limit` at once. A persistent store keeps the round's time,
//! so a restart does not start a storm; a time there beyond `MAX_SKEW`
//! ahead is not believed (docs/ARCHITECTURE.md "Time"). A domain the relay
//! has not asked for within its idle time ([`IdleRule`]) is left alone, so
//! its policy expires (docs/ARCHITECTURE.md "Proactive refresh").

use super::{Caches, EngineHandle, Runtime, Shutdown};
use crate::cache::{believed, millis, IdleRule, StoreError};
use crate::config::ProactiveConfig;
use crate::domain::Domain;
use crate::resolve::Reason;
use futures::future::{select, Either};
use futures::StreamExt;
use std::sync::Mutex;
use std::time::Duration;

/// Run refresh rounds until `shutdown`. `timeout` bounds each domain's lookup.
pub async fn run_proactive_refresh<R: Runtime>(
    rt: R,
    engine: EngineHandle,
    caches: Caches,
    settings: ProactiveConfig,
    timeout: Duration,
    shutdown: Shutdown,
) {
    let interval_ms = millis(settings.interval).max(1000);
    // What this process has not seen asked for counts as asked now.
    let idle_rule = IdleRule {
        since_ms: rt.unix_ms(),
        idle_time: settings.idle_time,
    };
    let min_age_ms =
        (settings.interval.as_secs_f64() * 1000.0 / settings.grace_ratio).max(0.0) as u64;
    // The round's time is kept in memory too: the internal cache has no
    // other place for it, and a store that is down must not make every
    // turn look like the first (a round after round with no wait).
    let memory_ts: Mutex<Option<u64>> = Mutex::new(None);
    loop {
        let now_ms = rt.unix_ms();
        let remembered = *memory_ts.lock().unwrap_or_else(|p| p.into_inner());
        let last = match &caches.store {
            Some(store) => store.proactive_ts().await,
            None => Ok(remembered),
        };
        let last = last
            .unwrap_or_else(|e| {
                log::warn!("proactive refresh: cannot read the last round's time: {e}");
                None
            })
            // A shared store's time lying ahead must not put rounds off.
            .map(|t| believed(t, now_ms))
            .max(remembered);
        let due = last.unwrap_or(0).saturating_add(interval_ms);
        if now_ms < due {
            let wait = Duration::from_millis(due - now_ms);
            if let Either::Right(_) = select(rt.sleep(wait), shutdown.clone()).await {
                return;
            }
            continue;
        }
        let before = now_ms.saturating_sub(min_age_ms);
        let domains: Result<Vec<Domain>, StoreError> = match &caches.store {
            Some(store) => store.checked_before(before, now_ms).await,
            None => Ok(caches.index.checked_before(before, now_ms)),
        };
        let domains = domains.unwrap_or_else(|e| {
            log::warn!("proactive refresh: cannot list cached domains: {e}");
            Vec::new()
        });
        log::info!(
            "proactive refresh: {} domain(s) not checked recently",
            domains.len()
        );
        let (rt, caches) = (&rt, &caches);
        let round = futures::stream::iter(domains)
            .map(|domain| {
                let engine = engine.clone();
                async move {
                    match judge(rt, caches, &domain, &idle_rule, now_ms, timeout).await {
                        Judged::Refresh => {}
                        Judged::Idle => {
                            engine.metrics().proactive_skipped();
                            log::debug!(
                                "proactive refresh of {domain}: not asked for, left to expire"
                            );
                            return;
                        }
                        Judged::Gone => return,
                    }
                    let answer = engine.refresh(domain.clone(), timeout).await;
                    let metrics = engine.metrics();
                    match (&answer.reason, &answer.policy) {
                        (Reason::Fallback(_) | Reason::Timeout, policy) => {
                            metrics.proactive_failure();
                            if policy.is_some() {
                                // RFC 8461 §3.3: the administrator should hear of it.
                                metrics.refresh_failure();
                                log::warn!(
                                    "{domain}: cached policy could not be refreshed ({})",
                                    answer.reason
                                );
                            }
                        }
                        _ => log::debug!("proactive refresh of {domain}: {}", answer.reason),
                    }
                }
            })
            .buffer_unordered(settings.concurrency_limit.max(1))
            .for_each(|()| async {});
        if let Either::Right(_) = select(Box::pin(round), shutdown.clone()).await {
            return;
        }
        engine.metrics().proactive_round();
        *memory_ts.lock().unwrap_or_else(|p| p.into_inner()) = Some(now_ms);
        let recorded = match &caches.store {
            Some(store) => store.set_proactive_ts(now_ms).await,
            None => Ok(()),
        };
        if let Err(e) = recorded {
            log::warn!("proactive refresh: cannot record the round's time: {e}");
        }
    }
}

/// What a round does with one listed domain.
enum Judged {
    /// Refresh it.
    Refresh,
    /// Leave it alone: not asked for ([`IdleRule`]).
    Idle,
    /// Nothing to refresh: the domain left the cache since the listing.
    Gone,
}

/// Judges `domain` ([`IdleRule`]) on the index's policy and the time it
/// was last asked for, or, when memory holds none (a store's row no
/// request of this process read), on the store's row, read within
/// `timeout`. A row that cannot be read is refreshed, as before this rule.
async fn judge<R: Runtime>(
    rt: &R,
    caches: &Caches,
    domain: &Domain,
    rule: &IdleRule,
    now_ms: u64,
    timeout: Duration,
) -> Judged {
    let idle = |idle: bool| if idle { Judged::Idle } else { Judged::Refresh };
    if let Some(held) = caches.index.idle(domain.as_str(), rule, now_ms) {
        return idle(held);
    }
    let Some(store) = &caches.store else {
        return Judged::Gone;
    };
    match select(store.get(domain), rt.sleep(timeout)).await {
        // Times from outside as read at our now (docs/ARCHITECTURE.md "Time").
        Either::Left((Ok(Some(row)), _)) => {
            idle(rule.is_idle(&row.clamped(now_ms), 0, now_ms, caches.index.grace()))
        }
        Either::Left((Ok(None), _)) => Judged::Gone,
        Either::Left((Err(_), _)) | Either::Right(_) => Judged::Refresh,
    }
}
