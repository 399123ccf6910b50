//! A deterministic world for testing the async service layer, in the
//! manner of quinn-proto's simulated client/server tests: a virtual clock,
//! a single-threaded executor, and in-memory DNS, policy (HTTPS) and store
//! endpoints whose answers, latency and failures a test scripts. No thread,
//! socket or real sleep is involved, so hours of cache life (RFC 8461 §5.1)
//! run in milliseconds and every run takes the same steps.
//!
//! A test builds a [`Harness`] (the real stack from
//! [`crate::service::start_stack`] on a [`Sim`] and a [`World`]), scripts
//! the world, sends requests (`Harness::answer`, `Harness::spawn_answer`,
//! or netstrings over `Harness::connect`), moves time with
//! [`Sim::advance`] or [`Sim::block_on`], and reads the counters:
//!
//! ```text
//! let h = Harness::new("cache_grace: 60");
//! let body = policy_text("enforce", &["mx.example.com"], 86400);
//! h.world.publish("example.com", "id1", &body, Duration::from_millis(500));
//! let reply = h.answer("example.com");
//! assert_eq!(h.world.fetches("example.com"), 1);
//! assert_eq!(h.sim.elapsed(), Duration::from_millis(500));
//! ```

mod dns;
mod executor;
mod harness;
mod https;
mod net;
mod store;
mod world;

#[cfg(test)]
mod tests;

pub use dns::{DnsAnswer, DnsRule, DnsServer, QueryLog, Via};
pub use executor::{Sim, Sleep, TaskHandle, DEFAULT_UNIX_MS};
pub use harness::{
    config, decode_replies, dns_targets, exchange, read_replies, reply_text, request, Connector,
    Harness, ZONE,
};
pub use https::{policy_text, FetchLog, HostBehaviour, HttpsReply, HttpsServers};
pub use net::{duplex, DatagramPeer, Inbox, InboxHandle, PipeEnd, SimDatagram, PIPE_CAPACITY};
pub use store::SimStore;
pub use world::{World, NAMESERVER};
