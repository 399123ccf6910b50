//! Sans-IO core of the MTA-STS resolver (RFC 8461) for Postfix.
//!
//! Everything the daemon decides is decided here from bytes and results
//! passed in, with time passed in as an argument: no runtime, socket or
//! clock type appears in this crate. The drivers (`io-smol`, `io-tokio`)
//! feed bytes and DNS/HTTPS/cache results in and carry actions out.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dane;
pub mod dns;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod netstring;
pub mod policy;
pub mod resolve;
pub mod service;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod socketmap;
pub mod txt;
