//! A stand-in daemon for the self-tests of `mta_sts_tests::Daemon`: reads `host`/`port`/`path`
//! from the `-c` YAML file (README.md "Configuration reference"), serves socketmap (socketmap_table(5))
//! answering `OK key=<key>`, or `NOTFOUND ` for keys starting with `none`, and exits 0 on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mta_sts_tests::socketmap_client::{netstring, parse_netstring};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn serve(mut conn: impl Read + Write) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n) = conn.read(&mut chunk) {
        if n == 0 {
            return;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Ok(Some((req, used))) = parse_netstring(&buf) {
            buf.drain(..used);
            let req = String::from_utf8_lossy(&req).into_owned();
            let key = req.split_once(' ').map(|(_, k)| k).unwrap_or_default();
            let reply = if key.starts_with("none") {
                "NOTFOUND ".to_string()
            } else {
                format!("OK key={key}")
            };
            if conn.write_all(&netstring(reply.as_bytes())).is_err() {
                return;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = args
        .iter()
        .position(|a| a == "-c")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let value = |key: &str| {
        config.lines().find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    // SAFETY: installing a handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    eprintln!("fake daemon starting with args {:?}", args.get(1..));
    let poll = Duration::from_millis(10);
    if let Some(path) = value("path:") {
        let l = UnixListener::bind(&path).expect("bind unix socket");
        l.set_nonblocking(true).expect("nonblocking");
        while !STOP.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((c, _)) => {
                    let _ = c.set_nonblocking(false);
                    std::thread::spawn(move || serve(c));
                }
                Err(_) => std::thread::sleep(poll),
            }
        }
    } else {
        let activated = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string())
            && std::env::var("LISTEN_FDS").ok().as_deref() == Some("1");
        let l = if activated {
            // Socket activation (as the test harness hands listeners over).
            // SAFETY: descriptor 3 is the listener the harness passed us.
            unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(3) }
        } else {
            let port = value("port:").unwrap_or_else(|| "8461".into());
            TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind tcp")
        };
        l.set_nonblocking(true).expect("nonblocking");
        while !STOP.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((c, _)) => {
                    let _ = c.set_nonblocking(false);
                    std::thread::spawn(move || serve(c));
                }
                Err(_) => std::thread::sleep(poll),
            }
        }
    }
    println!("fake daemon stopped");
}
