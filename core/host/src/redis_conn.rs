//! The `redis` cache backend's connection (README.md "Configuration reference",
//! `cache.type: redis`): redis-rs's auto-reconnecting [`ConnectionManager`]
//! under [`RedisBackend`], which holds all the cache logic.
//!
//! redis-rs's async support needs a runtime feature (`smol-comp`,
//! `tokio-comp`), which each driver turns on for its own build; this code
//! is the same for both.

use std::time::Duration;

use mta_sts_core::cache::redis::{RedisBackend, RedisCommands};
use mta_sts_core::cache::StoreError;
use mta_sts_core::config::RedisOptions;
use mta_sts_core::service::{with_timeout, Runtime};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue};

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;

/// [`RedisCommands`] over one multiplexed connection that reconnects by
/// itself; every command gives up after `socket_timeout`, so a down or slow
/// Redis never holds a lookup (docs/ARCHITECTURE.md "Cache").
#[derive(Clone)]
pub struct RedisConnection<R: Runtime> {
    rt: R,
    conn: ConnectionManager,
    timeout: Duration,
}

impl<R: Runtime> RedisConnection<R> {
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        let reply = with_timeout(&self.rt, self.timeout, cmd.query_async::<T>(&mut conn));
        match reply.await {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(StoreError::Backend(e.to_string())),
            None => Err(StoreError::Backend(format!(
                "no reply within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Values as text: a non-UTF-8 value is not JSON either, so the lossy
/// conversion only turns it into a `Corrupt` entry.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[async_trait::async_trait]
impl<R: Runtime> RedisCommands for RedisConnection<R> {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(key)).await?;
        Ok(value.map(text))
    }

    async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.run(redis::cmd("SET").arg(key).arg(value)).await
    }

    async fn eval_int(
        &self,
        script: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<i64, StoreError> {
        self.run(
            redis::cmd("EVAL")
                .arg(script)
                .arg(keys.len())
                .arg(keys)
                .arg(args),
        )
        .await
    }

    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .to_owned();
            let (next, batch): (u64, Vec<Vec<u8>>) = self.run(&scan).await?;
            keys.extend(batch.into_iter().map(text));
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.run(redis::cmd("MGET").arg(keys)).await?;
        Ok(values.into_iter().map(|v| v.map(text)).collect())
    }
}

/// Open the `redis` cache for `options` (README.md "Configuration reference", "Cache
/// and refresh"). Fails only on an unusable URL: an unreachable server is
/// logged and the connection is retried on use (lookups go on without the
/// cache meanwhile). `max_connections` bounds
/// the requests in flight on the one multiplexed connection.
pub async fn open_redis<R: Runtime>(
    rt: R,
    options: &RedisOptions,
) -> Result<RedisBackend<RedisConnection<R>>, StoreError> {
    let invalid =
        |e: redis::RedisError| StoreError::Backend(format!("redis url {:?}: {e}", options.url));
    let client = redis::Client::open(options.url.as_str()).map_err(invalid)?;
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.socket_connect_timeout))
        .set_response_timeout(Some(options.socket_timeout))
        // Give up on a down server quickly; the next command tries again.
        .set_number_of_retries(1);
    if let Some(limit) = options.max_connections {
        config = config.set_concurrency_limit(limit.max(1));
    }
    let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
    let commands = RedisConnection {
        rt: rt.clone(),
        conn,
        timeout: options.socket_timeout,
    };
    // Probe now so a wrong address shows in the log at start, not at the
    // first lookup.
    if let Err(e) = commands.run::<()>(&redis::cmd("PING")).await {
        log::warn!("redis cache not reachable yet, going on without it until it is: {e}");
    }
    Ok(RedisBackend::new(
        commands,
        options.prefix.clone(),
        move || rt.unix_ms(),
    ))
}
