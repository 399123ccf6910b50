//! What the programs do on the host, whichever runtime drives them: the
//! daemon's and query tool's main flow over a [`Driver`] (the runtime's
//! listeners, signals and transport), logging, the config file, pidfile,
//! privilege drop, systemd readiness, listeners, nameservers, TLS roots,
//! and the cache stores that do IO (SQLite and PostgreSQL on the runtime's
//! blocking pool, the redis-rs connections). Not sans-IO, so not in `mta-sts-core`; no
//! runtime either: the drivers (`io-smol`, `io-tokio`) supply it.

mod blocking;
mod daemon;
mod listen;
mod logging;
mod notify;
mod postgres;
mod privileges;
mod redis;
mod sqlite;
mod startup;
#[cfg(test)]
mod test_rt;

pub use daemon::{daemon_main, query_args, query_main, start, Connections, Driver};
pub use listen::{bind_tcp, bind_unix};
pub use logging::init_logging;
pub use notify::sd_notify;
pub use postgres::PostgresBackend;
pub use privileges::drop_privileges;
pub use redis::{open_redis, RedisConnection};
pub use sqlite::SqliteBackend;
pub use startup::{
    dns_settings, load_config, parse_or_exit, policy_tls_connector, prepare_daemon, write_pidfile,
    DaemonSetup,
};
