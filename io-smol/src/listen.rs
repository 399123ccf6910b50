//! Listening sockets as async-net listeners.

use async_net::unix::UnixListener;
use async_net::TcpListener;
use std::path::Path;

/// TCP listener on `host:port` (SO_REUSEPORT when asked).
pub fn tcp(host: &str, port: u16, reuse_port: bool) -> Result<TcpListener, String> {
    let std = mta_sts_core::host::bind_tcp(host, port, reuse_port)?;
    TcpListener::try_from(std).map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
}

/// Unix socket listener at `path` with permissions `mode`.
pub fn unix(path: &Path, mode: Option<u32>) -> Result<UnixListener, String> {
    let std = mta_sts_core::host::bind_unix(path, mode)?;
    UnixListener::try_from(std).map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}
