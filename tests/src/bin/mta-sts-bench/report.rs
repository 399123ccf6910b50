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

/// A cold-mode row: a fresh target warming every cold domain once.
pub struct Cold {
    /// Target name.
    pub target: String,
    /// Target kind.
    pub kind: Kind,
    /// Connections.
    pub conns: usize,
    /// Domains warmed.
    pub domains: usize,
    /// The warm-up pass (`seconds` is the wall time to warm every domain).
    pub warm: Numbers,
    /// VmRSS before the pass (KiB).
    pub rss_idle_kib: Option<u64>,
    /// VmRSS after it, connections closed (KiB).
    pub rss_after_kib: Option<u64>,
}

impl Cold {
    /// (RSS after − RSS idle) / domains.
    pub fn bytes_per_policy(&self) -> Option<f64> {
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
            "\n== cold: a fresh target warms {domains} distinct domains once each (TXT + A/AAAA + HTTPS policy fetch), one request in flight per connection =="
        );
        println!(
            "{:<14} {:>5} {:>8} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "target",
            "conns",
            "wall s",
            "lookups/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "RSS idle",
            "RSS after",
            "B/policy",
            "wrong"
        );
        for r in &self.cold {
            println!(
                "{:<14} {:>5} {:>8.2} {:>10.0} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}",
                r.target,
                r.conns,
                r.warm.seconds,
                r.warm.rate,
                opt(r.warm.p50_us.map(|u| u / 1e3), 2),
                opt(r.warm.p99_us.map(|u| u / 1e3), 2),
                opt(r.warm.cpu_us, 0),
                kib(r.rss_idle_kib),
                kib(r.rss_after_kib),
                opt(r.bytes_per_policy(), 0),
                r.warm.failures
            );
        }
        println!("(CPU us: target utime+stime per cold lookup; B/policy: (RSS after - RSS idle) / domains, in bytes)");
        if !self.cold.iter().any(|r| r.kind == Kind::Python) {
            return;
        }
        println!("\n-- cold ratios against python --");
        println!(
            "{:<14} {:>5} {:>16} {:>12} {:>12} {:>10}",
            "target", "conns", "warm-up faster", "CPU/lookup", "B/policy", "RSS idle"
        );
        for r in &self.cold {
            let Some(py) = self
                .cold
                .iter()
                .find(|b| b.kind == Kind::Python && b.conns == r.conns)
            else {
                continue;
            };
            println!(
                "{:<14} {:>5} {:>15}x {:>11}x {:>11}x {:>9}x",
                r.target,
                r.conns,
                opt(ratio(Some(py.warm.seconds), Some(r.warm.seconds)), 2),
                opt(ratio(r.warm.cpu_us, py.warm.cpu_us), 2),
                opt(ratio(r.bytes_per_policy(), py.bytes_per_policy()), 2),
                opt(
                    ratio(
                        r.rss_idle_kib.map(|v| v as f64),
                        py.rss_idle_kib.map(|v| v as f64)
                    ),
                    2
                )
            );
        }
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
                "warm": numbers(&r.warm),
                "rss_idle_kib": r.rss_idle_kib,
                "rss_after_kib": r.rss_after_kib,
                "bytes_per_policy": r.bytes_per_policy(),
            })).collect::<Vec<_>>(),
            "skipped": self.skipped,
            "problems": self.problems,
        })
    }
}
