//! Postfix's own `postmap -q` as a socketmap client (socketmap_table(5)), run against the
//! daemon the way Postfix's `smtp_tls_policy_maps = socketmap:...` would query it.
//!
//! Observed with Postfix 3.7: `OK <value>` prints `<value>` and exits 0; `NOTFOUND ` prints
//! nothing and exits 1; `TEMP <r>` and `PERM <r>` also exit 1, with a warning
//! `socketmap server temporary error: <r>` / `permanent error: <r>` and a `fatal: ... query
//! error` on stderr.

use std::process::Command;

use std::time::Duration;

use crate::{find_program, run_bounded};

/// What `postmap -q` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostmapResult {
    /// Exit code (-1 if killed by a signal).
    pub status: i32,
    /// Standard output (the value, with its newline, when found).
    pub stdout: String,
    /// Standard error (warnings and fatal errors).
    pub stderr: String,
}

/// The socketmap reply `postmap` saw, reconstructed from its exit code and output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostmapOutcome {
    /// `OK <value>`: the value.
    Found(String),
    /// `NOTFOUND `.
    NotFound,
    /// `TEMP <reason>`: the reason.
    Temp(String),
    /// `PERM <reason>`: the reason.
    Perm(String),
    /// Anything else (connection refused, protocol error...): stderr.
    Error(String),
}

impl PostmapResult {
    /// Classifies the result (see the module documentation for the mapping).
    pub fn outcome(&self) -> PostmapOutcome {
        let reason = |marker: &str| {
            self.stderr
                .lines()
                .find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_string()))
        };
        if self.status == 0 {
            return PostmapOutcome::Found(self.stdout.trim_end_matches('\n').to_string());
        }
        if let Some(r) = reason("socketmap server temporary error:") {
            return PostmapOutcome::Temp(r);
        }
        if let Some(r) = reason("socketmap server permanent error:") {
            return PostmapOutcome::Perm(r);
        }
        if self.status == 1 && self.stderr.trim().is_empty() {
            return PostmapOutcome::NotFound;
        }
        PostmapOutcome::Error(self.stderr.clone())
    }
}

/// The `socketmap:inet:127.0.0.1:PORT:NAME` map for a TCP server.
pub fn inet_map(port: u16, name: &str) -> String {
    format!("socketmap:inet:127.0.0.1:{port}:{name}")
}

/// The `socketmap:unix:PATH:NAME` map for a Unix socket server.
pub fn unix_map(path: &std::path::Path, name: &str) -> String {
    format!("socketmap:unix:{}:{name}", path.display())
}

/// A minimal Postfix config dir (`main.cf` only), removed when dropped. Its `main.cf` is
/// dated a minute back: Postfix reads a file changed within the last second again every
/// 300 ms until it is that old (`dict_load_file_xt`), which cost each query 1-2 s.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("postmap-conf")
        .tempdir()
        .expect("temp dir for postfix config");
    let main_cf = dir.path().join("main.cf");
    std::fs::write(&main_cf, "compatibility_level = 3.6\n").expect("write main.cf");
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&main_cf)
        .and_then(|f| f.set_modified(past))
        .expect("date main.cf back");
    dir
}

/// Runs `postmap -c <minimal config> -q KEY MAP` (killed after 60 s). Panics if Postfix is not installed.
pub fn postmap_query(key: &str, map: &str) -> PostmapResult {
    let program =
        find_program("postmap").unwrap_or_else(|| panic!("postmap not found: install postfix"));
    let conf = config_dir();
    let mut cmd = Command::new(program);
    cmd.arg("-c").arg(conf.path()).args(["-q", key, map]);
    let (status, stdout, stderr) = run_bounded(cmd, Duration::from_secs(60));
    PostmapResult {
        status,
        stdout,
        stderr,
    }
}
