//! The listening socket (README.md "Configuration reference": `host`/`port` with
//! SO_REUSEPORT, or a Unix socket `path` with `mode`), created with std
//! and handed to the driver non-blocking.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Bind `host:port` (a name is resolved; the first address wins).
pub fn bind_tcp(host: &str, port: u16, reuse_port: bool) -> Result<TcpListener, String> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve listen host {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen host {host:?} has no address"))?;
    let fail = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket.into())
}

/// Bind a Unix socket at `path` (a stale socket file is replaced) and set
/// its permissions to `mode` when given.
pub fn bind_unix(path: &Path, mode: Option<u32>) -> Result<UnixListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {}: {e}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path).map_err(fail)?;
        }
        Ok(_) => {
            return Err(format!(
                "cannot listen on {}: exists and is not a socket",
                path.display()
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    listener.set_nonblocking(true).map_err(fail)?;
    Ok(listener)
}

/// Listening sockets handed over by systemd socket activation
/// (sd_listen_fds(3): `LISTEN_PID` is this process, `LISTEN_FDS` sockets
/// from descriptor 3 on). `None` when not socket-activated. The variables
/// are removed so children do not inherit them.
pub fn activated_listeners() -> Result<Option<Vec<crate::serve::Listener>>, String> {
    use std::os::fd::{FromRawFd, RawFd};
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: RawFd = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    let mut listeners = Vec::new();
    for fd in 3..3 + count {
        // SAFETY: getsockname on a descriptor number: fails harmlessly if
        // it is not a socket.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: valid pointers to local storage of the given length.
        let rc = unsafe {
            libc::getsockname(
                fd,
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(format!(
                "socket activation: descriptor {fd} is not a socket"
            ));
        }
        // SAFETY: the descriptor is ours (handed over by the service
        // manager) and owned by the listener from now on.
        let listener = match i32::from(addr.ss_family) {
            libc::AF_UNIX => crate::serve::Listener::Unix(unsafe {
                std::os::unix::net::UnixListener::from_raw_fd(fd)
            }),
            libc::AF_INET | libc::AF_INET6 => {
                crate::serve::Listener::Tcp(unsafe { std::net::TcpListener::from_raw_fd(fd) })
            }
            family => {
                return Err(format!(
                    "socket activation: descriptor {fd} has address family {family}"
                ))
            }
        };
        listeners.push(listener);
    }
    Ok(Some(listeners))
}
