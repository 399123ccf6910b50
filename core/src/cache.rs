//! Cache entries and freshness decisions (RFC 8461 §3.3, §5.1; DESIGN.md
//! "Cache and refresh"), the serialised form shared with the Python original,
//! and the bounded in-memory store of the `internal` backend.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use crate::domain::Domain;
use crate::policy::{Mode, Policy, MAX_AGE_CAP};

/// One cached policy for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The TXT record `id` the policy was fetched under.
    pub policy_id: String,
    /// The policy (its mode may be `none`).
    pub policy: Policy,
    /// Wall-clock seconds (Unix) when the policy was fetched: it expires at
    /// `fetched_at + policy.max_age`.
    pub fetched_at: u64,
    /// Wall-clock seconds (Unix) when the TXT id was last confirmed.
    pub checked_at: u64,
}

impl CacheEntry {
    /// Wall-clock second at which the policy stops being valid (RFC 8461
    /// §3.2 `max_age`, counted from the fetch: §5.1, an unchanged id never
    /// extends a policy's lifetime).
    pub fn expires_at(&self) -> u64 {
        self.fetched_at.saturating_add(self.policy.max_age)
    }

    /// True once the policy's `max_age` has run out (RFC 8461 §3.2).
    pub fn is_expired(&self, wall: u64) -> bool {
        wall >= self.expires_at()
    }

    /// True when the entry may be served with no network traffic at all:
    /// unexpired and its TXT id was checked less than `grace_secs` ago
    /// (DESIGN.md "Cache and refresh", `cache_grace`).
    pub fn is_fresh(&self, wall: u64, grace_secs: u64) -> bool {
        !self.is_expired(wall) && wall < self.checked_at.saturating_add(grace_secs)
    }

    /// True when `self` is strictly newer than `other`, comparing
    /// `(fetched_at, checked_at)`: a cache write never replaces a newer entry
    /// with an older one (DESIGN.md "Cache and refresh"; concurrent lookups
    /// and refreshes may finish out of order).
    pub fn is_newer_than(&self, other: &CacheEntry) -> bool {
        (self.fetched_at, self.checked_at) > (other.fetched_at, other.checked_at)
    }
}

/// The entry to fall back on after a failed lookup: the cached policy while
/// it is unexpired, else none (RFC 8461 §5.1, DESIGN.md "Cache and refresh").
pub fn fallback(entry: Option<&CacheEntry>, wall: u64) -> Option<&CacheEntry> {
    entry.filter(|e| !e.is_expired(wall))
}

/// Why a serialised cache record could not be read (DESIGN.md "Cache and
/// refresh": the cache format shared with the Python original).
#[derive(Debug, thiserror::Error)]
pub enum CacheFormatError {
    /// The text is not JSON.
    #[error("cache record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not an object.
    #[error("cache record is not a JSON object")]
    NotObject,
    /// A required field is missing or has the wrong type.
    #[error("cache record field `{0}` is missing or malformed")]
    Field(&'static str),
    /// The policy's `version` is not `STSv1` (RFC 8461 §3.2).
    #[error("cached policy has version {0:?}, expected STSv1")]
    Version(String),
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Testing => "testing",
        Mode::None => "none",
    }
}

fn policy_value(policy: &Policy) -> Value {
    json!({
        "version": "STSv1",
        "mode": mode_str(policy.mode),
        "max_age": policy.max_age,
        "mx": policy.mx,
        "lines": policy.lines,
    })
}

/// Serialise a policy as the Python original's `pol_body` JSON object
/// (`version`, `mode`, `max_age`, `mx`) plus our `lines` key holding the
/// published policy lines (RFC 8461 §3.2; RFC 8460 §4.4 `policy_string`).
pub fn policy_to_json(policy: &Policy) -> String {
    policy_value(policy).to_string()
}

/// Read a seconds value leniently: Python may write an int, a float (from
/// `time.time()`) or, in old records, a numeric string.
fn as_secs(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // Truncation is intended; `as` saturates, never panics.
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string_list(v: &Value, field: &'static str) -> Result<Vec<String>, CacheFormatError> {
    let items = v.as_array().ok_or(CacheFormatError::Field(field))?;
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or(CacheFormatError::Field(field))
        })
        .collect()
}

fn policy_from_value(v: &Value) -> Result<Policy, CacheFormatError> {
    let obj = v.as_object().ok_or(CacheFormatError::NotObject)?;
    let version = obj
        .get("version")
        .and_then(Value::as_str)
        .ok_or(CacheFormatError::Field("version"))?;
    if version != "STSv1" {
        return Err(CacheFormatError::Version(version.to_owned()));
    }
    let mode = match obj
        .get("mode")
        .and_then(Value::as_str)
        .map(|m| m.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        _ => return Err(CacheFormatError::Field("mode")),
    };
    let published_max_age = obj
        .get("max_age")
        .and_then(as_secs)
        .ok_or(CacheFormatError::Field("max_age"))?;
    // A `none` policy may have no mx at all (RFC 8461 §3.2).
    let mx: Vec<String> = match obj.get("mx") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => string_list(v, "mx")?
            .into_iter()
            .map(|m| m.to_ascii_lowercase())
            .collect(),
    };
    let lines = match obj.get("lines") {
        Some(v) => string_list(v, "lines")?,
        // Python records have no `lines`: rebuild the policy as published.
        None => {
            let mut lines = vec![
                "version: STSv1".to_owned(),
                format!("mode: {}", mode_str(mode)),
                format!("max_age: {published_max_age}"),
            ];
            lines.extend(mx.iter().map(|m| format!("mx: {m}")));
            lines
        }
    };
    Ok(Policy {
        mode,
        max_age: published_max_age.min(MAX_AGE_CAP),
        mx,
        lines,
    })
}

/// Parse a `pol_body` JSON object written by [`policy_to_json`] or by the
/// Python original (no `lines` key; extra keys ignored; `max_age` capped to
/// [`MAX_AGE_CAP`] as RFC 8461 §3.2 allows).
pub fn policy_from_json(text: &str) -> Result<Policy, CacheFormatError> {
    policy_from_value(&serde_json::from_str(text)?)
}

/// Serialise a whole entry for the Redis backend:
/// `{"ts": checked_at, "pol_id": .., "pol_body": {..}, "fetched_at": ..}`
/// (DESIGN.md "Cache and refresh").
pub fn entry_to_json(entry: &CacheEntry) -> String {
    json!({
        "ts": entry.checked_at,
        "pol_id": entry.policy_id,
        "pol_body": policy_value(&entry.policy),
        "fetched_at": entry.fetched_at,
    })
    .to_string()
}

/// Parse an entry written by [`entry_to_json`]. A record without
/// `fetched_at` (written by the Python original, which only kept `ts`) is
/// taken as fetched at `ts`; `pol_body` may also be a JSON string.
pub fn entry_from_json(text: &str) -> Result<CacheEntry, CacheFormatError> {
    let value: Value = serde_json::from_str(text)?;
    let obj = value.as_object().ok_or(CacheFormatError::NotObject)?;
    let checked_at = obj
        .get("ts")
        .and_then(as_secs)
        .ok_or(CacheFormatError::Field("ts"))?;
    let policy_id = obj
        .get("pol_id")
        .and_then(Value::as_str)
        .ok_or(CacheFormatError::Field("pol_id"))?
        .to_owned();
    let policy = match obj.get("pol_body") {
        Some(Value::String(s)) => policy_from_json(s)?,
        Some(v) => policy_from_value(v)?,
        None => return Err(CacheFormatError::Field("pol_body")),
    };
    let fetched_at = match obj.get("fetched_at") {
        None | Some(Value::Null) => checked_at,
        Some(v) => as_secs(v).ok_or(CacheFormatError::Field("fetched_at"))?,
    };
    Ok(CacheEntry {
        policy_id,
        policy,
        fetched_at,
        checked_at,
    })
}

/// A stored entry and the use stamp that orders it for eviction.
#[derive(Debug, Clone)]
struct Slot {
    entry: CacheEntry,
    used: u64,
}

/// The `internal` cache backend: a bounded map `Domain -> CacheEntry` that
/// evicts the least recently used domain beyond `cache_size` entries
/// (DESIGN.md "Configuration", `cache.options.cache_size`).
///
/// O(1) amortised: every use pushes `(stamp, domain)` onto a log; eviction
/// pops the oldest log items, skipping those whose stamp is stale (the
/// domain was used again later). The log is compacted when it grows to
/// twice the capacity, so memory stays bounded.
#[derive(Debug, Clone)]
pub struct MemoryCache {
    capacity: usize,
    map: HashMap<Domain, Slot>,
    log: VecDeque<(u64, Domain)>,
    stamp: u64,
}

impl MemoryCache {
    /// An empty cache holding at most `capacity` domains (0 stores nothing).
    pub fn new(capacity: usize) -> Self {
        MemoryCache {
            capacity,
            map: HashMap::new(),
            log: VecDeque::new(),
            stamp: 0,
        }
    }

    /// The entry for `domain`, if any; counts as a use for LRU order.
    pub fn get(&mut self, domain: &Domain) -> Option<CacheEntry> {
        let entry = self.map.get(domain)?.entry.clone();
        self.touch(domain);
        Some(entry)
    }

    /// Store `entry` for `domain`, unless the stored entry is newer (see
    /// [`CacheEntry::is_newer_than`]); evicts the least recently used domain
    /// when over capacity.
    pub fn put(&mut self, domain: Domain, entry: CacheEntry) {
        if self.capacity == 0 {
            return;
        }
        if let Some(slot) = self.map.get(&domain) {
            if slot.entry.is_newer_than(&entry) {
                return;
            }
        }
        self.map.insert(domain.clone(), Slot { entry, used: 0 });
        self.touch(&domain);
        self.evict();
    }

    /// Number of domains stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every stored entry, in no particular order (for proactive refresh).
    pub fn entries(&self) -> impl Iterator<Item = (&Domain, &CacheEntry)> {
        self.map.iter().map(|(d, s)| (d, &s.entry))
    }

    fn touch(&mut self, domain: &Domain) {
        self.stamp += 1;
        if let Some(slot) = self.map.get_mut(domain) {
            slot.used = self.stamp;
            self.log.push_back((self.stamp, domain.clone()));
        }
        if self.log.len() > self.capacity.saturating_mul(2).saturating_add(16) {
            let map = &self.map;
            self.log
                .retain(|(stamp, d)| map.get(d).is_some_and(|s| s.used == *stamp));
        }
    }

    fn evict(&mut self) {
        while self.map.len() > self.capacity {
            let Some((stamp, domain)) = self.log.pop_front() else {
                break;
            };
            if self.map.get(&domain).is_some_and(|s| s.used == stamp) {
                self.map.remove(&domain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::normalize_key;
    use proptest::prelude::*;

    fn d(s: &str) -> Domain {
        normalize_key(s).unwrap()
    }

    fn policy(max_age: u64) -> Policy {
        Policy {
            mode: Mode::Enforce,
            max_age,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                format!("max_age: {max_age}"),
                "mx: mail.example.com".into(),
                "mx: *.example.net".into(),
            ],
        }
    }

    fn entry(fetched_at: u64, checked_at: u64) -> CacheEntry {
        CacheEntry {
            policy_id: "20160831085700Z".into(),
            policy: policy(86400),
            fetched_at,
            checked_at,
        }
    }

    #[test]
    fn lifetime_counts_from_fetch() {
        let e = entry(1000, 5000);
        assert_eq!(e.expires_at(), 87400);
        assert!(!e.is_expired(87399));
        assert!(e.is_expired(87400));
    }

    #[test]
    fn fresh_within_grace_of_last_check_only() {
        let e = entry(1000, 5000);
        assert!(e.is_fresh(5000, 60));
        assert!(e.is_fresh(5059, 60));
        assert!(!e.is_fresh(5060, 60));
        // Never fresh once expired, whatever the check time.
        let e = entry(1000, 87390);
        assert!(!e.is_fresh(87400, 60));
    }

    #[test]
    fn fallback_only_unexpired() {
        let e = entry(1000, 1000);
        assert_eq!(fallback(Some(&e), 87399), Some(&e));
        assert_eq!(fallback(Some(&e), 87400), None);
        assert_eq!(fallback(None, 0), None);
    }

    #[test]
    fn newer_compares_fetch_then_check() {
        assert!(entry(2, 0).is_newer_than(&entry(1, 9)));
        assert!(entry(1, 5).is_newer_than(&entry(1, 4)));
        assert!(!entry(1, 4).is_newer_than(&entry(1, 4)));
        assert!(!entry(1, 4).is_newer_than(&entry(2, 0)));
    }

    #[test]
    fn policy_json_round_trip() {
        let p = policy(604800);
        let text = policy_to_json(&p);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], "STSv1");
        assert_eq!(v["mode"], "enforce");
        assert_eq!(v["max_age"], 604800);
        assert_eq!(v["mx"], json!(["mail.example.com", "*.example.net"]));
        assert_eq!(policy_from_json(&text).unwrap(), p);
    }

    #[test]
    fn python_pol_body_is_read() {
        let text = r#"{"mx": ["mail.example.com"], "version": "STSv1", "mode": "enforce", "max_age": 86400}"#;
        let p = policy_from_json(text).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.mx, vec!["mail.example.com".to_owned()]);
        assert_eq!(
            p.lines,
            vec![
                "version: STSv1",
                "mode: enforce",
                "max_age: 86400",
                "mx: mail.example.com"
            ]
        );
    }

    #[test]
    fn python_variants_tolerated() {
        // none without mx, extra keys, max_age as string, over the cap.
        let p = policy_from_json(
            r#"{"version": "STSv1", "mode": "none", "max_age": "99999999", "x-extra": 1}"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::None);
        assert_eq!(p.max_age, MAX_AGE_CAP);
        assert!(p.mx.is_empty());
        assert_eq!(p.lines[2], "max_age: 99999999");
    }

    #[test]
    fn bad_policy_json_is_an_error() {
        assert!(matches!(
            policy_from_json("nope"),
            Err(CacheFormatError::Json(_))
        ));
        assert!(matches!(
            policy_from_json("[1]"),
            Err(CacheFormatError::NotObject)
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv2","mode":"enforce","max_age":1,"mx":[]}"#),
            Err(CacheFormatError::Version(_))
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv1","mode":"bogus","max_age":1,"mx":[]}"#),
            Err(CacheFormatError::Field("mode"))
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv1","mode":"enforce","max_age":-1,"mx":[]}"#),
            Err(CacheFormatError::Field("max_age"))
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv1","mode":"enforce","max_age":1,"mx":[3]}"#),
            Err(CacheFormatError::Field("mx"))
        ));
    }

    #[test]
    fn entry_json_round_trip() {
        let e = entry(1000, 5000);
        let text = entry_to_json(&e);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ts"], 5000);
        assert_eq!(v["fetched_at"], 1000);
        assert_eq!(v["pol_id"], "20160831085700Z");
        assert_eq!(entry_from_json(&text).unwrap(), e);
    }

    #[test]
    fn entry_without_fetched_at_uses_ts() {
        let text = r#"{"ts": 1700000000.75, "pol_id": "abc", "pol_body":
            {"mx": ["mail.example.com"], "version": "STSv1", "mode": "testing", "max_age": 60}}"#;
        let e = entry_from_json(text).unwrap();
        assert_eq!(e.checked_at, 1_700_000_000);
        assert_eq!(e.fetched_at, 1_700_000_000);
        assert_eq!(e.policy.mode, Mode::Testing);
        // pol_body as a JSON string is accepted too.
        let text = r#"{"ts": 5, "pol_id": "abc", "pol_body":
            "{\"version\": \"STSv1\", \"mode\": \"none\", \"max_age\": 60}"}"#;
        assert_eq!(entry_from_json(text).unwrap().policy.mode, Mode::None);
        assert!(matches!(
            entry_from_json(r#"{"ts": 5, "pol_body": {}}"#),
            Err(CacheFormatError::Field("pol_id"))
        ));
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut c = MemoryCache::new(2);
        c.put(d("a.example"), entry(1, 1));
        c.put(d("b.example"), entry(1, 1));
        // Using a makes b the oldest.
        assert!(c.get(&d("a.example")).is_some());
        c.put(d("c.example"), entry(1, 1));
        assert_eq!(c.len(), 2);
        assert!(c.get(&d("b.example")).is_none());
        assert!(c.get(&d("a.example")).is_some());
        assert!(c.get(&d("c.example")).is_some());
        // Now a is older than c.
        c.put(d("d.example"), entry(1, 1));
        assert!(c.get(&d("a.example")).is_none());
        let mut names: Vec<&str> = c.entries().map(|(d, _)| d.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["c.example", "d.example"]);
    }

    #[test]
    fn lru_zero_capacity_stores_nothing() {
        let mut c = MemoryCache::new(0);
        c.put(d("a.example"), entry(1, 1));
        assert!(c.is_empty());
        assert!(c.get(&d("a.example")).is_none());
    }

    #[test]
    fn put_keeps_newer_entry() {
        let mut c = MemoryCache::new(4);
        c.put(d("a.example"), entry(10, 20));
        c.put(d("a.example"), entry(10, 15));
        assert_eq!(c.get(&d("a.example")), Some(entry(10, 20)));
        c.put(d("a.example"), entry(11, 11));
        assert_eq!(c.get(&d("a.example")), Some(entry(11, 11)));
        // An equal entry replaces (same data, nothing lost).
        c.put(d("a.example"), entry(11, 11));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn lru_log_stays_bounded() {
        let mut c = MemoryCache::new(3);
        c.put(d("a.example"), entry(1, 1));
        for _ in 0..1000 {
            let _ = c.get(&d("a.example"));
        }
        assert!(c.log.len() <= 3 * 2 + 17);
    }

    proptest! {
        #[test]
        fn policy_from_json_never_panics(s in ".*") {
            let _ = policy_from_json(&s);
            let _ = entry_from_json(&s);
        }

        #[test]
        fn entry_round_trips(
            mode in prop_oneof![Just(Mode::Enforce), Just(Mode::Testing), Just(Mode::None)],
            max_age in 0..=MAX_AGE_CAP,
            mx in proptest::collection::vec("[a-z0-9.*-]{1,20}", 0..4),
            lines in proptest::collection::vec(".{0,30}", 0..6),
            id in "[A-Za-z0-9]{1,32}",
            fetched_at: u64,
            checked_at: u64,
        ) {
            let e = CacheEntry {
                policy_id: id,
                policy: Policy { mode, max_age, mx, lines },
                fetched_at,
                checked_at,
            };
            prop_assert_eq!(entry_from_json(&entry_to_json(&e)).unwrap(), e.clone());
            prop_assert_eq!(policy_from_json(&policy_to_json(&e.policy)).unwrap(), e.policy);
        }

        #[test]
        fn lru_matches_model(ops in proptest::collection::vec((0u8..6, any::<bool>()), 0..200)) {
            // Model: a Vec ordered from least to most recently used.
            let cap = 3;
            let mut c = MemoryCache::new(cap);
            let mut model: Vec<u8> = Vec::new();
            for (k, is_put) in ops {
                let dom = d(&format!("d{k}.example"));
                if is_put {
                    c.put(dom, entry(1, 1));
                    model.retain(|m| *m != k);
                    model.push(k);
                    if model.len() > cap {
                        model.remove(0);
                    }
                } else {
                    let hit = c.get(&dom).is_some();
                    prop_assert_eq!(hit, model.contains(&k));
                    if hit {
                        model.retain(|m| *m != k);
                        model.push(k);
                    }
                }
                prop_assert_eq!(c.len(), model.len());
            }
        }
    }
}
