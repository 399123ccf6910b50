//! The Redis cache store (`cache.type: redis` and `redis_sentinel`), in the
//! Python original's layout so both daemons share one Redis (README.md
//! "Caches shared with the Python original"): per domain a sorted set under
//! the domain's name ([`layout`]), the last proactive refresh round in the
//! `_metadata` hash. An optional `prefix` puts every key in a namespace of
//! its own (then the Python original no longer shares them).
//!
//! Each key gets an expiry (the Python original's never expire), long
//! enough that no valid policy is lost ([`entry_ttl`]). Several daemons may
//! share one Redis, so a write never replaces a newer entry with an older
//! one: the comparison runs inside Redis, atomically, as the Lua script
//! [`scripts::SET_IF_NOT_NEWER`], where a stored time beyond
//! `now + MAX_SKEW` counts as the oldest. Reads hand back the stored times;
//! their reader takes them through `cache::merge` at its now.
//!
//! All the logic lives here; the host only supplies two Redis operations
//! ([`RedisCommands`]) with redis-rs, so core stays free of any runtime.

pub mod layout;
pub mod scripts;
#[cfg(test)]
mod tests;

use super::format::{f64_secs_to_millis, millis_to_f64_secs};
use super::{latest_believed, CacheEntry, Store, StoreError};
use crate::domain::Domain;
use crate::policy::MAX_AGE_CAP;
use layout::{decode_member, encode_member};
use scripts::{
    LuaScript, GET_ENTRY, GET_PROACTIVE_TS, REMOVE_ENTRY, SET_IF_NOT_NEWER, SET_PROACTIVE_TS,
    STALE_KEYS,
};

/// Seconds a key outlives the longest policy lifetime: clock skew between
/// the machines sharing the Redis never hides a still-valid policy.
pub const TTL_MARGIN: u64 = 86_400;

/// Name of the hash holding the last proactive refresh round's time (the
/// Python original's `_metadata`, field `proactive_fetch_ts`), after the
/// prefix.
pub const METADATA_KEY: &str = "_metadata";

/// Keys handed to one [`STALE_KEYS`] run while listing stale domains:
/// bounds one script's run time and reply on a big cache.
const STALE_CHUNK: usize = 256;

/// A Redis reply, as far as the store's scripts produce them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nil (a Lua `false`).
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk or status string.
    Data(Vec<u8>),
    /// An array.
    Array(Vec<Reply>),
}

/// The Redis operations the store needs, implemented by the host with
/// redis-rs (plain server or found through Sentinel). Every call must give
/// up within the configured `socket_timeout` and report a down or slow
/// server, or an error reply, as [`StoreError::Backend`].
#[async_trait::async_trait]
pub trait RedisCommands: Send + Sync + 'static {
    /// Run `script` (`EVALSHA`, falling back to `EVAL`) with `keys` and
    /// binary `args`.
    async fn eval(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<Reply, StoreError>;
    /// Every key matching the glob `pattern`, via `SCAN .. MATCH` (may hold
    /// duplicates, as `SCAN` does).
    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError>;
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

/// Seconds the key of `entry` should live when written at `now_ms`: the
/// longer of the policy's remaining lifetime (RFC 8461 §3.2 `max_age`,
/// counted from the fetch, rounded up) and the longest lifetime any policy
/// may have ([`MAX_AGE_CAP`]), plus [`TTL_MARGIN`]. The cap is there for the
/// Python original: its writes keep the key's expiry, so a policy it
/// fetches later into the same key must still fit.
pub fn entry_ttl(entry: &CacheEntry, now_ms: u64) -> u64 {
    entry
        .expires_at_ms()
        .saturating_sub(now_ms)
        .div_ceil(1000)
        .max(MAX_AGE_CAP)
        .saturating_add(TTL_MARGIN)
}

/// The Redis [`Store`] over the host's [`RedisCommands`].
pub struct RedisBackend<C: RedisCommands> {
    commands: C,
    prefix: String,
    wall: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl<C: RedisCommands> RedisBackend<C> {
    /// A store keeping keys `<prefix><domain>` (the Python original's keys
    /// when `prefix` is empty) through `commands`; `wall` reads the wall
    /// clock (Unix milliseconds) for the keys' TTL and the stored times a
    /// write believes.
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

    /// The host's commands (for tests and diagnostics).
    pub fn commands(&self) -> &C {
        &self.commands
    }

    /// The key of `domain`'s record: `<prefix><domain>`.
    pub fn key(&self, domain: &Domain) -> String {
        format!("{}{}", self.prefix, domain.as_str())
    }

    /// The key of the `_metadata` hash.
    pub fn metadata_key(&self) -> String {
        format!("{}{METADATA_KEY}", self.prefix)
    }

    /// The domain whose record `key` holds, or `None` for keys of others
    /// (another prefix, `_metadata`, anything not a domain).
    pub fn domain_of_key(&self, key: &str) -> Option<Domain> {
        key.strip_prefix(&self.prefix)
            .filter(|name| *name != METADATA_KEY)
            .and_then(|name| Domain::new(name).ok())
    }
}

fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        domain: what.into(),
        reason: reason.to_string(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[async_trait::async_trait]
impl<C: RedisCommands> Store for RedisBackend<C> {
    async fn get(&self, domain: &Domain) -> Result<Option<CacheEntry>, StoreError> {
        let keys = [self.key(domain)];
        match self.commands.eval(&GET_ENTRY, &keys, &[]).await? {
            Reply::Nil => Ok(None),
            Reply::Array(items) => match items.as_slice() {
                [Reply::Data(member), Reply::Data(score)] => decode_member(member, &text(score))
                    .map(Some)
                    .map_err(|e| corrupt(domain.as_str(), e)),
                _ => Err(corrupt(domain.as_str(), "unexpected reply shape")),
            },
            other => Err(corrupt(
                domain.as_str(),
                format!("unexpected reply {other:?}"),
            )),
        }
    }

    async fn set(&self, domain: &Domain, entry: &CacheEntry) -> Result<(), StoreError> {
        let now_ms = (self.wall)();
        let ttl = entry_ttl(entry, now_ms);
        let args = [
            encode_member(entry),
            millis_to_f64_secs(entry.checked_at_ms)
                .to_string()
                .into_bytes(),
            entry.fetched_at_ms.to_string().into_bytes(),
            entry.checked_at_ms.to_string().into_bytes(),
            ttl.to_string().into_bytes(),
            latest_believed(now_ms).to_string().into_bytes(),
        ];
        let keys = [self.key(domain)];
        match self.commands.eval(&SET_IF_NOT_NEWER, &keys, &args).await? {
            Reply::Int(1) => {}
            Reply::Int(_) => log::debug!("{domain}: cache holds a newer entry, kept"),
            other => return Err(StoreError::Backend(format!("unexpected reply {other:?}"))),
        }
        Ok(())
    }

    /// Domains whose top member's score (last check) is before `before_ms`
    /// or beyond [`latest_believed`]`(now_ms)`: a `SCAN` over the prefix,
    /// then [`STALE_KEYS`] over chunks of keys.
    async fn checked_before(&self, before_ms: u64, now_ms: u64) -> Result<Vec<Domain>, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut keys: Vec<String> = self
            .commands
            .scan_keys(&pattern)
            .await?
            .into_iter()
            .filter(|k| self.domain_of_key(k).is_some())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut stale = Vec::new();
        let before = [
            before_ms.to_string().into_bytes(),
            latest_believed(now_ms).to_string().into_bytes(),
        ];
        for chunk in keys.chunks(STALE_CHUNK) {
            let reply = self.commands.eval(&STALE_KEYS, chunk, &before).await?;
            let Reply::Array(items) = reply else {
                return Err(StoreError::Backend(format!("unexpected reply {reply:?}")));
            };
            stale.extend(items.iter().filter_map(|item| match item {
                Reply::Data(key) => self.domain_of_key(&text(key)),
                _ => None,
            }));
        }
        Ok(stale)
    }

    async fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        let keys = [self.key(domain)];
        match self.commands.eval(&REMOVE_ENTRY, &keys, &[]).await? {
            Reply::Int(n) => Ok(n > 0),
            other => Err(StoreError::Backend(format!("unexpected reply {other:?}"))),
        }
    }

    async fn remove_all(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        for domain in self.checked_before(u64::MAX, u64::MAX).await? {
            if self.remove(&domain).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn proactive_ts(&self) -> Result<Option<u64>, StoreError> {
        let keys = [self.metadata_key()];
        match self.commands.eval(&GET_PROACTIVE_TS, &keys, &[]).await? {
            Reply::Nil => Ok(None),
            Reply::Data(value) => text(&value)
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(f64_secs_to_millis)
                .map(Some)
                .ok_or_else(|| corrupt(&keys[0], "proactive_fetch_ts is not a Unix time")),
            other => Err(StoreError::Backend(format!("unexpected reply {other:?}"))),
        }
    }

    async fn set_proactive_ts(&self, ts_ms: u64) -> Result<(), StoreError> {
        let keys = [self.metadata_key()];
        let args = [millis_to_f64_secs(ts_ms).to_string().into_bytes()];
        self.commands
            .eval(&SET_PROACTIVE_TS, &keys, &args)
            .await
            .map(drop)
    }
}
