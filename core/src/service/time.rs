//! Timeouts built from the runtime's sleep, so core code can bound any
//! future without knowing the runtime.

use super::Runtime;
use futures::future::{select, Either};
use std::future::Future;
use std::time::Duration;

/// Run `fut` for at most `limit`; `None` when the time ran out first.
pub async fn with_timeout<R: Runtime, F: Future>(
    rt: &R,
    limit: Duration,
    fut: F,
) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    match select(fut, rt.sleep(limit)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}
