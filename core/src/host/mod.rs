//! What the two programs do on the host OS, whichever runtime drives them:
//! logging, the config file, pidfile, privilege drop, systemd readiness,
//! nameservers and TLS roots. Runtime-free but not sans-IO, so it sits
//! behind the `host` feature that only the drivers enable; the sans-IO
//! modules never use it.

mod daemon;
mod listen;
mod logging;
mod notify;
mod privileges;
mod startup;

pub use daemon::{daemon_main, query_args, query_main, start, Connections, Driver};
pub use listen::{bind_tcp, bind_unix};
pub use logging::init_logging;
pub use notify::sd_notify;
pub use privileges::drop_privileges;
pub use startup::{
    dns_settings, load_config, parse_or_exit, policy_tls_connector, prepare_daemon, write_pidfile,
    DaemonSetup,
};
