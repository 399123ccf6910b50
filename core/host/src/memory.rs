//! Memory upkeep: policy fetches (TLS handshakes above all) allocate and
//! free a lot, and glibc keeps what was freed. Fewer malloc arenas, and
//! handing free memory back once a burst of network lookups is over,
//! keep the resident size near what the cache holds.

use std::sync::Arc;
use std::time::Duration;

use mta_sts_core::metrics::Metrics;

/// How often the upkeep thread looks at the lookup counter.
const CHECK: Duration = Duration::from_secs(1);

/// At most two malloc arenas: the connection threads and the blocking pool
/// would otherwise each get their own, multiplying fragmentation.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with a valid parameter, before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Start the upkeep thread: once network lookups have stopped for a
/// second after some ran, return free heap memory to the system.
pub fn start_upkeep(metrics: Arc<Metrics>) {
    let spawned = std::thread::Builder::new()
        .name("mta-sts-memory".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut seen = metrics.network_lookups();
            let mut busy = false;
            loop {
                std::thread::sleep(CHECK);
                let now = metrics.network_lookups();
                if now != seen {
                    seen = now;
                    busy = true;
                } else if busy {
                    busy = false;
                    trim();
                }
            }
        });
    if let Err(e) = spawned {
        log::debug!("memory upkeep thread not started: {e}");
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
