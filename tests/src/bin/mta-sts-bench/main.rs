//! `mta-sts-bench`: socketmap daemons measured the way Postfix uses them, side by side in
//! one run on this machine.
//!
//! ```text
//! cargo build --release -p mta-sts-smol -p mta-sts-tests
//! cargo build --release -p mta-sts-tokio --features programs --target-dir target/tokio
//! target/release/mta-sts-bench --python /opt/mta-sts-python/bin/mta-sts-daemon \
//!     --daemon smol=target/release/mta-sts-daemon \
//!     --daemon tokio=target/tokio/release/mta-sts-daemon \
//!     [--mode cached|cold|both] [--connections 16,100] [--seconds 10] \
//!     [--domains 200] [--cold-domains 2000] [--json FILE] [--logs DIR]
//! ```
//!
//! Targets, each its own process (CPU from /proc/<pid>/stat utime+stime, memory from
//! /proc/<pid>/status VmRSS): the Python original on its default configuration (internal
//! cache), a bare thread-per-connection server and a bare tokio server (2 workers, a task
//! per connection) that answer every netstring with a fixed reply of the daemons' size
//! (this program re-executed with `--bare-threads PORT` / `--bare-async PORT`), and our
//! daemons on their default configuration.
//!
//! Load: one request in flight per connection (Postfix's socketmap client writes one
//! request and waits), at each connection count; every reply is checked, and a wrong one
//! fails the run (exit status 1) after the report.
//!
//! - `cached`: a target fetches each of `--domains` domains once (a warm-up pass), then
//!   answers them from its cache for `--seconds` per connection count. Floors: the bare
//!   servers.
//! - `cold`: a fresh target warms N = `--cold-domains` distinct domains once each (TXT, A/AAAA,
//!   HTTPS policy fetch from the hermetic world), in two steps: the first K = max(conns,
//!   N/10), a pause (`AFTER_BURST`), RSS read ("RSS first"), then the other N − K, a pause,
//!   RSS read ("RSS after"). Wall time and CPU per cold lookup cover both steps' load (the
//!   pauses excluded) over all N, as do the latency percentiles. Memory: "one-time" = RSS
//!   first − RSS idle, what the first lookups cost once per process (TLS library, trust
//!   store, runtime); "B/policy" = (RSS after − RSS first) / (N − K), the marginal memory of a
//!   cached policy; "B/policy all" = (RSS after − RSS idle) / N, the whole run's growth.
//!
//!   Floor: `bare-fetch` (`fetch_floor`, this program re-executed with `--bare-fetch DNS_ADDR
//!   POLICY_PORT N CONNS`, dying with the bench): the network work of the N cold lookups and
//!   nothing else, no cache, no socketmap. One `native_tls::TlsConnector` is built before the
//!   clock starts; then CONNS threads, one lookup at a time each, take the next domain from a
//!   shared counter: TXT `_mta-sts.<domain>` over UDP (`v=STSv1` checked), A and AAAA of
//!   `mta-sts.<domain>` sent together, a TLS connection to the A address (SNI
//!   `mta-sts.<domain>`), `GET /.well-known/mta-sts.txt` with `Connection: close`, the
//!   response read to its end (200 and `mode: enforce` checked; a failure fails the run). It
//!   prints its wall time and its own utime+stime over that work as one JSON line, and its
//!   row is computed like the daemons' (CPU / lookups, wall time). The cold ratios set each
//!   target against python and against `bare-fetch` at the same connection count: a cold
//!   lookup's CPU is mostly the TLS handshake, whose cost depends on the machine and its TLS
//!   library, so a CPU per cold lookup means something only next to the floor's, measured in
//!   the same run.
//!
//! Run as root, the whole run happens in a private network and mount namespace (see
//! `netns`) where the world's DNS server is 127.0.0.1:53 (in /etc/resolv.conf) and its
//! policy hosts listen on port 443, so every program runs unmodified and no packet leaves
//! loopback. Without root the Python original is skipped and our daemons get the world
//! through their `resolver:` settings.

mod bare;
mod fetch_floor;
mod load;
mod netns;
mod options;
mod procstat;
mod report;
mod targets;
mod workload;

use load::{Phase, Work};
use mta_sts_tests::World;
use report::{Cached, Cold, Numbers, Report};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use targets::{Kind, Running, Setting, Target};

/// Pause after a start (before "idle" RSS) and after a pass (before "after" RSS).
const SETTLE: Duration = Duration::from_millis(500);
/// How long after each step of a cold warm-up its resident memory is read.
const AFTER_BURST: Duration = Duration::from_secs(3);
/// Log lines shown per target when its log has warnings or errors.
const LOG_EXAMPLES: usize = 3;
/// Wrong replies and errors shown per phase.
const PROBLEM_EXAMPLES: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode @ ("--bare-threads" | "--bare-async")) = args.get(1).map(String::as_str) {
        std::process::exit(bare_main(mode, args.get(2)));
    }
    if args.get(1).map(String::as_str) == Some(fetch_floor::ARG) {
        std::process::exit(fetch_floor::child_main(args.get(2..).unwrap_or_default()));
    }
    let opts = options::parse(args.get(1..).unwrap_or_default()).unwrap_or_else(|e| {
        eprintln!("mta-sts-bench: {e}\n{}", options::USAGE);
        std::process::exit(2)
    });
    let mut report = Report::default();
    report.header.push(("machine".into(), machine()));
    report.header.push(("command".into(), command_line(&args)));
    report
        .header
        .push(("loadavg".into(), format!("{} at the start", loadavg())));

    // Before any thread exists (the world starts some).
    let namespace = netns::enter();
    let private_net = namespace.is_ok();
    let world = if private_net {
        World::on_ports(53, 443)
    } else {
        World::new()
    };
    let cached_domains = if opts.cached { opts.domains } else { 0 };
    let cold_domains = if opts.cold { opts.cold_domains } else { 0 };
    workload::publish(&world, cached_domains.max(cold_domains));
    let trust = workload::trust_bundle(&world);

    report.header.push((
        "network".into(),
        match &namespace {
            Ok(_) => format!(
                "private network+mount namespace, loopback only: DNS 127.0.0.1:53 (/etc/resolv.conf \
                 bind-mounted), policy hosts on port {} ({} names per certificate)",
                world.policy_port(),
                workload::DOMAINS_PER_CERT
            ),
            Err(why) => format!(
                "host loopback, no private namespace ({why}); our daemons use resolver: settings"
            ),
        },
    ));
    report.header.push((
        "trust".into(),
        format!(
            "SSL_CERT_FILE for every target: {} certificates (system roots + the test CA)",
            workload::certificates_in(&trust)
        ),
    ));
    report.header.push((
        "config".into(),
        "every daemon on its defaults but host/port (internal cache, cache_grace 60, log level info)"
            .into(),
    ));
    report.header.push((
        "load".into(),
        format!(
            "one request in flight per connection, connections {:?}, every reply checked against {:?}",
            opts.connections,
            workload::REPLY
        ),
    ));
    if opts.cached && opts.seconds > 50.0 {
        report.header.push((
            "note".into(),
            "phases longer than cache_grace (60 s) include TXT re-checks".into(),
        ));
    }

    let targets = choose_targets(&opts, &namespace, &mut report);
    report.print_header();
    if let Some(dir) = &opts.logs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("mta-sts-bench: {}: {e}", dir.display());
            std::process::exit(2);
        }
    }
    let setting = Setting {
        world: &world,
        private_net,
        trust,
        logs: opts.logs.clone(),
    };
    if opts.cached {
        report.cached_setup = Some((opts.domains, opts.seconds));
        let work = Arc::new(Work {
            requests: workload::requests(opts.domains),
            expected: workload::reply_frame(),
        });
        for target in targets.iter().filter(|t| t.serves()) {
            run_cached(target, &setting, &opts, &work, &mut report);
        }
    }
    if opts.cold {
        let work = Arc::new(Work {
            requests: workload::requests(opts.cold_domains),
            expected: workload::reply_frame(),
        });
        for target in targets.iter().filter(|t| t.kind == Kind::BareFetch) {
            for &conns in &opts.connections {
                run_bare_fetch(target, conns, &setting, opts.cold_domains, &mut report);
            }
        }
        for target in targets.iter().filter(|t| t.looks_up()) {
            for &conns in &opts.connections {
                run_cold(target, conns, &setting, &work, &mut report);
            }
        }
    }
    report.print_tables();
    println!("\nloadavg {} at the end", loadavg());
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report.json()).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("mta-sts-bench: write {}: {e}", path.display());
        }
    }
    let failures: u64 = report
        .cached
        .iter()
        .map(|r| r.load.failures)
        .chain(report.cold.iter().map(|r| r.warm.failures))
        .sum();
    if failures > 0 {
        eprintln!(
            "\nmta-sts-bench: FAILED: {failures} wrong replies or failed connections (see problems above)"
        );
        std::process::exit(1);
    }
}

/// `--bare-threads PORT` / `--bare-async PORT`.
fn bare_main(mode: &str, port: Option<&String>) -> i32 {
    let Some(port) = port.and_then(|p| p.parse().ok()) else {
        eprintln!("mta-sts-bench {mode} PORT");
        return 2;
    };
    let result = if mode == "--bare-threads" {
        bare::run_threads(port)
    } else {
        bare::run_async(port)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mta-sts-bench {mode} {port}: {e}");
            1
        }
    }
}

fn choose_targets(
    opts: &options::Options,
    namespace: &Result<tempfile::NamedTempFile, String>,
    report: &mut Report,
) -> Vec<Target> {
    let mut targets = Vec::new();
    match (&opts.python, namespace) {
        (None, _) => report
            .skipped
            .push("python: skipped (no --python PATH given)".into()),
        (Some(p), _) if !p.is_file() => report
            .skipped
            .push(format!("python: skipped (no such program: {})", p.display())),
        (Some(_), Err(why)) => report.skipped.push(format!(
            "python: skipped (it needs the private namespace for DNS on :53 and HTTPS on :443: {why})"
        )),
        (Some(p), Ok(_)) => {
            report
                .header
                .push(("python".into(), python_version(p).unwrap_or_default()));
            targets.push(Target {
                name: "python".into(),
                kind: Kind::Python,
                path: p.clone(),
            })
        }
    }
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    for (name, kind) in [
        ("bare-threads", Kind::BareThreads),
        ("bare-async", Kind::BareAsync),
    ] {
        targets.push(Target {
            name: name.into(),
            kind,
            path: me.clone(),
        });
    }
    if opts.cold {
        targets.push(Target {
            name: "bare-fetch".into(),
            kind: Kind::BareFetch,
            path: me,
        });
    }
    for (name, path) in &opts.daemons {
        targets.push(Target {
            name: name.clone(),
            kind: Kind::Ours,
            path: path.clone(),
        });
    }
    report.header.push((
        "targets".into(),
        targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.path.display()))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    targets
}

/// The installed postfix-mta-sts-resolver's version and its interpreter's, from the
/// `python` next to `mta-sts-daemon` (a virtualenv's layout).
fn python_version(daemon: &std::path::Path) -> Option<String> {
    let python = daemon.parent()?.join("python");
    let mut cmd = std::process::Command::new(python);
    cmd.args([
        "-c",
        "import importlib.metadata as m, sys; \
         print('postfix-mta-sts-resolver', m.version('postfix-mta-sts-resolver'), \
         'on Python', sys.version.split()[0])",
    ]);
    let (code, out, _) = mta_sts_tests::run_bounded(cmd, Duration::from_secs(20));
    (code == 0).then(|| out.trim().to_owned())
}

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

fn run_cached(
    target: &Target,
    setting: &Setting,
    opts: &options::Options,
    work: &Arc<Work>,
    report: &mut Report,
) {
    let Some(running) = start(target, setting, report) else {
        return;
    };
    std::thread::sleep(SETTLE);
    let rss_idle_kib = procstat::rss_kib(running.pid);
    let mut rss_warm_kib = None;
    for &conns in &opts.connections {
        // Before every phase, so each is within cache_grace of a fetch or re-check.
        let warm = load::run(running.port, running.pid, conns, work, Phase::EachOnce);
        note(report, &target.name, conns, "cached warm-up", &warm);
        rss_warm_kib = rss_warm_kib.or(procstat::rss_kib(running.pid));
        let timed = load::run(
            running.port,
            running.pid,
            conns,
            work,
            Phase::Timed(Duration::from_secs_f64(opts.seconds)),
        );
        note(report, &target.name, conns, "cached", &timed);
        let mut load = Numbers::from(&timed);
        load.failures += warm.failures();
        eprintln!(
            "cached {:<12} {:>3} conns: {:>8.0} lookups/s, {} us CPU/lookup",
            target.name,
            conns,
            load.rate,
            load.cpu_us.map_or("-".into(), |c| format!("{c:.1}"))
        );
        report.cached.push(Cached {
            target: target.name.clone(),
            kind: target.kind,
            conns,
            load,
            rss_idle_kib,
            rss_warm_kib,
            rss_loaded_kib: procstat::rss_kib(running.pid),
        });
    }
    finish(running, &target.name, "cached", setting, report);
}

/// A fresh target warms every cold domain once, in two steps: the first K = max(conns, N/10)
/// domains (the one-time cost of the first lookups), then the rest (the cached policies'
/// own memory), with its RSS read after each has settled.
fn run_cold(
    target: &Target,
    conns: usize,
    setting: &Setting,
    work: &Arc<Work>,
    report: &mut Report,
) {
    let Some(running) = start(target, setting, report) else {
        return;
    };
    std::thread::sleep(SETTLE);
    let rss_idle_kib = procstat::rss_kib(running.pid);
    let domains = work.requests.len();
    let first_domains = conns.max(domains / 10).min(domains);
    let (first, rest) = work.split_at(first_domains);
    let mut warm = cold_step(&running, target, conns, first, "cold, first step", report);
    let rss_first_kib = procstat::rss_kib(running.pid);
    let second = cold_step(&running, target, conns, rest, "cold, second step", report);
    let rss_after_kib = procstat::rss_kib(running.pid);
    let steps = vec![Numbers::from(&warm), Numbers::from(&second)];
    warm.absorb(second);
    let row = Cold {
        target: target.name.clone(),
        kind: target.kind,
        conns,
        domains,
        first_domains,
        warm: Numbers::from(&warm),
        steps,
        rss_idle_kib,
        rss_first_kib,
        rss_after_kib,
    };
    print_cold_row(&row);
    report.cold.push(row);
    finish(
        running,
        &target.name,
        &format!("cold-{conns}"),
        setting,
        report,
    );
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

/// The bare-fetch floor at `conns` connections: this program re-executed does the network
/// work of `domains` cold lookups (`fetch_floor`), measuring its own CPU and wall time.
fn run_bare_fetch(
    target: &Target,
    conns: usize,
    setting: &Setting,
    domains: usize,
    report: &mut Report,
) {
    let job = fetch_floor::Job {
        dns: setting.world.dns.addr(),
        policy_port: setting.world.policy_port(),
        domains,
        conns,
    };
    let outcome = match fetch_floor::measure(&target.path, &setting.trust, &job) {
        Ok(outcome) => outcome,
        Err(e) => {
            let line = format!("{} ({conns} conns): skipped (failed: {e})", target.name);
            eprintln!("{line}");
            report.skipped.push(line);
            return;
        }
    };
    note(report, &target.name, conns, "cold", &outcome);
    let row = Cold {
        target: target.name.clone(),
        kind: target.kind,
        conns,
        domains,
        first_domains: 0,
        warm: Numbers::from(&outcome),
        steps: Vec::new(),
        rss_idle_kib: None,
        rss_first_kib: None,
        rss_after_kib: None,
    };
    print_cold_row(&row);
    report.cold.push(row);
}

/// A cold row's progress line.
fn print_cold_row(row: &Cold) {
    eprintln!(
        "cold   {:<12} {:>3} conns: {} domains in {:.2} s, {} us CPU/lookup",
        row.target,
        row.conns,
        row.domains,
        row.warm.seconds,
        row.warm.cpu_us.map_or("-".into(), |c| format!("{c:.0}"))
    );
}

/// Records a phase's wrong replies and connection errors, loudly.
fn note(report: &mut Report, target: &str, conns: usize, phase: &str, outcome: &load::Outcome) {
    if outcome.failures() == 0 {
        return;
    }
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

/// The 1, 5 and 15 minute load averages (other work on the machine skews the numbers).
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// nproc, CPU model, kernel, memory.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "nproc {cpus}, {model}, Linux {}, {mem_gib:.1} GiB RAM",
        kernel.trim()
    )
}

/// The command line as typed (quoted where a shell would need it).
fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
