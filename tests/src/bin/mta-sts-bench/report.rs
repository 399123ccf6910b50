//! The tables, the ratios and the JSON file: every figure the median of its rounds, the
//! noisiest ones with their range, the ratios computed from the medians.

use crate::load::Outcome;
use crate::stats::Spread;
use crate::targets::{Kind, Target};
use serde_json::{json, Value};

/// One phase, reduced to its numbers.
#[derive(Clone, Default)]
pub struct Numbers {
    /// Replies received.
    pub replies: u64,
    /// Phase length, seconds.
    pub seconds: f64,
    /// Replies per second.
    pub rate: f64,
    /// Latency quantiles, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// Target CPU per reply, microseconds.
    pub cpu_us: Option<f64>,
    /// Wrong replies plus failed connections.
    pub failures: u64,
}

impl From<&Outcome> for Numbers {
    fn from(o: &Outcome) -> Numbers {
        Numbers {
            replies: o.replies,
            seconds: o.elapsed.as_secs_f64(),
            rate: o.rate(),
            p50_us: o.latency_us(0.50),
            p99_us: o.latency_us(0.99),
            cpu_us: o.cpu_us_per_reply(),
            failures: o.failures(),
        }
    }
}

/// One round of a cached-mode row: its timed phase.
pub struct CachedRound {
    /// The round, counted from 1.
    pub round: usize,
    /// The timed phase.
    pub load: Numbers,
    /// VmRSS after this timed phase (KiB).
    pub rss_loaded_kib: Option<u64>,
}

/// A cached-mode row: one target at one connection count, one timed phase per round (the
/// target runs through every round).
pub struct Cached {
    /// Target name.
    pub target: String,
    /// Target kind.
    pub kind: Kind,
    /// Connections.
    pub conns: usize,
    /// VmRSS after start, before any request (KiB).
    pub rss_idle_kib: Option<u64>,
    /// VmRSS after the warm-up pass (KiB).
    pub rss_warm_kib: Option<u64>,
    /// Each round's phase, in the order of the rounds.
    pub rounds: Vec<CachedRound>,
}

impl Cached {
    /// A row for `target` at `conns` connections, no round measured yet.
    pub fn new(
        target: &Target,
        conns: usize,
        rss_idle_kib: Option<u64>,
        rss_warm_kib: Option<u64>,
    ) -> Cached {
        Cached {
            target: target.name.clone(),
            kind: target.kind,
            conns,
            rss_idle_kib,
            rss_warm_kib,
            rounds: Vec::new(),
        }
    }

    /// One figure of the timed phases over the rounds.
    pub fn spread(&self, figure: impl Fn(&Numbers) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.rounds.iter().map(|r| figure(&r.load)))
    }

    /// Lookups per second over the rounds.
    pub fn rate(&self) -> Option<Spread> {
        self.spread(|n| Some(n.rate))
    }

    /// CPU microseconds per lookup over the rounds.
    pub fn cpu_us(&self) -> Option<Spread> {
        self.spread(|n| n.cpu_us)
    }

    /// The largest VmRSS read after a phase at this connection count (KiB).
    pub fn rss_loaded_max_kib(&self) -> Option<u64> {
        self.rounds.iter().filter_map(|r| r.rss_loaded_kib).max()
    }

    /// Wrong replies plus failed connections over every round.
    pub fn failures(&self) -> u64 {
        self.rounds.iter().map(|r| r.load.failures).sum()
    }
}

/// One round of a cold-mode row: a fresh target warming every cold domain once in two steps
/// (the first `first_domains`, then the rest, its RSS read after each has settled), or the
/// bare-fetch floor doing the same lookups' network work in one pass.
pub struct ColdRound {
    /// The round, counted from 1.
    pub round: usize,
    /// Domains warmed (N).
    pub domains: usize,
    /// Domains of the first step (K = max(conns, N/10)); 0 for the floor.
    pub first_domains: usize,
    /// Both steps as one pass: `seconds` and CPU are the sums of the steps' (pauses
    /// excluded), latencies those of all N lookups.
    pub warm: Numbers,
    /// Each step on its own, the first K then the rest (empty for the floor).
    pub steps: Vec<Numbers>,
    /// VmRSS before the first step (KiB).
    pub rss_idle_kib: Option<u64>,
    /// VmRSS after the first step, connections closed (KiB).
    pub rss_first_kib: Option<u64>,
    /// VmRSS after the second step, connections closed (KiB).
    pub rss_after_kib: Option<u64>,
}

impl ColdRound {
    /// RSS first − RSS idle (KiB): what the first lookups cost once per process (TLS library,
    /// trust store, runtime).
    pub fn one_time_kib(&self) -> Option<f64> {
        Some(self.rss_first_kib? as f64 - self.rss_idle_kib? as f64)
    }

    /// (RSS after − RSS first) / (N − K), in bytes: the marginal memory of a cached policy.
    pub fn bytes_per_policy(&self) -> Option<f64> {
        let (first, after) = (self.rss_first_kib?, self.rss_after_kib?);
        let rest = self.domains.checked_sub(self.first_domains)?;
        (rest > 0).then(|| (after as f64 - first as f64) * 1024.0 / rest as f64)
    }

    /// (RSS after − RSS idle) / N, in bytes: the whole run's growth per policy, the one-time
    /// cost included.
    pub fn bytes_per_policy_all(&self) -> Option<f64> {
        let (idle, after) = (self.rss_idle_kib?, self.rss_after_kib?);
        Some((after as f64 - idle as f64) * 1024.0 / self.domains as f64)
    }
}

/// A cold-mode row: one target at one connection count, a fresh process in every round.
pub struct Cold {
    /// Target name.
    pub target: String,
    /// Target kind.
    pub kind: Kind,
    /// Connections.
    pub conns: usize,
    /// Each round's warm-up, in the order of the rounds.
    pub rounds: Vec<ColdRound>,
}

impl Cold {
    /// A row for `target` at `conns` connections, no round measured yet.
    pub fn new(target: &Target, conns: usize) -> Cold {
        Cold {
            target: target.name.clone(),
            kind: target.kind,
            conns,
            rounds: Vec::new(),
        }
    }

    /// One figure over the rounds.
    pub fn spread(&self, figure: impl Fn(&ColdRound) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.rounds.iter().map(figure))
    }

    /// Wall time of the warm-up (both steps' load, the pauses excluded) over the rounds.
    pub fn wall(&self) -> Option<Spread> {
        self.spread(|r| Some(r.warm.seconds))
    }

    /// CPU microseconds per cold lookup over the rounds.
    pub fn cpu_us(&self) -> Option<Spread> {
        self.spread(|r| r.warm.cpu_us)
    }

    /// The median of a VmRSS reading over the rounds (KiB).
    pub fn rss_kib(&self, reading: impl Fn(&ColdRound) -> Option<u64>) -> Option<f64> {
        median_of(self.spread(|r| kib_f64(reading(r))))
    }

    /// Wrong replies plus failed connections over every round.
    pub fn failures(&self) -> u64 {
        self.rounds.iter().map(|r| r.warm.failures).sum()
    }
}

/// Everything a run produced.
#[derive(Default)]
pub struct Report {
    /// Lines describing the machine and the run, printed first.
    pub header: Vec<(String, String)>,
    /// Rounds per figure.
    pub rounds: usize,
    /// Cached rows, in the order of the targets then of the connection counts.
    pub cached: Vec<Cached>,
    /// Cold rows, in the same order.
    pub cold: Vec<Cold>,
    /// Settings of the cached mode: domains, seconds per phase.
    pub cached_setup: Option<(usize, f64)>,
    /// Targets left out, and why.
    pub skipped: Vec<String>,
    /// Wrong replies, errors, warnings from the targets' logs.
    pub problems: Vec<String>,
    /// Wrong replies plus failed connections of every phase, warm-ups included.
    pub failures: u64,
}

/// The median of a spread, if any.
fn median_of(s: Option<Spread>) -> Option<f64> {
    s.map(|s| s.median)
}

/// A spread's range with `decimals` decimals, `-` when unknown.
fn range(s: Option<Spread>, decimals: usize) -> String {
    s.map_or("-".into(), |s| s.range(decimals))
}

/// KiB as a float, for medians and ratios.
fn kib_f64(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn kib(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// A ratio as `1.23x`, `-` when unknown.
fn times(v: Option<f64>) -> String {
    match opt(v, 2).as_str() {
        "-" => "-".into(),
        r => format!("{r}x"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

impl Report {
    /// The header lines (printed before the measurements start).
    pub fn print_header(&self) {
        for (k, v) in &self.header {
            println!("{k:<10} {v}");
        }
        for s in &self.skipped {
            println!("{s}");
        }
    }

    /// Prints the tables.
    pub fn print_tables(&self) {
        if self.cached_rows().next().is_some() {
            self.print_cached();
        }
        if self.cold_rows().next().is_some() {
            self.print_cold();
        }
        if self.problems.is_empty() {
            println!("\nproblems: none (every reply was the expected one)");
        } else {
            println!("\nproblems:");
            for p in &self.problems {
                println!("  {p}");
            }
        }
    }

    /// The cached row of `target` at `conns` connections.
    pub fn cached_row(&mut self, target: &str, conns: usize) -> Option<&mut Cached> {
        self.cached
            .iter_mut()
            .find(|r| r.target == target && r.conns == conns)
    }

    /// The cold row of `target` at `conns` connections.
    pub fn cold_row(&mut self, target: &str, conns: usize) -> Option<&mut Cold> {
        self.cold
            .iter_mut()
            .find(|r| r.target == target && r.conns == conns)
    }

    /// The cached rows with at least one round measured.
    fn cached_rows(&self) -> impl Iterator<Item = &Cached> {
        self.cached.iter().filter(|r| !r.rounds.is_empty())
    }

    /// The cold rows with at least one round measured.
    fn cold_rows(&self) -> impl Iterator<Item = &Cold> {
        self.cold.iter().filter(|r| !r.rounds.is_empty())
    }

    /// "the median of R rounds", for the tables' titles.
    fn medians_of(&self) -> String {
        match self.rounds {
            1 => "one round (no median)".into(),
            n => format!("every figure the median of {n} rounds, ranges min-max over the rounds"),
        }
    }

    fn print_cached(&self) {
        let (domains, seconds) = self.cached_setup.unwrap_or_default();
        println!(
            "\n== cached: {domains} domains, every request a cache hit, one request in flight per connection, {seconds} s per phase; {} ==",
            self.medians_of()
        );
        println!(
            "{:<14} {:>5} {:>10} {:>15} {:>8} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>6}",
            "target",
            "conns",
            "lookups/s",
            "lookups/s range",
            "p50 us",
            "p99 us",
            "CPU us",
            "CPU range",
            "RSS idle",
            "RSS warm",
            "RSS load",
            "wrong"
        );
        for r in self.cached_rows() {
            println!(
                "{:<14} {:>5} {:>10} {:>15} {:>8} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>6}",
                r.target,
                r.conns,
                opt(median_of(r.rate()), 0),
                range(r.rate(), 0),
                opt(median_of(r.spread(|n| n.p50_us)), 0),
                opt(median_of(r.spread(|n| n.p99_us)), 0),
                opt(median_of(r.cpu_us()), 1),
                range(r.cpu_us(), 1),
                kib(r.rss_idle_kib),
                kib(r.rss_warm_kib),
                kib(r.rss_loaded_max_kib()),
                r.failures()
            );
        }
        println!("(lookups/s, p50, p99, CPU us: medians over the rounds of each phase's figure; CPU us: target utime+stime per lookup;");
        println!(" RSS in KiB: idle after start, after the one warm-up pass, load = the largest after a phase at that connection count in any round;");
        println!(" wrong: wrong replies and failed connections over all rounds)");
        self.print_cached_ratios();
    }

    /// The cached rows against the bare servers and python, medians against medians.
    fn print_cached_ratios(&self) {
        println!("\n-- cached ratios of the medians: lookups/s (higher is better) and CPU per lookup (lower is better) --");
        println!(
            "{:<14} {:>5} {:>19} {:>19} {:>19}",
            "target", "conns", "vs bare-async", "vs bare-threads", "vs python"
        );
        println!(
            "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "", "lookups", "CPU", "lookups", "CPU", "lookups", "CPU"
        );
        for r in self.cached_rows() {
            let cols = [Kind::BareAsync, Kind::BareThreads, Kind::Python].map(|k| {
                let b = self.cached_base(k, r.conns);
                (
                    opt(
                        ratio(median_of(r.rate()), median_of(b.and_then(Cached::rate))),
                        2,
                    ),
                    opt(
                        ratio(median_of(r.cpu_us()), median_of(b.and_then(Cached::cpu_us))),
                        2,
                    ),
                )
            });
            println!(
                "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                r.target, r.conns, cols[0].0, cols[0].1, cols[1].0, cols[1].1, cols[2].0, cols[2].1
            );
        }
    }

    /// The measured cached row of the first target of `kind` at `conns` connections.
    fn cached_base(&self, kind: Kind, conns: usize) -> Option<&Cached> {
        self.cached_rows()
            .find(|b| b.kind == kind && b.conns == conns)
    }

    fn print_cold(&self) {
        let domains = self
            .cold_rows()
            .find_map(|r| r.rounds.first())
            .map_or(0, |r| r.domains);
        println!(
            "\n== cold: a fresh target warms {domains} distinct domains once each (TXT + A/AAAA + HTTPS policy fetch), one request in flight per connection, in two steps: the first max(conns, {}), then the rest; {} ==",
            domains / 10,
            self.medians_of()
        );
        println!(
            "{:<14} {:>5} {:>7} {:>11} {:>9} {:>8} {:>8} {:>7} {:>11} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>5}",
            "target",
            "conns",
            "wall s",
            "wall range",
            "lookups/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "CPU range",
            "RSS idle",
            "RSS first",
            "RSS after",
            "one-time",
            "B/policy",
            "B/pol all",
            "wrong"
        );
        for r in self.cold_rows() {
            println!(
                "{:<14} {:>5} {:>7} {:>11} {:>9} {:>8} {:>8} {:>7} {:>11} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>5}",
                r.target,
                r.conns,
                opt(median_of(r.wall()), 2),
                range(r.wall(), 2),
                opt(median_of(r.spread(|c| Some(c.warm.rate))), 0),
                opt(median_of(r.spread(|c| c.warm.p50_us.map(|u| u / 1e3))), 2),
                opt(median_of(r.spread(|c| c.warm.p99_us.map(|u| u / 1e3))), 2),
                opt(median_of(r.cpu_us()), 0),
                range(r.cpu_us(), 0),
                opt(r.rss_kib(|c| c.rss_idle_kib), 0),
                opt(r.rss_kib(|c| c.rss_first_kib), 0),
                opt(r.rss_kib(|c| c.rss_after_kib), 0),
                opt(median_of(r.spread(ColdRound::one_time_kib)), 0),
                opt(median_of(r.spread(ColdRound::bytes_per_policy)), 0),
                opt(median_of(r.spread(ColdRound::bytes_per_policy_all)), 0),
                r.failures()
            );
        }
        println!("(every column but the ranges and wrong: the median over the rounds of each round's figure, a fresh process per round;");
        println!(" wall s: both steps' load time, the pauses between excluded; CPU us: target utime+stime per cold lookup over both steps;");
        println!(" RSS in KiB: idle after start, after the first K domains, after all N, each read once the burst has settled;");
        println!(" one-time: RSS first - RSS idle, in KiB: what the first lookups cost once per process (TLS library, trust store, runtime);");
        println!(" B/policy: (RSS after - RSS first) / (N - K), in bytes: the marginal memory of a cached policy;");
        println!(" B/pol all: (RSS after - RSS idle) / N, in bytes: the whole run's growth per policy, one-time cost included;");
        println!(" bare-fetch: the floor, this bench doing each lookup's DNS queries and HTTPS fetch itself, one TLS connector, no cache, no socketmap; its own CPU over its timed work;");
        println!(" wrong: wrong replies and failed connections over all rounds)");
        if self
            .cold_rows()
            .any(|r| matches!(r.kind, Kind::Python | Kind::BareFetch))
        {
            self.print_cold_ratios();
        }
    }

    /// The cold rows against python and against the bare-fetch floor, at the same
    /// connections, medians against medians.
    fn print_cold_ratios(&self) {
        println!("\n-- cold ratios of the medians --");
        println!("vs python: warm-up faster = python's wall / target's (higher is better); CPU/lookup, B/policy, RSS idle = target / python (lower is better)");
        println!("vs bare-fetch: target / the floor (1.00x = nothing but the network work of the lookups; lower is better)");
        println!(
            "{:<14} {:>5} {:-^50} {:-^29}",
            "", "", " vs python ", " vs bare-fetch "
        );
        println!(
            "{:<14} {:>5} {:>15} {:>11} {:>11} {:>10} {:>12} {:>16}",
            "target",
            "conns",
            "warm-up faster",
            "CPU/lookup",
            "B/policy",
            "RSS idle",
            "CPU/lookup",
            "warm-up (wall)"
        );
        let policy = |r: &Cold| median_of(r.spread(ColdRound::bytes_per_policy));
        let idle = |r: &Cold| r.rss_kib(|c| c.rss_idle_kib);
        for r in self.cold_rows() {
            let py = self.cold_base(Kind::Python, r.conns);
            let floor = self.cold_base(Kind::BareFetch, r.conns);
            let wall = |c: Option<&Cold>| median_of(c.and_then(Cold::wall));
            let cpu = |c: Option<&Cold>| median_of(c.and_then(Cold::cpu_us));
            println!(
                "{:<14} {:>5} {:>15} {:>11} {:>11} {:>10} {:>12} {:>16}",
                r.target,
                r.conns,
                times(ratio(wall(py), wall(Some(r)))),
                times(ratio(cpu(Some(r)), cpu(py))),
                times(ratio(policy(r), py.and_then(policy))),
                times(ratio(idle(r), py.and_then(idle))),
                times(ratio(cpu(Some(r)), cpu(floor))),
                times(ratio(wall(Some(r)), wall(floor))),
            );
        }
    }

    /// The measured cold row of the first target of `kind` at `conns` connections.
    fn cold_base(&self, kind: Kind, conns: usize) -> Option<&Cold> {
        self.cold_rows()
            .find(|b| b.kind == kind && b.conns == conns)
    }

    /// Every round's raw numbers per target and connection count, and their medians and
    /// ranges.
    pub fn json(&self) -> Value {
        json!({
            "header": self.header.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "rounds": self.rounds,
            "cached": self.cached_rows().map(cached_json).collect::<Vec<_>>(),
            "cold": self.cold_rows().map(cold_json).collect::<Vec<_>>(),
            "skipped": self.skipped,
            "problems": self.problems,
            "failures": self.failures,
        })
    }
}

/// A phase's numbers as JSON.
fn numbers_json(n: &Numbers) -> Value {
    json!({
        "replies": n.replies,
        "seconds": n.seconds,
        "lookups_per_second": n.rate,
        "p50_us": n.p50_us,
        "p99_us": n.p99_us,
        "cpu_us_per_lookup": n.cpu_us,
        "failures": n.failures,
    })
}

/// A spread as JSON: `{"median", "min", "max"}`, or null when unknown.
fn spread_json(s: Option<Spread>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({"median": s.median, "min": s.min, "max": s.max}),
    )
}

/// A cached row as JSON: every round, then each figure's median and range.
fn cached_json(r: &Cached) -> Value {
    json!({
        "target": r.target,
        "kind": format!("{:?}", r.kind),
        "connections": r.conns,
        "rss_idle_kib": r.rss_idle_kib,
        "rss_warm_kib": r.rss_warm_kib,
        "rounds": r.rounds.iter().map(|c| json!({
            "round": c.round,
            "load": numbers_json(&c.load),
            "rss_loaded_kib": c.rss_loaded_kib,
        })).collect::<Vec<_>>(),
        "over_rounds": {
            "lookups_per_second": spread_json(r.rate()),
            "p50_us": spread_json(r.spread(|n| n.p50_us)),
            "p99_us": spread_json(r.spread(|n| n.p99_us)),
            "cpu_us_per_lookup": spread_json(r.cpu_us()),
            "rss_loaded_kib": spread_json(Spread::of(r.rounds.iter().map(|c| kib_f64(c.rss_loaded_kib)))),
            "failures": r.failures(),
        },
    })
}

/// A cold row as JSON: every round, then each figure's median and range.
fn cold_json(r: &Cold) -> Value {
    let rss =
        |reading: fn(&ColdRound) -> Option<u64>| spread_json(r.spread(|c| kib_f64(reading(c))));
    json!({
        "target": r.target,
        "kind": format!("{:?}", r.kind),
        "connections": r.conns,
        "rounds": r.rounds.iter().map(|c| json!({
            "round": c.round,
            "domains": c.domains,
            "first_domains": c.first_domains,
            "warm": numbers_json(&c.warm),
            "steps": c.steps.iter().map(numbers_json).collect::<Vec<_>>(),
            "rss_idle_kib": c.rss_idle_kib,
            "rss_first_kib": c.rss_first_kib,
            "rss_after_kib": c.rss_after_kib,
            "one_time_kib": c.one_time_kib(),
            "bytes_per_policy": c.bytes_per_policy(),
            "bytes_per_policy_all": c.bytes_per_policy_all(),
        })).collect::<Vec<_>>(),
        "over_rounds": {
            "seconds": spread_json(r.wall()),
            "lookups_per_second": spread_json(r.spread(|c| Some(c.warm.rate))),
            "p50_us": spread_json(r.spread(|c| c.warm.p50_us)),
            "p99_us": spread_json(r.spread(|c| c.warm.p99_us)),
            "cpu_us_per_lookup": spread_json(r.cpu_us()),
            "rss_idle_kib": rss(|c| c.rss_idle_kib),
            "rss_first_kib": rss(|c| c.rss_first_kib),
            "rss_after_kib": rss(|c| c.rss_after_kib),
            "one_time_kib": spread_json(r.spread(ColdRound::one_time_kib)),
            "bytes_per_policy": spread_json(r.spread(ColdRound::bytes_per_policy)),
            "bytes_per_policy_all": spread_json(r.spread(ColdRound::bytes_per_policy_all)),
            "failures": r.failures(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{Cached, CachedRound, Cold, ColdRound, Numbers};
    use crate::stats::Spread;
    use crate::targets::{Kind, Target};

    /// A cold round of `domains` with RSS idle, first, after.
    fn cold_round(round: usize, cpu_us: f64, rss: [u64; 3]) -> ColdRound {
        ColdRound {
            round,
            domains: 2000,
            first_domains: 200,
            warm: Numbers {
                seconds: round as f64,
                cpu_us: Some(cpu_us),
                failures: 1,
                ..Numbers::default()
            },
            steps: Vec::new(),
            rss_idle_kib: Some(rss[0]),
            rss_first_kib: Some(rss[1]),
            rss_after_kib: Some(rss[2]),
        }
    }

    #[test]
    fn cold_memory_figures() {
        let row = cold_round(1, 0.0, [7000, 12000, 13800]);
        assert_eq!(row.one_time_kib(), Some(5000.0));
        assert_eq!(row.bytes_per_policy(), Some(1800.0 * 1024.0 / 1800.0));
        assert_eq!(row.bytes_per_policy_all(), Some(6800.0 * 1024.0 / 2000.0));
        let all_first = ColdRound {
            first_domains: 2000,
            ..row
        };
        assert_eq!(all_first.bytes_per_policy(), None);
        let floor = ColdRound {
            rss_idle_kib: None,
            rss_first_kib: None,
            rss_after_kib: None,
            ..all_first
        };
        assert_eq!(floor.one_time_kib(), None);
        assert_eq!(floor.bytes_per_policy_all(), None);
    }

    #[test]
    fn cold_rows_take_medians_over_rounds() {
        let target = Target {
            name: "t".into(),
            kind: Kind::Ours,
            path: "t".into(),
        };
        let mut row = Cold::new(&target, 16);
        assert_eq!(row.cpu_us(), None);
        row.rounds.push(cold_round(1, 1300.0, [7000, 12000, 13800]));
        row.rounds.push(cold_round(2, 1000.0, [7100, 12500, 14300]));
        row.rounds.push(cold_round(3, 1100.0, [6900, 11000, 12000]));
        let cpu = row.cpu_us().map(|s| (s.median, s.min, s.max));
        assert_eq!(cpu, Some((1100.0, 1000.0, 1300.0)));
        assert_eq!(row.wall().map(|s| s.median), Some(2.0));
        assert_eq!(row.rss_kib(|c| c.rss_idle_kib), Some(7000.0));
        // The median of each round's one-time cost (5000, 5400, 4100), not a difference of
        // medians.
        let one_time = row.spread(ColdRound::one_time_kib);
        assert_eq!(one_time.map(|s| s.median), Some(5000.0));
        assert_eq!(row.failures(), 3);
    }

    #[test]
    fn cached_rows_take_medians_over_rounds() {
        let target = Target {
            name: "t".into(),
            kind: Kind::BareAsync,
            path: "t".into(),
        };
        let mut row = Cached::new(&target, 100, Some(5000), Some(5400));
        for (round, (rate, cpu, rss)) in [(70e3, 9.0, 6100), (98e3, 8.0, 6300), (105e3, 8.5, 6200)]
            .into_iter()
            .enumerate()
        {
            row.rounds.push(CachedRound {
                round: round + 1,
                load: Numbers {
                    rate,
                    cpu_us: Some(cpu),
                    ..Numbers::default()
                },
                rss_loaded_kib: Some(rss),
            });
        }
        assert_eq!(
            row.rate(),
            Some(Spread {
                median: 98e3,
                min: 70e3,
                max: 105e3
            })
        );
        assert_eq!(row.cpu_us().map(|s| s.range(1)).as_deref(), Some("8.0-9.0"));
        assert_eq!(row.rss_loaded_max_kib(), Some(6300));
        assert_eq!(row.failures(), 0);
    }
}
