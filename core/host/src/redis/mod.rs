//! The Redis cache connections (README.md "Configuration reference",
//! `cache.type: redis` and `redis_sentinel`) under [`RedisBackend`], which
//! holds all the cache logic: redis-rs's auto-reconnecting
//! [`ConnectionManager`] for a server named by URL, or a master found and
//! re-found through Sentinel ([`sentinel`]).
//!
//! redis-rs's async support needs a runtime feature (`smol-comp`,
//! `tokio-comp`), which each driver turns on for its own build; this code
//! is the same for both.

mod sentinel;
#[cfg(test)]
mod tests;

use std::time::Duration;

use mta_sts_core::cache::redis::scripts::LuaScript;
use mta_sts_core::cache::redis::{RedisBackend, RedisCommands, Reply};
use mta_sts_core::cache::StoreError;
use mta_sts_core::config::{redact, RedisOptions, RedisTarget};
use mta_sts_core::service::{with_timeout, Runtime};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Value};

use sentinel::SentinelLink;

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;

/// How the connection reaches the server.
#[derive(Clone)]
enum Link {
    /// A server named by URL, reconnected by redis-rs.
    Direct(ConnectionManager),
    /// The master Sentinel names, re-asked after a failover.
    Sentinel(std::sync::Arc<SentinelLink>),
}

/// One operation of [`RedisCommands`], run on whichever connection.
enum Op<'a> {
    Eval {
        script: &'a redis::Script,
        keys: &'a [String],
        args: &'a [Vec<u8>],
    },
    Scan {
        cursor: u64,
        pattern: &'a str,
    },
}

impl Op<'_> {
    async fn run<C: ConnectionLike + Send>(&self, conn: &mut C) -> RedisResult<Value> {
        match self {
            Op::Eval { script, keys, args } => {
                let mut call = script.prepare_invoke();
                for key in *keys {
                    call.key(key);
                }
                for arg in *args {
                    call.arg(arg.as_slice());
                }
                call.invoke_async(conn).await
            }
            Op::Scan { cursor, pattern } => {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(*pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(conn)
                    .await
            }
        }
    }
}

/// [`RedisCommands`] over a [`Link`]; every command gives up after
/// `socket_timeout`, so a down or slow Redis never holds a lookup
/// (docs/ARCHITECTURE.md "Cache").
#[derive(Clone)]
pub struct RedisConnection<R: Runtime> {
    rt: R,
    link: Link,
    timeout: Duration,
}

/// A redis-rs error as a store error, through [`redact`] in case it quotes
/// a URL (docs/ARCHITECTURE.md "Secrets").
fn backend_error(e: &RedisError) -> StoreError {
    StoreError::Backend(redact(&format!("redis: {e}")).into_owned())
}

impl<R: Runtime> RedisConnection<R> {
    async fn run(&self, op: &Op<'_>) -> Result<Value, StoreError> {
        let timed_out =
            || StoreError::Backend(format!("redis: no reply within {:?}", self.timeout));
        match &self.link {
            Link::Direct(conn) => {
                let mut conn = conn.clone();
                match with_timeout(&self.rt, self.timeout, op.run(&mut conn)).await {
                    Some(reply) => reply.map_err(|e| backend_error(&e)),
                    None => Err(timed_out()),
                }
            }
            Link::Sentinel(link) => link.run(&self.rt, self.timeout, op).await,
        }
    }
}

/// A redis-rs reply as the store's [`Reply`]; error replies inside arrays
/// (never produced by the store's scripts) become errors.
fn to_reply(value: Value) -> Result<Reply, StoreError> {
    Ok(match value {
        Value::Nil => Reply::Nil,
        Value::Int(i) => Reply::Int(i),
        Value::Boolean(b) => Reply::Int(i64::from(b)),
        Value::BulkString(bytes) => Reply::Data(bytes),
        Value::SimpleString(s) => Reply::Data(s.into_bytes()),
        Value::Okay => Reply::Data(b"OK".to_vec()),
        Value::Double(d) => Reply::Data(d.to_string().into_bytes()),
        Value::Array(items) | Value::Set(items) => {
            Reply::Array(items.into_iter().map(to_reply).collect::<Result<_, _>>()?)
        }
        other => {
            return Err(StoreError::Backend(format!(
                "redis: unexpected reply {other:?}"
            )))
        }
    })
}

#[async_trait::async_trait]
impl<R: Runtime> RedisCommands for RedisConnection<R> {
    async fn eval(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<Reply, StoreError> {
        // EVALSHA by the script's SHA-1, EVAL once when the server does not
        // know it yet (after a restart or a failover).
        let script = redis::Script::new(script.source);
        to_reply(
            self.run(&Op::Eval {
                script: &script,
                keys,
                args,
            })
            .await?,
        )
    }

    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let reply = self.run(&Op::Scan { cursor, pattern }).await?;
            let (next, batch): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(reply).map_err(|e| backend_error(&e.into()))?;
            keys.extend(
                batch
                    .into_iter()
                    .map(|k| String::from_utf8_lossy(&k).into_owned()),
            );
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// The connection settings of `options` applied to `info`: user name,
/// password and database, where the URL does not give its own (as
/// redis-py's `from_url` lets the URL win).
fn with_credentials(info: redis::ConnectionInfo, options: &RedisOptions) -> redis::ConnectionInfo {
    let mut settings = info.redis_settings().clone();
    if let (None, Some(user)) = (settings.username(), &options.username) {
        settings = settings.set_username(user);
    }
    if let (None, Some(password)) = (settings.password(), &options.password) {
        settings = settings.set_password(password.expose());
    }
    if let (0, Some(db)) = (settings.db(), options.db) {
        settings = settings.set_db(db);
    }
    info.set_redis_settings(settings)
}

/// Open the Redis cache for `options` (README.md "Configuration reference",
/// `redis` and `redis_sentinel`). Fails only on unusable settings: an
/// unreachable server is logged and the connection is retried on use
/// (lookups go on without the cache meanwhile). `max_connections` bounds
/// the requests in flight on the one multiplexed connection.
pub async fn open_redis<R: Runtime>(
    rt: R,
    options: &RedisOptions,
) -> Result<RedisBackend<RedisConnection<R>>, StoreError> {
    let link = match &options.target {
        RedisTarget::Url(url) => {
            // `url` prints redacted.
            let invalid = |e: RedisError| {
                StoreError::Backend(redact(&format!("redis url {url}: {e}")).into_owned())
            };
            let client = redis::Client::open(url.expose()).map_err(invalid)?;
            let info = with_credentials(client.get_connection_info().clone(), options);
            let client = redis::Client::open(info).map_err(invalid)?;
            let mut config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.socket_connect_timeout))
                .set_response_timeout(Some(options.socket_timeout))
                // Give up on a down server quickly; the next command tries again.
                .set_number_of_retries(1);
            if let Some(limit) = options.max_connections {
                config = config.set_concurrency_limit(limit.max(1));
            }
            Link::Direct(ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?)
        }
        RedisTarget::Sentinel {
            sentinels,
            master_name,
        } => Link::Sentinel(std::sync::Arc::new(SentinelLink::new(
            sentinels,
            master_name,
            options,
        )?)),
    };
    let commands = RedisConnection {
        rt: rt.clone(),
        link,
        timeout: options.socket_timeout,
    };
    // Probe now so a wrong address shows in the log at start, not at the
    // first lookup.
    let ping = redis::Script::new("return redis.call('PING')");
    let probe = Op::Eval {
        script: &ping,
        keys: &[],
        args: &[],
    };
    if let Err(e) = commands.run(&probe).await {
        log::warn!(
            "{} cache not reachable yet, going on without it until it is: {e}",
            options.kind()
        );
    }
    Ok(RedisBackend::new(
        commands,
        options.prefix.clone(),
        move || rt.unix_ms(),
    ))
}
