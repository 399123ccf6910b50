//! The `redis` cache store (`cache.type: redis`): one key per domain under a configurable prefix,
//! holding the JSON of [`entry_to_json`], with an expiry derived from the
//! policy's `max_age` (RFC 8461 §3.2) plus a margin. Several daemons on
//! several machines may share one Redis, so a write never replaces a newer
//! entry with an older one: the comparison runs inside Redis, atomically, as
//! the Lua script [`SET_IF_NOT_NEWER`].
//!
//! All the logic lives here; the drivers only supply the few Redis commands
//! ([`RedisCommands`]) with their runtime's Redis client, so core stays free
//! of any runtime dependency.

use super::format::{entry_from_json, entry_to_json, f64_secs_to_millis, millis_to_f64_secs};
use super::{CacheEntry, Store, StoreError};
use crate::domain::Domain;

/// Seconds a key outlives its policy: Redis
/// drops the record a day after the policy expired, so clock skew between
/// the machines sharing the Redis never hides a still-valid policy.
pub const TTL_MARGIN: u64 = 86_400;

/// Suffix of the key holding the last proactive refresh round's time. `!` never occurs in a domain name, so
/// the key cannot collide with a domain's.
pub const PROACTIVE_KEY_SUFFIX: &str = "!proactive_fetch_ts";

/// Keys fetched per `MGET` while listing stale domains: bounds one reply's
/// size on a big cache.
const MGET_CHUNK: usize = 256;

/// Atomic compare-and-set of one entry (a write never replaces a newer
/// entry with an older one).
///
/// `KEYS[1]`: the domain's key. `ARGV`: the new entry's JSON, its
/// `fetched_at`, its `ts` (`checked_at`), both float Unix seconds, and the
/// TTL in seconds. The stored
/// record's `(fetched_at, ts)` is compared as [`CacheEntry::is_newer_than`]
/// does (a record without `fetched_at` was fetched at `ts`, as in
/// [`entry_from_json`]); a record that is not JSON or has no `ts` is
/// overwritten. Returns 1 when written, 0 when the stored entry is newer.
pub const SET_IF_NOT_NEWER: &str = r#"
local old = redis.call('GET', KEYS[1])
if old then
  local ok, e = pcall(cjson.decode, old)
  local ts = ok and type(e) == 'table' and tonumber(e.ts)
  if ts then
    local fetched = tonumber(e.fetched_at) or ts
    local nf, nt = tonumber(ARGV[2]), tonumber(ARGV[3])
    if fetched > nf or (fetched == nf and ts > nt) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1
"#;

/// The few Redis commands the backend needs, implemented by each driver
/// with its runtime's Redis client. Every call must give up within the
/// configured `socket_timeout` and report a down or slow server as
/// [`StoreError::Backend`].
#[async_trait::async_trait]
pub trait RedisCommands: Send + Sync + 'static {
    /// `GET key` (a non-UTF-8 value may be converted lossily).
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// `SET key value` with no expiry.
    async fn set(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// `EVAL script numkeys keys.. args..` returning an integer.
    async fn eval_int(
        &self,
        script: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<i64, StoreError>;
    /// Every key matching the glob `pattern`, via `SCAN .. MATCH` (may hold
    /// duplicates, as `SCAN` does).
    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError>;
    /// `MGET keys..`: one value per key, in order.
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError>;
}

/// Escape the glob metacharacters of `text` for `SCAN .. MATCH`, so a
/// prefix like `mta[sts]:` only matches itself.
pub fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Seconds the record of `entry` should live when written at `now_ms`: the
/// policy's remaining lifetime (RFC 8461 §3.2 `max_age`, counted from the
/// fetch, rounded up) plus [`TTL_MARGIN`]; never zero, so Redis always
/// accepts it.
pub fn entry_ttl(entry: &CacheEntry, now_ms: u64) -> u64 {
    entry
        .expires_at_ms()
        .saturating_sub(now_ms)
        .div_ceil(1000)
        .saturating_add(TTL_MARGIN)
}

/// The `redis` [`Store`] over a driver's [`RedisCommands`].
pub struct RedisBackend<C: RedisCommands> {
    commands: C,
    prefix: String,
    wall: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl<C: RedisCommands> RedisBackend<C> {
    /// A store keeping keys `<prefix><domain>` through `commands`; `wall`
    /// reads the wall clock (Unix milliseconds) for the keys' TTL.
    pub fn new(
        commands: C,
        prefix: impl Into<String>,
        wall: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        RedisBackend {
            commands,
            prefix: prefix.into(),
            wall: Box::new(wall),
        }
    }

    /// The driver's commands (for tests and diagnostics).
    pub fn commands(&self) -> &C {
        &self.commands
    }

    /// The key of `domain`'s entry: `<prefix><domain>`.
    pub fn key(&self, domain: &Domain) -> String {
        format!("{}{}", self.prefix, domain.as_str())
    }

    /// The key of the last proactive refresh round's time.
    pub fn proactive_key(&self) -> String {
        format!("{}{PROACTIVE_KEY_SUFFIX}", self.prefix)
    }

    /// The domain whose entry `key` holds, or `None` for keys of others
    /// (another prefix, the proactive key, anything not a domain).
    pub fn domain_of_key(&self, key: &str) -> Option<Domain> {
        key.strip_prefix(&self.prefix)
            .and_then(|name| Domain::new(name).ok())
    }
}

fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        domain: what.into(),
        reason: reason.to_string(),
    }
}

#[async_trait::async_trait]
impl<C: RedisCommands> Store for RedisBackend<C> {
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError> {
        match self.commands.get(&self.key(domain)).await? {
            None => Ok(None),
            Some(text) => entry_from_json(&text)
                .map(Some)
                .map_err(|e| corrupt(domain.as_str(), e)),
        }
    }

    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        let ttl = entry_ttl(entry, (self.wall)());
        let args = [
            entry_to_json(entry),
            millis_to_f64_secs(entry.fetched_at_ms).to_string(),
            millis_to_f64_secs(entry.checked_at_ms).to_string(),
            ttl.to_string(),
        ];
        let written = self
            .commands
            .eval_int(SET_IF_NOT_NEWER, &[self.key(domain)], &args)
            .await?;
        if written == 0 {
            log::debug!("{domain}: cache holds a newer entry, not replaced");
        }
        Ok(())
    }

    async fn checked_before(&self, before_ms: u64) -> Result<Vec<Domain>, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut keyed: Vec<(String, Domain)> = self
            .commands
            .scan_keys(&pattern)
            .await?
            .into_iter()
            .filter_map(|key| self.domain_of_key(&key).map(|d| (key, d)))
            .collect();
        // SCAN may report a key more than once.
        keyed.sort();
        keyed.dedup();
        let mut stale = Vec::new();
        for chunk in keyed.chunks(MGET_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let values = self.commands.mget(&keys).await?;
            for ((_, domain), value) in chunk.iter().zip(values) {
                // None: the key expired since the scan.
                let Some(text) = value else { continue };
                match entry_from_json(&text) {
                    Ok(entry) if entry.checked_at_ms >= before_ms => {}
                    Ok(_) => stale.push(domain.clone()),
                    // Refreshing an unreadable entry overwrites it
                    // (SET_IF_NOT_NEWER replaces what it cannot read).
                    Err(e) => {
                        log::warn!("{domain}: unreadable cache entry, refreshing it: {e}");
                        stale.push(domain.clone());
                    }
                }
            }
        }
        Ok(stale)
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
        let key = self.proactive_key();
        match self.commands.get(&key).await? {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(f64_secs_to_millis)
                .map(Some)
                .ok_or_else(|| corrupt(key, "not a Unix time")),
        }
    }

    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError> {
        self.commands
            .set(&self.proactive_key(), &millis_to_f64_secs(ts_ms).to_string())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Policy};
    use futures::executor::block_on;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A Redis in memory: values and the TTL given with them. `eval_int`
    /// implements [`SET_IF_NOT_NEWER`] directly, on the same arguments.
    #[derive(Default)]
    struct FakeRedis {
        data: Mutex<BTreeMap<String, (String, Option<u64>)>>,
        down: Mutex<bool>,
    }

    impl FakeRedis {
        fn check_up(&self) -> Result<(), StoreError> {
            if *self.down.lock().unwrap() {
                Err(StoreError::Backend("connection refused".into()))
            } else {
                Ok(())
            }
        }

        fn put_raw(&self, key: &str, value: &str) {
            self.data
                .lock()
                .unwrap()
                .insert(key.into(), (value.into(), None));
        }

        fn raw(&self, key: &str) -> Option<(String, Option<u64>)> {
            self.data.lock().unwrap().get(key).cloned()
        }
    }

    /// Stored `(fetched_at, ts)` the way the Lua script reads them.
    fn stored_stamps(text: &str) -> Option<(u64, u64)> {
        let e = entry_from_json(text).ok()?;
        Some((e.fetched_at_ms, e.checked_at_ms))
    }

    fn secs(text: &str) -> u64 {
        f64_secs_to_millis(text.parse().unwrap()).unwrap()
    }

    #[async_trait::async_trait]
    impl RedisCommands for FakeRedis {
        async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
            self.check_up()?;
            Ok(self.raw(key).map(|(v, _)| v))
        }

        async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
            self.check_up()?;
            self.put_raw(key, value);
            Ok(())
        }

        async fn eval_int(
            &self,
            script: &str,
            keys: &[String],
            args: &[String],
        ) -> Result<i64, StoreError> {
            self.check_up()?;
            assert_eq!(script, SET_IF_NOT_NEWER);
            let [key] = keys else { panic!("one key") };
            let [json, fetched, ts, ttl] = args else {
                panic!("four args")
            };
            let new: (u64, u64) = (secs(fetched), secs(ts));
            let mut data = self.data.lock().unwrap();
            if let Some(old) = data.get(key).and_then(|(v, _)| stored_stamps(v)) {
                if old > new {
                    return Ok(0);
                }
            }
            data.insert(key.clone(), (json.clone(), Some(ttl.parse().unwrap())));
            Ok(1)
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

        async fn mget(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
            self.check_up()?;
            Ok(keys.iter().map(|k| self.raw(k).map(|(v, _)| v)).collect())
        }
    }

    /// Unix milliseconds; `S` is a second.
    const NOW: u64 = 1_700_000_000_000;
    const S: u64 = 1000;

    fn backend() -> RedisBackend<FakeRedis> {
        RedisBackend::new(FakeRedis::default(), "mta-sts:", || NOW)
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
                ],
            },
            fetched_at_ms,
            checked_at_ms,
        }
    }

    #[test]
    fn round_trip_under_the_prefix_with_a_ttl() {
        let b = backend();
        let e = entry("20160831085700Z", NOW - 100 * S, NOW - 10 * S);
        block_on(b.set(&d("example.com"), &e)).unwrap();
        assert_eq!(block_on(b.get(&d("example.com"))).unwrap(), Some(e.clone()));
        assert_eq!(block_on(b.get(&d("example.net"))).unwrap(), None);
        let (json, ttl) = b.commands().raw("mta-sts:example.com").unwrap();
        assert_eq!(json, entry_to_json(&e));
        // 604800 - 100 seconds of policy left, plus the margin.
        assert_eq!(ttl, Some(604_700 + TTL_MARGIN));
    }

    #[test]
    fn ttl_keeps_the_margin_after_expiry() {
        let e = entry("a", 1000 * S, 2000 * S);
        assert_eq!(entry_ttl(&e, 1000 * S), 604_800 + TTL_MARGIN);
        // Part of a second left counts as a second.
        assert_eq!(entry_ttl(&e, 1000 * S + 1), 604_800 + TTL_MARGIN);
        assert_eq!(entry_ttl(&e, (1000 + 604_800) * S), TTL_MARGIN);
        assert_eq!(entry_ttl(&e, u64::MAX), TTL_MARGIN);
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
    }

    #[test]
    fn python_records_without_fetched_at_compare_by_ts() {
        let b = backend();
        let dom = d("example.com");
        let py = r#"{"ts": 1700000000, "pol_id": "x", "pol_body": {"version": "STSv1", "mode": "testing", "max_age": 86400, "mx": ["mx.example.com"]}}"#;
        b.commands().put_raw("mta-sts:example.com", py);
        let got = block_on(b.get(&dom)).unwrap().unwrap();
        assert_eq!((got.fetched_at_ms, got.checked_at_ms), (NOW, NOW));
        block_on(b.set(&dom, &entry("older", NOW - S, NOW + 5 * S))).unwrap();
        assert_eq!(block_on(b.get(&dom)).unwrap(), Some(got));
    }

    #[test]
    fn unreadable_records_are_corrupt_and_get_overwritten() {
        let b = backend();
        let dom = d("example.com");
        b.commands().put_raw("mta-sts:example.com", "not json");
        assert!(matches!(
            block_on(b.get(&dom)),
            Err(StoreError::Corrupt { domain, .. }) if domain == "example.com"
        ));
        // Listed for refresh, and the refresh's write replaces it.
        assert_eq!(block_on(b.checked_before(0)).unwrap(), vec![dom.clone()]);
        let e = entry("a", NOW, NOW);
        block_on(b.set(&dom, &e)).unwrap();
        assert_eq!(block_on(b.get(&dom)).unwrap(), Some(e));
    }

    #[test]
    fn lists_domains_checked_before_the_limit() {
        let b = backend();
        block_on(b.set(&d("old.example"), &entry("a", NOW - 500 * S, NOW - 300 * S))).unwrap();
        block_on(b.set(&d("edge.example"), &entry("a", NOW - 500 * S, NOW - 200 * S))).unwrap();
        block_on(b.set(&d("new.example"), &entry("a", NOW - 500 * S, NOW - 100 * S))).unwrap();
        block_on(b.set_proactive_ts(NOW)).unwrap();
        // Keys of others and junk under our prefix are left alone.
        b.commands().put_raw("other:stale.example", "{}");
        b.commands().put_raw("mta-sts:Not A Domain", "{}");
        assert_eq!(
            block_on(b.checked_before(NOW - 200 * S)).unwrap(),
            vec![d("old.example")]
        );
        assert_eq!(
            block_on(b.checked_before(NOW - 150 * S)).unwrap(),
            vec![d("edge.example"), d("old.example")]
        );
        assert!(block_on(b.checked_before(0)).unwrap().is_empty());
    }

    #[test]
    fn proactive_ts_round_trip_under_a_meta_key() {
        let b = backend();
        assert_eq!(block_on(b.proactive_ts()).unwrap(), None);
        block_on(b.set_proactive_ts(NOW)).unwrap();
        assert_eq!(block_on(b.proactive_ts()).unwrap(), Some(NOW));
        assert_eq!(
            b.commands().raw("mta-sts:!proactive_fetch_ts"),
            Some(("1700000000".to_string(), None))
        );
        assert_eq!(b.domain_of_key(&b.proactive_key()), None);
        b.commands().put_raw(&b.proactive_key(), "soon");
        assert!(matches!(
            block_on(b.proactive_ts()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_down_server_is_an_error_not_a_panic() {
        let b = backend();
        *b.commands().down.lock().unwrap() = true;
        let dom = d("example.com");
        assert!(matches!(block_on(b.get(&dom)), Err(StoreError::Backend(_))));
        assert!(block_on(b.set(&dom, &entry("a", 1, 1))).is_err());
        assert!(block_on(b.checked_before(NOW)).is_err());
        assert!(block_on(b.proactive_ts()).is_err());
        assert!(block_on(b.set_proactive_ts(NOW)).is_err());
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("mta-sts:"), "mta-sts:");
        assert_eq!(escape_glob(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
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

        #[test]
        fn ttl_is_at_least_the_margin(fetched in any::<u64>(), max_age in any::<u64>(), now in any::<u64>()) {
            let mut e = entry("a", fetched, fetched);
            e.policy.max_age = max_age;
            prop_assert!(entry_ttl(&e, now) >= TTL_MARGIN);
        }
    }
}
