//! The tokio driver of the MTA-STS resolver: the same daemon and query tool
//! as the smol build, and a library to run the resolver inside a tokio
//! application. Sockets, timers and signals on tokio feed the
//! runtime-agnostic core ([`mta_sts_core::service`], [`mta_sts_host`],
//! which also holds the TLS client both drivers use).
//!
//! Running the resolver service on an application's own runtime:
//!
//! ```no_run
//! use mta_sts_core::config::Config;
//! use mta_sts_host::{start, Driver};
//! use mta_sts_core::service::{serve, ShutdownTrigger};
//! use mta_sts_tokio::TokioDriver;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), String> {
//!     let driver = TokioDriver::current();
//!     let config = Arc::new(Config::from_yaml("port: 8461").map_err(|e| e.to_string())?.config);
//!     let (stop, shutdown) = ShutdownTrigger::new();
//!     let stack = start(&driver, config.clone(), shutdown.clone()).await?;
//!     let listener = mta_sts_host::bind_tcp(&config.host, config.port, config.reuse_port)?;
//!     let incoming = driver.tcp_incoming(listener).map_err(|e| e.to_string())?;
//!     tokio::spawn(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         stop.fire();
//!     });
//!     // Every connection under the config's limits (max_connections,
//!     // read_timeout, idle_timeout, ...); at the stop, 20 s to finish.
//!     serve(driver.runtime(), incoming, stack.service, shutdown, Duration::from_secs(20)).await;
//!     Ok(())
//! }
//! ```

mod driver;
mod runtime;
mod transport;

pub use driver::TokioDriver;
pub use runtime::TokioRuntime;
pub use transport::{TokioSockets, TokioTransport};

/// Run `main` on a new multi-threaded tokio runtime (the programs' entry).
pub fn block_on<F: std::future::Future>(main: impl FnOnce(TokioDriver) -> F) -> F::Output {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let driver = TokioDriver::new(runtime.handle().clone());
    runtime.block_on(main(driver))
}
