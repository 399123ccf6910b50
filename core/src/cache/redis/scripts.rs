//! The Lua scripts the Redis store runs: each reads or writes one piece of
//! the Python original's layout atomically inside Redis (docs/ARCHITECTURE.md
//! "Cache": every write is "never replace a newer entry with an older
//! one"). Keys of another type are never touched by reads; a write replaces
//! a plain string (the JSON record of our earlier releases) but no other
//! type.

/// A Lua script and a name for logs and fakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuaScript {
    /// Short name, e.g. `set_if_not_newer`.
    pub name: &'static str,
    /// The script's source, run with `EVALSHA` (`EVAL` the first time).
    pub source: &'static str,
}

/// `KEYS[1]`: a domain's key. Returns `{member, score}` of the sorted
/// set's highest-scored member (what Python's `ZREVRANGE key 0 0
/// WITHSCORES` reads), or nil when the key is missing or not a sorted set.
pub const GET_ENTRY: LuaScript = LuaScript {
    name: "get_entry",
    source: r#"
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then return false end
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[1] == nil then return false end
return top
"#,
};

/// Atomic compare-and-set of one domain's record.
///
/// `KEYS[1]`: the domain's key. `ARGV`: the new member, its score (check
/// time, float seconds), its fetch and check times in Unix milliseconds,
/// the key's TTL in seconds, and the latest stored time believed
/// (`cache::latest_believed`, milliseconds). The stored top member's
/// `(fetched, checked)` is compared as `CacheEntry::is_newer_at` does: the
/// check time is the score, the fetch time is in our seed (see `layout`)
/// or, for a member of the Python original, the score, and a time beyond
/// the latest believed counts as 0, so a future-dated member never keeps a
/// write out (docs/ARCHITECTURE.md "Time"). When the stored one is not newer, the
/// set is replaced by the new member alone (deleted first, so a newer fetch
/// checked earlier still replaces it) and the TTL set. Returns 1 when
/// written, 0 when the stored entry is newer.
pub const SET_IF_NOT_NEWER: LuaScript = LuaScript {
    name: "set_if_not_newer",
    source: r#"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'zset' then
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if top[1] then
    local checked = math.floor(tonumber(top[2]) * 1000 + 0.5)
    local fetched = checked
    local m = top[1]
    if #m >= 16 and string.sub(m, 1, 8) == 'MTASTS\0\1' then
      fetched = 0
      for i = 9, 16 do fetched = fetched * 256 + string.byte(m, i) end
    end
    local limit = tonumber(ARGV[6])
    if fetched > limit then fetched = 0 end
    if checked > limit then checked = 0 end
    local nf, nc = tonumber(ARGV[3]), tonumber(ARGV[4])
    if fetched > nf or (fetched == nf and checked > nc) then return 0 end
  end
elseif kind ~= 'none' and kind ~= 'string' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a policy')
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"#,
};

/// `KEYS`: domains' keys. `ARGV[1]`: a Unix time in milliseconds;
/// `ARGV[2]`: the latest time believed (`cache::latest_believed`,
/// milliseconds). Returns the keys that are sorted sets whose top score
/// (last check) is before `ARGV[1]` or beyond `ARGV[2]`.
pub const STALE_KEYS: LuaScript = LuaScript {
    name: "stale_keys",
    source: r#"
local stale = {}
local before = tonumber(ARGV[1])
local believed = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'zset' then
    local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    if top[2] then
      local checked = math.floor(tonumber(top[2]) * 1000 + 0.5)
      if checked < before or checked > believed then
        stale[#stale + 1] = key
      end
    end
  end
end
return stale
"#,
};

/// `KEYS[1]`: the `_metadata` hash. Returns its `proactive_fetch_ts` field
/// (float seconds as text, as Python's `str(time.time())`), or nil.
pub const GET_PROACTIVE_TS: LuaScript = LuaScript {
    name: "get_proactive_ts",
    source: r#"
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return false end
return redis.call('HGET', KEYS[1], 'proactive_fetch_ts')
"#,
};

/// `KEYS[1]`: the `_metadata` hash; `ARGV[1]`: the time as float seconds.
/// Sets its `proactive_fetch_ts` field, as Python's `HSET` does.
pub const SET_PROACTIVE_TS: LuaScript = LuaScript {
    name: "set_proactive_ts",
    source: r#"
redis.call('HSET', KEYS[1], 'proactive_fetch_ts', ARGV[1])
return 1
"#,
};

/// `KEYS[1]`: a domain's key. Deletes it when it holds a policy (a sorted
/// set); returns 1 when it did, 0 otherwise (cache purge).
pub const REMOVE_ENTRY: LuaScript = LuaScript {
    name: "remove_entry",
    source: r#"
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then return 0 end
return redis.call('DEL', KEYS[1])
"#,
};
