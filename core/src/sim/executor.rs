//! The virtual clock and the single-threaded executor: a run queue of
//! spawned tasks and a timer heap keyed by virtual time. Time only moves
//! when no task is ready, and only as far as the next timer (or the target
//! of [`Sim::advance`]), so every run of a test takes the same steps.

use crate::service::Runtime;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Default Unix time (milliseconds) at virtual time zero: 2023-11-14.
pub const DEFAULT_UNIX_MS: u64 = 1_700_000_000_000;

/// Polls allowed in one [`Sim::run_until_idle`] before it declares a
/// livelock (tasks waking each other forever without time moving).
const MAX_POLLS_PER_IDLE: u64 = 5_000_000;

/// How far [`Sim::block_on`] lets virtual time run before it gives up.
const BLOCK_ON_LIMIT: Duration = Duration::from_secs(60 * 86_400);

/// The deterministic runtime: clone it freely, every clone is the same
/// executor and clock. Implements [`Runtime`], so the real service stack
/// runs on it unchanged.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

struct Inner {
    base: Instant,
    base_unix_ms: u64,
    state: Mutex<State>,
}

struct Task {
    /// `None` while the task is being polled.
    future: Option<BoxFuture<'static, ()>>,
    waker: Arc<TaskWaker>,
}

#[derive(Default)]
struct State {
    elapsed: Duration,
    tasks: HashMap<u64, Task>,
    ready: VecDeque<u64>,
    next_task: u64,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    next_timer: u64,
}

/// One registered sleep: fires at `deadline`; ties fire in registration order.
struct TimerEntry {
    deadline: Duration,
    seq: u64,
    slot: Weak<TimerSlot>,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// The waker of a sleep; the heap holds it weakly, so a dropped sleep
/// (a `with_timeout` whose work finished first) never moves the clock.
struct TimerSlot {
    waker: Mutex<Option<Waker>>,
}

struct TaskWaker {
    id: u64,
    queued: AtomicBool,
    sim: Weak<Inner>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(inner) = self.sim.upgrade() {
            lock(&inner.state).ready.push_back(self.id);
        }
    }
}

struct FlagWaker(AtomicBool);

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    /// A fresh executor whose clock reads [`DEFAULT_UNIX_MS`] at time zero.
    pub fn new() -> Self {
        Sim::with_unix_ms(DEFAULT_UNIX_MS)
    }

    /// A fresh executor whose wall clock reads `unix_ms` at time zero.
    pub fn with_unix_ms(unix_ms: u64) -> Self {
        Sim {
            inner: Arc::new(Inner {
                base: Instant::now(),
                base_unix_ms: unix_ms,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.state().elapsed
    }

    /// Number of spawned tasks not finished yet.
    pub fn tasks(&self) -> usize {
        self.state().tasks.len()
    }

    /// Spawn `fut` and get a handle to its output.
    pub fn spawn_task<T, F>(&self, fut: F) -> TaskHandle<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(Output {
            value: None,
            done: false,
            waker: None,
        }));
        let out = slot.clone();
        self.spawn(
            async move {
                let value = fut.await;
                let waker = {
                    let mut out = lock(&out);
                    out.value = Some(value);
                    out.done = true;
                    out.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }
            .boxed(),
        );
        TaskHandle { slot }
    }

    /// Poll ready tasks until none is ready; the clock does not move.
    pub fn run_until_idle(&self) {
        let mut polls = 0u64;
        loop {
            let next = {
                let mut st = self.state();
                let mut found = None;
                while let Some(id) = st.ready.pop_front() {
                    if let Some(task) = st.tasks.get_mut(&id) {
                        if let Some(fut) = task.future.take() {
                            task.waker.queued.store(false, Ordering::SeqCst);
                            found = Some((id, fut, task.waker.clone()));
                            break;
                        }
                    }
                }
                found
            };
            let Some((id, mut fut, task_waker)) = next else {
                return;
            };
            polls += 1;
            assert!(
                polls < MAX_POLLS_PER_IDLE,
                "sim: livelock, {polls} polls at {:?} without going idle",
                self.elapsed()
            );
            let waker = Waker::from(task_waker);
            let mut cx = Context::from_waker(&waker);
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(()) => {
                    let task = self.state().tasks.remove(&id);
                    // Dropped outside the lock: drops may wake other tasks.
                    drop(task);
                    drop(fut);
                }
                Poll::Pending => {
                    let mut st = self.state();
                    if let Some(task) = st.tasks.get_mut(&id) {
                        task.future = Some(fut);
                    }
                }
            }
        }
    }

    /// The deadline of the earliest live timer, if any.
    pub fn next_timer(&self) -> Option<Duration> {
        let mut st = self.state();
        while let Some(Reverse(entry)) = st.timers.peek() {
            if entry.slot.strong_count() > 0 {
                return Some(entry.deadline);
            }
            st.timers.pop();
        }
        None
    }

    /// Set the clock to `to` (never backwards) and wake the timers due.
    fn set_time(&self, to: Duration) {
        let wakers: Vec<Waker> = {
            let mut st = self.state();
            st.elapsed = st.elapsed.max(to);
            let now = st.elapsed;
            let mut due = Vec::new();
            while st.timers.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
                if let Some(Reverse(entry)) = st.timers.pop() {
                    if let Some(slot) = entry.slot.upgrade() {
                        due.push(slot);
                    }
                }
            }
            due.iter().filter_map(|s| lock(&s.waker).take()).collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Run until idle, then move the clock to the next timer and run again,
    /// until no timer is due within `d`; the clock ends exactly `d` later.
    pub fn advance(&self, d: Duration) {
        let target = self.elapsed() + d;
        self.advance_to(target);
    }

    /// [`Sim::advance`] to the virtual time `target` (since the start).
    pub fn advance_to(&self, target: Duration) {
        loop {
            self.run_until_idle();
            match self.next_timer() {
                Some(at) if at <= target => self.set_time(at),
                _ => break,
            }
        }
        self.set_time(target);
        self.run_until_idle();
    }

    /// Run until idle, then fire the earliest timer; false when there is none.
    pub fn step(&self) -> bool {
        self.run_until_idle();
        match self.next_timer() {
            Some(at) => {
                self.set_time(at);
                self.run_until_idle();
                true
            }
            None => false,
        }
    }

    /// Drive `fut` (polled in place: it need be neither `Send` nor
    /// `'static`) together with the spawned tasks, moving the clock from
    /// timer to timer while everything waits. Panics on a deadlock (nothing
    /// ready, no timer) or after 60 days of virtual time.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let start = self.elapsed();
        let flag = Arc::new(FlagWaker(AtomicBool::new(true)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            if flag.0.swap(false, Ordering::SeqCst) {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    // Let what the result set in motion settle.
                    self.run_until_idle();
                    return v;
                }
            }
            self.run_until_idle();
            if flag.0.load(Ordering::SeqCst) {
                continue;
            }
            let Some(at) = self.next_timer() else {
                panic!(
                    "sim: deadlock at {:?}: the future waits, no task is ready and no timer is set",
                    self.elapsed()
                );
            };
            assert!(
                at - start <= BLOCK_ON_LIMIT,
                "sim: block_on still pending after {BLOCK_ON_LIMIT:?} of virtual time"
            );
            self.set_time(at);
        }
    }

    /// A future that completes `d` after now (on the virtual clock).
    pub fn sleep_for(&self, d: Duration) -> Sleep {
        Sleep {
            sim: self.clone(),
            deadline: self.elapsed() + d,
            slot: None,
        }
    }

    /// A future that completes at virtual time `at` (since the start).
    pub fn sleep_until(&self, at: Duration) -> Sleep {
        Sleep {
            sim: self.clone(),
            deadline: at,
            slot: None,
        }
    }
}

impl Runtime for Sim {
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        let mut st = self.state();
        let id = st.next_task;
        st.next_task += 1;
        let waker = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(true),
            sim: Arc::downgrade(&self.inner),
        });
        st.tasks.insert(
            id,
            Task {
                future: Some(fut),
                waker,
            },
        );
        st.ready.push_back(id);
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        // No threads in the sim: the work runs as an ordinary task.
        self.spawn(async move { work() }.boxed());
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.sleep_for(d).boxed()
    }

    fn now(&self) -> Instant {
        self.inner.base + self.elapsed()
    }

    fn unix_ms(&self) -> u64 {
        let ms = u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.base_unix_ms.saturating_add(ms)
    }
}

/// A virtual-time sleep (see [`Sim::sleep_for`]).
pub struct Sleep {
    sim: Sim,
    deadline: Duration,
    slot: Option<Arc<TimerSlot>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut st = this.sim.state();
        if st.elapsed >= this.deadline {
            return Poll::Ready(());
        }
        let slot = match &this.slot {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(TimerSlot {
                    waker: Mutex::new(None),
                });
                let seq = st.next_timer;
                st.next_timer += 1;
                st.timers.push(Reverse(TimerEntry {
                    deadline: this.deadline,
                    seq,
                    slot: Arc::downgrade(&slot),
                }));
                this.slot = Some(slot.clone());
                slot
            }
        };
        drop(st);
        *lock(&slot.waker) = Some(cx.waker().clone());
        Poll::Pending
    }
}

struct Output<T> {
    value: Option<T>,
    done: bool,
    waker: Option<Waker>,
}

/// The output of a task started with [`Sim::spawn_task`]; awaiting it
/// (e.g. in [`Sim::block_on`]) waits for the task.
pub struct TaskHandle<T> {
    slot: Arc<Mutex<Output<T>>>,
}

impl<T> TaskHandle<T> {
    /// True once the task has finished.
    pub fn is_finished(&self) -> bool {
        lock(&self.slot).done
    }

    /// The task's output, once (`None` before it finishes or when taken).
    pub fn take(&self) -> Option<T> {
        lock(&self.slot).value.take()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut out = lock(&self.slot);
        match out.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                assert!(!out.done, "sim: task output already taken");
                out.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_moves_only_to_timers_and_in_order() {
        let sim = Sim::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for (i, ms) in [30u64, 10, 20, 10].into_iter().enumerate() {
            let (rt, log) = (sim.clone(), log.clone());
            sim.spawn(
                async move {
                    rt.sleep(Duration::from_millis(ms)).await;
                    lock(&log).push((i, rt.elapsed()));
                }
                .boxed(),
            );
        }
        sim.run_until_idle();
        assert_eq!(sim.elapsed(), Duration::ZERO);
        sim.advance(Duration::from_millis(15));
        assert_eq!(sim.elapsed(), Duration::from_millis(15));
        let ms = Duration::from_millis;
        assert_eq!(*lock(&log), vec![(1, ms(10)), (3, ms(10))]);
        sim.advance(Duration::from_secs(1));
        assert_eq!(
            *lock(&log),
            vec![(1, ms(10)), (3, ms(10)), (2, ms(20)), (0, ms(30))]
        );
        assert_eq!(sim.tasks(), 0);
        assert_eq!(sim.unix_ms(), DEFAULT_UNIX_MS + 1015);
    }

    #[test]
    fn dropped_sleeps_do_not_move_the_clock() {
        let sim = Sim::new();
        let rt = sim.clone();
        let got = sim.block_on(async move {
            crate::service::with_timeout(&rt, Duration::from_secs(3600), async { 7 }).await
        });
        assert_eq!(got, Some(7));
        assert_eq!(sim.next_timer(), None);
        let rt = sim.clone();
        let v = sim.block_on(async move {
            rt.sleep(Duration::from_millis(250)).await;
            rt.elapsed()
        });
        assert_eq!(v, Duration::from_millis(250));
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn block_on_reports_a_deadlock() {
        let sim = Sim::new();
        let (_tx, rx) = futures::channel::oneshot::channel::<()>();
        let _ = sim.block_on(rx);
    }
}
