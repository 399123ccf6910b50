//! The two modes, round by round: which target is measured when, and what each round
//! records in the report.
//!
//! Within a round the targets take turns, so a slow drift of the machine (other work, CPU
//! frequency, the host's neighbours) moves every target's figures alike; the order turns by
//! one target each round ([`rotation`]), so that no target always goes first. (A rotation
//! keeps the cyclic order: a target that does not go first follows the same one as in the
//! other rounds.)

use crate::load::{self, Phase, Work};
use crate::options::Options;
use crate::report::{Cached, CachedRound, Cold, ColdRound, Numbers, Report};
use crate::stats::rotation;
use crate::targets::{Kind, Running, Setting, Target};
use crate::{fetch_floor, procstat, workload};
use std::sync::Arc;
use std::time::Duration;

/// Pause after a start (before "idle" RSS).
const SETTLE: Duration = Duration::from_millis(500);
/// How long after each step of a cold warm-up its resident memory is read.
const AFTER_BURST: Duration = Duration::from_secs(3);
/// Log lines shown per target when its log has warnings or errors.
const LOG_EXAMPLES: usize = 3;
/// Wrong replies and errors shown per phase.
const PROBLEM_EXAMPLES: usize = 5;

/// Where a phase stands in the run: its round and its connection count.
#[derive(Clone, Copy)]
struct Slot {
    /// The round, counted from 1.
    round: usize,
    /// Rounds in the run.
    rounds: usize,
    /// Connections of the phase.
    conns: usize,
}

impl Slot {
    /// `round 2/3`, for progress lines and problems.
    fn label(&self) -> String {
        format!("round {}/{}", self.round, self.rounds)
    }
}

/// Cached mode: in every round, every serving target started afresh at once (separate
/// processes on their own ports; an idle one costs nothing) and warmed, then at each
/// connection count one timed phase per target in the round's order, then all stopped. A new
/// process per round: one start of a program can run steadily faster or slower than the
/// next (bare-async kept to about 65k or about 100k lookups/s for a process's lifetime), so
/// rounds of one process would not sample that.
pub fn cached(targets: &[Target], setting: &Setting, opts: &Options, report: &mut Report) {
    report.cached_setup = Some((opts.domains, opts.seconds));
    let work = Arc::new(Work {
        requests: workload::requests(opts.domains),
        expected: workload::reply_frame(),
    });
    let seconds = Duration::from_secs_f64(opts.seconds);
    for round in 0..opts.rounds {
        let running = start_cached(targets, setting, opts, &work, report, round == 0);
        for &conns in &opts.connections {
            let slot = Slot {
                round: round + 1,
                rounds: opts.rounds,
                conns,
            };
            for i in rotation(running.len(), round) {
                if let Some((target, r)) = running.get(i) {
                    cached_phase(target, r, slot, &work, seconds, report);
                }
            }
        }
        for (target, r) in running {
            finish(r, &target.name, "cached", setting, report);
        }
    }
}

/// Starts every serving target, lets them settle, then gives each its warm-up pass (each
/// domain fetched once, at the first connection count) with its RSS read before and after;
/// in the `first` round, creates their rows with those figures. Returns the targets that
/// started.
fn start_cached<'t>(
    targets: &'t [Target],
    setting: &Setting,
    opts: &Options,
    work: &Arc<Work>,
    report: &mut Report,
    first: bool,
) -> Vec<(&'t Target, Running)> {
    let running: Vec<(&Target, Running)> = targets
        .iter()
        .filter(|t| t.serves())
        .filter_map(|t| start(t, setting, report).map(|r| (t, r)))
        .collect();
    std::thread::sleep(SETTLE);
    let warm_conns = opts.connections.first().copied().unwrap_or(1);
    for (target, r) in &running {
        let rss_idle_kib = procstat::rss_kib(r.pid);
        let warm = load::run(r.port, r.pid, warm_conns, work, Phase::EachOnce);
        note(report, &target.name, warm_conns, "cached warm-up", &warm);
        let rss_warm_kib = procstat::rss_kib(r.pid);
        if first {
            for &conns in &opts.connections {
                report
                    .cached
                    .push(Cached::new(target, conns, rss_idle_kib, rss_warm_kib));
            }
        }
    }
    running
}

/// One timed cached phase of a started target, recorded as a round of its row.
fn cached_phase(
    target: &Target,
    running: &Running,
    slot: Slot,
    work: &Arc<Work>,
    seconds: Duration,
    report: &mut Report,
) {
    let timed = load::run(
        running.port,
        running.pid,
        slot.conns,
        work,
        Phase::Timed(seconds),
    );
    note(
        report,
        &target.name,
        slot.conns,
        &format!("cached, {}", slot.label()),
        &timed,
    );
    let load = Numbers::from(&timed);
    eprintln!(
        "cached r{}/{} {:<12} {:>3} conns: {:>8.0} lookups/s, {} us CPU/lookup",
        slot.round,
        slot.rounds,
        target.name,
        slot.conns,
        load.rate,
        load.cpu_us.map_or("-".into(), |c| format!("{c:.1}"))
    );
    let rss_loaded_kib = procstat::rss_kib(running.pid);
    if let Some(row) = report.cached_row(&target.name, slot.conns) {
        row.rounds.push(CachedRound {
            round: slot.round,
            load,
            rss_loaded_kib,
        });
    }
}

/// Cold mode: in every round, at each connection count, each target in the round's order
/// starts fresh (a cold cache), warms every cold domain once and stops; the bare-fetch floor
/// takes its turn like the others.
pub fn cold(targets: &[Target], setting: &Setting, opts: &Options, report: &mut Report) {
    let work = Arc::new(Work {
        requests: workload::requests(opts.cold_domains),
        expected: workload::reply_frame(),
    });
    let cold: Vec<&Target> = targets
        .iter()
        .filter(|t| t.looks_up() || t.kind == Kind::BareFetch)
        .collect();
    for target in &cold {
        for &conns in &opts.connections {
            report.cold.push(Cold::new(target, conns));
        }
    }
    for round in 0..opts.rounds {
        for &conns in &opts.connections {
            let slot = Slot {
                round: round + 1,
                rounds: opts.rounds,
                conns,
            };
            for target in rotation(cold.len(), round)
                .into_iter()
                .filter_map(|i| cold.get(i))
            {
                let measured = if target.kind == Kind::BareFetch {
                    bare_fetch_round(target, slot, setting, opts.cold_domains, report)
                } else {
                    cold_round(target, slot, setting, &work, report)
                };
                if let Some(measured) = measured {
                    print_cold_round(target, slot, &measured);
                    if let Some(row) = report.cold_row(&target.name, conns) {
                        row.rounds.push(measured);
                    }
                }
            }
        }
    }
}

/// A fresh target warms every cold domain once, in two steps: the first K = max(conns, N/10)
/// domains (the one-time cost of the first lookups), then the rest (the cached policies'
/// own memory), with its RSS read after each has settled; then it stops.
fn cold_round(
    target: &Target,
    slot: Slot,
    setting: &Setting,
    work: &Arc<Work>,
    report: &mut Report,
) -> Option<ColdRound> {
    let running = start(target, setting, report)?;
    std::thread::sleep(SETTLE);
    let rss_idle_kib = procstat::rss_kib(running.pid);
    let domains = work.requests.len();
    let first_domains = slot.conns.max(domains / 10).min(domains);
    let (first, rest) = work.split_at(first_domains);
    let phase = |step: &str| format!("cold, {step} step, {}", slot.label());
    let mut warm = cold_step(&running, target, slot.conns, first, &phase("first"), report);
    let rss_first_kib = procstat::rss_kib(running.pid);
    let second = cold_step(&running, target, slot.conns, rest, &phase("second"), report);
    let rss_after_kib = procstat::rss_kib(running.pid);
    let steps = vec![Numbers::from(&warm), Numbers::from(&second)];
    warm.absorb(second);
    let log_name = format!("cold-{}-r{}", slot.conns, slot.round);
    finish(running, &target.name, &log_name, setting, report);
    Some(ColdRound {
        round: slot.round,
        domains,
        first_domains,
        warm: Numbers::from(&warm),
        steps,
        rss_idle_kib,
        rss_first_kib,
        rss_after_kib,
    })
}

/// One step of a cold warm-up: each request of `work` once, then [`AFTER_BURST`] so the
/// RSS read next is what the daemon keeps once the burst is over.
fn cold_step(
    running: &Running,
    target: &Target,
    conns: usize,
    work: Work,
    phase: &str,
    report: &mut Report,
) -> load::Outcome {
    let outcome = load::run(
        running.port,
        running.pid,
        conns,
        &Arc::new(work),
        Phase::EachOnce,
    );
    note(report, &target.name, conns, phase, &outcome);
    std::thread::sleep(AFTER_BURST);
    outcome
}

/// The bare-fetch floor's round: this program re-executed does the network work of
/// `domains` cold lookups (`fetch_floor`), measuring its own CPU and wall time.
fn bare_fetch_round(
    target: &Target,
    slot: Slot,
    setting: &Setting,
    domains: usize,
    report: &mut Report,
) -> Option<ColdRound> {
    let job = fetch_floor::Job {
        dns: setting.world.dns.addr(),
        policy_port: setting.world.policy_port(),
        domains,
        conns: slot.conns,
    };
    let outcome = match fetch_floor::measure(&target.path, &setting.trust, &job) {
        Ok(outcome) => outcome,
        Err(e) => {
            let line = format!(
                "{} ({} conns, {}): skipped (failed: {e})",
                target.name,
                slot.conns,
                slot.label()
            );
            eprintln!("{line}");
            report.skipped.push(line);
            return None;
        }
    };
    let phase = format!("cold, {}", slot.label());
    note(report, &target.name, slot.conns, &phase, &outcome);
    Some(ColdRound {
        round: slot.round,
        domains,
        first_domains: 0,
        warm: Numbers::from(&outcome),
        steps: Vec::new(),
        rss_idle_kib: None,
        rss_first_kib: None,
        rss_after_kib: None,
    })
}

/// A cold round's progress line.
fn print_cold_round(target: &Target, slot: Slot, round: &ColdRound) {
    eprintln!(
        "cold   r{}/{} {:<12} {:>3} conns: {} domains in {:.2} s, {} us CPU/lookup",
        slot.round,
        slot.rounds,
        target.name,
        slot.conns,
        round.domains,
        round.warm.seconds,
        round.warm.cpu_us.map_or("-".into(), |c| format!("{c:.0}"))
    );
}

/// Starts a target; one that fails to start is skipped, and said so.
fn start(target: &Target, setting: &Setting, report: &mut Report) -> Option<Running> {
    match Running::start(target, setting) {
        Ok(r) => Some(r),
        Err(e) => {
            let line = format!("{}: skipped (failed to start: {e})", target.name);
            eprintln!("{line}");
            report.skipped.push(line);
            None
        }
    }
}

/// Counts a phase's wrong replies and connection errors, and records them loudly.
fn note(report: &mut Report, target: &str, conns: usize, phase: &str, outcome: &load::Outcome) {
    if outcome.failures() == 0 {
        return;
    }
    report.failures += outcome.failures();
    let head = format!(
        "{target} ({phase}, {conns} conns): {} wrong replies, {} failed connections",
        outcome.mismatches, outcome.errors
    );
    eprintln!("MISMATCH {head}");
    report.problems.push(head);
    for p in outcome.problems.iter().take(PROBLEM_EXAMPLES) {
        eprintln!("    {p}");
        report.problems.push(format!("    {p}"));
    }
}

/// Stops a target, recording the warnings and errors it logged while measured (not those
/// of its shutdown) and keeping its log when asked to.
fn finish(running: Running, target: &str, phase: &str, setting: &Setting, report: &mut Report) {
    let measured = running.log();
    let log = running.stop();
    note_log(report, target, phase, &measured);
    if let Some(dir) = &setting.logs {
        let path = dir.join(format!("{target}-{phase}.log"));
        if let Err(e) = std::fs::write(&path, log) {
            eprintln!("mta-sts-bench: write {}: {e}", path.display());
        }
    }
}

/// Records warnings and errors from a target's log.
fn note_log(report: &mut Report, target: &str, phase: &str, log: &str) {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(" WARN")
                || l.contains(" ERROR")
                || l.contains("Traceback")
                || l.contains("panicked")
        })
        .collect();
    if bad.is_empty() {
        return;
    }
    report.problems.push(format!(
        "{target} ({phase}): {} warning/error lines in its log, e.g.:",
        bad.len()
    ));
    for l in bad.iter().take(LOG_EXAMPLES) {
        report.problems.push(format!("    {l}"));
    }
}
