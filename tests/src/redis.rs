//! A real `redis-server` on a free loopback port, for the daemon's redis cache backend
//! (README.md "Configuration reference": `cache: {type: redis, options: {url: ...}}`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_program, free_port};

/// A `redis-server` process with persistence off, in its own temp dir. Dropping it kills it.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    program: PathBuf,
    /// Arguments after the built-in ones (`--replicaof`, or a sentinel's config file).
    extra: Vec<String>,
    /// A sentinel: its config file comes first and `--sentinel` last.
    sentinel: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    /// Panics if `redis-server` is not installed.
    pub fn start() -> RedisServer {
        Self::start_with(&[], false)
    }

    /// As [`RedisServer::start`], a replica of the server on `master_port`.
    pub fn start_replica_of(master_port: u16) -> RedisServer {
        Self::start_with(
            &["--replicaof", "127.0.0.1", &master_port.to_string()],
            false,
        )
    }

    fn start_with(extra: &[&str], sentinel: bool) -> RedisServer {
        let program = find_program("redis-server")
            .unwrap_or_else(|| panic!("redis-server not found: install redis-server"));
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
            program,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            sentinel,
        };
        if sentinel {
            // Sentinel rewrites its config file: it lives in the server's own dir.
            let conf = server.dir.path().join("sentinel.conf");
            let text = format!(
                "port {}\nbind 127.0.0.1\ndir {}\n{}\n",
                server.port,
                server.dir.path().display(),
                server.extra.join("\n")
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            server.extra = vec![conf.display().to_string()];
        }
        server.spawn();
        server
    }

    /// A `redis-server --sentinel` on a free port monitoring the master `name` at
    /// 127.0.0.1:`master_port` (quorum 1, down after 1 s, failover timeout 3 s), told of
    /// the replica on `replica_port` (else it finds it in the master's INFO within 10 s).
    pub fn start_sentinel(name: &str, master_port: u16, replica_port: u16) -> RedisServer {
        let lines = [
            format!("sentinel monitor {name} 127.0.0.1 {master_port} 1"),
            format!("sentinel known-replica {name} 127.0.0.1 {replica_port}"),
            format!("sentinel down-after-milliseconds {name} 1000"),
            format!("sentinel failover-timeout {name} 3000"),
            format!("sentinel parallel-syncs {name} 1"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        Self::start_with(&refs, true)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("redis log file");
        let mut cmd = Command::new(&self.program);
        if self.sentinel {
            cmd.args(&self.extra).arg("--sentinel");
        } else {
            cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .args(&self.extra);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cmd(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING; log:\n{}", self.log());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`, for the cache `url` option.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one command (RESP array of bulk strings) and returns the raw reply text without
    /// the final CRLF, e.g. `+PONG`, `:3`, `$5\r\nhello`, `*2\r\n...`.
    pub fn cmd(&self, args: &[&str]) -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        // Read until the peer pauses: enough for the small replies tests inspect.
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    // Status, error and integer replies are one line.
                    if matches!(out.first(), Some(b'+' | b'-' | b':')) && out.ends_with(b"\r\n") {
                        break;
                    }
                    s.set_read_timeout(Some(Duration::from_millis(50)))?;
                }
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        Ok(text.trim_end_matches("\r\n").to_string())
    }

    /// Kills the server (SIGKILL) and waits for it: the port refuses connections afterwards.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server if running and starts a fresh, empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis master, one replica and two sentinels monitoring it under one name, for the
/// `redis_sentinel` cache (README.md "Configuration reference").
pub struct SentinelSet {
    /// The master name the sentinels monitor.
    pub name: String,
    /// The first master, then (after a failover) a replica.
    pub first: RedisServer,
    /// The replica, then (after a failover) the master.
    pub second: RedisServer,
    /// The sentinels.
    pub sentinels: Vec<RedisServer>,
}

/// The bulk strings of a RESP array reply as read by [`RedisServer::cmd`].
fn resp_strings(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

impl SentinelSet {
    /// Starts the master, a replica, two sentinels, and waits until both sentinels know the
    /// replica (so a failover can pick it) and each other.
    pub fn start() -> SentinelSet {
        let name = "mymaster".to_owned();
        let first = RedisServer::start();
        let second = RedisServer::start_replica_of(first.port());
        let sentinels: Vec<RedisServer> = (0..2)
            .map(|_| RedisServer::start_sentinel(&name, first.port(), second.port()))
            .collect();
        let set = SentinelSet {
            name,
            first,
            second,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = set.sentinels.iter().all(|s| {
                let replicas = s
                    .cmd(&["SENTINEL", "REPLICAS", &set.name])
                    .unwrap_or_default();
                let others = s
                    .cmd(&["SENTINEL", "SENTINELS", &set.name])
                    .unwrap_or_default();
                replicas.contains(&set.second.port().to_string()) && others.contains("127.0.0.1")
            });
            let synced = set
                .second
                .cmd(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"));
            if ready && synced {
                return set;
            }
            assert!(
                Instant::now() < deadline,
                "sentinels did not discover the replica; logs:\n{}\n{}",
                set.sentinels[0].log(),
                set.sentinels[1].log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `sentinels:` option value: `[["127.0.0.1", port], ...]`.
    pub fn sentinels_yaml(&self) -> String {
        let pairs: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("[\"127.0.0.1\", {}]", s.port()))
            .collect();
        format!("[{}]", pairs.join(", "))
    }

    /// The port of the master the first sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let reply = self.sentinels[0]
            .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name])
            .ok()?;
        resp_strings(&reply).get(1)?.parse().ok()
    }

    /// The server that is master now.
    pub fn master(&self) -> &RedisServer {
        if self.master_port() == Some(self.second.port()) {
            &self.second
        } else {
            &self.first
        }
    }

    /// `SENTINEL FAILOVER` and waits until the sentinels name the other server, it accepts
    /// writes and the old master has turned replica.
    pub fn failover(&self) {
        let before = self.master_port();
        let reply = self.sentinels[0]
            .cmd(&["SENTINEL", "FAILOVER", &self.name])
            .unwrap_or_default();
        assert_eq!(reply, "+OK", "SENTINEL FAILOVER: {reply}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.master_port();
            if now.is_some() && now != before {
                let (new, old) = if now == Some(self.second.port()) {
                    (&self.second, &self.first)
                } else {
                    (&self.first, &self.second)
                };
                let role = |s: &RedisServer, want: &str| {
                    s.cmd(&["INFO", "replication"])
                        .is_ok_and(|i| i.contains(want))
                };
                if role(new, "role:master") {
                    // What the sentinels do to a reachable old master on their next poll
                    // (10 s, longer in their TILT mode on a loaded machine), done now.
                    let port = new.port().to_string();
                    let _ = old.cmd(&["REPLICAOF", "127.0.0.1", &port]);
                    let _ = old.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
                    if role(old, "role:slave") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover; sentinel log:\n{}",
                self.sentinels[0].log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl RedisServer {
    /// The record of `key` in the Python original's layout: the JSON `[pol_id, pol_body]`
    /// after the 16 seed bytes of the top member, its score, and whether the seed is ours
    /// (marker `MTASTS\0\1`, README.md "Caches shared with the Python original").
    pub fn policy_record(&self, key: &str) -> Option<(serde_json::Value, f64, bool)> {
        let script = "local t = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES') \
                      if t[1] == nil then return false end \
                      local ours = string.sub(t[1], 1, 8) == 'MTASTS\\0\\1' and '1' or '0' \
                      return {string.sub(t[1], 17), t[2], ours}";
        let reply = self.cmd(&["EVAL", script, "1", key]).ok()?;
        let parts = resp_strings(&reply);
        let [json, score, ours] = parts.as_slice() else {
            return None;
        };
        Some((
            serde_json::from_str(json).ok()?,
            score.parse().ok()?,
            ours == "1",
        ))
    }

    /// Writes a record as the Python original's `RedisCache.set` does: `ZADD` of 16 random
    /// bytes + `json.dumps([pol_id, pol_body])` scored `ts`, then `ZREMRANGEBYRANK 0 -2`.
    pub fn put_python_record(
        &self,
        key: &str,
        pol_id: &str,
        pol_body: &serde_json::Value,
        ts: f64,
    ) {
        let json = serde_json::json!([pol_id, pol_body]).to_string();
        // A version-4 UUID's shape: seventh byte 0x4_, ninth 0b10xx_xxxx; printable here.
        let member = format!("abcdef4hijklmnop{json}");
        let reply = self
            .cmd(&["ZADD", key, &ts.to_string(), &member])
            .unwrap_or_default();
        assert_eq!(reply, ":1", "ZADD {key}");
        let _ = self.cmd(&["ZREMRANGEBYRANK", key, "0", "-2"]);
    }

    /// Seconds until `key` expires (`TTL`): -1 without expiry, -2 when missing.
    pub fn ttl(&self, key: &str) -> i64 {
        self.cmd(&["TTL", key])
            .ok()
            .and_then(|r| r.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or(-2)
    }
}
