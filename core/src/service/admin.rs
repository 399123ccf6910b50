//! Cache administration (README.md "Cache administration"): list, show,
//! export, import and purge over the shared index and the persistent store
//! behind it, so a purge takes effect in the running daemon at once. The
//! export format is one JSON object per line: the domain and the entry in
//! the stores' serialised form (`ts`, `pol_id`, `pol_body`, `fetched_at`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::cache::{
    merge, millis_to_f64_secs, policy_from_body, policy_to_json, secs_to_millis, CacheEntry,
    OrderedObject, PolicyIndex, Store, StoreError,
};
use crate::domain::Domain;

/// Why an administration request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An import line is not an exported entry.
    #[error("import line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The caches of a running daemon (or of a store alone, for the query tool
/// when no daemon endpoint is configured).
#[derive(Clone)]
pub struct CacheAdmin {
    index: Option<Arc<PolicyIndex>>,
    store: Option<Arc<dyn Store>>,
    wall: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl CacheAdmin {
    /// Administer `index` (if any) and `store` (if any); `wall` reads the
    /// wall clock (Unix milliseconds), against which times from the store
    /// and from imports are believed (docs/ARCHITECTURE.md "Time").
    pub fn new(
        index: Option<Arc<PolicyIndex>>,
        store: Option<Arc<dyn Store>>,
        wall: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        CacheAdmin {
            index,
            store,
            wall: Arc::new(wall),
        }
    }

    /// Every cached policy, by domain: the newer of memory's and the
    /// store's ([`merge`]).
    pub async fn list(&self) -> Result<Vec<(Domain, CacheEntry)>, AdminError> {
        let mut stored: BTreeMap<Domain, CacheEntry> = BTreeMap::new();
        if let Some(store) = &self.store {
            stored.extend(store.entries().await?);
        }
        let mut held: BTreeMap<Domain, CacheEntry> =
            self.index.iter().flat_map(|i| i.entries()).collect();
        let now_ms = (self.wall)();
        let mut all: BTreeMap<Domain, CacheEntry> = stored
            .into_iter()
            .filter_map(|(domain, entry)| {
                let newer = merge(held.remove(&domain), Ok(Some(entry)), now_ms)?;
                Some((domain, newer))
            })
            .collect();
        all.extend(held);
        Ok(all.into_iter().collect())
    }

    /// The cached policy of `domain`, if any.
    pub async fn show(&self, domain: &Domain) -> Result<Option<CacheEntry>, AdminError> {
        let stored = match &self.store {
            Some(store) => store.get(domain).await?,
            None => None,
        };
        let held = self.index.as_ref().and_then(|i| {
            i.entries()
                .into_iter()
                .find(|(d, _)| d == domain)
                .map(|(_, e)| e)
        });
        Ok(merge(held, Ok(stored), (self.wall)()))
    }

    /// Import exported lines (blank lines skipped): each entry goes to
    /// memory and the store unless a newer one is there; a time beyond
    /// `MAX_SKEW` ahead is taken as now ([`CacheEntry::clamped`]). Returns
    /// how many.
    pub async fn import(&self, text: &str) -> Result<usize, AdminError> {
        let now_ms = (self.wall)();
        let mut parsed = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (domain, entry) =
                parse_export_line(line).map_err(|reason| AdminError::BadLine {
                    line: i + 1,
                    reason,
                })?;
            parsed.push((domain, entry.clamped(now_ms)));
        }
        for (domain, entry) in &parsed {
            if let Some(index) = &self.index {
                index.store(domain.clone(), entry.clone());
            }
            if let Some(store) = &self.store {
                store.set(domain, entry).await?;
            }
        }
        Ok(parsed.len())
    }

    /// Forget `domain` in memory and in the store; true if either held it.
    pub async fn purge(&self, domain: &Domain) -> Result<bool, AdminError> {
        let held = self
            .index
            .as_ref()
            .is_some_and(|i| i.remove(domain.as_str()));
        let stored = match &self.store {
            Some(store) => store.remove(domain).await?,
            None => false,
        };
        Ok(held || stored)
    }

    /// Forget every domain; how many entries were removed (the larger of
    /// memory's and the store's counts).
    pub async fn purge_all(&self) -> Result<u64, AdminError> {
        let held = self.index.as_ref().map_or(0, |i| i.clear()) as u64;
        let stored = match &self.store {
            Some(store) => store.remove_all().await?,
            None => 0,
        };
        Ok(held.max(stored))
    }
}

/// One export line: `{"domain": .., "ts": .., "pol_id": .., "pol_body": {..},
/// "fetched_at": ..}`, times in float Unix seconds, `pol_body` as the
/// stores keep it (the Python original's form).
pub fn export_line(domain: &Domain, entry: &CacheEntry) -> String {
    // Written by hand: `pol_body` keeps the published key order, which a
    // serde_json map would sort.
    format!(
        "{{\"domain\":{},\"ts\":{},\"pol_id\":{},\"pol_body\":{},\"fetched_at\":{}}}",
        Value::from(domain.as_str()),
        Value::from(millis_to_f64_secs(entry.checked_at_ms)),
        Value::from(entry.policy_id.as_str()),
        policy_to_json(&entry.policy),
        Value::from(millis_to_f64_secs(entry.fetched_at_ms)),
    )
}

/// An export line as read back (`pol_body` in document order).
#[derive(serde::Deserialize)]
struct ExportedLine {
    domain: String,
    ts: Value,
    pol_id: String,
    pol_body: OrderedObject,
    fetched_at: Option<Value>,
}

/// Read one export line back.
pub fn parse_export_line(line: &str) -> Result<(Domain, CacheEntry), String> {
    let read: ExportedLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let domain = Domain::new(&read.domain).map_err(|e| e.to_string())?;
    let checked_at_ms = secs_to_millis(&read.ts).ok_or("bad \"ts\"")?;
    let fetched_at_ms = match &read.fetched_at {
        None | Some(Value::Null) => checked_at_ms,
        Some(v) => secs_to_millis(v).ok_or("bad \"fetched_at\"")?,
    };
    let policy = policy_from_body(&read.pol_body).map_err(|e| e.to_string())?;
    Ok((
        domain,
        CacheEntry {
            policy_id: read.pol_id,
            policy,
            fetched_at_ms,
            checked_at_ms,
        },
    ))
}

/// A line for people: domain, mode, id, fetched, expires, last check (UTC).
pub fn summary_line(domain: &Domain, entry: &CacheEntry) -> String {
    format!(
        "{domain} {} id={} fetched={} expires={} checked={}",
        entry.policy.mode,
        entry.policy_id,
        utc(entry.fetched_at_ms),
        utc(entry.expires_at_ms()),
        utc(entry.checked_at_ms)
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix millisecond time (cache listings, and
/// the host's log lines: docs/ARCHITECTURE.md "Logs").
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian `(year, month, day)`
/// (H. Hinnant's algorithm), for [`utc`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_722), (2023, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
    use crate::cache::Fresh;
    use crate::policy::parse_policy;
    use futures::executor::block_on;
    use std::time::Duration;

    fn entry(id: &str, at: u64) -> CacheEntry {
        CacheEntry {
            policy_id: id.into(),
            policy: parse_policy(
                b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n",
            )
            .unwrap(),
            fetched_at_ms: at,
            checked_at_ms: at,
        }
    }

    fn d(s: &str) -> Domain {
        s.parse().unwrap()
    }

    /// The admin's wall clock in these tests.
    const NOW: u64 = 1_700_000_100_000;

    #[test]
    fn an_imported_time_ahead_of_the_clock_is_taken_as_now() {
        let index = Arc::new(PolicyIndex::new(100, Duration::from_secs(2)));
        let admin = CacheAdmin::new(Some(index.clone()), None, || NOW);
        let ten_days = 10 * 86_400_000;
        let ahead = export_line(&d("a.example"), &entry("1", NOW + ten_days));
        let skewed = export_line(&d("b.example"), &entry("2", NOW + 300_000));
        assert_eq!(
            block_on(admin.import(&format!("{ahead}\n{skewed}"))).unwrap(),
            2
        );
        // Fresh for cache_grace from now, expiring max_age from now.
        let now = entry("1", NOW);
        assert_eq!(block_on(admin.show(&d("a.example"))).unwrap(), Some(now));
        assert!(matches!(
            index.fresh("a.example", NOW + 1_999),
            Fresh::Policy(_)
        ));
        assert!(matches!(index.fresh("a.example", NOW + 2_000), Fresh::Miss));
        // Within MAX_SKEW a time is kept as it is.
        assert_eq!(
            block_on(admin.show(&d("b.example"))).unwrap(),
            Some(entry("2", NOW + 300_000))
        );
    }

    #[test]
    fn export_and_import_round_trip_through_memory() {
        let index = Arc::new(PolicyIndex::new(100, Duration::from_secs(60)));
        index.store(d("a.example"), entry("1", 1_700_000_000_123));
        index.store(d("b.example"), entry("2", 1_700_000_001_000));
        let admin = CacheAdmin::new(Some(index.clone()), None, || NOW);
        let listed = block_on(admin.list()).unwrap();
        assert_eq!(listed.len(), 2);
        let exported: String = listed
            .iter()
            .map(|(d, e)| export_line(d, e) + "\n")
            .collect();
        assert_eq!(block_on(admin.purge_all()).unwrap(), 2);
        assert!(block_on(admin.list()).unwrap().is_empty());
        assert_eq!(block_on(admin.import(&exported)).unwrap(), 2);
        assert_eq!(block_on(admin.list()).unwrap(), listed);
        assert!(block_on(admin.purge(&d("a.example"))).unwrap());
        assert!(!block_on(admin.purge(&d("a.example"))).unwrap());
        assert_eq!(block_on(admin.show(&d("a.example"))).unwrap(), None);
        assert_eq!(
            block_on(admin.show(&d("b.example"))).unwrap(),
            Some(entry("2", 1_700_000_001_000))
        );
    }

    #[test]
    fn bad_import_lines_are_named() {
        let admin = CacheAdmin::new(None, None, || NOW);
        let err = block_on(admin.import("\n{\"domain\": \"x.example\"}\n")).unwrap_err();
        assert!(err.to_string().starts_with("import line 2:"), "{err}");
    }

    #[test]
    fn summary_and_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        let line = summary_line(&d("a.example"), &entry("1", 1_700_000_000_000));
        assert!(
            line.starts_with(
                "a.example enforce id=1 fetched=2023-11-14T22:13:20Z expires=2023-11-15T22:13:20Z"
            ),
            "{line}"
        );
    }
}
