//! The programs measured, each its own process: the Python original, the two bare servers and
//! the bare-fetch floor (this program re-executed), and our daemons.

use mta_sts_tests::{free_port, Daemon, World};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a target gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What kind of program a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The Python original, default configuration.
    Python,
    /// The fixed-reply thread-per-connection server.
    BareThreads,
    /// The fixed-reply tokio server.
    BareAsync,
    /// The cold mode's floor: a client doing a cold lookup's network work, no socketmap
    /// (`fetch_floor`).
    BareFetch,
    /// One of our daemons, default configuration.
    Ours,
}

/// A program to measure.
pub struct Target {
    /// Its row name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The program (the bench itself for the bare servers).
    pub path: PathBuf,
}

impl Target {
    /// Whether it is a socketmap daemon that looks things up (the bare servers only answer,
    /// the bare-fetch floor serves no socketmap).
    pub fn looks_up(&self) -> bool {
        matches!(self.kind, Kind::Python | Kind::Ours)
    }

    /// Whether it serves socketmap requests (all but the bare-fetch floor).
    pub fn serves(&self) -> bool {
        self.kind != Kind::BareFetch
    }
}

/// How targets reach the world.
pub struct Setting<'a> {
    /// The hermetic world.
    pub world: &'a World,
    /// Inside the private namespace, the world is at 127.0.0.1:53 and :443 and every program
    /// runs on its default configuration; outside it, our daemons get `resolver:` settings.
    pub private_net: bool,
    /// `SSL_CERT_FILE` for every target.
    pub trust: PathBuf,
    /// Where to keep each target's log, if anywhere.
    pub logs: Option<PathBuf>,
}

/// A started target.
pub struct Running {
    /// Its process.
    pub pid: u32,
    /// Its socketmap port on 127.0.0.1.
    pub port: u16,
    handle: Handle,
}

enum Handle {
    Ours(Daemon),
    Child {
        child: Child,
        log: PathBuf,
        _dir: tempfile::TempDir,
    },
}

impl Running {
    /// Starts `target` and waits until it accepts connections.
    pub fn start(target: &Target, setting: &Setting) -> Result<Running, String> {
        let env = [(
            "SSL_CERT_FILE",
            setting
                .trust
                .to_str()
                .ok_or("trust bundle path is not UTF-8")?,
        )];
        match target.kind {
            Kind::BareFetch => {
                Err("bare-fetch serves no socketmap: run it with fetch_floor".into())
            }
            Kind::Ours => {
                let config = if setting.private_net {
                    String::new()
                } else {
                    setting.world.config_yaml("")
                };
                let daemon = Daemon::start_with_env(&target.path, &config, &[], &env);
                Ok(Running {
                    pid: daemon.pid().ok_or("daemon has no pid")?,
                    port: daemon.port(),
                    handle: Handle::Ours(daemon),
                })
            }
            Kind::Python | Kind::BareThreads | Kind::BareAsync => {
                let port = free_port();
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                let mut cmd = Command::new(&target.path);
                match target.kind {
                    Kind::BareThreads => cmd.arg("--bare-threads").arg(port.to_string()),
                    Kind::BareAsync => cmd.arg("--bare-async").arg(port.to_string()),
                    _ => {
                        let config = dir.path().join("config.yml");
                        std::fs::write(&config, format!("host: 127.0.0.1\nport: {port}\n"))
                            .map_err(|e| format!("write config: {e}"))?;
                        cmd.arg("-c").arg(config)
                    }
                };
                // Every target dies with the bench, however it ends (the bare servers also
                // ask for it themselves): in cached mode they all run at once.
                // SAFETY: prctl(2) is async-signal-safe and takes no pointers here.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let log = dir.path().join("output.log");
                let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("log: {e}"));
                let child = cmd
                    .envs(env)
                    .stdin(Stdio::null())
                    .stdout(file(&log)?)
                    .stderr(file(&log)?)
                    .spawn()
                    .map_err(|e| format!("start {}: {e}", target.path.display()))?;
                let mut running = Running {
                    pid: child.id(),
                    port,
                    handle: Handle::Child {
                        child,
                        log,
                        _dir: dir,
                    },
                };
                running.wait_ready()?;
                Ok(running)
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Handle::Child { child, .. } = &mut self.handle {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited at start ({status}): {}", self.log_tail()));
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "no connection accepted in {START_TIMEOUT:?}: {}",
            self.log_tail()
        ))
    }

    /// The target's whole output so far.
    pub fn log(&self) -> String {
        match &self.handle {
            Handle::Ours(d) => d.log(),
            Handle::Child { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let skip = lines.len().saturating_sub(10);
        lines.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
    }

    /// Stops the target (SIGTERM, then SIGKILL after 10 s) and returns its output.
    pub fn stop(mut self) -> String {
        match &mut self.handle {
            Handle::Ours(d) => {
                d.terminate();
            }
            Handle::Child { child, .. } => {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on our own child.
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.log()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Handle::Child { child, .. } = &mut self.handle {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
