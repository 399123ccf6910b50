//! One connection's thread: read, answer fresh hits at once, look misses up
//! together through the async coordinator, write the replies in request
//! order; close on EOF, a protocol error, a stalled or idle client, or,
//! after a stop, once the client has been quiet briefly.

use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use mta_sts_core::config::Limits;
use mta_sts_core::netstring::DEFAULT_MAX_REQUEST;
use mta_sts_core::service::{ConfigView, Service};
use mta_sts_core::socketmap::Connection;

use super::registry::Registry;
use super::Stream;

/// After a stop, a connection with nothing pending is closed once its
/// client has sent nothing for this long.
const QUIET: Duration = Duration::from_millis(250);
/// How often a stopping connection looks for more requests.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What the thread needs besides its socket.
pub struct Context {
    /// Answers requests.
    pub service: Arc<Service>,
    /// Open connections and the stop flag.
    pub registry: Arc<Registry>,
    /// Connection limits and timeouts (replaced on a config reload; each
    /// connection keeps those in force when it was accepted).
    pub limits: std::sync::RwLock<Limits>,
    /// How long a stop may take in all (`shutdown_timeout`).
    pub shutdown_timeout: Duration,
}

/// Serve `stream`, registered as `id`, until it is done; never panics on
/// client input.
pub fn serve<S: Stream>(mut stream: S, id: u64, ctx: &Context) {
    if let Err(e) = run(&mut stream, ctx) {
        log::debug!("connection ended: {e}");
    }
    // Before the descriptor closes (see Registry::stop).
    ctx.registry.remove(id);
}

/// Which read timeout is set on the socket now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Idle,
    Partial,
    Draining,
}

fn run<S: Stream>(stream: &mut S, ctx: &Context) -> io::Result<()> {
    let limits = &ctx.limits.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut conn = Connection::new(DEFAULT_MAX_REQUEST, limits.max_lookups_per_connection);
    let mut buf = vec![0u8; 8192];
    // A client that never reads its replies cannot hold the thread forever.
    stream.set_write_timeout(Some(limits.read_timeout))?;
    let mut wait = None;
    let mut stop_deadline: Option<Instant> = None;
    let mut last_input = Instant::now();
    let mut warned = false;
    let mut view = ctx.service.config_view();
    loop {
        answer_buffered(&mut conn, &ctx.service, &mut view);
        if conn.failed() && !warned {
            warned = true;
            ctx.service.metrics().perm();
            log::warn!("malformed request: answering what was queued, then PERM and close");
        }
        let out = conn.transmit();
        if !out.is_empty() {
            let n = out.len();
            stream.write_all(out)?;
            conn.handle_written(n);
        }
        if conn.is_finished() {
            return stream.flush();
        }
        if ctx.registry.stopping() && stop_deadline.is_none() {
            stop_deadline = Some(Instant::now() + ctx.shutdown_timeout);
        }
        let want = match (stop_deadline, conn.has_partial_request()) {
            (Some(_), _) => Wait::Draining,
            (None, true) => Wait::Partial,
            (None, false) => Wait::Idle,
        };
        if wait != Some(want) {
            stream.set_read_timeout(Some(match want {
                Wait::Idle => limits.idle_timeout,
                Wait::Partial => limits.read_timeout,
                Wait::Draining => DRAIN_POLL,
            }))?;
            wait = Some(want);
        }
        match stream.read(&mut buf) {
            Ok(0) if stop_deadline.is_some() => {
                // After shutdown(SHUT_RD) a read returns 0 once nothing is
                // left: wait for more until the client is quiet.
                if last_input.elapsed() >= QUIET || past(stop_deadline) {
                    conn.handle_end_of_input();
                } else {
                    std::thread::sleep(DRAIN_POLL);
                }
            }
            Ok(0) => conn.handle_end_of_input(),
            Ok(n) => {
                last_input = Instant::now();
                conn.handle_input(buf.get(..n).unwrap_or_default());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => match want
            {
                Wait::Draining => {
                    if last_input.elapsed() >= QUIET || past(stop_deadline) {
                        conn.handle_end_of_input();
                    }
                }
                Wait::Partial => {
                    log::info!(
                        "closing a connection: no complete request within {:?}",
                        limits.read_timeout
                    );
                    return Ok(());
                }
                Wait::Idle => {
                    log::debug!("closing an idle connection after {:?}", limits.idle_timeout);
                    return Ok(());
                }
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Answer every complete request: fresh hits at once, misses together
/// (their lookups run concurrently on the async runtime; this thread waits).
fn answer_buffered(conn: &mut Connection, service: &Service, view: &mut ConfigView) {
    loop {
        let mut misses = Vec::new();
        while let Some((seq, request)) = conn.poll_request() {
            match service.answer_now(view, request.name, request.key) {
                Ok(reply) => conn.handle_reply(seq, reply),
                Err(miss) => misses.push((seq, miss)),
            }
        }
        if misses.is_empty() {
            return;
        }
        let lookups = misses.into_iter().map(|(seq, miss)| async move {
            let reply = service.answer_miss(miss).await;
            (seq, reply)
        });
        for (seq, reply) in futures::executor::block_on(join_all(lookups)) {
            conn.handle_reply(seq, reply);
        }
    }
}
