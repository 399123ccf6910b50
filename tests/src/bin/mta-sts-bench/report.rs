//! The tables, the ratios and the JSON file.

use crate::load::Outcome;
use crate::targets::Kind;
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

/// A cached-mode row: one target at one connection count.
pub struct Cached {
    /// Target name.
    pub target: String,
    /// Target kind.
    pub kind: Kind,
    /// Connections.
    pub conns: usize,
    /// The timed phase.
    pub load: Numbers,
    /// VmRSS after start, before any request (KiB).
    pub rss_idle_kib: Option<u64>,
    /// VmRSS after the first warm-up pass (KiB).
    pub rss_warm_kib: Option<u64>,
    /// VmRSS after this timed phase (KiB).
    pub rss_loaded_kib: Option<u64>,
}

/// A cold-mode row: a fresh target warming every cold domain once in two steps (the first
/// `first_domains`, then the rest, its RSS read after each has settled), or the bare-fetch
/// floor doing the same lookups' network work in one pass.
pub struct Cold {
    /// Target name.
    pub target: String,
    /// Target kind.
    pub kind: Kind,
    /// Connections.
    pub conns: usize,
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

impl Cold {
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

/// Everything a run produced.
#[derive(Default)]
pub struct Report {
    /// Lines describing the machine and the run, printed first.
    pub header: Vec<(String, String)>,
    /// Cached rows.
    pub cached: Vec<Cached>,
    /// Cold rows.
    pub cold: Vec<Cold>,
    /// Settings of the cached mode: domains, seconds per phase.
    pub cached_setup: Option<(usize, f64)>,
    /// Targets left out, and why.
    pub skipped: Vec<String>,
    /// Wrong replies, errors, warnings from the targets' logs.
    pub problems: Vec<String>,
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
        if !self.cached.is_empty() {
            self.print_cached();
        }
        if !self.cold.is_empty() {
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

    fn print_cached(&self) {
        let (domains, seconds) = self.cached_setup.unwrap_or_default();
        println!(
            "\n== cached: {domains} domains, every request a cache hit, one request in flight per connection, {seconds} s per phase =="
        );
        println!(
            "{:<14} {:>5} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6}",
            "target",
            "conns",
            "lookups/s",
            "p50 us",
            "p99 us",
            "CPU us",
            "RSS idle",
            "RSS warm",
            "RSS load",
            "wrong"
        );
        for r in &self.cached {
            println!(
                "{:<14} {:>5} {:>10.0} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6}",
                r.target,
                r.conns,
                r.load.rate,
                opt(r.load.p50_us, 0),
                opt(r.load.p99_us, 0),
                opt(r.load.cpu_us, 1),
                kib(r.rss_idle_kib),
                kib(r.rss_warm_kib),
                kib(r.rss_loaded_kib),
                r.load.failures
            );
        }
        println!("(CPU us: target utime+stime per lookup; RSS in KiB: idle after start, after the warm-up pass, after the phase)");
        println!("\n-- cached ratios: lookups/s (higher is better) and CPU per lookup (lower is better) --");
        println!(
            "{:<14} {:>5} {:>19} {:>19} {:>19}",
            "target", "conns", "vs bare-async", "vs bare-threads", "vs python"
        );
        println!(
            "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "", "lookups", "CPU", "lookups", "CPU", "lookups", "CPU"
        );
        for r in &self.cached {
            let base = |kind: Kind| {
                self.cached
                    .iter()
                    .find(|b| b.kind == kind && b.conns == r.conns)
            };
            let cols = [Kind::BareAsync, Kind::BareThreads, Kind::Python].map(|k| {
                let b = base(k);
                (
                    opt(ratio(Some(r.load.rate), b.map(|b| b.load.rate)), 2),
                    opt(ratio(r.load.cpu_us, b.and_then(|b| b.load.cpu_us)), 2),
                )
            });
            println!(
                "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                r.target, r.conns, cols[0].0, cols[0].1, cols[1].0, cols[1].1, cols[2].0, cols[2].1
            );
        }
    }

    fn print_cold(&self) {
        let domains = self.cold.first().map_or(0, |c| c.domains);
        println!(
            "\n== cold: a fresh target warms {domains} distinct domains once each (TXT + A/AAAA + HTTPS policy fetch), one request in flight per connection, in two steps: the first max(conns, {}), then the rest ==",
            domains / 10
        );
        println!(
            "{:<14} {:>5} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6}",
            "target",
            "conns",
            "wall s",
            "lookups/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "RSS idle",
            "RSS first",
            "RSS after",
            "one-time",
            "B/policy",
            "B/pol all",
            "wrong"
        );
        for r in &self.cold {
            println!(
                "{:<14} {:>5} {:>8.2} {:>10.0} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6}",
                r.target,
                r.conns,
                r.warm.seconds,
                r.warm.rate,
                opt(r.warm.p50_us.map(|u| u / 1e3), 2),
                opt(r.warm.p99_us.map(|u| u / 1e3), 2),
                opt(r.warm.cpu_us, 0),
                kib(r.rss_idle_kib),
                kib(r.rss_first_kib),
                kib(r.rss_after_kib),
                opt(r.one_time_kib(), 0),
                opt(r.bytes_per_policy(), 0),
                opt(r.bytes_per_policy_all(), 0),
                r.warm.failures
            );
        }
        println!("(wall s: both steps' load time, the pauses between excluded; CPU us: target utime+stime per cold lookup over both steps;");
        println!(" RSS in KiB: idle after start, after the first K domains, after all N, each read once the burst has settled;");
        println!(" one-time: RSS first - RSS idle, in KiB: what the first lookups cost once per process (TLS library, trust store, runtime);");
        println!(" B/policy: (RSS after - RSS first) / (N - K), in bytes: the marginal memory of a cached policy;");
        println!(" B/pol all: (RSS after - RSS idle) / N, in bytes: the whole run's growth per policy, one-time cost included;");
        println!(" bare-fetch: the floor, this bench doing each lookup's DNS queries and HTTPS fetch itself, one TLS connector, no cache, no socketmap; its own CPU over its timed work)");
        if self
            .cold
            .iter()
            .any(|r| matches!(r.kind, Kind::Python | Kind::BareFetch))
        {
            self.print_cold_ratios();
        }
    }

    /// The cold rows against python and against the bare-fetch floor, at the same connections.
    fn print_cold_ratios(&self) {
        println!("\n-- cold ratios --");
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
        let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
        for r in &self.cold {
            let py = self.cold_base(Kind::Python, r.conns);
            let floor = self.cold_base(Kind::BareFetch, r.conns);
            println!(
                "{:<14} {:>5} {:>15} {:>11} {:>11} {:>10} {:>12} {:>16}",
                r.target,
                r.conns,
                times(ratio(py.map(|p| p.warm.seconds), Some(r.warm.seconds))),
                times(ratio(r.warm.cpu_us, py.and_then(|p| p.warm.cpu_us))),
                times(ratio(
                    r.bytes_per_policy(),
                    py.and_then(Cold::bytes_per_policy)
                )),
                times(ratio(
                    as_f64(r.rss_idle_kib),
                    py.and_then(|p| as_f64(p.rss_idle_kib))
                )),
                times(ratio(r.warm.cpu_us, floor.and_then(|f| f.warm.cpu_us))),
                times(ratio(Some(r.warm.seconds), floor.map(|f| f.warm.seconds))),
            );
        }
    }

    /// The cold row of the first target of `kind` at `conns` connections.
    fn cold_base(&self, kind: Kind, conns: usize) -> Option<&Cold> {
        self.cold
            .iter()
            .find(|b| b.kind == kind && b.conns == conns)
    }

    /// The raw numbers.
    pub fn json(&self) -> Value {
        let numbers = |n: &Numbers| {
            json!({
                "replies": n.replies,
                "seconds": n.seconds,
                "lookups_per_second": n.rate,
                "p50_us": n.p50_us,
                "p99_us": n.p99_us,
                "cpu_us_per_lookup": n.cpu_us,
                "failures": n.failures,
            })
        };
        json!({
            "header": self.header.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "cached": self.cached.iter().map(|r| json!({
                "target": r.target,
                "kind": format!("{:?}", r.kind),
                "connections": r.conns,
                "load": numbers(&r.load),
                "rss_idle_kib": r.rss_idle_kib,
                "rss_warm_kib": r.rss_warm_kib,
                "rss_loaded_kib": r.rss_loaded_kib,
            })).collect::<Vec<_>>(),
            "cold": self.cold.iter().map(|r| json!({
                "target": r.target,
                "kind": format!("{:?}", r.kind),
                "connections": r.conns,
                "domains": r.domains,
                "first_domains": r.first_domains,
                "warm": numbers(&r.warm),
                "steps": r.steps.iter().map(numbers).collect::<Vec<_>>(),
                "rss_idle_kib": r.rss_idle_kib,
                "rss_first_kib": r.rss_first_kib,
                "rss_after_kib": r.rss_after_kib,
                "one_time_kib": r.one_time_kib(),
                "bytes_per_policy": r.bytes_per_policy(),
                "bytes_per_policy_all": r.bytes_per_policy_all(),
            })).collect::<Vec<_>>(),
            "skipped": self.skipped,
            "problems": self.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Cold, Numbers};
    use crate::targets::Kind;

    #[test]
    fn cold_memory_figures() {
        let row = Cold {
            target: "t".into(),
            kind: Kind::Ours,
            conns: 16,
            domains: 2000,
            first_domains: 200,
            warm: Numbers::default(),
            steps: Vec::new(),
            rss_idle_kib: Some(7000),
            rss_first_kib: Some(12000),
            rss_after_kib: Some(13800),
        };
        assert_eq!(row.one_time_kib(), Some(5000.0));
        assert_eq!(row.bytes_per_policy(), Some(1800.0 * 1024.0 / 1800.0));
        assert_eq!(row.bytes_per_policy_all(), Some(6800.0 * 1024.0 / 2000.0));
        let all_first = Cold {
            first_domains: 2000,
            ..row
        };
        assert_eq!(all_first.bytes_per_policy(), None);
        let floor = Cold {
            rss_idle_kib: None,
            rss_first_kib: None,
            rss_after_kib: None,
            ..all_first
        };
        assert_eq!(floor.one_time_kib(), None);
        assert_eq!(floor.bytes_per_policy_all(), None);
    }
}
