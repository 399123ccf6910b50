//! The shared in-memory index of what is known per domain: the policy
//! (with its Postfix replies rendered once per zone flavour) or "no policy".
//! Connections answer fresh hits from it in their own task, with no channel
//! hop and no allocation beyond the reply; the lookup coordinator writes it
//! before it answers any waiting request, so a request that arrives after
//! the first reply finds the result (docs/ARCHITECTURE.md "The path of one
//! request"). Persistent stores are written through behind it. Beside the
//! policies it keeps DANE results (RFC 7672) for their TTL, in memory only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::entry::{latest_believed, millis, CacheEntry};
use super::lru::Bounded;
use super::shards::Sharded;
use crate::dane::DaneResult;
use crate::domain::Domain;
use crate::policy::{render_reply, ReplyOptions};

/// A cached policy with its replies, rendered on first use per flavour of
/// [`ReplyOptions`] and shared by every zone of that flavour.
#[derive(Debug)]
pub struct Cached {
    entry: CacheEntry,
    replies: Replies,
    /// Unix millisecond of the last request for the domain this process
    /// noted, 0 for none; in memory only, never stored (docs/ARCHITECTURE.md
    /// "Proactive refresh").
    asked_ms: AtomicU64,
}

/// The rendered replies of one policy. The first flavour asked for is kept
/// inline: a site's zones nearly always share one, and an index of many
/// policies should not pay for eight slots each (docs/ARCHITECTURE.md
/// "Cache"). Any other flavour goes to a table made when first needed.
#[derive(Debug, Default)]
struct Replies {
    first: OnceLock<(u8, Reply)>,
    others: OnceLock<Box<[OnceLock<Reply>; 8]>>,
}

/// A rendered reply value, `None` for NOTFOUND.
type Reply = Option<Arc<str>>;

impl Replies {
    fn get(&self, flavour: u8, render: impl Fn() -> Reply) -> Reply {
        let (first, reply) = self.first.get_or_init(|| (flavour, render()));
        if *first == flavour {
            return reply.clone();
        }
        let others = self.others.get_or_init(Box::default);
        others
            .get(usize::from(flavour))
            .map_or_else(&render, |slot| slot.get_or_init(&render).clone())
    }
}

impl Cached {
    fn new(entry: CacheEntry, asked_ms: u64) -> Self {
        Cached {
            entry,
            replies: Replies::default(),
            asked_ms: AtomicU64::new(asked_ms),
        }
    }

    /// Unix millisecond of the last request for the domain this process
    /// noted (at most `cache_grace` late), or 0 if none was
    /// (docs/ARCHITECTURE.md "Proactive refresh").
    pub fn asked_ms(&self) -> u64 {
        self.asked_ms.load(Ordering::Relaxed)
    }

    /// Note a request at `now_ms`. Written only when the time noted is
    /// `grace_ms` old or more: a hit reads a cache line other threads
    /// read too, and writing it on every hit would make them contend.
    fn note_asked(&self, now_ms: u64, grace_ms: u64) {
        if now_ms >= self.asked_ms().saturating_add(grace_ms) {
            self.asked_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// The cache entry.
    pub fn entry(&self) -> &CacheEntry {
        &self.entry
    }

    /// The reply value after `OK ` for `domain` in a zone with `opts`, or
    /// `None` for NOTFOUND (RFC 8461 §5; docs/ARCHITECTURE.md "Replies").
    pub fn reply(&self, domain: &str, opts: ReplyOptions) -> Option<Arc<str>> {
        let flavour = u8::from(opts.strict_testing)
            | u8::from(opts.require_sni) << 1
            | u8::from(opts.tlsrpt) << 2;
        self.replies.get(flavour, || {
            render_reply(&self.entry.policy, domain, opts).map(Arc::from)
        })
    }
}

/// What one shard of the index holds, each kind bounded on its own: a
/// domain is in one of them at most. "No policy" notes are made by
/// lookups of any name a sender chooses, so they evict only each other
/// and never a policy (RFC 8461 §3.3: a cached policy is used while
/// unexpired; docs/ARCHITECTURE.md "Cache").
#[derive(Debug)]
struct Known {
    policies: Bounded<Arc<Cached>>,
    /// Domains found to publish no policy, with the Unix millisecond noted.
    no_policy: Bounded<u64>,
}

impl Known {
    fn new(capacity: usize) -> Self {
        Known {
            policies: Bounded::new(capacity),
            no_policy: Bounded::new(capacity),
        }
    }

    fn len(&self) -> usize {
        self.policies.len() + self.no_policy.len()
    }
}

/// What the index can answer without any IO.
#[derive(Debug)]
pub enum Fresh {
    /// A policy checked within `cache_grace`.
    Policy(Arc<Cached>),
    /// Found to publish no policy within `cache_grace`.
    NoPolicy,
    /// Nothing fresh: the lookup coordinator must decide.
    Miss,
}

/// What the index holds for a domain, whatever its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A cached entry (maybe stale, maybe expired).
    Entry(CacheEntry),
    /// "No policy", noted within `cache_grace`.
    NoPolicy,
    /// Nothing.
    Miss,
}

/// When the proactive refresh leaves a cached domain alone: the relay has
/// not asked for it for `idle_time`, or for its policy's `max_age` when
/// none is configured (docs/ARCHITECTURE.md "Proactive refresh").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleRule {
    /// Unix millisecond the refresh started: a domain with no request
    /// noted since counts as asked then, as the process cannot know.
    pub since_ms: u64,
    /// `proactive_policy_fetching.idle_time`; `None` for each policy's
    /// `max_age`.
    pub idle_time: Option<Duration>,
}

impl IdleRule {
    /// True when `entry`, last asked for at `asked_ms` (0: not since
    /// [`since_ms`](Self::since_ms)), is not to be refreshed at `now_ms`.
    /// `grace` is the `cache_grace` in force: the asked time is written at
    /// most once per `cache_grace`, so it may be that much behind, and a
    /// domain asked for all along must never look idle while its policy
    /// holds. An expired policy gets no such allowance, and one with no
    /// request since the start is idle at once: refreshing it would fetch
    /// a policy nobody was shown to need, and a request for it fetches it
    /// anyway.
    pub fn is_idle(&self, entry: &CacheEntry, asked_ms: u64, now_ms: u64, grace: Duration) -> bool {
        let limit = self
            .idle_time
            .map_or(entry.policy.max_age.saturating_mul(1000), millis);
        let until = asked_ms.max(self.since_ms).saturating_add(limit);
        if entry.is_expired(now_ms) {
            return asked_ms == 0 || now_ms >= until;
        }
        now_ms >= until.saturating_add(millis(grace))
    }
}

/// A DANE result and the Unix millisecond until which it is answered.
#[derive(Debug)]
struct DaneEntry {
    result: Arc<DaneResult>,
    until_ms: u64,
}

/// The shared index: `cache.options.cache_size` policies at most, and
/// apart from them as many "no policy" notes and as many DANE results,
/// each kind evicting only its own (docs/ARCHITECTURE.md "Cache"), sharded
/// by domain (`Sharded`). Every operation takes a short lock on one shard
/// (listings, each shard in turn) and never awaits under it.
#[derive(Debug)]
pub struct PolicyIndex {
    grace_ms: AtomicU64,
    map: Sharded<Known>,
    dane: Sharded<Bounded<DaneEntry>>,
}

impl PolicyIndex {
    /// An empty index of at most `capacity` policies (and `capacity` "no
    /// policy" notes, and `capacity` DANE results), fresh for `grace`.
    pub fn new(capacity: usize, grace: Duration) -> Self {
        PolicyIndex {
            grace_ms: AtomicU64::new(millis(grace)),
            map: Sharded::new(capacity, Known::new),
            dane: Sharded::new(capacity, Bounded::new),
        }
    }

    /// The fresh answer for `domain` at `now_ms`, if any (RFC 8461 §5.1:
    /// within `cache_grace` of the last check, no traffic). A policy
    /// answered is noted as asked for ([`Cached::asked_ms`]).
    pub fn fresh(&self, domain: &str, now_ms: u64) -> Fresh {
        let grace_ms = self.grace_ms.load(Ordering::Relaxed);
        let shard = self.map.read(domain);
        if let Some(c) = shard.policies.get(domain) {
            return if c.entry.is_fresh(now_ms, Duration::from_millis(grace_ms)) {
                c.note_asked(now_ms, grace_ms);
                Fresh::Policy(c.clone())
            } else {
                Fresh::Miss
            };
        }
        match shard.no_policy.get(domain) {
            Some(noted) if now_ms < noted.saturating_add(grace_ms) => Fresh::NoPolicy,
            _ => Fresh::Miss,
        }
    }

    /// Note a request for `domain` at `now_ms` answered other than by
    /// [`fresh`](Self::fresh) (a lookup, a DANE result), if a policy is
    /// held (docs/ARCHITECTURE.md "Proactive refresh").
    pub fn note_asked(&self, domain: &str, now_ms: u64) {
        let grace_ms = self.grace_ms.load(Ordering::Relaxed);
        if let Some(c) = self.map.read(domain).policies.get(domain) {
            c.note_asked(now_ms, grace_ms);
        }
    }

    /// Whether the proactive refresh leaves `domain` alone at `now_ms`
    /// ([`IdleRule`]), or `None` when no policy is held for it. An idle
    /// policy that has expired leaves memory here: nothing answers with
    /// it any more, and a request for it looks it up afresh.
    pub fn idle(&self, domain: &str, rule: &IdleRule, now_ms: u64) -> Option<bool> {
        let grace = Duration::from_millis(self.grace_ms.load(Ordering::Relaxed));
        let idle = |c: &Cached| rule.is_idle(&c.entry, c.asked_ms(), now_ms, grace);
        let (idle_now, expired) = {
            let shard = self.map.read(domain);
            let c = shard.policies.peek(domain)?;
            (idle(c), c.entry.is_expired(now_ms))
        };
        if idle_now && expired {
            // Checked again under the write lock: a lookup may have
            // stored a new policy meanwhile.
            let mut shard = self.map.write(domain);
            if shard
                .policies
                .peek(domain)
                .is_some_and(|c| idle(c) && c.entry.is_expired(now_ms))
            {
                shard.policies.remove(domain);
            }
        }
        Some(idle_now)
    }

    /// Everything known about `domain` at `now_ms`, for the coordinator.
    pub fn known(&self, domain: &str, now_ms: u64) -> Held {
        let grace_ms = self.grace_ms.load(Ordering::Relaxed);
        let shard = self.map.read(domain);
        if let Some(c) = shard.policies.get(domain) {
            return Held::Entry(c.entry.clone());
        }
        match shard.no_policy.get(domain) {
            Some(noted) if now_ms < noted.saturating_add(grace_ms) => Held::NoPolicy,
            _ => Held::Miss,
        }
    }

    /// `cache_grace` in force.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    /// Change `cache_grace` (config reload).
    pub fn set_grace(&self, grace: Duration) {
        self.grace_ms.store(millis(grace), Ordering::Relaxed);
    }

    /// Store `entry` unless the one held is newer
    /// ([`CacheEntry::is_newer_than`]); replaces a "no policy" note. Only
    /// another policy can evict one. The time the domain was last asked
    /// for stays with it.
    pub fn store(&self, domain: Domain, entry: CacheEntry) {
        let mut shard = self.map.write(domain.as_str());
        let mut asked_ms = 0;
        if let Some(c) = shard.policies.peek(domain.as_str()) {
            if c.entry.is_newer_than(&entry) {
                return;
            }
            if c.entry == entry {
                // Same data: keep the rendered replies.
                return;
            }
            asked_ms = c.asked_ms();
        }
        shard.no_policy.remove(domain.as_str());
        shard
            .policies
            .insert(domain, Arc::new(Cached::new(entry, asked_ms)));
    }

    /// Remember that `domain` publishes no policy, unless an unexpired
    /// policy is held (a missing TXT record does not evict one, §5.1); an
    /// expired one gives way. The note can evict only another note.
    pub fn note_no_policy(&self, domain: Domain, now_ms: u64) {
        let mut shard = self.map.write(domain.as_str());
        if let Some(c) = shard.policies.peek(domain.as_str()) {
            if !c.entry.is_expired(now_ms) {
                return;
            }
            shard.policies.remove(domain.as_str());
        }
        shard.no_policy.insert(domain, now_ms);
    }

    /// Forget `domain` (cache purge), its DANE result too; true if a
    /// policy or "no policy" note was held.
    pub fn remove(&self, domain: &str) -> bool {
        self.dane.write(domain).remove(domain);
        let mut shard = self.map.write(domain);
        shard.policies.remove(domain) | shard.no_policy.remove(domain)
    }

    /// Forget every policy and "no policy" note (cache purge --all); how
    /// many domains were held.
    pub fn clear(&self) -> usize {
        let mut held = 0;
        self.map.for_each_mut(|shard| {
            held += shard.len();
            *shard = Known::new(shard.policies.capacity());
        });
        held
    }

    /// The DANE result for `domain` while it may still be answered at
    /// `now_ms` (its TTL, RFC 7672 §2.1; a failure's retry delay).
    pub fn dane_fresh(&self, domain: &str, now_ms: u64) -> Option<Arc<DaneResult>> {
        match self.dane.read(domain).get(domain) {
            Some(e) if now_ms < e.until_ms => Some(e.result.clone()),
            _ => None,
        }
    }

    /// Keep `result` for `domain`, answered until `until_ms`.
    pub fn store_dane(&self, domain: Domain, result: Arc<DaneResult>, until_ms: u64) {
        let mut shard = self.dane.write(domain.as_str());
        shard.insert(domain, DaneEntry { result, until_ms });
    }

    /// Domains holding a policy last checked before `before_ms`, or later
    /// than [`latest_believed`]`(now_ms)` (our clock stepped back): the
    /// proactive refresh's work list for the internal cache
    /// (docs/ARCHITECTURE.md "Time").
    pub fn checked_before(&self, before_ms: u64, now_ms: u64) -> Vec<Domain> {
        let limit = latest_believed(now_ms);
        let mut due = Vec::new();
        self.map.for_each(|shard| {
            due.extend(
                shard
                    .policies
                    .iter()
                    .filter(|(_, c)| {
                        c.entry.checked_at_ms < before_ms || c.entry.checked_at_ms > limit
                    })
                    .map(|(d, _)| Domain::from_trusted(d)),
            )
        });
        due
    }

    /// Every cached policy entry (cache administration).
    pub fn entries(&self) -> Vec<(Domain, CacheEntry)> {
        let mut all = Vec::new();
        self.map.for_each(|shard| {
            all.extend(
                shard
                    .policies
                    .iter()
                    .map(|(d, c)| (Domain::from_trusted(d), c.entry.clone())),
            )
        });
        all
    }

    /// Number of domains held (policies and "no policy" notes).
    pub fn len(&self) -> usize {
        let mut held = 0;
        self.map.for_each(|shard| held += shard.len());
        held
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Policy};

    fn d(s: &str) -> Domain {
        s.parse().unwrap()
    }

    fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
        CacheEntry {
            policy_id: id.into(),
            policy: Policy {
                mode: Mode::Enforce,
                max_age: 86_400,
                mx: vec!["mx.example.com".into(), "*.example.net".into()],
                lines: vec!["version: STSv1".into()].into(),
            },
            fetched_at_ms,
            checked_at_ms,
        }
    }

    const OPTS: ReplyOptions = ReplyOptions {
        strict_testing: false,
        require_sni: true,
        tlsrpt: false,
    };

    #[test]
    fn fresh_until_exactly_grace_after_the_check() {
        let index = PolicyIndex::new(10, Duration::from_millis(2_000));
        index.store(d("example.com"), entry("a", 1_000, 1_000));
        assert!(matches!(
            index.fresh("example.com", 2_999),
            Fresh::Policy(_)
        ));
        assert!(matches!(index.fresh("example.com", 3_000), Fresh::Miss));
        assert_eq!(
            index.known("example.com", 3_000),
            Held::Entry(entry("a", 1_000, 1_000))
        );
        assert!(matches!(index.fresh("other.example", 0), Fresh::Miss));
    }

    #[test]
    fn replies_are_rendered_once_and_shared() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        index.store(d("example.com"), entry("a", 1_000, 1_000));
        let Fresh::Policy(c) = index.fresh("example.com", 1_000) else {
            panic!("miss")
        };
        let one = c.reply("example.com", OPTS).unwrap();
        let two = c.reply("example.com", OPTS).unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(
            &*one,
            "secure match=mx.example.com:.example.net servername=hostname"
        );
        let tlsrpt = ReplyOptions {
            tlsrpt: true,
            ..OPTS
        };
        assert!(c
            .reply("example.com", tlsrpt)
            .unwrap()
            .contains("policy_domain=example.com"));
        // Storing the same entry again keeps the rendered replies.
        index.store(d("example.com"), entry("a", 1_000, 1_000));
        let Fresh::Policy(again) = index.fresh("example.com", 1_000) else {
            panic!("miss")
        };
        assert!(Arc::ptr_eq(&again, &c));
    }

    #[test]
    fn every_flavour_has_its_own_reply_rendered_once() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        index.store(d("example.com"), entry("a", 1_000, 1_000));
        let Fresh::Policy(c) = index.fresh("example.com", 1_000) else {
            panic!("miss")
        };
        let flavours: Vec<ReplyOptions> = (0..8u8)
            .map(|f| ReplyOptions {
                strict_testing: f & 1 != 0,
                require_sni: f & 2 != 0,
                tlsrpt: f & 4 != 0,
            })
            .collect();
        // Asked in an order where the inline slot holds a flavour other
        // than the first of the table.
        for opts in flavours.iter().rev().chain(flavours.iter()) {
            let want = render_reply(&c.entry().policy, "example.com", *opts);
            let got = c.reply("example.com", *opts);
            assert_eq!(got.as_deref(), want.as_deref(), "{opts:?}");
            let again = c.reply("example.com", *opts);
            assert!(matches!((&got, &again), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
        }
    }

    #[test]
    fn newer_entry_wins() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        index.store(d("example.com"), entry("b", 2_000, 2_000));
        index.store(d("example.com"), entry("a", 1_000, 5_000));
        assert_eq!(
            index.known("example.com", 2_000),
            Held::Entry(entry("b", 2_000, 2_000))
        );
    }

    #[test]
    fn no_policy_is_remembered_for_grace_and_never_hides_a_policy() {
        let index = PolicyIndex::new(10, Duration::from_secs(1));
        index.note_no_policy(d("none.example"), 10_000);
        assert!(matches!(
            index.fresh("none.example", 10_999),
            Fresh::NoPolicy
        ));
        assert!(matches!(index.fresh("none.example", 11_000), Fresh::Miss));
        assert_eq!(index.known("none.example", 11_000), Held::Miss);
        index.store(d("p.example"), entry("a", 1_000, 1_000));
        index.note_no_policy(d("p.example"), 2_000);
        assert!(matches!(index.known("p.example", 2_000), Held::Entry(_)));
        // A policy replaces the note.
        index.store(d("none.example"), entry("a", 12_000, 12_000));
        assert!(matches!(
            index.fresh("none.example", 12_000),
            Fresh::Policy(_)
        ));
    }

    /// Lookups of domains with no policy, chosen by whoever sends mail,
    /// never evict a policy: notes have their own bound (RFC 8461 §3.3).
    #[test]
    fn no_policy_notes_never_evict_a_policy() {
        for capacity in [200, 4_096] {
            let index = PolicyIndex::new(capacity, Duration::from_secs(60));
            index.store(d("example.com"), entry("a", 1_000, 1_000));
            for i in 0..capacity * 10 {
                index.note_no_policy(d(&format!("n{i}.example.net")), 2_000);
            }
            assert_eq!(
                index.known("example.com", 2_000),
                Held::Entry(entry("a", 1_000, 1_000)),
                "capacity {capacity}"
            );
            // The notes are bounded too, and the latest is held.
            assert!(index.len() <= capacity + 1, "{}", index.len());
            let last = format!("n{}.example.net", capacity * 10 - 1);
            assert!(matches!(index.fresh(&last, 2_000), Fresh::NoPolicy));
            // Policies still compete with each other for `capacity`.
            for i in 0..capacity * 2 {
                index.store(d(&format!("p{i}.example.org")), entry("a", 1_000, 1_000));
            }
            let held = index.entries().len();
            assert!(held <= capacity && held > capacity / 2, "{held}");
        }
    }

    #[test]
    fn a_policy_replaces_a_note_and_an_expired_policy_gives_way_to_one() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        index.note_no_policy(d("example.com"), 1_000);
        index.store(d("example.com"), entry("a", 1_000, 1_000));
        assert_eq!(index.len(), 1);
        assert!(matches!(
            index.fresh("example.com", 1_000),
            Fresh::Policy(_)
        ));
        // Expired (max_age one day): a note takes its place.
        let expired = 1_000 + 86_400_000;
        index.note_no_policy(d("example.com"), expired);
        assert_eq!(index.len(), 1);
        assert_eq!(index.known("example.com", expired), Held::NoPolicy);
        assert!(index.entries().is_empty());
        assert!(index.remove("example.com"));
        assert!(index.is_empty());
    }

    #[test]
    fn dane_results_are_answered_until_their_time() {
        use crate::dane::{NoDane, Verdict};
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        let result = Arc::new(DaneResult::decided(
            Verdict::NoDane(NoDane::MxInsecure),
            Duration::from_secs(5),
        ));
        assert!(index.dane_fresh("example.com", 0).is_none());
        index.store_dane(d("example.com"), result.clone(), 6_000);
        let held = index.dane_fresh("example.com", 5_999);
        assert!(held.is_some_and(|r| Arc::ptr_eq(&r, &result)));
        assert!(index.dane_fresh("example.com", 6_000).is_none());
        // Apart from policies: no policy is held, and a purge forgets both.
        assert_eq!(index.known("example.com", 0), Held::Miss);
        assert!(index.is_empty());
        index.store(d("example.com"), entry("a", 1_000, 1_000));
        assert!(index.remove("example.com"));
        assert!(index.dane_fresh("example.com", 0).is_none());
    }

    /// A policy checked beyond now + MAX_SKEW (imported before our clock
    /// stepped back) is on the work list, not put off until then.
    #[test]
    fn work_list_holds_policies_checked_ahead() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        let now = 1_700_000_000_000;
        index.store(d("ahead.example"), entry("a", now, now + 300_001));
        index.store(d("skewed.example"), entry("a", now, now + 300_000));
        index.store(d("recent.example"), entry("a", now, now - 1_000));
        assert_eq!(
            index.checked_before(now - 60_000, now),
            vec![d("ahead.example")]
        );
    }

    /// Hits within `cache_grace` of the time noted write nothing; the
    /// time survives a new entry for the domain (docs/ARCHITECTURE.md
    /// "Proactive refresh").
    #[test]
    fn asked_time_is_written_at_most_once_per_grace() {
        let index = PolicyIndex::new(10, Duration::from_millis(2_000));
        let asked = |index: &PolicyIndex| match index.fresh("example.com", 0) {
            Fresh::Policy(c) => c.asked_ms(),
            _ => panic!("miss"),
        };
        index.store(d("example.com"), entry("a", 0, 10_000));
        assert_eq!(asked(&index), 0, "stored, never asked");
        for now in (10_000..12_000).step_by(100) {
            assert!(matches!(index.fresh("example.com", now), Fresh::Policy(_)));
        }
        assert_eq!(asked(&index), 10_000, "twenty hits, one write");
        // A lookup's answer notes it too, once the grace has passed.
        index.note_asked("example.com", 11_999);
        assert_eq!(asked(&index), 10_000);
        index.note_asked("example.com", 12_000);
        assert_eq!(asked(&index), 12_000);
        // A refreshed entry keeps the time; a purge forgets it.
        index.store(d("example.com"), entry("a", 0, 12_500));
        assert_eq!(asked(&index), 12_000);
        assert!(index.remove("example.com"));
        index.store(d("example.com"), entry("a", 0, 13_000));
        assert_eq!(asked(&index), 0);
        // A domain with no policy held has nothing to note.
        index.note_asked("other.example", 13_000);
        assert!(matches!(index.fresh("other.example", 13_000), Fresh::Miss));
    }

    /// Idle: not asked for within max_age (or idle_time), counting from
    /// the start when no request was noted; expired with none noted.
    #[test]
    fn idle_rule() {
        const DAY: u64 = 86_400_000;
        const NO_GRACE: Duration = Duration::ZERO;
        let start = 10 * DAY;
        let by_max_age = IdleRule {
            since_ms: start,
            idle_time: None,
        };
        let e = entry("a", start, start);
        assert!(!by_max_age.is_idle(&e, 0, start + DAY - 1, NO_GRACE));
        assert!(by_max_age.is_idle(&e, 0, start + DAY, NO_GRACE));
        assert!(!by_max_age.is_idle(&e, start + 5, start + DAY, NO_GRACE));
        // Asked before the start (an older process): counts from the start.
        let old = entry("a", start - DAY / 2, start - DAY / 2);
        assert!(!by_max_age.is_idle(&old, 0, start + DAY / 4, NO_GRACE));
        // Expired and not asked for since the start: left alone at once.
        let dead = entry("a", start - DAY, start - DAY);
        assert!(by_max_age.is_idle(&dead, 0, start, NO_GRACE));
        assert!(!by_max_age.is_idle(&dead, start, start + 1, NO_GRACE));
        let by_idle_time = IdleRule {
            since_ms: start,
            idle_time: Some(Duration::from_secs(3_600)),
        };
        assert!(!by_idle_time.is_idle(&e, start + 1_000, start + 3_600_999, NO_GRACE));
        assert!(by_idle_time.is_idle(&e, start + 1_000, start + 3_601_000, NO_GRACE));
    }

    /// The asked time lags by up to `cache_grace` (written once per
    /// grace): a domain asked for on every hit never looks idle, even with
    /// an idle time (or `max_age`) no longer than `cache_grace`.
    #[test]
    fn a_domain_asked_all_along_never_looks_idle() {
        let grace = Duration::from_secs(60);
        let index = PolicyIndex::new(10, grace);
        let rule = IdleRule {
            since_ms: 1_000,
            idle_time: Some(Duration::from_secs(30)),
        };
        index.store(d("busy.example"), entry("a", 1_000, 1_000));
        // A hit every second for ten minutes; the round looks at each one.
        for now_ms in (1_000..600_000).step_by(1_000) {
            index.note_asked("busy.example", now_ms);
            assert_eq!(
                index.idle("busy.example", &rule, now_ms + 500),
                Some(false),
                "at {now_ms}"
            );
        }
        // Once the hits stop, it goes idle after idle_time (plus the lag).
        assert_eq!(
            index.idle("busy.example", &rule, 600_000 + 91_000),
            Some(true)
        );
    }

    /// An idle policy leaves memory once expired, not before; a policy
    /// asked for stays.
    #[test]
    fn an_idle_expired_policy_leaves_memory() {
        const DAY: u64 = 86_400_000;
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        let rule = IdleRule {
            since_ms: 1_000,
            idle_time: Some(Duration::from_secs(3_600)),
        };
        index.store(d("idle.example"), entry("a", 1_000, 1_000));
        index.store(d("asked.example"), entry("a", 1_000, 1_000));
        assert_eq!(index.idle("none.example", &rule, 2_000), None);
        assert_eq!(index.idle("idle.example", &rule, 2_000), Some(false));
        // Idle an hour (and the asked time's lag, cache_grace) after the start.
        assert_eq!(index.idle("idle.example", &rule, 3_660_999), Some(false));
        assert_eq!(index.idle("idle.example", &rule, 3_661_000), Some(true));
        assert!(index.known("idle.example", 3_661_000) != Held::Miss);
        index.note_asked("asked.example", DAY);
        let expired = 1_000 + DAY;
        assert_eq!(index.idle("idle.example", &rule, expired), Some(true));
        assert_eq!(index.known("idle.example", expired), Held::Miss);
        assert_eq!(index.idle("asked.example", &rule, expired), Some(false));
        assert!(matches!(
            index.known("asked.example", expired),
            Held::Entry(_)
        ));
    }

    #[test]
    fn work_list_and_purge() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        index.store(d("old.example"), entry("a", 1_000, 1_000));
        index.store(d("new.example"), entry("a", 1_000, 9_000));
        index.note_no_policy(d("none.example"), 0);
        assert_eq!(index.checked_before(5_000, 9_000), vec![d("old.example")]);
        assert_eq!(index.entries().len(), 2);
        assert!(index.remove("old.example"));
        assert_eq!(index.len(), 2);
    }
}
