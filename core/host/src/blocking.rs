//! Blocking store work (SQLite, PostgreSQL) on the runtime's blocking pool,
//! so the async executor never waits on a disk, a lock or a socket
//! (docs/ARCHITECTURE.md "Cache").

use futures::channel::oneshot;

use mta_sts_core::cache::StoreError;
use mta_sts_core::service::Runtime;

/// Run blocking `work` on the runtime's blocking pool and await its result.
pub(crate) async fn run_blocking<R, T, F>(rt: &R, work: F) -> Result<T, StoreError>
where
    R: Runtime,
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        // The receiver may be gone (the lookup timed out): nothing to do.
        let _ = tx.send(work());
    }));
    rx.await
        .map_err(|_| StoreError::Backend("a blocking cache job ended without a result".into()))?
}
