//! A Redis master found through Sentinel (`cache.type: redis_sentinel`,
//! README.md "Configuration reference"): the sentinels are asked for the
//! master of `sentinel_master_name` (redis-rs checks that it calls itself
//! master), and asked again whenever the master stops answering, drops the
//! connection or refuses a write as a replica (after a failover).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::lock::Mutex as AsyncMutex;
use mta_sts_core::cache::StoreError;
use mta_sts_core::config::{redact, RedisOptions};
use mta_sts_core::service::{with_timeout, Runtime};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisConnectionInfo, RedisError, Value};

use super::{backend_error, Op};

/// The current master connection and how to find the next one.
pub(super) struct SentinelLink {
    /// Asks the sentinels; one discovery at a time.
    client: AsyncMutex<SentinelClient>,
    /// The master connection in use and its generation (so a failure seen
    /// on an old connection never drops a newer one).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: Mutex<u64>,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    master_name: String,
    /// Whether the last attempt failed: the outage is logged once.
    failing: AtomicBool,
    /// The master's address last connected to, for the log.
    address: Mutex<String>,
}

/// True for failures after which the master may have moved: the
/// connection broke, timed out or was refused, or the server is now a
/// replica (`READONLY`) or cannot reach its master.
fn may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl SentinelLink {
    /// A link to the master `master_name` of `sentinels`, with the
    /// credentials, database and timeouts of `options`; connects on use.
    pub(super) fn new(
        sentinels: &[(String, u16)],
        master_name: &str,
        options: &RedisOptions,
    ) -> Result<SentinelLink, StoreError> {
        let mut settings = RedisConnectionInfo::default();
        if let Some(user) = &options.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &options.password {
            settings = settings.set_password(password.expose());
        }
        if let Some(db) = options.db {
            settings = settings.set_db(db);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
        let addrs: Vec<ConnectionAddr> = sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port))
            .collect();
        let client = SentinelClient::build(
            addrs,
            master_name.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| {
            StoreError::Backend(redact(&format!("redis_sentinel settings: {e}")).into_owned())
        })?;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.socket_connect_timeout))
            .set_response_timeout(Some(options.socket_timeout));
        if let Some(limit) = options.max_connections {
            config = config.set_concurrency_limit(limit.max(1));
        }
        Ok(SentinelLink {
            client: AsyncMutex::new(client),
            current: Mutex::new(None),
            generation: Mutex::new(0),
            config,
            connect_timeout: options.socket_connect_timeout,
            master_name: master_name.to_owned(),
            failing: AtomicBool::new(false),
            address: Mutex::new(String::new()),
        })
    }

    fn held(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drop connection `generation` so the next command asks the sentinels.
    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// The master connection: the one held, or a new one to the master the
    /// sentinels name now.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(held) = self.held() {
            return Ok(held);
        }
        let mut client = self.client.lock().await;
        // Another command may have found it while this one waited.
        if let Some(held) = self.held() {
            return Ok(held);
        }
        let master = client.async_get_client().await?;
        let address = master.get_connection_info().addr().to_string();
        let conn = master
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = {
            let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
            *g += 1;
            *g
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        let mut last = self.address.lock().unwrap_or_else(|p| p.into_inner());
        if *last != address {
            log::info!(
                "redis_sentinel: master {:?} is at {address}",
                self.master_name
            );
            *last = address;
        }
        Ok((generation, conn))
    }

    fn failed(&self, e: StoreError) -> StoreError {
        if !self.failing.swap(true, Ordering::Relaxed) {
            log::warn!(
                "redis_sentinel: master {:?} not reachable, going on without the cache until it is: {e}",
                self.master_name
            );
        }
        e
    }

    /// Run `op` on the master, bounded by `connect_timeout` to find and
    /// connect to it and `timeout` for the reply. When the master may have
    /// moved, the sentinels are asked again and `op` tried once more.
    pub(super) async fn run<R: Runtime>(
        &self,
        rt: &R,
        timeout: Duration,
        op: &Op<'_>,
    ) -> Result<Value, StoreError> {
        let mut retried = false;
        loop {
            let (generation, mut conn) =
                match with_timeout(rt, self.connect_timeout, self.connection()).await {
                    Some(Ok(found)) => found,
                    Some(Err(e)) => return Err(self.failed(backend_error(&e))),
                    None => {
                        return Err(self.failed(StoreError::Backend(format!(
                            "redis_sentinel: no master found within {:?}",
                            self.connect_timeout
                        ))))
                    }
                };
            let error = match with_timeout(rt, timeout, op.run(&mut conn)).await {
                Some(Ok(value)) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        log::info!(
                            "redis_sentinel: master {:?} reachable again",
                            self.master_name
                        );
                    }
                    return Ok(value);
                }
                Some(Err(e)) if may_have_moved(&e) => backend_error(&e),
                // An error reply from a working master.
                Some(Err(e)) => return Err(backend_error(&e)),
                None => StoreError::Backend(format!("redis_sentinel: no reply within {timeout:?}")),
            };
            self.forget(generation);
            if retried {
                return Err(self.failed(error));
            }
            log::debug!("redis_sentinel: {error}; asking the sentinels again");
            retried = true;
        }
    }
}
