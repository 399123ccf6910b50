//! systemd `Type=notify` readiness (sd_notify(3)) without libsystemd.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET` when it is set;
/// abstract socket names start with `@`. Failures are logged, not fatal.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => send_abstract(&socket, name, state),
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = result {
        log::warn!("sd_notify {state}: {e}");
    }
}

/// Send `state` to the abstract socket `name` (a Linux namespace).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr)
}

/// Abstract socket names exist on Linux only (systemd, which sets
/// `NOTIFY_SOCKET`, too).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::Unsupported.into())
}
