//! The smol driver of the MTA-STS resolver: sockets, timers, TLS and
//! signals on smol, feeding the runtime-agnostic core
//! ([`mta_sts_core::service`]). The programs are thin `main`s over
//! [`daemon::main`] and [`query::main`].

pub mod daemon;
pub mod listen;
pub mod query;
pub mod runtime;
pub mod transport;

pub use runtime::SmolRuntime;
pub use transport::SmolTransport;
