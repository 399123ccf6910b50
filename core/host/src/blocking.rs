//! Blocking store work (SQLite, PostgreSQL) on the runtime's blocking pool,
//! so the async executor never waits on a disk, a lock or a socket
//! (docs/ARCHITECTURE.md "Cache"). The pool grows to hundreds of threads
//! (smol's to 500, tokio's to 512), so a store bounds its own share:
//! [`Jobs`] runs at most its number of turns at once, a job whose caller
//! gave up before its turn is skipped, and writes of one domain waiting for
//! a turn merge into the newest.

use std::collections::hash_map::{Entry, HashMap};
use std::pin::pin;
use std::sync::Mutex;

use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::lock::Mutex as AsyncMutex;
use futures::StreamExt;

use mta_sts_core::cache::{CacheEntry, StoreError};
use mta_sts_core::domain::Domain;
use mta_sts_core::service::Runtime;

/// Run blocking `work` on the runtime's blocking pool and await its result.
/// Skipped if the caller gave up (dropped this future) before the pool
/// started it: a lookup past its deadline costs no disk or server time.
pub(crate) async fn run_blocking<R, T, F>(rt: &R, work: F) -> Result<T, StoreError>
where
    R: Runtime,
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        if !tx.is_canceled() {
            // The receiver may go meanwhile: the result is then dropped.
            let _ = tx.send(work());
        }
    }));
    rx.await.unwrap_or_else(|_| Err(ended()))
}

fn ended() -> StoreError {
    StoreError::Backend("a blocking cache job ended without a result".into())
}

/// Turns to run a job: `count` tokens in a channel, taken in the order
/// asked for.
struct Permits {
    give: mpsc::Sender<()>,
    take: AsyncMutex<mpsc::Receiver<()>>,
}

/// A turn; handed back when dropped, wherever the job ends.
struct Permit(mpsc::Sender<()>);

impl Drop for Permit {
    fn drop(&mut self) {
        // The channel holds exactly the tokens out, so it has room.
        let _ = self.0.try_send(());
    }
}

impl Permits {
    fn new(count: usize) -> Permits {
        let (mut give, take) = mpsc::channel(count);
        for _ in 0..count {
            let _ = give.try_send(());
        }
        Permits {
            give,
            take: AsyncMutex::new(take),
        }
    }

    /// Wait for a turn (cancel by dropping the future). The channel never
    /// closes while `self` holds a sender.
    async fn acquire(&self) -> Result<Permit, StoreError> {
        let mut take = self.take.lock().await;
        take.next()
            .await
            .map(|()| Permit(self.give.clone()))
            .ok_or_else(ended)
    }
}

/// A domain's write waiting for a turn: the newest entry asked for, and
/// every caller whose write it stands for.
struct PendingWrite {
    entry: CacheEntry,
    callers: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// One store's blocking work: at most `turns` jobs on the blocking pool at
/// once, each holding its turn until its work ends (a job whose caller
/// timed out keeps it while it runs), so a locked file or a hung server
/// holds at most `turns` threads.
pub(crate) struct Jobs<R: Runtime> {
    rt: R,
    permits: Permits,
    pending: Mutex<HashMap<Domain, PendingWrite>>,
}

impl<R: Runtime> Jobs<R> {
    /// Jobs on `rt`'s blocking pool, `turns` (at least one) at once.
    pub(crate) fn new(rt: R, turns: usize) -> Jobs<R> {
        Jobs {
            rt,
            permits: Permits::new(turns.max(1)),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Wait for a turn, then run `work` as [`run_blocking`] does.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self.permits.acquire().await?;
        run_blocking(&self.rt, move || {
            let _permit = permit;
            work()
        })
        .await
    }

    /// The runtime the jobs run on (its clock, for the stores' writes).
    pub(crate) fn rt(&self) -> &R {
        &self.rt
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Domain, PendingWrite>> {
        // No code that can panic runs under this lock: the map is whole.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `entry` for `domain` with `write` (the store's "newer wins"
    /// upsert) on the blocking pool. While it waits for a turn, the
    /// domain's later writes merge into it: the newest entry
    /// ([`CacheEntry::is_newer_than`]) is written once, by whichever
    /// caller's turn comes first, and every merged caller gets that
    /// result. Skipped if every merged caller gave up.
    pub(crate) async fn write<F>(
        &self,
        domain: &Domain,
        entry: &CacheEntry,
        write: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(&Domain, &CacheEntry) -> Result<(), StoreError> + Send + 'static,
    {
        let (tx, done) = oneshot::channel();
        match self.pending().entry(domain.clone()) {
            Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                if !slot.entry.is_newer_than(entry) {
                    slot.entry = entry.clone();
                }
                slot.callers.push(tx);
            }
            Entry::Vacant(slot) => {
                slot.insert(PendingWrite {
                    entry: entry.clone(),
                    callers: vec![tx],
                });
            }
        }
        let mut waiting = Waiting {
            jobs: self,
            domain,
            done,
        };
        let turn = {
            let acquire = pin!(self.permits.acquire());
            match select(acquire, &mut waiting.done).await {
                Either::Left((turn, _)) => turn?,
                // Another caller's turn wrote ours.
                Either::Right((result, _)) => return result.unwrap_or_else(|_| Err(ended())),
            }
        };
        // Our turn: write what is pending, unless an earlier turn took it.
        let taken = self.pending().remove(domain);
        if let Some(PendingWrite { entry, callers }) = taken {
            let domain = domain.clone();
            self.rt.spawn_blocking(Box::new(move || {
                let _turn = turn;
                if callers.iter().all(|c| c.is_canceled()) {
                    return;
                }
                let result = write(&domain, &entry);
                for caller in callers {
                    let _ = caller.send(result.clone());
                }
            }));
        } else {
            // An earlier turn took our write: hand ours back while it runs.
            drop(turn);
        }
        (&mut waiting.done).await.unwrap_or_else(|_| Err(ended()))
    }
}

/// A caller of [`Jobs::write`] waiting for its result: if it gives up, its
/// place in the domain's pending write goes, and the write with it when
/// no caller is left.
struct Waiting<'a, R: Runtime> {
    jobs: &'a Jobs<R>,
    domain: &'a Domain,
    done: oneshot::Receiver<Result<(), StoreError>>,
}

impl<R: Runtime> Drop for Waiting<'_, R> {
    fn drop(&mut self) {
        // Closing our receiver marks our sender cancelled.
        self.done.close();
        let mut pending = self.jobs.pending();
        if let Some(slot) = pending.get_mut(self.domain) {
            slot.callers.retain(|c| !c.is_canceled());
            if slot.callers.is_empty() {
                pending.remove(self.domain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rt::QueueRt;
    use futures::task::noop_waker_ref;
    use mta_sts_core::policy::{Mode, Policy, PolicyLines};
    use proptest::prelude::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Context;

    fn entry(fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
        CacheEntry {
            policy_id: format!("{fetched_at_ms}.{checked_at_ms}"),
            policy: Policy {
                mode: Mode::Enforce,
                max_age: 86400,
                mx: vec!["mx.example.com".into()],
                lines: PolicyLines::default(),
            },
            fetched_at_ms,
            checked_at_ms,
        }
    }

    /// A store that records each entry written, in order.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<(Domain, CacheEntry)>>>);

    impl Written {
        fn writer(
            &self,
        ) -> impl FnOnce(&Domain, &CacheEntry) -> Result<(), StoreError> + Send + 'static {
            let log = self.clone();
            move |domain, entry| {
                log.0.lock().unwrap().push((domain.clone(), entry.clone()));
                Ok(())
            }
        }
        fn entries(&self) -> Vec<CacheEntry> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(_, e)| e.clone())
                .collect()
        }
    }

    fn d(name: &str) -> Domain {
        Domain::new(name).unwrap()
    }

    /// Poll `fut` once: far enough to queue its blocking job.
    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) {
        assert!(fut
            .poll(&mut Context::from_waker(noop_waker_ref()))
            .is_pending());
    }

    #[test]
    fn a_job_whose_caller_gave_up_is_skipped() {
        let rt = QueueRt::default();
        let worked = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&worked);
        let mut call = Box::pin(run_blocking(&rt, move || {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }));
        poll_once(call.as_mut());
        drop(call);
        assert_eq!(rt.run_queued(), 1);
        assert_eq!(worked.load(Ordering::SeqCst), 0);
        // A caller still waiting gets its job done.
        let count = Arc::clone(&worked);
        let done = rt.drive(run_blocking(&rt, move || {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        }));
        assert_eq!((done, worked.load(Ordering::SeqCst)), (Ok(7), 1));
    }

    #[test]
    fn a_call_that_gives_up_waiting_for_a_turn_never_starts() {
        let rt = QueueRt::default();
        let jobs = Jobs::new(rt.clone(), 1);
        let worked = Arc::new(AtomicUsize::new(0));
        let work = |count: &Arc<AtomicUsize>| {
            let count = Arc::clone(count);
            move || {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let mut first = Box::pin(jobs.run(work(&worked)));
        poll_once(first.as_mut());
        let mut second = Box::pin(jobs.run(work(&worked)));
        poll_once(second.as_mut());
        // One turn: only the first is on the blocking pool.
        drop(second);
        assert_eq!(rt.run_queued(), 1);
        assert_eq!(rt.drive(first), Ok(()));
        assert_eq!(worked.load(Ordering::SeqCst), 1);
        // The turn came back: the next call runs.
        assert_eq!(rt.drive(jobs.run(work(&worked))), Ok(()));
        assert_eq!(worked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_write_every_caller_gave_up_on_is_not_made() {
        let rt = QueueRt::default();
        let jobs = Jobs::new(rt.clone(), 1);
        let written = Written::default();
        let (a, b) = (d("a.example"), d("b.example"));
        let e: Vec<CacheEntry> = (0..5).map(|i| entry(i, i)).collect();
        // `a` holds the turn; two writes of `b` wait, then both give up.
        let mut first = Box::pin(jobs.write(&a, &e[1], written.writer()));
        poll_once(first.as_mut());
        let mut gone1 = Box::pin(jobs.write(&b, &e[2], written.writer()));
        poll_once(gone1.as_mut());
        let mut gone2 = Box::pin(jobs.write(&b, &e[3], written.writer()));
        poll_once(gone2.as_mut());
        drop((gone1, gone2));
        assert!(jobs.pending().is_empty());
        assert_eq!(rt.drive(first), Ok(()));
        // Once taken, a write whose callers all left is skipped too.
        let mut late = Box::pin(jobs.write(&b, &e[4], written.writer()));
        poll_once(late.as_mut());
        drop(late);
        assert_eq!(rt.run_queued(), 1);
        assert_eq!(written.entries(), vec![entry(1, 1)]);
    }

    #[test]
    fn a_merged_caller_that_gives_up_leaves_the_write_to_the_others() {
        let rt = QueueRt::default();
        let jobs = Jobs::new(rt.clone(), 1);
        let written = Written::default();
        let (a, b) = (d("a.example"), d("b.example"));
        let e: Vec<CacheEntry> = (0..5).map(|i| entry(i, i)).collect();
        let mut first = Box::pin(jobs.write(&a, &e[1], written.writer()));
        poll_once(first.as_mut());
        // The newer write of `b` merges into the waiting one, then leaves.
        let mut stays = Box::pin(jobs.write(&b, &e[2], written.writer()));
        poll_once(stays.as_mut());
        let mut leaves = Box::pin(jobs.write(&b, &e[3], written.writer()));
        poll_once(leaves.as_mut());
        drop(leaves);
        assert_eq!(rt.drive(first), Ok(()));
        assert_eq!(rt.drive(stays), Ok(()));
        assert_eq!(written.entries(), vec![entry(1, 1), entry(3, 3)]);
        assert!(jobs.pending().is_empty());
    }

    proptest! {
        /// Writes of one domain fired while another holds the one turn:
        /// one more write, of the newest of them, and every caller is
        /// answered.
        #[test]
        fn waiting_writes_merge_into_the_newest(
            stamps in proptest::collection::vec((0u64..4, 0u64..4), 1..12)
        ) {
            let rt = QueueRt::default();
            let jobs = Jobs::new(rt.clone(), 1);
            let written = Written::default();
            let dom = d("example.com");
            let entries: Vec<CacheEntry> = stamps.iter().map(|&(f, c)| entry(f, c)).collect();
            let (a, e9) = (d("a.example"), entry(9, 9));
            let mut first = Box::pin(jobs.write(&a, &e9, written.writer()));
            poll_once(first.as_mut());
            let done = rt.drive(futures::future::join_all(
                entries.iter().map(|e| jobs.write(&dom, e, written.writer())),
            ));
            prop_assert!(done.iter().all(|r| r.is_ok()));
            prop_assert_eq!(rt.drive(first), Ok(()));
            let got = written.entries();
            prop_assert_eq!(got.len(), 2);
            // Not older than any, so the store keeps it (newer wins).
            prop_assert!(entries.iter().all(|e| !e.is_newer_than(&got[1])));
            prop_assert!(entries.contains(&got[1]));
        }
    }
}
