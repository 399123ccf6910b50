//! The connection loops: one thread per core, each with its own epoll(7)
//! set of connections (docs/ARCHITECTURE.md "Connections"). A loop answers
//! fresh hits on its own thread; misses are futures it polls, whose lookups
//! run on the async runtime and whose wakers wake the loop through an
//! eventfd. Level-triggered, so a request costs an `epoll_wait` shared with
//! every other ready connection, one `read` and one `write`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::task::ArcWake;
use futures::{FutureExt, StreamExt};
use mta_sts_core::config::Limits;
use mta_sts_core::socketmap::{Reply, Seq};

use super::conn::{capped_after, Conn, Next};
use super::{Context, Stream};

/// The epoll key of a loop's eventfd (connection keys are slab slots).
const WAKE_KEY: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Bytes read per `read`.
const READ_BUF: usize = 8192;
/// Pause after `epoll_wait` fails for a reason other than a signal.
const FAILED_WAIT_PAUSE: Duration = Duration::from_millis(100);

/// A miss's reply, for the connection in slot `key`.
type Lookup = BoxFuture<'static, (u64, Seq, Reply)>;

/// One loop's shared side: how the accept threads and the wakers reach it.
pub(super) struct Loop {
    epoll: OwnedFd,
    wake: Arc<WakeFd>,
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

/// An eventfd: writing to it wakes the loop (`ArcWake` for the misses).
struct WakeFd(OwnedFd);

impl WakeFd {
    fn wake_loop(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd this
        // struct owns. A full counter (EAGAIN) already means "woken".
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn reset(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer from a non-blocking
        // eventfd this struct owns; EAGAIN (not woken) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

impl ArcWake for WakeFd {
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
            let lp = Arc::new(Loop::new()?);
            let (lp2, ctx2) = (lp.clone(), ctx.clone());
            std::thread::Builder::new()
                .name("mta-sts-conn".into())
                .spawn(move || {
                    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| run(&lp2, &ctx2)));
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
    fn new() -> io::Result<Loop> {
        // SAFETY: epoll_create1 and eventfd take flags only; each result is
        // checked and owned right away.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        let wake = unsafe { owned(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))? };
        let lp = Loop {
            epoll,
            wake: Arc::new(WakeFd(wake)),
            inbox: Mutex::default(),
            load: AtomicUsize::new(0),
        };
        lp.control(
            libc::EPOLL_CTL_ADD,
            lp.wake.0.as_raw_fd(),
            libc::EPOLLIN,
            WAKE_KEY,
        )?;
        Ok(lp)
    }

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

    fn control(&self, op: libc::c_int, fd: RawFd, events: libc::c_int, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: key,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; `fd` is open
        // (connections leave the set before their socket closes).
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// # Safety
/// `fd` is the result of a call that returns a new descriptor or -1.
unsafe fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: per the contract, a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A connection in its slot, with what the loop last asked epoll for.
struct Slot {
    conn: Conn,
    /// The epoll events registered (`EPOLLIN`/`EPOLLOUT`).
    interest: libc::c_int,
    deadline: Option<Instant>,
}

/// The connections of one loop, by key: the slot index in the low 32
/// bits and a generation in the high ones, so a stale key (an event or a
/// reply for a connection since closed) finds nothing.
struct Slots<T> {
    slots: Vec<(u32, Option<T>)>,
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

fn key(generation: u32, index: usize) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

/// The generation and index of `key`.
fn split(key: u64) -> (u32, usize) {
    ((key >> 32) as u32, (key & 0xffff_ffff) as usize)
}

impl<T> Slots<T> {
    fn insert(&mut self, slot: T) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                self.slots.len() - 1
            }
        };
        let entry = &mut self.slots[index];
        entry.0 = entry.0.wrapping_add(1);
        entry.1 = Some(slot);
        key(entry.0, index)
    }

    /// How many are held.
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let (generation, index) = split(key);
        match self.slots.get_mut(index) {
            Some((g, Some(slot))) if *g == generation => Some(slot),
            _ => None,
        }
    }

    fn remove(&mut self, key: u64) -> Option<T> {
        let (generation, index) = split(key);
        match self.slots.get_mut(index) {
            Some((g, slot @ Some(_))) if *g == generation => {
                self.free.push(index);
                slot.take()
            }
            _ => None,
        }
    }

    fn keys(&self) -> Vec<u64> {
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
    conns: Slots<Slot>,
    lookups: FuturesUnordered<Lookup>,
    /// Lookups were added since the set was last polled.
    new_lookups: bool,
    /// The earliest deadline of any connection (or earlier).
    next_sweep: Option<Instant>,
    /// The stop's deadline, once the loop has seen the stop.
    stop: Option<Instant>,
}

fn run(lp: &Loop, ctx: &Context) {
    let waker = futures::task::waker(lp.wake.clone());
    let mut w = Worker {
        lp,
        ctx,
        conns: Slots::default(),
        lookups: FuturesUnordered::new(),
        new_lookups: false,
        next_sweep: None,
        stop: None,
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buf = vec![0u8; READ_BUF];
    loop {
        // Lookups added since the last poll have not started: poll them
        // first (a future starts on its first poll; pushing wakes nothing).
        let timeout = if w.new_lookups {
            0
        } else {
            w.next_sweep.map_or(-1, |t| {
                let left = t.saturating_duration_since(Instant::now());
                // Round up: waking early would only sweep for nothing.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            })
        };
        // SAFETY: `events` is a live buffer of EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                lp.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                timeout,
            )
        };
        let now = Instant::now();
        let mut woken = false;
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                log::warn!("waiting on connections failed: {e}");
                std::thread::sleep(FAILED_WAIT_PAUSE);
            }
        }
        for ev in events.iter().take(usize::try_from(n).unwrap_or(0)) {
            let (key, flags) = (ev.u64, ev.events as libc::c_int);
            if key == WAKE_KEY {
                lp.wake.reset();
                woken = true;
            } else {
                w.on_event(key, flags, &mut buf, now);
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
            let fd = conn.stream().fd();
            let key = self.conns.insert(Slot {
                conn,
                interest: libc::EPOLLIN,
                deadline: None,
            });
            if let Err(e) = self.lp.control(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN, key) {
                log::warn!("cannot watch a new connection, closing it: {e}");
                self.close(key);
                continue;
            }
            self.step(key, now);
        }
    }

    fn on_event(&mut self, key: u64, flags: libc::c_int, buf: &mut [u8], now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let reading = slot.interest & libc::EPOLLIN != 0;
        let gone = flags & libc::EPOLLERR != 0 || (flags & libc::EPOLLHUP != 0 && !reading);
        if gone {
            // Level-triggered: left in the set, it would be reported again.
            log::debug!("connection ended: the client went away");
            self.close(key);
            return;
        }
        if reading && flags & (libc::EPOLLIN | libc::EPOLLHUP) != 0 {
            if let Err(e) = slot.conn.on_readable(buf, now) {
                log::debug!("connection ended: {e}");
                self.close(key);
                return;
            }
        }
        self.step(key, now);
    }

    /// Step a connection and update what epoll watches for it.
    fn step(&mut self, key: u64, now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
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
            Ok(Next::Wait {
                read,
                write,
                deadline,
            }) => {
                let interest =
                    if read { libc::EPOLLIN } else { 0 } | if write { libc::EPOLLOUT } else { 0 };
                if interest != slot.interest {
                    let fd = slot.conn.stream().fd();
                    slot.interest = interest;
                    if let Err(e) = self.lp.control(libc::EPOLL_CTL_MOD, fd, interest, key) {
                        log::warn!("cannot watch a connection, closing it: {e}");
                        self.close(key);
                        return;
                    }
                }
                slot.deadline = deadline;
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
            while let Poll::Ready(Some((key, seq, reply))) = self.lookups.poll_next_unpin(&mut cx) {
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

    /// Leave epoll, close the socket, uncount it.
    fn close(&mut self, key: u64) {
        if let Some(slot) = self.conns.remove(key) {
            let fd = slot.conn.stream().fd();
            // Before the descriptor closes, so its number can be reused.
            let _ = self.lp.control(libc::EPOLL_CTL_DEL, fd, 0, key);
            drop(slot);
            self.lp.load.fetch_sub(1, Ordering::Relaxed);
            self.ctx.registry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    /// A key stays valid until its slot is freed; a freed slot reused by a
    /// new connection does not answer to the old key (a late event or a
    /// late lookup reply for a closed connection finds nothing).
    #[test]
    fn stale_keys_find_nothing() {
        let mut slots: Slots<&str> = Slots::default();
        let a = slots.insert("a");
        let b = slots.insert("b");
        assert_eq!(slots.get_mut(a).map(|s| *s), Some("a"));
        assert_eq!(slots.remove(a), Some("a"));
        assert_eq!(slots.remove(a), None);
        let c = slots.insert("c");
        assert_eq!(c & 0xffff_ffff, a & 0xffff_ffff, "the freed slot is reused");
        assert_ne!(c, a);
        assert_eq!(slots.get_mut(a), None);
        assert_eq!(slots.get_mut(c).map(|s| *s), Some("c"));
        assert_eq!(slots.len(), 2);
        let mut keys = slots.keys();
        keys.sort_unstable();
        let mut want = vec![b, c];
        want.sort_unstable();
        assert_eq!(keys, want);
    }
}
