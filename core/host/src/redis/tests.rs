//! The Redis store's Lua scripts on a real `redis-server`.
