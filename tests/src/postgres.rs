//! A real PostgreSQL server on a free loopback port, for the daemon's `postgres` cache
//! (README.md "Configuration reference"): `initdb` and `postgres` in a temp dir, run as an
//! unprivileged system user when the tests run as root (PostgreSQL refuses root), with
//! `trust` authentication on 127.0.0.1 only. `psql` inspects and seeds the tables.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_program, free_port, run_bounded, TestCa, Validity};

/// The system user the server runs as when the tests run as root.
pub const PG_USER: &str = "mta-sts-pg";
/// The database superuser and database the tests use.
pub const PG_ROLE: &str = "mta";

/// The directory holding `initdb` and `postgres`: Debian's newest
/// `/usr/lib/postgresql/<version>/bin`, else `$PATH`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|d| d.join("postgres").is_file() && d.join("initdb").is_file());
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.pop() {
        return dir;
    }
    match find_program("postgres").and_then(|p| p.parent().map(Path::to_path_buf)) {
        Some(dir) if dir.join("initdb").is_file() => dir,
        _ => panic!(
            "PostgreSQL server binaries (initdb, postgres) not found: \
             install the Debian package postgresql (.ci/run does)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Creates the system user [`PG_USER`] unless it exists.
fn ensure_server_user() {
    let exists = Command::new("id")
        .arg("-u")
        .arg(PG_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let useradd = find_program("useradd").unwrap_or_else(|| panic!("useradd not found"));
        let mut add = Command::new(useradd);
        add.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_USER,
        ]);
        let (status, out, err) = run_bounded(add, Duration::from_secs(20));
        // Another test may have created it meanwhile (exit 9: already exists).
        assert!(status == 0 || status == 9, "useradd {PG_USER}: {out}{err}");
    }
}

/// `program` run as [`PG_USER`] when we are root (`setpriv` execs it, so the child's pid is
/// the program's own), else as ourselves.
fn as_server_user(program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let setpriv = find_program("setpriv").unwrap_or_else(|| panic!("setpriv not found"));
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--reuid",
        PG_USER,
        "--regid",
        PG_USER,
        "--clear-groups",
        "--",
    ])
    .arg(program);
    cmd
}

/// A PostgreSQL server in its own temp dir. Dropping it stops it.
pub struct PgServer {
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    tls: bool,
}

impl PgServer {
    /// Creates a cluster (`initdb`, superuser [`PG_ROLE`], database [`PG_ROLE`]) and starts
    /// it on a free port of 127.0.0.1. Panics with the server's log if it does not come up.
    pub fn start() -> PgServer {
        Self::start_with(None)
    }

    /// As [`PgServer::start`], with TLS on a certificate for `localhost` and `127.0.0.1`
    /// from `ca`, and TCP clients refused unless they use TLS (`hostssl` only).
    pub fn start_tls(ca: &TestCa) -> PgServer {
        Self::start_with(Some(ca))
    }

    fn start_with(tls: Option<&TestCa>) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("mta-sts-pg")
            .tempdir()
            .expect("temp dir for postgres");
        if is_root() {
            ensure_server_user();
            crate::chown(&format!("{PG_USER}:"), dir.path());
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod postgres dir");
        }
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            PG_ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]);
        let (status, out, err) = run_bounded(initdb, Duration::from_secs(120));
        assert_eq!(status, 0, "initdb failed: {out}{err}");
        if let Some(ca) = tls {
            let data = dir.path().join("data");
            let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], Validity::Valid);
            std::fs::write(data.join("server.crt"), cert).expect("write server.crt");
            std::fs::write(data.join("server.key"), key).expect("write server.key");
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
            if is_root() {
                for f in ["server.crt", "server.key"] {
                    crate::chown(&format!("{PG_USER}:"), &data.join(f));
                }
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("write pg_hba.conf");
        }
        let mut server = PgServer {
            port: free_port(),
            dir,
            bin,
            child: None,
            tls: tls.is_some(),
        };
        server.spawn();
        let mut createdb =
            Command::new(find_program("psql").unwrap_or_else(|| panic!("psql not found")));
        createdb
            .args(server.psql_args("postgres"))
            .args(["-c", &format!("create database {PG_ROLE}")]);
        let (status, out, err) = run_bounded(createdb, Duration::from_secs(30));
        assert_eq!(status, 0, "create database: {out}{err}");
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("postgres log file");
        let child = as_server_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=60"])
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[] })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .query("postgres", "select 1")
                .is_ok_and(|out| out == "1")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("postgres did not come up; log:\n{}", self.log());
    }

    fn log_path(&self) -> PathBuf {
        // The directory belongs to the server user; the log is ours.
        std::env::temp_dir().join(format!("mta-sts-pg-{}.log", self.port))
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgresql://mta@127.0.0.1:<port>/mta`, for the cache `dsn` option.
    pub fn dsn(&self) -> String {
        format!("postgresql://{PG_ROLE}@127.0.0.1:{}/{PG_ROLE}", self.port)
    }

    fn psql_args(&self, db: &str) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            PG_ROLE,
            "-d",
            db,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn query(&self, db: &str, sql: &str) -> Result<String, String> {
        let psql = find_program("psql")
            .unwrap_or_else(|| panic!("psql not found: install postgresql-client"));
        let mut cmd = Command::new(psql);
        cmd.args(self.psql_args(db)).args(["-c", sql]);
        let (status, out, err) = run_bounded(cmd, Duration::from_secs(20));
        if status == 0 {
            Ok(out.trim().to_owned())
        } else {
            Err(format!("{out}{err}"))
        }
    }

    /// Runs `sql` in the test database with `psql`: its output (unaligned, tuples only,
    /// `|` between columns), trimmed. Panics on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.query(PG_ROLE, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// As [`PgServer::psql`], `None` on failure (server down).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        self.query(PG_ROLE, sql).ok()
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill with the pid of the postmaster we started (setpriv execs it);
            // failure (already gone) is harmless.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// `signal` to the postmaster and every process it forked (each backend runs in a
    /// session of its own, so not in its process group).
    fn signal_group(&self, signal: libc::c_int) {
        let Some(child) = &self.child else { return };
        let pid = child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let pids = children
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
            .chain([pid as libc::pid_t]);
        for p in pids {
            // SAFETY: kill with pids of the server we started; failure is harmless.
            unsafe { libc::kill(p, signal) };
        }
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        self.signal(libc::SIGINT);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal_group(libc::SIGSTOP);
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal_group(libc::SIGCONT);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.thaw();
        self.stop();
        let _ = std::fs::remove_file(self.log_path());
    }
}
