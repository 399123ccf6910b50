//! The lookup coordinator: the event loop around the sans-IO [`Resolver`].
//! Requests that missed the index and IO results go in with the time,
//! actions come out and are carried out as tasks on the driver's runtime
//! (docs/ARCHITECTURE.md "The lookup coordinator").

use super::{fetch_policy, lookup_dane, lookup_txt, with_timeout, DnsClient, Runtime, Transport};
use crate::cache::{CacheEntry, PolicyIndex, Store, StoreError};
use crate::dane::DaneFailure;
use crate::dane::DaneResult;
use crate::domain::Domain;
use crate::metrics::Metrics;
use crate::resolve::{
    Action, Answer, DaneAnswer, Failure, FetchResult, LookupId, Reason, RequestId, Resolver,
    ResolverSettings, TxtResult,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// What the engine needs besides its collaborators.
#[derive(Clone)]
pub struct EngineSettings {
    /// Decisions of the resolve state machine (cache_grace, retry limit).
    pub resolver: ResolverSettings,
    /// Port of the policy hosts (443; tests point it elsewhere).
    pub policy_port: u16,
    /// `User-Agent` of policy fetches.
    pub user_agent: String,
    /// Where fetch results, store errors and joined requests are counted.
    pub metrics: Arc<Metrics>,
}

/// What the coordinator is asked to do.
enum Message {
    /// Answer a request.
    Lookup(Request),
    /// Apply a reloaded configuration.
    Update {
        cache_grace: Duration,
        max_lookups: usize,
    },
}

/// What a request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The MTA-STS answer (a zone without `dane`).
    Lookup,
    /// A proactive refresh (RFC 8461 §5.1).
    Refresh,
    /// DANE first, then MTA-STS (a zone with `dane: true`; RFC 8461 §2).
    Dane,
}

/// A request that missed the index, or a proactive refresh.
struct Request {
    domain: Domain,
    timeout: Duration,
    kind: Kind,
    reply: oneshot::Sender<Answer>,
}

enum Outcome {
    Store {
        lookup: LookupId,
        stored: Result<Option<CacheEntry>, StoreError>,
    },
    Txt {
        lookup: LookupId,
        result: TxtResult,
    },
    Fetch {
        lookup: LookupId,
        result: FetchResult,
    },
    Dane {
        lookup: LookupId,
        result: DaneResult,
    },
}

/// A cheap, cloneable way to ask the engine for answers.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Message>,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// Apply a reloaded configuration: `cache_grace` and `max_lookups`.
    pub fn update(&self, cache_grace: Duration, max_lookups: usize) {
        let _ = self.tx.unbounded_send(Message::Update {
            cache_grace,
            max_lookups,
        });
    }

    /// Where the coordinator's work is counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The policy answer for `domain`, within `timeout` (the zone's).
    pub async fn lookup(&self, domain: Domain, timeout: Duration) -> Answer {
        self.ask(domain, timeout, Kind::Lookup).await
    }

    /// The DANE verdict for `domain` and, unless it decides, the MTA-STS
    /// answer, within `timeout` (a `dane: true` zone; RFC 8461 §2,
    /// RFC 7672).
    pub async fn lookup_dane(&self, domain: Domain, timeout: Duration) -> Answer {
        self.ask(domain, timeout, Kind::Dane).await
    }

    /// Re-check `domain`'s TXT id even within cache_grace (proactive refresh).
    pub async fn refresh(&self, domain: Domain, timeout: Duration) -> Answer {
        self.ask(domain, timeout, Kind::Refresh).await
    }

    async fn ask(&self, domain: Domain, timeout: Duration, kind: Kind) -> Answer {
        let (reply, rx) = oneshot::channel();
        // If the engine is gone the request (and its reply sender) is
        // dropped, so `rx` fails below: one fallback for both cases.
        let _ = self.tx.unbounded_send(Message::Lookup(Request {
            domain,
            timeout,
            kind,
            reply,
        }));
        let stopped = || Failure::Local("resolver stopped".into());
        rx.await.unwrap_or_else(|_| Answer {
            policy: None,
            reason: Reason::Fallback(stopped()),
            dane: (kind == Kind::Dane).then(|| DaneAnswer {
                result: Arc::new(DaneResult::failed(DaneFailure::Local(
                    stopped().to_string(),
                ))),
                cached: false,
            }),
        })
    }
}

/// The engine task's state.
pub struct Engine<R: Runtime> {
    rt: R,
    resolver: Resolver,
    dns: Arc<DnsClient<R>>,
    transport: Arc<dyn Transport>,
    store: Option<Arc<dyn Store>>,
    settings: Arc<EngineSettings>,
    results_tx: mpsc::UnboundedSender<Outcome>,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    io: HashMap<LookupId, AbortHandle>,
    /// Lookups whose policy fetch is running (a cancel is a fetch timeout).
    fetching: HashSet<LookupId>,
    next_request: u64,
    timer: Option<(Instant, BoxFuture<'static, ()>)>,
}

impl<R: Runtime> Engine<R> {
    /// Start the engine on `rt` and return the handle that feeds it. What
    /// lookups learn goes to `index` (and to `store` behind it, if any). The
    /// engine stops when every handle is gone and its lookups are done.
    pub fn start(
        rt: R,
        dns: Arc<DnsClient<R>>,
        transport: Arc<dyn Transport>,
        index: Arc<PolicyIndex>,
        store: Option<Arc<dyn Store>>,
        settings: EngineSettings,
    ) -> EngineHandle {
        let (tx, requests) = mpsc::unbounded();
        let (results_tx, results) = mpsc::unbounded();
        let metrics = settings.metrics.clone();
        let resolver_settings = ResolverSettings {
            persistent: store.is_some(),
            ..settings.resolver
        };
        let engine = Engine {
            rt: rt.clone(),
            resolver: Resolver::new(resolver_settings, index),
            dns,
            transport,
            store,
            settings: Arc::new(settings),
            results_tx,
            waiting: HashMap::new(),
            io: HashMap::new(),
            fetching: HashSet::new(),
            next_request: 0,
            timer: None,
        };
        rt.spawn(engine.run(requests, results).boxed());
        EngineHandle { tx, metrics }
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Message>,
        mut results: mpsc::UnboundedReceiver<Outcome>,
    ) {
        let mut accepting = true;
        loop {
            self.arm_timer();
            enum Event {
                Request(Option<Message>),
                Outcome(Outcome),
                Timer,
            }
            let timer = &mut self.timer;
            let event = poll_fn(|cx| {
                if let Poll::Ready(Some(outcome)) = results.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Outcome(outcome));
                }
                if accepting {
                    if let Poll::Ready(req) = requests.poll_next_unpin(cx) {
                        return Poll::Ready(Event::Request(req));
                    }
                }
                if let Some((_, sleep)) = timer {
                    if sleep.poll_unpin(cx).is_ready() {
                        return Poll::Ready(Event::Timer);
                    }
                }
                Poll::Pending
            })
            .await;
            let now = self.rt.now();
            let wall = self.rt.unix_ms();
            match event {
                Event::Request(Some(Message::Update {
                    cache_grace,
                    max_lookups,
                })) => self.resolver.update(cache_grace, max_lookups),
                Event::Request(Some(Message::Lookup(Request {
                    domain,
                    timeout,
                    kind,
                    reply,
                }))) => {
                    let id = self.next_request;
                    self.next_request = self.next_request.wrapping_add(1);
                    self.waiting.insert(id, reply);
                    let request = RequestId(id);
                    let joined_before = self.resolver.coalesced_total();
                    match kind {
                        Kind::Dane => self
                            .resolver
                            .handle_dane_request(request, domain, timeout, now, wall),
                        Kind::Refresh => {
                            // The request below joins the refresh lookup, so
                            // its reply tells when the refresh is done.
                            self.resolver
                                .handle_refresh(domain.clone(), timeout, now, wall);
                            self.resolver
                                .handle_request(request, domain, timeout, now, wall);
                        }
                        Kind::Lookup => self
                            .resolver
                            .handle_request(request, domain, timeout, now, wall),
                    }
                    let joined = self.resolver.coalesced_total() - joined_before;
                    if !matches!(kind, Kind::Refresh) && joined > 0 {
                        self.settings.metrics.coalesced(joined);
                    }
                }
                Event::Request(None) => accepting = false,
                Event::Outcome(Outcome::Store { lookup, stored }) => {
                    self.io.remove(&lookup);
                    self.resolver.handle_store_loaded(lookup, stored, now, wall);
                }
                Event::Outcome(Outcome::Txt { lookup, result }) => {
                    self.io.remove(&lookup);
                    match &result {
                        TxtResult::NoPolicy(_) => self.settings.metrics.fetch_result("no_txt"),
                        TxtResult::Error(failure) => self.settings.metrics.fetch_failure(failure),
                        TxtResult::Id(_) => {}
                    }
                    self.resolver.handle_txt(lookup, result, now, wall);
                }
                Event::Outcome(Outcome::Fetch { lookup, result }) => {
                    self.io.remove(&lookup);
                    self.fetching.remove(&lookup);
                    match &result {
                        FetchResult::Policy(_) => self.settings.metrics.fetch_result("ok"),
                        FetchResult::Error(failure) => self.settings.metrics.fetch_failure(failure),
                    }
                    self.resolver.handle_fetch(lookup, result, now, wall);
                }
                Event::Outcome(Outcome::Dane { lookup, result }) => {
                    self.io.remove(&lookup);
                    self.resolver.handle_dane(lookup, result, now, wall);
                }
                Event::Timer => {
                    self.timer = None;
                    self.resolver.handle_timeout(now);
                }
            }
            self.carry_out_actions();
            if !accepting && self.waiting.is_empty() && self.resolver.in_flight() == 0 {
                return;
            }
        }
    }

    /// Keep one sleep for the earliest deadline; re-create it only when an
    /// earlier deadline appears (a later one is caught when it fires).
    fn arm_timer(&mut self) {
        let Some(deadline) = self.resolver.poll_timeout() else {
            self.timer = None;
            return;
        };
        if matches!(&self.timer, Some((armed, _)) if *armed <= deadline) {
            return;
        }
        let wait = deadline.saturating_duration_since(self.rt.now());
        self.timer = Some((deadline, self.rt.sleep(wait)));
    }

    fn carry_out_actions(&mut self) {
        while let Some(action) = self.resolver.poll_action() {
            match action {
                Action::LoadStore { lookup, domain } => self.load_store(lookup, domain),
                Action::QueryTxt { lookup, domain } => {
                    let dns = self.dns.clone();
                    self.spawn_io(lookup, async move {
                        let result = lookup_txt(&dns, &domain).await;
                        Outcome::Txt { lookup, result }
                    });
                }
                Action::FetchPolicy {
                    lookup,
                    domain,
                    policy_id: _,
                } => {
                    let dns = self.dns.clone();
                    let transport = self.transport.clone();
                    let settings = self.settings.clone();
                    let rt = self.rt.clone();
                    self.fetching.insert(lookup);
                    self.spawn_io(lookup, async move {
                        let started = rt.now();
                        let fetched = fetch_policy(
                            &dns,
                            transport.as_ref(),
                            &domain,
                            settings.policy_port,
                            &settings.user_agent,
                        )
                        .await;
                        let took = rt.now().saturating_duration_since(started);
                        settings.metrics.fetch_seconds(took.as_secs_f64());
                        let result = match fetched {
                            Ok(policy) => FetchResult::Policy(policy),
                            Err(e) => FetchResult::Error(e.into()),
                        };
                        Outcome::Fetch { lookup, result }
                    });
                }
                Action::LookupDane { lookup, domain } => {
                    let dns = self.dns.clone();
                    self.spawn_io(lookup, async move {
                        let result = lookup_dane(&dns, &domain).await;
                        Outcome::Dane { lookup, result }
                    });
                }
                Action::Persist { domain, entry } => {
                    let Some(store) = self.store.clone() else {
                        continue;
                    };
                    let metrics = self.settings.metrics.clone();
                    self.rt.spawn(
                        async move {
                            if let Err(e) = store.set(&domain, &entry).await {
                                metrics.store_error();
                                log::warn!("{domain}: cache write failed: {e}");
                            }
                        }
                        .boxed(),
                    );
                }
                Action::Cancel { lookup } => {
                    if let Some(handle) = self.io.remove(&lookup) {
                        handle.abort();
                    }
                    if self.fetching.remove(&lookup) {
                        self.settings.metrics.fetch_result("timeout");
                    }
                }
                Action::Reply {
                    request,
                    domain: _,
                    answer,
                } => {
                    if let Some(reply) = self.waiting.remove(&request.0) {
                        // The requester may have gone (connection closed).
                        let _ = reply.send(answer);
                    }
                }
            }
        }
    }

    fn load_store(&mut self, lookup: LookupId, domain: Domain) {
        let Some(store) = self.store.clone() else {
            let stored = Ok(None);
            let (now, wall) = (self.rt.now(), self.rt.unix_ms());
            self.resolver.handle_store_loaded(lookup, stored, now, wall);
            return;
        };
        let rt = self.rt.clone();
        let metrics = self.settings.metrics.clone();
        // A slow or dead shared store must not eat the zone timeout: give it
        // a short slice and go on with what memory holds.
        let limit = STORE_READ_LIMIT;
        self.spawn_io(lookup, async move {
            let stored = match with_timeout(&rt, limit, store.get(&domain)).await {
                Some(result) => result,
                None => Err(StoreError::Timeout(limit)),
            };
            if let Err(e) = &stored {
                metrics.store_error();
                log::warn!("{domain}: cache read failed, going on without it: {e}");
            }
            Outcome::Store { lookup, stored }
        });
    }

    fn spawn_io(
        &mut self,
        lookup: LookupId,
        work: impl std::future::Future<Output = Outcome> + Send + 'static,
    ) {
        let (handle, registration) = AbortHandle::new_pair();
        self.io.insert(lookup, handle);
        let tx = self.results_tx.clone();
        let task = Abortable::new(work, registration);
        self.rt.spawn(
            async move {
                if let Ok(outcome) = task.await {
                    let _ = tx.unbounded_send(outcome);
                }
            }
            .boxed(),
        );
    }
}

/// Longest wait for a store read before the lookup goes on without it.
const STORE_READ_LIMIT: Duration = Duration::from_millis(1000);
