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
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    /// Panics if `redis-server` is not installed.
    pub fn start() -> RedisServer {
        let program = find_program("redis-server")
            .unwrap_or_else(|| panic!("redis-server not found: install redis-server"));
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
            program,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("redis log file");
        let child = Command::new(&self.program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
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
