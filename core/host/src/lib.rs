//! What the programs do on the host, whichever runtime drives them: the
//! daemon's and query tool's main flow over a [`Driver`] (the runtime's
//! listeners, signals and transport), logging, the config file, pidfile,
//! privilege drop, systemd readiness, listeners, nameservers, TLS roots,
//! the transport and TLS client streams both drivers share (over the
//! runtime's sockets), the wall clock, and the cache stores that do IO
//! (SQLite and PostgreSQL on the runtime's blocking pool, the redis-rs
//! connections). Not sans-IO, so not in `mta-sts-core`; no runtime either:
//! the drivers (`io-smol`, `io-tokio`) supply it.

pub mod admin_http;
mod blocking;
mod clock;
mod daemon;
mod dnssec;
pub mod fdlimit;
mod files;
mod listen;
mod logging;
mod memory;
mod notify;
mod postgres;
mod privileges;
mod query;
mod redis;
pub mod reload;
pub mod reopen;
pub mod serve;
pub mod sqlite;
mod startup;
#[cfg(test)]
mod test_rt;
pub mod tls;
mod transport;

pub use clock::unix_ms;
pub use daemon::{daemon_main, start, Connections, Driver};
pub use listen::{activated_listeners, bind_tcp, bind_unix, SocketActivation};
pub use logging::init_logging;
pub use notify::sd_notify;
pub use postgres::PostgresBackend;
pub use privileges::ServiceIds;
pub use query::{query_args, query_main};
pub use redis::{open_redis, RedisConnection};
pub use sqlite::SqliteBackend;
pub use startup::{
    dns_settings, load_config, parse_or_exit, policy_tls_roots, prepare_daemon, write_pidfile,
    DaemonSetup, TlsRoots,
};
pub use transport::{SocketTransport, Sockets};
