//! Handles on the programs under test: `mta-sts-daemon` as a child process (README.md
//! "Configuration reference", "Programs") and one-shot `mta-sts-query` runs.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::run_bounded;
use crate::socketmap_client::SocketmapClient;

/// How long the daemon gets to start accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `terminate` waits after SIGTERM before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts of a program that binds its own port, when others took the port first.
const BIND_ATTEMPTS: usize = 5;

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// `host: 127.0.0.1`, `port: <port>`.
    Tcp(u16),
    /// `path: <path>` (a Unix socket).
    Unix(PathBuf),
}

/// A running daemon with its own temp dir holding `config.yml`, `stdout.log`, `stderr.log`.
/// Dropping it kills it (SIGKILL).
pub struct Daemon {
    child: Option<Child>,
    listen: Listen,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `bin -c <dir>/config.yml <args>` on a TCP listener of 127.0.0.1 that the test
    /// binds itself (port 0) and hands over by socket activation (`LISTEN_FDS`), so parallel
    /// tests never race for a port. `config` is the rest of the YAML (e.g.
    /// `World::config_yaml(..)`) and must not set `host`, `port` or `path`. Waits until the
    /// port accepts connections; panics with the captured output if the daemon exits or does
    /// not come up.
    pub fn start(bin: impl AsRef<Path>, config: &str, args: &[&str]) -> Daemon {
        Self::activated(bin.as_ref(), config, args, &[], None)
    }

    /// As [`Daemon::start`] with the daemon's soft and hard `RLIMIT_NOFILE` set to `nofile`.
    pub fn start_with_nofile(
        bin: impl AsRef<Path>,
        config: &str,
        args: &[&str],
        nofile: u64,
    ) -> Daemon {
        Self::activated(bin.as_ref(), config, args, &[], Some(nofile))
    }

    /// For a program that binds its listener itself (the Python original does not take
    /// socket activation): a free port is picked here and written to its config. Another
    /// test may take that port before the program binds it; the program then exits with
    /// "address already in use" and is started again on another port.
    pub fn start_binding_itself(
        bin: impl AsRef<Path>,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut attempt = 1;
        loop {
            let dir = tempfile::tempdir().expect("temp dir for daemon");
            let port = crate::free_port();
            let listen = Listen::Tcp(port);
            match Self::try_launch(bin.as_ref(), dir, listen, config, args, env, None, None) {
                Ok(daemon) => return daemon,
                Err(e)
                    if attempt < BIND_ATTEMPTS
                        && e.to_lowercase().contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Starts the daemon on a listener bound here (port 0) and handed over.
    fn activated(
        bin: &Path,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir for daemon");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let listen = Listen::Tcp(port);
        Self::try_launch(bin, dir, listen, config, args, env, Some(listener), nofile)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Daemon::start`], listening on a Unix socket in the daemon's temp dir.
    pub fn start_unix(bin: impl AsRef<Path>, config: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir for daemon");
        let path = dir.path().join("socketmap.sock");
        Self::start_in(bin.as_ref(), dir, Listen::Unix(path), config, args)
    }

    /// As [`Daemon::start`] with an explicit listening address.
    pub fn start_on(bin: &Path, listen: Listen, config: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir for daemon");
        Self::start_in(bin, dir, listen, config, args)
    }

    /// As [`Daemon::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(
        bin: impl AsRef<Path>,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::activated(bin.as_ref(), config, args, env, None)
    }

    fn start_in(
        bin: &Path,
        dir: tempfile::TempDir,
        listen: Listen,
        config: &str,
        args: &[&str],
    ) -> Daemon {
        Self::try_launch(bin, dir, listen, config, args, &[], None, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Spawns the daemon. With `listener`, it is passed as descriptor 3 with
    /// `LISTEN_FDS=1` and `LISTEN_PID` set to the daemon's own pid (through `sh`, whose
    /// `exec` keeps the pid). The daemon gets SIGKILL if the test process dies. Waits
    /// until it answers; a daemon that exits during start-up or never gets ready is an
    /// error with its output in the message.
    #[allow(clippy::too_many_arguments)]
    fn try_launch(
        bin: &Path,
        dir: tempfile::TempDir,
        listen: Listen,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        listener: Option<std::net::TcpListener>,
        nofile: Option<u64>,
    ) -> Result<Daemon, String> {
        let head = match &listen {
            Listen::Tcp(port) => format!("host: 127.0.0.1\nport: {port}\n"),
            Listen::Unix(path) => format!("path: {}\n", yaml_str(&path.display().to_string())),
        };
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, format!("{head}{config}")).expect("write daemon config");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let mut cmd = match &listener {
            Some(_) => activated_command(bin),
            None => Command::new(bin),
        };
        let listen_fd = listener.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        child_setup(&mut cmd, listen_fd, nofile);
        let child = cmd
            .arg("-c")
            .arg(&config_path)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file("stdout.log"))
            .stderr(file("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        // The daemon has its own descriptor for the listener now.
        drop(listener);
        let mut daemon = Daemon {
            child: Some(child),
            listen,
            dir,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "daemon exited during startup ({status}); output:\n{}",
                    self.log()
                ));
            }
            if self.connectable() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "daemon did not accept connections in {START_TIMEOUT:?}; output:\n{}",
            self.log()
        ))
    }

    /// True once the daemon answers a request that needs no lookup (`ready .`, a
    /// parent-domain probe): its signal handlers and server are up. A socket that only
    /// accepts (socket activation: the kernel queues connections before the daemon runs)
    /// is not enough.
    fn connectable(&self) -> bool {
        let client = match &self.listen {
            Listen::Tcp(port) => {
                SocketmapClient::connect_tcp(SocketAddr::from(([127, 0, 0, 1], *port)))
            }
            Listen::Unix(path) => SocketmapClient::connect_unix(path),
        };
        let Ok(mut client) = client else {
            return false;
        };
        client.set_timeout(Duration::from_millis(200));
        let ping = crate::socketmap_client::netstring(b"ready .");
        client.try_send_raw(&ping).is_ok() && client.read_reply().is_some()
    }

    /// Where the daemon listens.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// The TCP port (panics for a Unix socket daemon).
    pub fn port(&self) -> u16 {
        match &self.listen {
            Listen::Tcp(p) => *p,
            Listen::Unix(_) => panic!("daemon listens on a Unix socket"),
        }
    }

    /// The Postfix map string for `postmap -q` with socketmap name `name`.
    pub fn map(&self, name: &str) -> String {
        match &self.listen {
            Listen::Tcp(p) => crate::postmap::inet_map(*p, name),
            Listen::Unix(path) => crate::postmap::unix_map(path, name),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's temp dir (config, logs; free for the test's own files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the daemon was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// A new socketmap connection to the daemon.
    pub fn client(&self) -> SocketmapClient {
        match &self.listen {
            Listen::Tcp(p) => SocketmapClient::connect_tcp(SocketAddr::from(([127, 0, 0, 1], *p))),
            Listen::Unix(path) => SocketmapClient::connect_unix(path),
        }
        .unwrap_or_else(|e| panic!("connect to daemon: {e}; output:\n{}", self.log()))
    }

    /// Captured stdout followed by stderr.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits (bounded) for the exit; panics with the log if it does not exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Waits up to `timeout` for the process to exit; panics with the log if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let Some(child) = self.child.as_mut() else {
            panic!("daemon already reaped");
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "daemon did not exit within {timeout:?}; output:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Quotes a string for YAML (double-quoted, with `\` and `"` escaped).
pub fn yaml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs `bin args...` (e.g. `mta-sts-query`), bounded to 60 s: (exit code or -1, stdout, stderr).
pub fn run_query(bin: impl AsRef<Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin.as_ref());
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(60))
}

/// A command running `bin` as systemd starts a socket-activated service: through `sh`,
/// whose `exec` keeps the pid, with `LISTEN_PID` set to it and `LISTEN_FDS=1`
/// (sd_listen_fds(3)); [`child_setup`] puts the listener on descriptor 3.
pub fn activated_command(bin: &Path) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(bin);
    cmd
}

/// What `cmd`'s child does between fork and exec: get SIGKILL if the test process dies,
/// take `listen_fd` as descriptor 3 (socket activation), and run under a limit of
/// `nofile` descriptors.
pub fn child_setup(cmd: &mut Command, listen_fd: Option<RawFd>, nofile: Option<u64>) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = listen_fd {
                // dup2 onto itself keeps close-on-exec: clear it then.
                let moved = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(n) = nofile {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
