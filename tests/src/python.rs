//! The Python original (`postfix-mta-sts-resolver` 1.5.1) as a daemon in the hermetic world,
//! for the interoperation cases (README.md "Caches shared with the Python original").
//!
//! It is found through `MTA_STS_PYTHON_VENV` (a virtualenv with the package and its
//! `redis` and `postgres` extras; `.ci/run` makes `/opt/mta-sts-python`, the default). The
//! original has no settings for nameservers, policy port or CA, so the world is brought to
//! it: a `sitecustomize` module points aiodns at the world's DNS server, `https_proxy` at a
//! loopback CONNECT proxy that sends every policy fetch to the world's policy servers, and
//! `SSL_CERT_FILE` at the world's CA.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Daemon, World};

/// Where `.ci/run` installs the Python original.
pub const DEFAULT_VENV: &str = "/opt/mta-sts-python";

/// The virtualenv of the Python original; panics with what to do when it is missing.
pub fn python_venv() -> PathBuf {
    let venv = std::env::var_os("MTA_STS_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    let daemon = venv.join("bin/mta-sts-daemon");
    assert!(
        daemon.is_file(),
        "the Python original is not installed at {}: create it with \
         `python3 -m venv {0} && {0}/bin/pip install \
         'postfix-mta-sts-resolver[redis,postgres,sqlite]==1.5.1'` (.ci/run does), \
         or point MTA_STS_PYTHON_VENV at such a virtualenv",
        venv.display()
    );
    venv
}

/// `sitecustomize.py`: aiodns resolvers query `MTA_STS_TEST_DNS` (`ip:port`).
const SITECUSTOMIZE: &str = r#"
import os
_dns = os.environ.get("MTA_STS_TEST_DNS")
if _dns:
    import aiodns
    _host, _port = _dns.rsplit(":", 1)
    _init = aiodns.DNSResolver.__init__
    def _patched(self, *args, **kwargs):
        kwargs["nameservers"] = [_host]
        kwargs["udp_port"] = int(_port)
        kwargs["tcp_port"] = int(_port)
        _init(self, *args, **kwargs)
    aiodns.DNSResolver.__init__ = _patched
"#;

/// An HTTP CONNECT proxy on loopback sending every tunnel to one address.
struct ConnectProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn tunnel(mut client: TcpStream, target: SocketAddr) {
    let mut head = Vec::new();
    let mut reader = BufReader::new(match client.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => head.push(line),
        }
    }
    if !head.first().is_some_and(|l| l.starts_with("CONNECT ")) {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // Whatever the reader buffered past the head is the client's first TLS bytes.
    let early = reader.buffer().to_vec();
    let (Ok(mut up_w), Ok(mut up_r), Ok(mut down_w)) = (
        upstream.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
    ) else {
        return;
    };
    if up_w.write_all(&early).is_err() {
        return;
    }
    let mut down_r = reader.into_inner();
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut down_r, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut up_r, &mut down_w);
    let _ = down_w.shutdown(Shutdown::Write);
    let _ = t.join();
}

impl ConnectProxy {
    fn start(target: SocketAddr) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy on 127.0.0.1");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("nonblocking proxy");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        std::thread::spawn(move || tunnel(stream, target));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ConnectProxy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Python original's `mta-sts-daemon` running in `world`. Dropping it kills it.
pub struct PythonDaemon {
    /// The running daemon (socketmap on a free port of 127.0.0.1).
    pub daemon: Daemon,
    _proxy: ConnectProxy,
    _site: tempfile::TempDir,
}

impl PythonDaemon {
    /// Starts the Python daemon with `config` (YAML without `host`/`port`: the original's
    /// own keys, e.g. `cache:`), logging at debug level.
    pub fn start(world: &World, config: &str) -> PythonDaemon {
        let venv = python_venv();
        let site = tempfile::tempdir().expect("temp dir for sitecustomize");
        std::fs::write(site.path().join("sitecustomize.py"), SITECUSTOMIZE)
            .expect("write sitecustomize.py");
        let proxy = ConnectProxy::start(SocketAddr::from(([127, 0, 0, 1], world.policy_port())));
        let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
        let dns = world.dns.addr().to_string();
        let ca = world.ca_file().display().to_string();
        let pythonpath = site.path().display().to_string();
        let env = [
            ("MTA_STS_TEST_DNS", dns.as_str()),
            ("https_proxy", proxy_url.as_str()),
            ("HTTPS_PROXY", proxy_url.as_str()),
            ("no_proxy", ""),
            ("NO_PROXY", ""),
            ("SSL_CERT_FILE", ca.as_str()),
            ("PYTHONPATH", pythonpath.as_str()),
            ("PYTHONUNBUFFERED", "1"),
        ];
        let daemon = Daemon::start_binding_itself(
            venv.join("bin/mta-sts-daemon"),
            config,
            &["-v", "debug"],
            &env,
        );
        PythonDaemon {
            daemon,
            _proxy: proxy,
            _site: site,
        }
    }

    /// The daemon's output so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
