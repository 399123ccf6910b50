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

use super::entry::{millis, CacheEntry};
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
    fn new(entry: CacheEntry) -> Self {
        Cached {
            entry,
            replies: Replies::default(),
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

#[derive(Debug)]
enum Known {
    Policy(Arc<Cached>),
    /// The domain publishes no policy (noted at this Unix millisecond).
    NoPolicy(u64),
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

/// A DANE result and the Unix millisecond until which it is answered.
#[derive(Debug)]
struct DaneEntry {
    result: Arc<DaneResult>,
    until_ms: u64,
}

/// The shared index (`cache.options.cache_size` domains at most, and as
/// many DANE results), sharded by domain (`Sharded`). Every operation
/// takes a short lock on one shard (listings, each shard in turn) and
/// never awaits under it.
#[derive(Debug)]
pub struct PolicyIndex {
    grace_ms: AtomicU64,
    map: Sharded<Known>,
    dane: Sharded<DaneEntry>,
}

impl PolicyIndex {
    /// An empty index of at most `capacity` domains, fresh for `grace`.
    pub fn new(capacity: usize, grace: Duration) -> Self {
        PolicyIndex {
            grace_ms: AtomicU64::new(millis(grace)),
            map: Sharded::new(capacity),
            dane: Sharded::new(capacity),
        }
    }

    /// The fresh answer for `domain` at `now_ms`, if any (RFC 8461 §5.1:
    /// within `cache_grace` of the last check, no traffic).
    pub fn fresh(&self, domain: &str, now_ms: u64) -> Fresh {
        let grace_ms = self.grace_ms.load(Ordering::Relaxed);
        let map = self.map.read(domain);
        match map.get(domain) {
            Some(Known::Policy(c)) if c.entry.is_fresh(now_ms, Duration::from_millis(grace_ms)) => {
                Fresh::Policy(c.clone())
            }
            Some(Known::NoPolicy(noted)) if now_ms < noted.saturating_add(grace_ms) => {
                Fresh::NoPolicy
            }
            _ => Fresh::Miss,
        }
    }

    /// Everything known about `domain` at `now_ms`, for the coordinator.
    pub fn known(&self, domain: &str, now_ms: u64) -> Held {
        let grace_ms = self.grace_ms.load(Ordering::Relaxed);
        match self.map.read(domain).get(domain) {
            Some(Known::Policy(c)) => Held::Entry(c.entry.clone()),
            Some(Known::NoPolicy(noted)) if now_ms < noted.saturating_add(grace_ms) => {
                Held::NoPolicy
            }
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
    /// ([`CacheEntry::is_newer_than`]); replaces a "no policy" note.
    pub fn store(&self, domain: Domain, entry: CacheEntry) {
        let mut map = self.map.write(domain.as_str());
        if let Some(Known::Policy(c)) = map.peek(domain.as_str()) {
            if c.entry.is_newer_than(&entry) {
                return;
            }
            if c.entry == entry {
                // Same data: keep the rendered replies.
                return;
            }
        }
        map.insert(domain, Known::Policy(Arc::new(Cached::new(entry))));
    }

    /// Remember that `domain` publishes no policy, unless an unexpired
    /// policy is held (a missing TXT record does not evict one, §5.1).
    pub fn note_no_policy(&self, domain: Domain, now_ms: u64) {
        let mut map = self.map.write(domain.as_str());
        if let Some(Known::Policy(c)) = map.peek(domain.as_str()) {
            if !c.entry.is_expired(now_ms) {
                return;
            }
        }
        map.insert(domain, Known::NoPolicy(now_ms));
    }

    /// Forget `domain` (cache purge), its DANE result too; true if a
    /// policy or "no policy" note was held.
    pub fn remove(&self, domain: &str) -> bool {
        self.dane.write(domain).remove(domain);
        self.map.write(domain).remove(domain)
    }

    /// Forget everything (cache purge --all); how many domains were held.
    pub fn clear(&self) -> usize {
        self.map.clear()
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
        self.dane.insert(domain, DaneEntry { result, until_ms });
    }

    /// Domains holding a policy last checked before `before_ms`: the
    /// proactive refresh's work list for the internal cache.
    pub fn checked_before(&self, before_ms: u64) -> Vec<Domain> {
        let mut due = Vec::new();
        self.map.for_each(|map| {
            due.extend(map.iter().filter_map(|(d, k)| match k {
                Known::Policy(c) if c.entry.checked_at_ms < before_ms => {
                    Some(Domain::from_trusted(d))
                }
                _ => None,
            }))
        });
        due
    }

    /// Every cached policy entry (cache administration).
    pub fn entries(&self) -> Vec<(Domain, CacheEntry)> {
        let mut all = Vec::new();
        self.map.for_each(|map| {
            all.extend(map.iter().filter_map(|(d, k)| match k {
                Known::Policy(c) => Some((Domain::from_trusted(d), c.entry.clone())),
                Known::NoPolicy(_) => None,
            }))
        });
        all
    }

    /// Number of domains held (policies and "no policy" notes).
    pub fn len(&self) -> usize {
        self.map.len()
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

    #[test]
    fn work_list_and_purge() {
        let index = PolicyIndex::new(10, Duration::from_secs(60));
        index.store(d("old.example"), entry("a", 1_000, 1_000));
        index.store(d("new.example"), entry("a", 1_000, 9_000));
        index.note_no_policy(d("none.example"), 0);
        assert_eq!(index.checked_before(5_000), vec![d("old.example")]);
        assert_eq!(index.entries().len(), 2);
        assert!(index.remove("old.example"));
        assert_eq!(index.len(), 2);
    }
}
