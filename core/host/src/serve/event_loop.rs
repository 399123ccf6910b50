//! The connection loops: one thread per core, each with its own mio poll
//! of connections (docs/ARCHITECTURE.md "Connections"). A loop answers
//! fresh hits on its own thread; misses are futures it polls, whose lookups
//! run on the async runtime and whose wakers wake the loop through a mio
//! waker. Readiness comes in edges: each connection keeps what was last
//! reported (`conn.rs`), so a request costs a share of a poll shared with
//! every other ready connection, one `read` and one `write`.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll as TaskPoll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::task::ArcWake;
use futures::{FutureExt, StreamExt};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use mta_sts_core::config::Limits;
use mta_sts_core::socketmap::{Reply, Seq};

use super::conn::{capped_after, Conn, Next};
use super::{Context, Stream};

/// The token of a loop's waker (connection keys are slab slots, never
/// this value: see [`Slots::insert`]).
const WAKE: Token = Token(usize::MAX);
/// Events taken per poll.
const EVENTS: usize = 256;
/// Bytes read per `read`.
const READ_BUF: usize = 8192;
/// Pause after a poll fails for a reason other than a signal.
const FAILED_WAIT_PAUSE: Duration = Duration::from_millis(100);

/// A miss's reply, for the connection in slot `key`.
type Lookup = BoxFuture<'static, (usize, Seq, Reply)>;

/// One loop's shared side: how the accept threads and the wakers reach it.
pub(super) struct Loop {
    wake: Arc<LoopWaker>,
    inbox: Mutex<Inbox>,
    /// Connections it holds or is about to, for choosing the least loaded.
    load: AtomicUsize,
}

#[derive(Default)]
struct Inbox {
    streams: Vec<(Box<dyn Stream>, Limits)>,
    /// The loop thread ended: hand it nothing more.
    closed: bool,
}

/// Wakes the loop's poll (`ArcWake` for the misses). The flag, not the
/// waker's event, says the loop was woken: mio's poll(2) backend shares
/// its waker with its own registration changes, and a change the loop
/// makes (any read or write that returns `WouldBlock` is one there) can
/// swallow a wake-up another thread sent at that moment, so the loop
/// checks the flag before it waits. It also spares a system call for each
/// wake-up while one is pending.
struct LoopWaker {
    waker: mio::Waker,
    woken: AtomicBool,
}

impl LoopWaker {
    fn wake_loop(&self) {
        if self.woken.swap(true, Ordering::SeqCst) {
            return;
        }
        // Fails only when the system is out of resources; a wake-up already
        // pending (a full eventfd counter) is success.
        if let Err(e) = self.waker.wake() {
            log::warn!("cannot wake a connection loop: {e}");
        }
    }

    /// A wake-up is pending (the loop must not wait).
    fn pending(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    /// Take the pending wake-up, if any.
    fn take(&self) -> bool {
        self.woken.swap(false, Ordering::SeqCst)
    }
}

impl ArcWake for LoopWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.wake_loop();
    }
}

/// The loops of a server.
pub(super) struct Loops(Vec<Arc<Loop>>);

impl Loops {
    /// Start `count` loop threads (at least one) serving for `ctx`.
    pub(super) fn start(count: usize, ctx: &Arc<Context>) -> io::Result<Loops> {
        let mut loops = Vec::new();
        for _ in 0..count.max(1) {
            let poll = Poll::new()?;
            let lp = Arc::new(Loop {
                wake: Arc::new(LoopWaker {
                    waker: mio::Waker::new(poll.registry(), WAKE)?,
                    woken: AtomicBool::new(false),
                }),
                inbox: Mutex::default(),
                load: AtomicUsize::new(0),
            });
            let (lp2, ctx2) = (lp.clone(), ctx.clone());
            std::thread::Builder::new()
                .name("mta-sts-conn".into())
                .spawn(move || {
                    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| run(&lp2, &ctx2, poll)));
                    if ran.is_err() {
                        lp2.abandon(&ctx2);
                    }
                })?;
            loops.push(lp);
        }
        Ok(Loops(loops))
    }

    /// Hand an accepted connection (non-blocking, already counted in the
    /// registry) to the least loaded loop.
    pub(super) fn adopt(&self, stream: Box<dyn Stream>, limits: Limits, ctx: &Context) {
        let Some(lp) = self.0.iter().min_by_key(|l| l.load.load(Ordering::Relaxed)) else {
            ctx.registry.remove();
            return;
        };
        let mut inbox = lp.lock_inbox();
        if inbox.closed {
            drop(inbox);
            drop(stream);
            ctx.registry.remove();
            return;
        }
        lp.load.fetch_add(1, Ordering::Relaxed);
        inbox.streams.push((stream, limits));
        drop(inbox);
        lp.wake.wake_loop();
    }

    /// Wake every loop (to see the stop flag).
    pub(super) fn wake_all(&self) {
        for lp in &self.0 {
            lp.wake.wake_loop();
        }
    }
}

impl Loop {
    /// The loop thread died (a bug): its connections are gone with it.
    /// Hand it nothing more and uncount what it held, so `max_connections`
    /// and the stop are not held up by connections that no longer exist.
    fn abandon(&self, ctx: &Context) {
        log::error!("a connection loop failed; its connections were closed");
        let mut inbox = self.lock_inbox();
        inbox.closed = true;
        inbox.streams.clear();
        drop(inbox);
        for _ in 0..self.load.swap(0, Ordering::Relaxed) {
            ctx.registry.remove();
        }
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection in its slot.
struct Slot {
    conn: Conn,
    deadline: Option<Instant>,
    /// On the loop's list of connections to read again without an event.
    queued: bool,
}

/// The connections of one loop, by key: the slot index in the low half
/// of the bits and a generation in the high half, so a stale key (an event
/// or a reply for a connection since closed) finds nothing.
struct Slots<T> {
    slots: Vec<(usize, Option<T>)>,
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

/// Bits of a key that hold the slot index.
const INDEX_BITS: u32 = usize::BITS / 2;
/// The index part of a key; an index never reaches it, so no key is
/// [`WAKE`]'s.
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

fn key(generation: usize, index: usize) -> usize {
    (generation << INDEX_BITS) | index
}

/// The generation and index of `key`.
fn split(key: usize) -> (usize, usize) {
    (key >> INDEX_BITS, key & INDEX_MASK)
}

impl<T> Slots<T> {
    /// The key of `slot`, or `None` when every index is taken (more
    /// connections than a 32-bit system has descriptors).
    fn insert(&mut self, slot: T) -> Option<usize> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < INDEX_MASK => {
                self.slots.push((0, None));
                self.slots.len() - 1
            }
            None => return None,
        };
        let entry = self.slots.get_mut(index)?;
        entry.0 = (entry.0 + 1) & (usize::MAX >> INDEX_BITS);
        entry.1 = Some(slot);
        Some(key(entry.0, index))
    }

    /// How many are held.
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        let (generation, index) = split(key);
        match self.slots.get_mut(index) {
            Some((g, Some(slot))) if *g == generation => Some(slot),
            _ => None,
        }
    }

    fn remove(&mut self, key: usize) -> Option<T> {
        let (generation, index) = split(key);
        match self.slots.get_mut(index) {
            Some((g, slot @ Some(_))) if *g == generation => {
                self.free.push(index);
                slot.take()
            }
            _ => None,
        }
    }

    fn keys(&self) -> Vec<usize> {
        let live = self.slots.iter().enumerate();
        live.filter(|(_, (_, s))| s.is_some())
            .map(|(i, (g, _))| key(*g, i))
            .collect()
    }
}

/// One loop thread's state.
struct Worker<'a> {
    lp: &'a Loop,
    ctx: &'a Context,
    poll: Poll,
    conns: Slots<Slot>,
    lookups: FuturesUnordered<Lookup>,
    /// Lookups were added since the set was last polled.
    new_lookups: bool,
    /// Connections with input left to read and room to take it: no event
    /// will come for that input, so they are read again next round.
    queued: Vec<usize>,
    /// The earliest deadline of any connection (or earlier).
    next_sweep: Option<Instant>,
    /// The stop's deadline, once the loop has seen the stop.
    stop: Option<Instant>,
    buf: Vec<u8>,
}

/// How long a loop may wait in its poll: not at all while it has work no
/// event will announce (lookups not yet polled, connections with input
/// left) or a wake-up is pending (its event may have been swallowed, see
/// [`LoopWaker`]); else until the next deadline (mio rounds up: waking
/// early would only sweep for nothing).
fn wait_limit(
    work: bool,
    woken: bool,
    next_sweep: Option<Instant>,
    now: Instant,
) -> Option<Duration> {
    if work || woken {
        return Some(Duration::ZERO);
    }
    next_sweep.map(|t| t.saturating_duration_since(now))
}

fn run(lp: &Loop, ctx: &Context, poll: Poll) {
    let waker = futures::task::waker(lp.wake.clone());
    let mut w = Worker {
        lp,
        ctx,
        poll,
        conns: Slots::default(),
        lookups: FuturesUnordered::new(),
        new_lookups: false,
        queued: Vec::new(),
        next_sweep: None,
        stop: None,
        buf: vec![0u8; READ_BUF],
    };
    let mut events = Events::with_capacity(EVENTS);
    loop {
        // Lookups added since the last poll have not started: poll them
        // first (a future starts on its first poll; pushing wakes nothing).
        // Queued connections have input now.
        let timeout = wait_limit(
            w.new_lookups || !w.queued.is_empty(),
            lp.wake.pending(),
            w.next_sweep,
            Instant::now(),
        );
        if let Err(e) = w.poll.poll(&mut events, timeout) {
            events.clear();
            if e.kind() != io::ErrorKind::Interrupted {
                log::warn!("waiting on connections failed: {e}");
                std::thread::sleep(FAILED_WAIT_PAUSE);
            }
        }
        let now = Instant::now();
        // The waker's own event says nothing the flag does not.
        let woken = lp.wake.take();
        for ev in &events {
            if ev.token() != WAKE {
                w.on_event(ev.token().0, ev, now);
            }
        }
        for key in std::mem::take(&mut w.queued) {
            if let Some(slot) = w.conns.get_mut(key) {
                slot.queued = false;
                w.step(key, now);
            }
        }
        if woken {
            w.adopt(now);
            if w.stop.is_none() && ctx.registry.stopping() {
                w.begin_stop(now);
            }
        }
        if woken || w.new_lookups {
            w.poll_lookups(&waker, now);
        }
        if w.next_sweep.is_some_and(|t| now >= t) {
            w.sweep(now);
        }
        if w.stop.is_some() && w.conns.len() == 0 && w.lookups.is_empty() {
            let mut inbox = lp.lock_inbox();
            if inbox.streams.is_empty() {
                inbox.closed = true;
                return;
            }
        }
    }
}

impl Worker<'_> {
    /// Take the connections the accept threads handed over.
    fn adopt(&mut self, now: Instant) {
        let streams = std::mem::take(&mut self.lp.lock_inbox().streams);
        for (stream, limits) in streams {
            let stop = self.stop.or_else(|| {
                // Accepted just before the stop: drain it like the rest.
                self.ctx
                    .registry
                    .stopping()
                    .then(|| capped_after(now, self.ctx.shutdown_timeout))
            });
            let conn = Conn::new(stream, &limits, &self.ctx.service, now, stop);
            let Some(key) = self.conns.insert(Slot {
                conn,
                deadline: None,
                queued: false,
            }) else {
                log::warn!("too many connections in one loop, closing a new one");
                self.lp.load.fetch_sub(1, Ordering::Relaxed);
                self.ctx.registry.remove();
                continue;
            };
            // Both directions, once: readiness is kept per connection, so
            // nothing is registered again as its needs change.
            let registered = self.conns.get_mut(key).map(|slot| {
                self.poll.registry().register(
                    slot.conn.source(),
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
            if let Some(Err(e)) = registered {
                log::warn!("cannot watch a new connection, closing it: {e}");
                // Not registered: nothing to leave.
                self.forget(key);
                continue;
            }
            self.step(key, now);
        }
    }

    fn on_event(&mut self, key: usize, ev: &Event, now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        // A hang-up while the connection reads is seen by the read (end of
        // input, or the error), so that replies owed are still written.
        if ev.is_error() || (ev.is_write_closed() && !slot.conn.wants_input()) {
            log::debug!("connection ended: the client went away");
            self.close(key);
            return;
        }
        slot.conn.on_ready(
            ev.is_readable() || ev.is_read_closed(),
            ev.is_writable() || ev.is_write_closed(),
        );
        self.step(key, now);
    }

    /// Step a connection: read once if it has input and room, answer,
    /// write, and note what it waits for.
    fn step(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if let Err(e) = slot.conn.on_readable(&mut self.buf, now) {
            log::debug!("connection ended: {e}");
            self.close(key);
            return;
        }
        let service = &self.ctx.service;
        let lookups = &self.lookups;
        let mut added = false;
        let mut miss = |seq: Seq, miss| {
            let service = service.clone();
            added = true;
            lookups.push(async move { (key, seq, service.answer_miss(miss).await) }.boxed());
        };
        let next = slot.conn.step(service, &mut miss, now);
        self.new_lookups |= added;
        match next {
            Ok(Next::Wait { deadline }) => {
                slot.deadline = deadline;
                // Input left in the socket (a full read, or reading held
                // back until replies were written) raises no new event.
                if slot.conn.wants_read() && !slot.queued {
                    slot.queued = true;
                    self.queued.push(key);
                }
                self.sweep_by(deadline);
            }
            Ok(Next::Close) => self.close(key),
            Err(e) => {
                log::debug!("connection ended: {e}");
                self.close(key);
            }
        }
    }

    /// Take the replies of finished lookups to their connections.
    /// Stepping a connection may add lookups (requests that waited for a
    /// free place); they are polled in the same round.
    fn poll_lookups(&mut self, waker: &std::task::Waker, now: Instant) {
        let mut cx = TaskContext::from_waker(waker);
        loop {
            self.new_lookups = false;
            let mut done = Vec::new();
            while let TaskPoll::Ready(Some((key, seq, reply))) =
                self.lookups.poll_next_unpin(&mut cx)
            {
                if let Some(slot) = self.conns.get_mut(key) {
                    slot.conn.on_reply(seq, reply);
                    done.push(key);
                }
            }
            done.dedup();
            for key in done {
                self.step(key, now);
            }
            if !self.new_lookups {
                return;
            }
        }
    }

    /// The stop reached this loop: every connection drains.
    fn begin_stop(&mut self, now: Instant) {
        let deadline = capped_after(now, self.ctx.shutdown_timeout);
        self.stop = Some(deadline);
        for key in self.conns.keys() {
            if let Some(slot) = self.conns.get_mut(key) {
                slot.conn.begin_stop(deadline);
            }
            self.step(key, now);
        }
    }

    /// Act on the deadlines that passed; find the next one.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = None;
        for key in self.conns.keys() {
            let Some(slot) = self.conns.get_mut(key) else {
                continue;
            };
            match slot.deadline {
                Some(d) if now >= d => {
                    if slot.conn.on_deadline(now) {
                        self.close(key);
                    } else {
                        self.step(key, now);
                    }
                }
                later => self.sweep_by(later),
            }
        }
    }

    /// Sweep no later than `deadline`.
    fn sweep_by(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.next_sweep = Some(self.next_sweep.map_or(d, |s| s.min(d)));
        }
    }

    /// Leave the poll, close the socket, uncount it.
    fn close(&mut self, key: usize) {
        if let Some(slot) = self.conns.get_mut(key) {
            // Before the descriptor closes, so its number can be reused
            // (poll(2) would otherwise keep watching it).
            let _ = self.poll.registry().deregister(slot.conn.source());
        }
        self.forget(key);
    }

    /// Close the socket and uncount it.
    fn forget(&mut self, key: usize) {
        if let Some(slot) = self.conns.remove(key) {
            drop(slot);
            self.lp.load.fetch_sub(1, Ordering::Relaxed);
            self.ctx.registry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{wait_limit, LoopWaker, Slots, INDEX_MASK, WAKE};
    use mio::{Events, Poll};
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// A wake-up whose event never reaches the poll (mio's poll(2) backend
    /// can swallow it when the loop changes a registration at that moment,
    /// as the CI run on that backend found) still keeps the loop from
    /// waiting: the flag, set before the event is sent, is what counts.
    #[test]
    fn a_wake_up_whose_event_is_lost_still_stops_the_wait() {
        let mut poll = Poll::new().expect("poll");
        let wake = LoopWaker {
            waker: mio::Waker::new(poll.registry(), WAKE).expect("waker"),
            woken: AtomicBool::new(false),
        };
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert_eq!(wait_limit(false, wake.pending(), None, now), None);
        wake.wake_loop();
        // The event is consumed elsewhere: only the flag is left.
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        assert_eq!(
            wait_limit(false, wake.pending(), Some(later), now),
            Some(Duration::ZERO)
        );
        assert!(wake.take());
        assert_eq!(
            wait_limit(false, wake.pending(), Some(later), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            wait_limit(true, false, Some(later), now),
            Some(Duration::ZERO)
        );
    }

    /// A key stays valid until its slot is freed; a freed slot reused by a
    /// new connection does not answer to the old key (a late event or a
    /// late lookup reply for a closed connection finds nothing).
    #[test]
    fn stale_keys_find_nothing() {
        let mut slots: Slots<&str> = Slots::default();
        let a = slots.insert("a").unwrap();
        let b = slots.insert("b").unwrap();
        assert_eq!(slots.get_mut(a).map(|s| *s), Some("a"));
        assert_eq!(slots.remove(a), Some("a"));
        assert_eq!(slots.remove(a), None);
        let c = slots.insert("c").unwrap();
        assert_eq!(c & INDEX_MASK, a & INDEX_MASK, "the freed slot is reused");
        assert_ne!(c, a);
        assert_eq!(slots.get_mut(a), None);
        assert_eq!(slots.get_mut(c).map(|s| *s), Some("c"));
        assert_eq!(slots.len(), 2);
        let mut keys = slots.keys();
        keys.sort_unstable();
        let mut want = vec![b, c];
        want.sort_unstable();
        assert_eq!(keys, want);
        // The last generation and the last index make no waker's token.
        let last = super::key(usize::MAX >> super::INDEX_BITS, INDEX_MASK - 1);
        assert_ne!(last, WAKE.0);
    }
}
