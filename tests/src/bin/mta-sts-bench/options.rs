//! The command line.

use std::path::PathBuf;

/// Printed on a bad command line.
pub const USAGE: &str = "usage: mta-sts-bench [--daemon NAME=PATH ...] [--python PATH] \
[--mode cached|cold|both] [--connections 16,100] [--rounds 3] [--seconds 5] [--domains 200] \
[--cold-domains 2000] [--json FILE] [--logs DIR]
  every figure is the median over --rounds rounds, the targets interleaved within each round";

/// What the run measures and against what.
pub struct Options {
    /// Our daemons: (name, program).
    pub daemons: Vec<(String, PathBuf)>,
    /// The Python original's `mta-sts-daemon`.
    pub python: Option<PathBuf>,
    /// Measure the cached path.
    pub cached: bool,
    /// Measure the cold path.
    pub cold: bool,
    /// Connection counts, each measured on its own.
    pub connections: Vec<usize>,
    /// Rounds: every figure is the median of this many measurements, the targets
    /// interleaved within each round.
    pub rounds: usize,
    /// Length of each timed cached phase (default 5 s: with 3 rounds, python, the floors and
    /// two daemons, `--mode both` takes about 6 minutes on a 2-core machine).
    pub seconds: f64,
    /// Domains of the cached mode.
    pub domains: usize,
    /// Domains of the cold mode (also the N of bytes per cached policy).
    pub cold_domains: usize,
    /// Where to write the raw numbers.
    pub json: Option<PathBuf>,
    /// Where to keep the targets' logs.
    pub logs: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        daemons: Vec::new(),
        python: None,
        cached: true,
        cold: true,
        connections: vec![16, 100],
        rounds: 3,
        seconds: 5.0,
        domains: 200,
        cold_domains: 2000,
        json: None,
        logs: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--daemon" => {
                let v = value()?;
                let (name, path) = v
                    .split_once('=')
                    .ok_or(format!("--daemon {v}: expected NAME=PATH"))?;
                opts.daemons.push((name.to_owned(), PathBuf::from(path)));
            }
            "--python" => opts.python = Some(PathBuf::from(value()?)),
            "--mode" => {
                let v = value()?;
                (opts.cached, opts.cold) = match v.as_str() {
                    "cached" => (true, false),
                    "cold" => (false, true),
                    "both" => (true, true),
                    _ => return Err(format!("--mode {v}: expected cached, cold or both")),
                };
            }
            "--connections" => {
                let v = value()?;
                opts.connections = v
                    .split(',')
                    .map(|c| c.trim().parse().ok().filter(|&n: &usize| n > 0))
                    .collect::<Option<_>>()
                    .ok_or(format!("--connections {v}: expected counts like 16,100"))?;
            }
            "--seconds" => {
                let v = value()?;
                opts.seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or(format!("--seconds {v}: expected a positive number"))?;
            }
            "--rounds" => opts.rounds = count(value()?, "--rounds")?,
            "--domains" => opts.domains = count(value()?, "--domains")?,
            "--cold-domains" => opts.cold_domains = count(value()?, "--cold-domains")?,
            "--json" => opts.json = Some(PathBuf::from(value()?)),
            "--logs" => opts.logs = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    if opts.daemons.is_empty() && opts.python.is_none() {
        eprintln!("mta-sts-bench: no --daemon or --python given: measuring the bare servers only");
    }
    Ok(opts)
}

fn count(v: &str, name: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|&n: &usize| n > 0)
        .ok_or(format!("{name} {v}: expected a positive count"))
}
