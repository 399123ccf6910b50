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
