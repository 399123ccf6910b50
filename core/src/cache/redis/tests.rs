//! The Redis store's logic against an in-memory fake whose scripts do what
//! the Lua in [`super::scripts`] does (the host's tests run the real Lua on
//! a real `redis-server`).

use super::layout::{encode_member, SEED_LEN};
use super::*;
use crate::policy::{Mode, Policy};
use futures::executor::block_on;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// A sorted set: members with their scores.
    Zset(Vec<(Vec<u8>, f64)>),
    Str(String),
    Hash(BTreeMap<String, String>),
}

/// A Redis in memory: values and their TTL.
#[derive(Default)]
struct FakeRedis {
    data: Mutex<BTreeMap<String, (Value, Option<u64>)>>,
    down: Mutex<bool>,
}

fn arg(args: &[Vec<u8>], i: usize) -> String {
    String::from_utf8(args[i].clone()).unwrap()
}

impl FakeRedis {
    fn check_up(&self) -> Result<(), StoreError> {
        if *self.down.lock().unwrap() {
            Err(StoreError::Backend("connection refused".into()))
        } else {
            Ok(())
        }
    }

    fn put(&self, key: &str, value: Value) {
        self.data.lock().unwrap().insert(key.into(), (value, None));
    }

    fn raw(&self, key: &str) -> Option<(Value, Option<u64>)> {
        self.data.lock().unwrap().get(key).cloned()
    }

    /// `ZREVRANGE key 0 0 WITHSCORES` of a sorted set.
    fn top(&self, key: &str) -> Option<(Vec<u8>, f64)> {
        match self.raw(key) {
            Some((Value::Zset(members), _)) => {
                members.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))
            }
            _ => None,
        }
    }

    fn set_if_not_newer(&self, key: &str, args: &[Vec<u8>]) -> Result<Reply, StoreError> {
        match self.raw(key) {
            None | Some((Value::Str(_), _)) => {}
            Some((Value::Zset(_), _)) => {
                if let Some((member, score)) = self.top(key) {
                    let limit: u64 = arg(args, 5).parse().unwrap();
                    let believed = |t: u64| if t > limit { 0 } else { t };
                    let checked = (score * 1000.0 + 0.5).floor() as u64;
                    let fetched = layout::seed_fetched_at(&member).unwrap_or(checked);
                    let (fetched, checked) = (believed(fetched), believed(checked));
                    let new: (u64, u64) =
                        (arg(args, 2).parse().unwrap(), arg(args, 3).parse().unwrap());
                    if (fetched, checked) > new {
                        return Ok(Reply::Int(0));
                    }
                }
            }
            Some(_) => return Err(StoreError::Backend("WRONGTYPE".into())),
        }
        let score: f64 = arg(args, 1).parse().unwrap();
        let ttl: u64 = arg(args, 4).parse().unwrap();
        self.data.lock().unwrap().insert(
            key.into(),
            (Value::Zset(vec![(args[0].clone(), score)]), Some(ttl)),
        );
        Ok(Reply::Int(1))
    }
}

#[async_trait::async_trait]
impl RedisCommands for FakeRedis {
    async fn eval(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<Reply, StoreError> {
        self.check_up()?;
        match script.name {
            "get_entry" => Ok(match self.top(&keys[0]) {
                Some((member, score)) => Reply::Array(vec![
                    Reply::Data(member),
                    Reply::Data(score.to_string().into_bytes()),
                ]),
                None => Reply::Nil,
            }),
            "set_if_not_newer" => self.set_if_not_newer(&keys[0], args),
            "stale_keys" => {
                let before: u64 = arg(args, 0).parse().unwrap();
                let limit: u64 = arg(args, 1).parse().unwrap();
                let stale = keys
                    .iter()
                    .filter(|k| {
                        self.top(k).is_some_and(|(_, s)| {
                            let checked = (s * 1000.0 + 0.5).floor() as u64;
                            checked < before || checked > limit
                        })
                    })
                    .map(|k| Reply::Data(k.clone().into_bytes()))
                    .collect();
                Ok(Reply::Array(stale))
            }
            "get_proactive_ts" => Ok(match self.raw(&keys[0]) {
                Some((Value::Hash(h), _)) => h
                    .get("proactive_fetch_ts")
                    .map_or(Reply::Nil, |v| Reply::Data(v.clone().into_bytes())),
                _ => Reply::Nil,
            }),
            "set_proactive_ts" => {
                let mut data = self.data.lock().unwrap();
                let slot = data
                    .entry(keys[0].clone())
                    .or_insert((Value::Hash(BTreeMap::new()), None));
                let Value::Hash(h) = &mut slot.0 else {
                    return Err(StoreError::Backend("WRONGTYPE".into()));
                };
                h.insert("proactive_fetch_ts".into(), arg(args, 0));
                Ok(Reply::Int(1))
            }
            "remove_entry" => {
                let mut data = self.data.lock().unwrap();
                let is_set = matches!(data.get(&keys[0]), Some((Value::Zset(_), _)));
                if is_set {
                    data.remove(&keys[0]);
                }
                Ok(Reply::Int(i64::from(is_set)))
            }
            other => panic!("unknown script {other}"),
        }
    }

    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        self.check_up()?;
        // Enough glob for the backend's `<escaped prefix>*`.
        let prefix = pattern.strip_suffix('*').unwrap().replace('\\', "");
        let data = self.data.lock().unwrap();
        let keys: Vec<String> = data
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        // SCAN may repeat keys: so does the fake.
        Ok(keys.iter().chain(keys.iter()).cloned().collect())
    }
}

/// Unix milliseconds; `S` is a second.
const NOW: u64 = 1_700_000_000_000;
const S: u64 = 1000;

fn backend() -> RedisBackend<FakeRedis> {
    RedisBackend::new(FakeRedis::default(), "", || NOW)
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

fn entry(id: &str, fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
    CacheEntry {
        policy_id: id.into(),
        policy: Policy {
            mode: Mode::Enforce,
            max_age: 604_800,
            mx: vec!["mail.example.com".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mail.example.com".into(),
                "max_age: 604800".into(),
            ]
            .into(),
        },
        fetched_at_ms,
        checked_at_ms,
    }
}

/// A member as the Python original writes it: 16 random (UUIDv4) bytes and
/// `json.dumps([pol_id, pol_body])`.
fn python_member(id: &str) -> Vec<u8> {
    let mut m = vec![7, 7, 7, 7, 7, 7, 0x41, 7, 0x80, 7, 7, 7, 7, 7, 7, 7];
    m.extend_from_slice(
        format!(r#"["{id}", {{"mx": ["mx.example.com"], "version": "STSv1", "mode": "testing", "max_age": 86400}}]"#)
            .as_bytes(),
    );
    m
}

#[test]
fn round_trip_under_the_bare_domain_with_a_ttl() {
    let b = backend();
    let e = entry("20160831085700Z", NOW - 100 * S, NOW - 10 * S);
    block_on(b.set(&d("example.com"), &e)).unwrap();
    assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), Some(e.clone()));
    assert_eq!(block_on(b.get(&d("example.net"))).unwrap(), None);
    let (value, ttl) = b.commands().raw("example.com").unwrap();
    let Value::Zset(members) = value else {
        panic!("not a sorted set")
    };
    assert_eq!(members, vec![(encode_member(&e), 1_699_999_990.0)]);
    assert_eq!(ttl, Some(MAX_AGE_CAP + TTL_MARGIN));
}

#[test]
fn prefix_namespaces_every_key() {
    let b = RedisBackend::new(FakeRedis::default(), "mta-sts:", || NOW);
    block_on(b.set(&d("example.com"), &entry("a", NOW, NOW))).unwrap();
    block_on(b.set_proactive_ts(NOW)).unwrap();
    assert!(b.commands().raw("mta-sts:example.com").is_some());
    assert!(b.commands().raw("mta-sts:_metadata").is_some());
    assert!(b.commands().raw("example.com").is_none());
    assert_eq!(
        b.domain_of_key("mta-sts:example.com"),
        Some(d("example.com"))
    );
    assert_eq!(b.domain_of_key("example.com"), None);
    assert_eq!(b.domain_of_key("mta-sts:_metadata"), None);
}

#[test]
fn ttl_covers_the_longest_policy_plus_the_margin() {
    let e = entry("a", 1000 * S, 2000 * S);
    assert_eq!(entry_ttl(&e, 1000 * S), MAX_AGE_CAP + TTL_MARGIN);
    assert_eq!(entry_ttl(&e, u64::MAX), MAX_AGE_CAP + TTL_MARGIN);
    // A fetch time ahead of this clock (skew) keeps its whole lifetime.
    let mut long = entry("a", 10_000 * S, 10_000 * S);
    long.policy.max_age = MAX_AGE_CAP;
    assert_eq!(entry_ttl(&long, 9_000 * S), MAX_AGE_CAP + 1000 + TTL_MARGIN);
}

#[test]
fn an_older_entry_never_replaces_a_newer_one() {
    let b = backend();
    let dom = d("example.com");
    let newer = entry("new", NOW - 10 * S, NOW - 5 * S);
    block_on(b.set(&dom, &newer)).unwrap();
    // Older fetch, even if checked later.
    block_on(b.set(&dom, &entry("old", NOW - 20 * S, NOW))).unwrap();
    // Same fetch, older check.
    block_on(b.set(&dom, &entry("old", NOW - 10 * S, NOW - 6 * S))).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(newer.clone()));
    // A later check of the same fetch replaces it.
    let checked = entry("new", NOW - 10 * S, NOW);
    block_on(b.set(&dom, &checked)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(checked));
    // A newer fetch checked earlier than the stored check replaces it too,
    // and stays the only member.
    let refetched = entry("newest", NOW + S, NOW + S);
    let mut early = refetched.clone();
    early.checked_at_ms = NOW - S;
    early.fetched_at_ms = NOW + S;
    block_on(b.set(&dom, &early)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(early));
    let Some((Value::Zset(members), _)) = b.commands().raw("example.com") else {
        panic!("not a sorted set")
    };
    assert_eq!(members.len(), 1);
}

#[test]
fn python_members_are_read_and_compared_by_their_score() {
    let b = backend();
    let dom = d("example.com");
    // Python's ZADD beside an older member of its own, as its pipeline
    // leaves it until ZREMRANGEBYRANK runs: the top score is read.
    b.commands().put(
        "example.com",
        Value::Zset(vec![
            (python_member("older"), 1_600_000_000.0),
            (python_member("py1"), 1_700_000_000.5),
        ]),
    );
    let got = block_on(b.get(&dom)).unwrap().unwrap();
    assert_eq!(got.policy_id, "py1");
    assert_eq!(
        (got.fetched_at_ms, got.checked_at_ms),
        (NOW + 500, NOW + 500)
    );
    assert_eq!(got.policy.mode, Mode::Testing);
    // Fetched before Python's check: kept out, whatever its check time.
    block_on(b.set(&dom, &entry("ours", NOW, NOW + 50 * S))).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap().unwrap().policy_id, "py1");
    block_on(b.set(&dom, &entry("ours", NOW + 501, NOW + 501))).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap().unwrap().policy_id, "ours");
}

#[test]
fn earlier_string_records_are_a_miss_and_get_replaced() {
    let b = backend();
    let dom = d("example.com");
    b.commands()
        .put("example.com", Value::Str("{\"ts\": 1}".into()));
    assert_eq!(block_on(b.get(&dom)).unwrap(), None);
    let e = entry("a", NOW, NOW);
    block_on(b.set(&dom, &e)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e));
    // Any other type is left alone and reported.
    b.commands()
        .put("example.org", Value::Hash(BTreeMap::new()));
    assert!(block_on(b.set(&d("example.org"), &entry("a", NOW, NOW))).is_err());
}

#[test]
fn undecodable_members_are_corrupt() {
    let b = backend();
    let dom = d("example.com");
    let mut bad = vec![0u8; SEED_LEN];
    bad.extend_from_slice(b"not json");
    b.commands()
        .put("example.com", Value::Zset(vec![(bad, 5.0)]));
    assert!(matches!(
        block_on(b.get(&dom)),
        Err(StoreError::Corrupt { domain, .. }) if domain == "example.com"
    ));
    let e = entry("a", NOW, NOW);
    block_on(b.set(&dom, &e)).unwrap();
    assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e));
}

#[test]
fn lists_domains_checked_before_the_limit() {
    let b = backend();
    block_on(b.set(&d("old.example"), &entry("a", NOW - 500 * S, NOW - 300 * S))).unwrap();
    block_on(b.set(
        &d("edge.example"),
        &entry("a", NOW - 500 * S, NOW - 200 * S),
    ))
    .unwrap();
    block_on(b.set(&d("new.example"), &entry("a", NOW - 500 * S, NOW - 100 * S))).unwrap();
    block_on(b.set_proactive_ts(NOW)).unwrap();
    // Checked within MAX_SKEW ahead: believed, not due.
    block_on(b.set(&d("skewed.example"), &entry("a", NOW, NOW + 300 * S))).unwrap();
    // Keys that are not domains, or not sorted sets, are left alone.
    b.commands()
        .put("Not A Domain", Value::Zset(vec![(python_member("x"), 1.0)]));
    b.commands().put("str.example", Value::Str("x".into()));
    let mut stale = block_on(b.checked_before(NOW - 200 * S, NOW)).unwrap();
    assert_eq!(stale, vec![d("old.example")]);
    stale = block_on(b.checked_before(NOW - 150 * S, NOW)).unwrap();
    stale.sort();
    assert_eq!(stale, vec![d("edge.example"), d("old.example")]);
    assert!(block_on(b.checked_before(0, NOW)).unwrap().is_empty());
}

/// A domain checked beyond now + MAX_SKEW (a peer whose clock runs fast, a
/// forged row) is on the proactive work list: refreshed in the background
/// rather than put off until its date (docs/ARCHITECTURE.md "Time").
#[test]
fn lists_domains_checked_beyond_the_believed_limit() {
    let b = backend();
    let ahead = NOW + 10 * 86_400 * S;
    block_on(b.set(&d("ahead.example"), &entry("a", ahead, ahead))).unwrap();
    block_on(b.set(&d("skewed.example"), &entry("a", NOW, NOW + 300 * S))).unwrap();
    block_on(b.set(&d("recent.example"), &entry("a", NOW, NOW - S))).unwrap();
    assert_eq!(
        block_on(b.checked_before(NOW - 60 * S, NOW)).unwrap(),
        vec![d("ahead.example")]
    );
}

#[test]
fn proactive_ts_in_the_metadata_hash() {
    let b = backend();
    assert_eq!(block_on(b.proactive_ts()).unwrap(), None);
    block_on(b.set_proactive_ts(NOW + 250)).unwrap();
    assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(NOW + 250));
    let Some((Value::Hash(h), None)) = b.commands().raw("_metadata") else {
        panic!("no _metadata hash")
    };
    assert_eq!(h["proactive_fetch_ts"], "1700000000.25");
    // Python's own `str(time.time())`.
    b.commands().put(
        "_metadata",
        Value::Hash(BTreeMap::from([(
            "proactive_fetch_ts".into(),
            "1699999999.123456".into(),
        )])),
    );
    assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(1_699_999_999_123));
}

#[test]
fn a_down_server_is_an_error_everywhere() {
    let b = backend();
    *b.commands().down.lock().unwrap() = true;
    let dom = d("example.com");
    assert!(matches!(block_on(b.get(&dom)), Err(StoreError::Backend(_))));
    assert!(block_on(b.set(&dom, &entry("a", 1, 1))).is_err());
    assert!(block_on(b.checked_before(NOW, NOW)).is_err());
    assert!(block_on(b.proactive_ts()).is_err());
    assert!(block_on(b.set_proactive_ts(NOW)).is_err());
}

#[test]
fn glob_metacharacters_are_escaped() {
    assert_eq!(escape_glob("mta-sts:"), "mta-sts:");
    assert_eq!(escape_glob(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
}

#[test]
fn scripts_name_what_the_fake_implements() {
    for s in [
        GET_ENTRY,
        SET_IF_NOT_NEWER,
        STALE_KEYS,
        GET_PROACTIVE_TS,
        SET_PROACTIVE_TS,
    ] {
        assert!(!s.source.trim().is_empty(), "{}", s.name);
    }
    // The marker the CAS script looks for is the layout's.
    assert!(SET_IF_NOT_NEWER.source.contains(r"'MTASTS\0\1'"));
    assert_eq!(layout::SEED_MARKER, *b"MTASTS\x00\x01");
}

proptest! {
    #[test]
    fn keys_round_trip_to_their_domain(name in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}", prefix in "\\PC{0,12}") {
        let b = RedisBackend::new(FakeRedis::default(), prefix, || NOW);
        let dom = d(&name);
        prop_assert_eq!(b.domain_of_key(&b.key(&dom)), Some(dom));
    }

    #[test]
    fn domain_of_key_never_panics(key in "\\PC*") {
        let _ = backend().domain_of_key(&key);
    }

    /// Whatever order writes arrive in, the stored entry is the newest.
    #[test]
    fn keeps_the_newest_of_any_write_order(
        stamps in proptest::collection::vec((0u64..5, 0u64..5), 1..8)
    ) {
        let b = backend();
        let dom = d("example.com");
        let mut best: Option<CacheEntry> = None;
        for (i, (f, c)) in stamps.into_iter().enumerate() {
            let e = entry(&i.to_string(), NOW + f * S, NOW + c * S);
            block_on(b.set(&dom, &e)).unwrap();
            if !best.as_ref().is_some_and(|b| b.is_newer_than(&e)) {
                best = Some(e);
            }
        }
        prop_assert_eq!(block_on(b.get(&dom)).unwrap(), best);
    }
}

#[test]
fn entries_and_purges_cover_policies_only() {
    let b = backend();
    let e = entry("a", NOW - S, NOW);
    block_on(b.set(&d("one.example"), &e)).unwrap();
    block_on(b.set(&d("two.example"), &e)).unwrap();
    block_on(b.set_proactive_ts(NOW)).unwrap();
    let mut all = block_on(b.entries()).unwrap();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(block_on(b.remove(&d("one.example"))).unwrap());
    assert!(!block_on(b.remove(&d("one.example"))).unwrap());
    assert_eq!(block_on(b.remove_all()).unwrap(), 1);
    assert!(block_on(b.entries()).unwrap().is_empty());
    // The metadata hash is not a policy: kept.
    assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(NOW));
}
