//! A few shared UDP sockets per nameserver (docs/ARCHITECTURE.md "The
//! lookup coordinator"): many queries ride one socket, told apart by their
//! ID (the question is checked by the caller), so file descriptors do not
//! grow with pending queries. Each socket is bound to a random source port
//! by the kernel and retired after a number of queries, so ports keep
//! changing (RFC 5452 §9.2).

use super::{with_timeout, Datagram, Runtime, Transport};
use futures::channel::mpsc;
use futures::FutureExt;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Sockets per nameserver.
pub const SOCKETS_PER_SERVER: usize = 4;
/// Queries a socket carries before it is replaced by one on a new port.
const QUERIES_PER_SOCKET: u64 = 512;
/// How often an idle reader checks whether its retired socket can close.
const READER_CHECK: Duration = Duration::from_secs(1);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 4096;
/// Datagrams queued for one query before more are dropped (a flood of
/// spoofed answers for its ID cannot grow memory).
const PER_QUERY_QUEUE: usize = 4;

/// Datagrams received for one query's ID, until the query is dropped.
pub struct Pending {
    /// Datagrams whose ID matched; the caller validates the question.
    pub answers: mpsc::Receiver<Vec<u8>>,
    socket: Arc<Shared>,
    id: u16,
}

impl Pending {
    /// The query's ID, as sent.
    pub fn id(&self) -> u16 {
        self.id
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.socket.waiting().remove(&self.id);
    }
}

struct Shared {
    socket: Box<dyn Datagram>,
    waiting: Mutex<HashMap<u16, mpsc::Sender<Vec<u8>>>>,
    sent: AtomicU64,
    /// Broken or replaced: takes no new queries; its reader ends once the
    /// queries it carries are gone.
    retired: AtomicBool,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, HashMap<u16, mpsc::Sender<Vec<u8>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sockets of every nameserver and the IDs in use on each.
pub struct UdpPool<R: Runtime> {
    rt: R,
    transport: Arc<dyn Transport>,
    slots: Mutex<HashMap<(SocketAddr, usize), Arc<Shared>>>,
    keys: RandomState,
    counter: AtomicU64,
}

impl<R: Runtime> UdpPool<R> {
    /// An empty pool opening sockets through `transport`.
    pub fn new(rt: R, transport: Arc<dyn Transport>) -> Self {
        UdpPool {
            rt,
            transport,
            slots: Mutex::new(HashMap::new()),
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// An unpredictable 16-bit value (RFC 5452 §4.3): SipHash with the
    /// process's random keys over a counter.
    pub fn random_u16(&self) -> u16 {
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        (h.finish() & 0xffff) as u16
    }

    /// Send `query` (whose first two bytes are its ID, chosen here so it is
    /// unique on the socket) to `server`; the returned [`Pending`] receives
    /// the datagrams carrying that ID.
    pub async fn send(&self, server: SocketAddr, query: &mut [u8]) -> io::Result<Pending> {
        let socket = self.socket(server).await?;
        let (tx, rx) = mpsc::channel(PER_QUERY_QUEUE);
        let id = {
            let mut waiting = socket.waiting();
            let mut id = self.random_u16();
            while waiting.contains_key(&id) {
                id = self.random_u16();
            }
            waiting.insert(id, tx);
            id
        };
        let pending = Pending {
            answers: rx,
            socket: socket.clone(),
            id,
        };
        if let Some(head) = query.get_mut(..2) {
            head.copy_from_slice(&id.to_be_bytes());
        }
        if let Err(e) = socket.socket.send(query).await {
            socket.retired.store(true, Ordering::Relaxed);
            return Err(e);
        }
        if socket.sent.fetch_add(1, Ordering::Relaxed) + 1 >= QUERIES_PER_SOCKET {
            socket.retired.store(true, Ordering::Relaxed);
        }
        Ok(pending)
    }

    /// A live socket to `server` in a random slot, opening one (with its
    /// reader task) if the slot is empty or retired.
    async fn socket(&self, server: SocketAddr) -> io::Result<Arc<Shared>> {
        let slot = usize::from(self.random_u16()) % SOCKETS_PER_SERVER;
        if let Some(s) = self.lock().get(&(server, slot)) {
            if !s.retired.load(Ordering::Relaxed) {
                return Ok(s.clone());
            }
        }
        let shared = Arc::new(Shared {
            socket: self.transport.udp_connect(server).await?,
            waiting: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        });
        {
            let mut slots = self.lock();
            // Another query may have opened one meanwhile: use it, and
            // drop ours (never read, so no reader needed).
            if let Some(s) = slots.get(&(server, slot)) {
                if !s.retired.load(Ordering::Relaxed) {
                    return Ok(s.clone());
                }
            }
            slots.insert((server, slot), shared.clone());
        }
        self.rt
            .spawn(read_loop(self.rt.clone(), shared.clone()).boxed());
        Ok(shared)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(SocketAddr, usize), Arc<Shared>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sockets open (for tests and metrics).
    pub fn open_sockets(&self) -> usize {
        self.lock().len()
    }
}

/// Read datagrams and hand each to the query with its ID, until the socket
/// breaks, or is retired with no query left on it.
async fn read_loop<R: Runtime>(rt: R, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if shared.retired.load(Ordering::Relaxed) && shared.waiting().is_empty() {
            return;
        }
        match with_timeout(&rt, READER_CHECK, shared.socket.recv(&mut buf)).await {
            None => continue,
            Some(Ok(n)) => {
                let datagram = buf.get(..n).unwrap_or_default();
                let (Some(&hi), Some(&lo)) = (datagram.first(), datagram.get(1)) else {
                    continue;
                };
                let id = u16::from_be_bytes([hi, lo]);
                if let Some(tx) = shared.waiting().get_mut(&id) {
                    // Full or gone: the query has enough to look at, or ended.
                    let _ = tx.try_send(datagram.to_vec());
                }
            }
            Some(Err(e)) => {
                log::debug!("DNS socket failed, replacing it: {e}");
                shared.retired.store(true, Ordering::Relaxed);
                // Dropping the senders tells the waiting queries at once.
                shared.waiting().clear();
                return;
            }
        }
    }
}
