//! The smol driver of the MTA-STS resolver: sockets, timers and signals
//! on smol, feeding the runtime-agnostic core ([`mta_sts_core::service`],
//! [`mta_sts_host`], which also holds the TLS client both drivers use). The programs are
//! thin `main`s over [`mta_sts_host::daemon_main`] and
//! [`mta_sts_host::query_main`] with [`SmolDriver`].
//!
//! Embedding the resolver in a smol application:
//!
//! ```no_run
//! use mta_sts_core::config::Config;
//! use mta_sts_host::{start, Driver};
//! use mta_sts_core::service::{serve, ShutdownTrigger};
//! use mta_sts_smol::SmolDriver;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! smol::block_on(async {
//!     let config = Arc::new(Config::default());
//!     let (_stop, shutdown) = ShutdownTrigger::new();
//!     let stack = start(&SmolDriver, config, shutdown.clone()).await.expect("start");
//!     let listener = mta_sts_host::bind_tcp("127.0.0.1", 8461, true).expect("bind");
//!     let incoming = SmolDriver.tcp_incoming(listener).expect("listen");
//!     // Every connection under the config's limits (max_connections,
//!     // read_timeout, idle_timeout, ...); at the stop, 20 s to finish.
//!     serve(SmolDriver.runtime(), incoming, stack.service, shutdown, Duration::from_secs(20)).await;
//! });
//! ```

mod driver;
mod runtime;
mod transport;

pub use driver::SmolDriver;
pub use runtime::SmolRuntime;
pub use transport::{SmolSockets, SmolTransport};
