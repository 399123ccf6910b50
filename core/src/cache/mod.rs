//! Everything about cached policies (RFC 8461 §3.3, §5.1): the entry and its
//! freshness decisions, the serialised form shared with the Python original,
//! the shared in-memory index that answers fresh hits, the bounded map under
//! it, the interface of persistent stores, and the Redis store's logic.
//! docs/ARCHITECTURE.md "Cache" explains how they fit.

mod entry;
mod format;
mod index;
mod lru;
pub mod redis;
mod shards;
mod store;

pub use entry::{believed, fallback, latest_believed, millis, CacheEntry, MAX_SKEW};
pub use format::{
    f64_secs_to_millis, millis_to_f64_secs, policy_from_body, policy_from_json, policy_to_json,
    secs_to_millis, CacheFormatError, OrderedObject,
};
pub use index::{Cached, Fresh, Held, IdleRule, PolicyIndex};
pub use store::{merge, Store, StoreError};
