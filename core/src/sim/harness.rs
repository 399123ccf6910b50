//! The real service stack on the sim, and a socketmap client over an
//! in-memory stream: what the service-layer tests drive.

use super::net::{duplex, PipeEnd, PIPE_CAPACITY};
use super::{Sim, SimStore, TaskHandle, World, NAMESERVER};
use crate::cache::{CacheEntry, Held, Store};
use crate::config::Config;
use crate::netstring::{self, Decoder};
use crate::service::{
    serve_connection, start_stack, DnsTargets, Runtime, Service, Shutdown, ShutdownTrigger, Stack,
};
use crate::socketmap::Reply;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use std::sync::Arc;
use std::time::Duration;

/// The socketmap name the helpers ask under (no zone configured for it:
/// the default zone answers).
pub const ZONE: &str = "mta-sts";

/// A config from YAML; panics on an invalid document.
pub fn config(yaml: &str) -> Arc<Config> {
    match Config::from_yaml(yaml) {
        Ok(loaded) => Arc::new(loaded.config),
        Err(e) => panic!("sim: invalid test config: {e}\n{yaml}"),
    }
}

/// The stub resolver's settings in the sim: [`NAMESERVER`], 2 attempts of
/// 1 s each.
pub fn dns_targets() -> DnsTargets {
    DnsTargets {
        servers: vec![NAMESERVER],
        attempts: 2,
        try_timeout: Duration::from_secs(1),
    }
}

/// A running stack on the sim with its world and (optional) store.
pub struct Harness {
    /// The executor and clock.
    pub sim: Sim,
    /// The scripted network.
    pub world: World,
    /// The persistent store, if the stack has one.
    pub store: Option<SimStore>,
    /// The configuration the stack runs with.
    pub config: Arc<Config>,
    /// The stack: service, engine, caches, DNS client.
    pub stack: Stack<Sim>,
    /// Fires when [`Harness::shut_down`] is called.
    pub shutdown: Shutdown,
    trigger: Option<ShutdownTrigger>,
}

impl Harness {
    /// The stack for `yaml` with no persistent store.
    pub fn new(yaml: &str) -> Self {
        let sim = Sim::new();
        let world = World::new(&sim);
        Harness::build(sim, world, config(yaml), None, dns_targets())
    }

    /// The stack for `yaml` over a [`SimStore`] (the persistent path).
    pub fn with_store(yaml: &str) -> Self {
        let sim = Sim::new();
        let world = World::new(&sim);
        let store = SimStore::new(&sim);
        Harness::build(sim, world, config(yaml), Some(store), dns_targets())
    }

    /// The stack from its parts.
    pub fn build(
        sim: Sim,
        world: World,
        config: Arc<Config>,
        store: Option<SimStore>,
        dns: DnsTargets,
    ) -> Self {
        let dyn_store = store.clone().map(|s| Arc::new(s) as Arc<dyn Store>);
        let stack = start_stack(
            sim.clone(),
            world.transport(),
            dns,
            config.clone(),
            dyn_store,
        );
        let (trigger, shutdown) = ShutdownTrigger::new();
        Harness {
            sim,
            world,
            store,
            config,
            stack,
            shutdown,
            trigger: Some(trigger),
        }
    }

    /// Ask `key` under [`ZONE`] through the service and wait for the reply.
    pub fn answer(&self, key: &str) -> Reply {
        let service = self.stack.service.clone();
        self.sim
            .block_on(async move { service.answer(ZONE, key).await })
    }

    /// Ask `key` under [`ZONE`] after `delay`, as a task; the handle yields
    /// the reply and the virtual time it came.
    pub fn spawn_answer(&self, delay: Duration, key: &str) -> TaskHandle<(Reply, Duration)> {
        let service = self.stack.service.clone();
        let sim = self.sim.clone();
        let key = key.to_owned();
        self.sim.spawn_task(async move {
            sim.sleep(delay).await;
            let reply = service.answer(ZONE, &key).await;
            (reply, sim.elapsed())
        })
    }

    /// Open a socketmap connection served by `serve_connection` on the
    /// sim; the returned end is the client's.
    pub fn connect(&self) -> PipeEnd {
        self.connector().connect()
    }

    /// What tasks need to open connections themselves.
    pub fn connector(&self) -> Connector {
        Connector {
            sim: self.sim.clone(),
            service: self.stack.service.clone(),
            shutdown: self.shutdown.clone(),
            grace: self.config.shutdown_timeout,
        }
    }

    /// Fire the shutdown signal (SIGTERM).
    pub fn shut_down(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }

    /// The policy entry the index holds for `domain`, whatever its age.
    pub fn cached(&self, domain: &str) -> Option<CacheEntry> {
        match self.stack.caches.index.known(domain, self.sim.unix_ms()) {
            Held::Entry(e) => Some(e),
            Held::NoPolicy | Held::Miss => None,
        }
    }
}

/// Opens socketmap connections to a [`Harness`]'s service from any task.
#[derive(Clone)]
pub struct Connector {
    sim: Sim,
    service: Arc<Service>,
    shutdown: Shutdown,
    grace: Duration,
}

impl Connector {
    /// A connection served by `serve_connection` on the sim under the
    /// service's limits and `shutdown_timeout`; the returned end is the
    /// client's.
    pub fn connect(&self) -> PipeEnd {
        self.connect_with(PIPE_CAPACITY).0
    }

    /// [`Connector::connect`] over a pipe that buffers `capacity` bytes
    /// each way (a small one: a client that does not read fills it), and
    /// the virtual time at which the server closed the connection.
    pub fn connect_with(&self, capacity: usize) -> (PipeEnd, TaskHandle<Duration>) {
        let (client, server) = duplex(capacity);
        let service = self.service.clone();
        let shutdown = self.shutdown.clone();
        let sim = self.sim.clone();
        let grace = self.grace;
        let closed = self.sim.spawn_task(async move {
            let limits = service.limits();
            // A framing error or a vanished client just ends the connection.
            let _ = serve_connection(&sim, server, &service, &limits, shutdown, grace).await;
            sim.elapsed()
        });
        (client, closed)
    }
}

/// Send `input` on `stream` (then close the sending side) while reading
/// every reply until the server closes.
pub async fn exchange(stream: PipeEnd, input: Vec<u8>) -> Vec<String> {
    let (mut rd, mut wr) = stream.split();
    let write = async move {
        // The server may stop reading first (shutdown, framing error).
        let _ = wr.write_all(&input).await;
        let _ = wr.close().await;
    };
    let read = async move {
        let mut bytes = Vec::new();
        rd.read_to_end(&mut bytes)
            .await
            .expect("sim: pipe reads do not fail");
        decode_replies(&bytes)
    };
    futures::join!(write, read).1
}

/// The netstring of the socketmap request `name key`.
pub fn request(name: &str, key: &str) -> Vec<u8> {
    netstring::encode(format!("{name} {key}").as_bytes())
}

/// A reply's payload as text (`OK ...`, `NOTFOUND `, ...).
pub fn reply_text(reply: &Reply) -> String {
    String::from_utf8(reply.payload()).expect("sim: replies are UTF-8")
}

/// Read `stream` to its end and split it into reply payloads; panics on
/// bytes that are not netstrings.
pub async fn read_replies(stream: &mut PipeEnd) -> Vec<String> {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("sim: pipe reads do not fail");
    decode_replies(&bytes)
}

/// Split `bytes` into reply payloads; panics on bytes that are not
/// netstrings or a partial reply at the end.
pub fn decode_replies(bytes: &[u8]) -> Vec<String> {
    let mut decoder = Decoder::new(1 << 20);
    decoder.push(bytes);
    let mut replies = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("sim: replies are netstrings") {
        replies.push(String::from_utf8(frame).expect("sim: replies are UTF-8"));
    }
    assert_eq!(decoder.buffered(), 0, "sim: a partial reply at the end");
    replies
}
