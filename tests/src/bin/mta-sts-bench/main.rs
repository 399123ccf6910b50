//! `mta-sts-bench`: socketmap daemons measured the way Postfix uses them, side by side in
//! one run on this machine.
//!
//! ```text
//! cargo build --release -p mta-sts-smol -p mta-sts-tests
//! cargo build --release -p mta-sts-tokio --features programs --target-dir target/tokio
//! target/release/mta-sts-bench --python /opt/mta-sts-python/bin/mta-sts-daemon \
//!     --daemon smol=target/release/mta-sts-daemon \
//!     --daemon tokio=target/tokio/release/mta-sts-daemon \
//!     [--mode cached|cold|both] [--connections 16,100] [--rounds 3] [--seconds 5] \
//!     [--domains 200] [--cold-domains 2000] [--json FILE] [--logs DIR]
//! ```
//!
//! Targets, each its own process (CPU from `/proc/<pid>/stat` utime+stime, memory from
//! `/proc/<pid>/status` VmRSS): the Python original on its default configuration (internal
//! cache), a bare thread-per-connection server and a bare tokio server (2 workers, a task
//! per connection) that answer every netstring with a fixed reply of the daemons' size
//! (this program re-executed with `--bare-threads PORT` / `--bare-async PORT`), and our
//! daemons on their default configuration.
//!
//! Load: one request in flight per connection (Postfix's socketmap client writes one
//! request and waits), at each connection count; every reply is checked, and a wrong one
//! fails the run (exit status 1) after the report.
//!
//! Rounds: on a small shared machine one measurement of a target differs from the next by
//! ±15% (lookups/s) to ±25% (CPU per cold lookup), more than the differences the ratios are
//! meant to show. So every figure is measured in each of `--rounds` R rounds (default 3) and
//! reported as the median over them, next to the min–max range of the noisiest ones
//! (lookups/s, CPU per lookup, cold wall time); ratios are computed from the medians. The
//! rounds interleave the targets, so a slow drift of the machine moves every target alike:
//! within a round the targets take turns, in an order that rotates by one each round (round
//! r, counted from 0, starts with target r mod n), so no target always goes first (`modes`).
//! Every reply of every round is checked. `--json` holds every round's raw numbers per target
//! and connection count, and each figure's median, min and max.
//!
//! - `cached`: in each round every target is started afresh at once (each its own process on
//!   its own port; an idle one costs nothing), and each fetches each of `--domains` domains
//!   once (its warm-up pass, at the first connection count; RSS read before and after, shown
//!   from the first round). Then, at each connection count, each target in turn answers from
//!   its cache for `--seconds` (one timed phase: lookups/s, p50/p99, CPU per lookup, RSS after
//!   it), and the targets stop. "RSS load" is the largest RSS after a phase at that
//!   connection count in any round. Floors: the bare servers. A new process per round,
//!   because one start of a program can run steadily faster or slower than the next
//!   (bare-async kept to about 65k or about 100k lookups/s for a process's lifetime), so the
//!   medians and ranges cover that as well as the machine's drift.
//! - `cold`: in each round and at each connection count, each target in turn is started
//!   fresh (a cold cache), warms the domains as below, and is stopped. A fresh target warms
//!   N = `--cold-domains` distinct domains once each (TXT, A/AAAA, HTTPS policy fetch from
//!   the hermetic world), in two steps: the first K = max(conns, N/10), a pause
//!   (`AFTER_BURST`), RSS read ("RSS first"), then the other N − K, a pause, RSS read ("RSS
//!   after"). Wall time and CPU per cold lookup cover both steps' load (the
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
//!   row is computed like the daemons' (CPU / lookups, wall time); it takes its turn in each
//!   round like the others. The cold ratios set each
//!   target against python and against `bare-fetch` at the same connection count: a cold
//!   lookup's CPU is mostly the TLS handshake, whose cost depends on the machine and its TLS
//!   library, so a CPU per cold lookup means something only next to the floor's, measured in
//!   the same run.
//!
//! Run as root, the whole run happens in a private network and mount namespace (see
//! `mta_sts_tests::netns`) where the world's DNS server is 127.0.0.1:53 (in /etc/resolv.conf) and its
//! policy hosts listen on port 443, so every program runs unmodified and no packet leaves
//! loopback. Without root the Python original is skipped and our daemons get the world
//! through their `resolver:` settings.
//!
//! Run time: the cached mode takes R × connection counts × targets × `--seconds`, the cold
//! mode about a minute per round with python, the floor and two daemons at two connection
//! counts. The default `--seconds` is 5 so that the default run (`--mode both`, 3 rounds,
//! python and two daemons) takes about 6 minutes on a 2-core machine rather than more than 8.

mod bare;
mod fetch_floor;
mod load;
mod modes;
mod options;
mod procstat;
mod report;
mod stats;
mod targets;
mod workload;

use mta_sts_tests::World;
use report::Report;
use std::path::PathBuf;
use std::time::Duration;
use targets::{Kind, Setting, Target};

/// The bench, or one of the children it runs (the bare servers, the bare-fetch floor).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode @ ("--bare-threads" | "--bare-async")) = args.get(1).map(String::as_str) {
        std::process::exit(bare_main(mode, args.get(2)));
    }
    if args.get(1).map(String::as_str) == Some(fetch_floor::ARG) {
        std::process::exit(fetch_floor::child_main(args.get(2..).unwrap_or_default()));
    }
    if args
        .iter()
        .skip(1)
        .any(|a| a.as_str() == "--help" || a.as_str() == "-h")
    {
        println!("{}", options::USAGE);
        std::process::exit(0)
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
    let namespace = mta_sts_tests::netns::enter();
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
    let targets = choose_targets(&opts, &namespace, &mut report);
    describe_rounds(&opts, &targets, &mut report);
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
        modes::cached(&targets, &setting, &opts, &mut report);
    }
    if opts.cold {
        modes::cold(&targets, &setting, &opts, &mut report);
    }
    report.print_tables();
    println!("\nloadavg {} at the end", loadavg());
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report.json()).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("mta-sts-bench: write {}: {e}", path.display());
        }
    }
    let failures = report.failures;
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

/// The targets of this run in the order of the tables, recording in the report those
/// left out and why.
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

/// The header lines on rounds: how many, how the targets take turns, that every figure is
/// a median; and the note on `cache_grace` ([`cache_grace_note`]).
fn describe_rounds(opts: &options::Options, targets: &[Target], report: &mut Report) {
    report.rounds = opts.rounds;
    let mut turns = Vec::new();
    if opts.cached {
        turns.push(format!(
            "cached: in each round every target started afresh and warmed, then at each \
             connection count one {} s phase per target in turn",
            opts.seconds
        ));
    }
    if opts.cold {
        turns.push(
            "cold: in each round and at each connection count, a fresh start of each target in turn"
                .to_owned(),
        );
    }
    report.header.push((
        "rounds".into(),
        format!(
            "{} rounds, every figure the median over them (ranges: min-max over the rounds); {}; \
             the order of the targets rotates by one each round",
            opts.rounds,
            turns.join("; ")
        ),
    ));
    cache_grace_note(opts, targets, report);
}

/// In cached mode, a header note once a round's timed phases span more than
/// `cache_grace`: TXT re-checks then happen inside them.
fn cache_grace_note(opts: &options::Options, targets: &[Target], report: &mut Report) {
    let serving = targets.iter().filter(|t| t.serves()).count();
    let span = opts.seconds * (opts.connections.len() * serving) as f64;
    if opts.cached && span > 60.0 {
        report.header.push((
            "note".into(),
            format!(
                "a round's cached phases span {span:.0} s, more than cache_grace (60 s): as in \
                 service, a daemon re-checks each domain's TXT id about once a minute ({} DNS \
                 queries), in whichever of its phases comes next",
                opts.domains
            ),
        ));
    }
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
