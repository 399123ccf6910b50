//! Cached-lookup throughput and memory of socketmap daemons, side by side in
//! one run on this machine.
//!
//! ```text
//! cargo build --release -p mta-sts-smol
//! cargo run --release -p mta-sts-tests --bin mta-sts-bench -- \
//!     --daemon target/release/mta-sts-daemon [--daemon NAME=PATH ...] \
//!     [--python /path/to/python/mta-sts-daemon] [--seconds 10] [--connections 8] [--pipeline 16] [--domains 200]
//! ```
//!
//! Every daemon gets the same policies for `--domains` domains from a SQLite
//! cache file in the Python original's layout, with a `cache_grace` long
//! enough that each request is a cache hit with no network traffic. Our
//! daemons are also measured on the internal cache, warmed by one real fetch
//! per domain from the hermetic DNS/HTTPS world. Each run reports replies per
//! second (every reply is checked to be the expected `OK secure ...`) and the
//! daemon's resident memory after the load (VmRSS, VmHWM).

use mta_sts_tests::socketmap_client::{netstring, parse_netstring};
use mta_sts_tests::{policy_body, Behaviour, Daemon, World};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Options {
    daemons: Vec<(String, String)>,
    python: Option<String>,
    seconds: u64,
    connections: usize,
    pipeline: usize,
    domains: usize,
}

fn parse_options() -> Options {
    let mut opts = Options {
        daemons: Vec::new(),
        python: None,
        seconds: 10,
        connections: 8,
        pipeline: 16,
        domains: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--daemon" => {
                let v = value();
                let (name, path) = match v.split_once('=') {
                    Some((n, p)) => (n.to_owned(), p.to_owned()),
                    None => ("rust".to_owned(), v),
                };
                opts.daemons.push((name, path));
            }
            "--python" => opts.python = Some(value()),
            "--seconds" => {
                opts.seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds"))
            }
            "--connections" => {
                opts.connections = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --connections"))
            }
            "--pipeline" => {
                opts.pipeline = value().parse().unwrap_or_else(|_| usage("bad --pipeline"))
            }
            "--domains" => {
                opts.domains = value().parse().unwrap_or_else(|_| usage("bad --domains"))
            }
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    if opts.daemons.is_empty() && opts.python.is_none() {
        usage("give at least one --daemon or --python");
    }
    opts
}

fn usage(why: &str) -> ! {
    eprintln!("mta-sts-bench: {why}\nusage: mta-sts-bench --daemon [NAME=]PATH ... [--python PATH] [--seconds N] [--connections N] [--pipeline N] [--domains N]");
    std::process::exit(2)
}

const MX: &str = "mail.bench.test";

fn domain(i: usize) -> String {
    format!("d{i}.bench.test")
}

fn expected_reply() -> String {
    format!("OK secure match={MX} servername=hostname")
}

/// A SQLite cache file in the Python original's layout, every entry fresh.
fn python_cache_file(dir: &Path, name: &str, domains: usize) -> String {
    let path = dir.join(format!("{name}.db"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut sql = String::from(
        "create table if not exists proactive_fetch_ts (id integer primary key, last_fetch_ts integer);\n\
         create table if not exists sts_policy_cache (domain text, ts integer, pol_id text, pol_body text);\n\
         create unique index if not exists sts_policy_domain on sts_policy_cache (domain);\n\
         create index if not exists sts_policy_domain_ts on sts_policy_cache (domain, ts);\nbegin;\n",
    );
    for i in 0..domains {
        sql.push_str(&format!(
            "insert into sts_policy_cache values ('{}', {now}, 'id1', '{{\"version\": \"STSv1\", \"mode\": \"enforce\", \"max_age\": 604800, \"mx\": [\"{MX}\"]}}');\n",
            domain(i)
        ));
    }
    sql.push_str("commit;\n");
    let mut child = Command::new("sqlite3")
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sqlite3 not found: install sqlite3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("write sql");
    assert!(child.wait().expect("sqlite3").success(), "sqlite3 failed");
    path.display().to_string()
}

/// Load `port` with pipelined requests over `connections` connections.
fn load(port: u16, opts: &Options) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let expected = expected_reply();
    let threads: Vec<_> = (0..opts.connections)
        .map(|t| {
            let (stop, count, expected) = (stop.clone(), count.clone(), expected.clone());
            let (pipeline, domains) = (opts.pipeline, opts.domains);
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.set_nodelay(true).ok();
                stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let mut next = t;
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = Vec::new();
                    for _ in 0..pipeline {
                        batch.extend(netstring(
                            format!("postfix {}", domain(next % domains)).as_bytes(),
                        ));
                        next += 7;
                    }
                    stream.write_all(&batch).expect("write");
                    let mut got = 0;
                    while got < pipeline {
                        match parse_netstring(&buf) {
                            Ok(Some((reply, used))) => {
                                assert_eq!(
                                    String::from_utf8_lossy(&reply),
                                    expected,
                                    "unexpected reply"
                                );
                                buf.drain(..used);
                                got += 1;
                            }
                            Ok(None) => {
                                let n = stream.read(&mut chunk).expect("read");
                                assert!(n > 0, "daemon closed the connection");
                                buf.extend_from_slice(&chunk[..n]);
                            }
                            Err(()) => panic!("malformed reply"),
                        }
                    }
                    count.fetch_add(pipeline as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Row {
    name: String,
    rate: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn warm(daemon: &Daemon, domains: usize) {
    let mut client = daemon.client();
    for i in 0..domains {
        assert_eq!(
            client.query("postfix", &domain(i)),
            expected_reply(),
            "warm-up of {}",
            domain(i)
        );
    }
}

fn run_ours(world: &World, name: &str, bin: &str, cache_yaml: &str, opts: &Options) -> Row {
    let config = world.config_yaml(&format!("cache_grace: 3600\n{cache_yaml}"));
    let mut daemon = Daemon::start(bin, &config, &["-v", "warn"]);
    warm(&daemon, opts.domains);
    let rate = load(daemon.port(), opts);
    let (rss_kib, hwm_kib) = memory(daemon.pid().unwrap_or(0));
    daemon.terminate();
    Row {
        name: name.to_owned(),
        rate,
        rss_kib,
        hwm_kib,
    }
}

fn run_python(dir: &Path, bin: &str, opts: &Options) -> Row {
    let port = mta_sts_tests::free_port();
    let db = python_cache_file(dir, "python", opts.domains);
    let config = dir.join("python.yml");
    std::fs::write(
        &config,
        format!("host: 127.0.0.1\nport: {port}\ncache_grace: 3600\ncache:\n  type: sqlite\n  options:\n    filename: {db}\n"),
    )
    .expect("write python config");
    let mut child: Child = Command::new(bin)
        .args(["-v", "warn", "--disable-uvloop", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the Python daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the Python daemon did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rate = load(port, opts);
    let (rss_kib, hwm_kib) = memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Row {
        name: "python-1.5 sqlite".into(),
        rate,
        rss_kib,
        hwm_kib,
    }
}

fn main() {
    let opts = parse_options();
    let world = World::new();
    for i in 0..opts.domains {
        world.add_policy_domain(
            &domain(i),
            "v=STSv1; id=id1;",
            Behaviour::policy(&policy_body("enforce", 604800, &[MX])),
        );
    }
    let mut rows = Vec::new();
    if let Some(python) = &opts.python {
        rows.push(run_python(world.dir(), python, &opts));
    }
    for (name, bin) in &opts.daemons {
        rows.push(run_ours(
            &world,
            &format!("{name} internal"),
            bin,
            "",
            &opts,
        ));
        let db = python_cache_file(world.dir(), name, opts.domains);
        let sqlite = format!("cache:\n  type: sqlite\n  options:\n    filename: {db}\n");
        rows.push(run_ours(
            &world,
            &format!("{name} sqlite"),
            bin,
            &sqlite,
            &opts,
        ));
    }
    let base = rows
        .first()
        .map(|r| (r.rate, r.hwm_kib))
        .unwrap_or((1.0, 1));
    println!(
        "{} connections x {} pipelined, {} domains, {} s per run; ratios against the first row",
        opts.connections, opts.pipeline, opts.domains, opts.seconds
    );
    println!(
        "{:<24} {:>12} {:>8} {:>10} {:>10} {:>8}",
        "daemon", "replies/s", "x", "RSS KiB", "peak KiB", "x peak"
    );
    for r in &rows {
        println!(
            "{:<24} {:>12.0} {:>8.2} {:>10} {:>10} {:>8.3}",
            r.name,
            r.rate,
            r.rate / base.0,
            r.rss_kib,
            r.hwm_kib,
            r.hwm_kib as f64 / base.1.max(1) as f64
        );
    }
}
