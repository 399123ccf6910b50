//! The listening sockets (README.md "Configuration reference": `host`/`port` with
//! SO_REUSEPORT, or a Unix socket `path` with `mode`), created with std
//! and handed to the driver non-blocking, or handed over by systemd.

use crate::privileges::ServiceIds;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::OnceLock;

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

/// The ids (`-u`/`-g`) every Unix socket the daemon binds is given, set
/// once at start before any is bound. Not a parameter: the socketmap and
/// the administration listeners are bound in different modules, and the
/// rule is the daemon's, not a listener's.
static SOCKET_OWNER: OnceLock<ServiceIds> = OnceLock::new();

/// Give the Unix sockets bound from now on to `ids` (README.md "Deploy"):
/// they belong to the user the daemon runs as, as if it had bound them
/// after dropping privileges.
pub fn give_sockets_to(ids: ServiceIds) {
    let _ = SOCKET_OWNER.set(ids);
}

/// Bind a Unix socket at `path` (a stale socket file is replaced; anything
/// else there, a symbolic link too, is refused), made with permissions
/// `mode` when given, owned by the ids of [`give_sockets_to`] when set.
/// The directory may belong to the service user while this runs as root:
/// no call after `bind` follows the path (no chmod, no chown by name).
pub fn bind_unix(path: &Path, mode: Option<u32>) -> Result<UnixListener, String> {
    let fail = |e: io::Error| format!("cannot listen on {}: {e}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
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
    let listener = with_mode(mode, || UnixListener::bind(path)).map_err(fail)?;
    if let Some(owner) = SOCKET_OWNER.get() {
        give(path, owner).map_err(fail)?;
    }
    listener.set_nonblocking(true).map_err(fail)?;
    Ok(listener)
}

/// Run `bind` under the umask that makes its socket with `mode` (the
/// kernel creates it 0777 less the umask), so the mode is right from the
/// moment the socket exists and needs no chmod by path after it. The
/// umask is the process's: changed only here, at start, while no other
/// thread creates files (the store is opened after the listeners).
fn with_mode<T>(mode: Option<u32>, bind: impl FnOnce() -> T) -> T {
    let Some(mode) = mode else {
        return bind();
    };
    // SAFETY: umask(2) cannot fail.
    let before = unsafe { libc::umask(!mode & 0o777) };
    let bound = bind();
    // SAFETY: as above.
    unsafe { libc::umask(before) };
    bound
}

/// Give the socket just bound at `path` to `owner`, and only when that
/// node is the socket made here: a socket, ours, with no other link. A name
/// the directory's owner swapped in the meantime (a symbolic link, a hard
/// link to another file) is refused, not changed.
///
/// On Linux the check and the change go through one descriptor of the node
/// (`O_PATH | O_NOFOLLOW`, then `fchownat(AT_EMPTY_PATH)`), so nothing can
/// be swapped in between.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn give(path: &Path, owner: &ServiceIds) -> io::Result<()> {
    use std::ffi::CStr;
    use std::fs::OpenOptions;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let node = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    check_made_here(&node.metadata()?)?;
    const EMPTY: &CStr = c"";
    // uid_t::MAX is -1: keep the owner (`-g` without `-u`).
    let uid = owner.uid.unwrap_or(libc::uid_t::MAX);
    // SAFETY: a descriptor we own and a valid empty C string.
    let rc = unsafe {
        libc::fchownat(
            node.as_raw_fd(),
            EMPTY.as_ptr(),
            uid,
            owner.gid,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere (no `O_PATH`, or not on every release) the node is checked by
/// name, then changed by name with `lchown`, which follows no symbolic
/// link; the directory's owner could still swap in a hard link between the
/// two calls (README.md "Platforms").
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn give(path: &Path, owner: &ServiceIds) -> io::Result<()> {
    check_made_here(&std::fs::symlink_metadata(path)?)?;
    std::os::unix::fs::lchown(path, owner.uid, Some(owner.gid))
}

/// The node is the socket bound here: a socket, ours, with no other link.
fn check_made_here(meta: &std::fs::Metadata) -> io::Result<()> {
    // SAFETY: geteuid(2) cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_socket() || meta.uid() != euid || meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "replaced after it was bound; refused",
        ));
    }
    Ok(())
}

/// The socket activation variables (sd_listen_fds(3)), taken from the
/// environment at the very start of `main`, before any thread exists:
/// removing a variable while another thread may read the environment is
/// undefined behaviour. They are removed so children do not inherit them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketActivation {
    /// `LISTEN_FDS`, when `LISTEN_PID` is this process.
    fds: Option<String>,
}

impl SocketActivation {
    /// Read and remove `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
    /// Call it while the process has one thread.
    pub fn take_from_env() -> SocketActivation {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        Self::from_vars(pid, fds, std::process::id())
    }

    /// The sockets are ours only when `LISTEN_PID` is `own_pid`.
    fn from_vars(pid: Option<String>, fds: Option<String>, own_pid: u32) -> SocketActivation {
        let ours = pid.is_some_and(|pid| pid.trim().parse::<u32>().ok() == Some(own_pid));
        SocketActivation {
            fds: fds.filter(|_| ours),
        }
    }
}

/// Listening sockets handed over by systemd socket activation
/// (sd_listen_fds(3): `LISTEN_PID` is this process, `LISTEN_FDS` sockets
/// from descriptor 3 on), as `activation` found them. `None` when not
/// socket-activated. Called once: the listeners own the descriptors.
pub fn activated_listeners(
    activation: &SocketActivation,
) -> Result<Option<Vec<crate::serve::Listener>>, String> {
    use std::os::fd::{FromRawFd, RawFd};
    let Some(fds) = &activation.fds else {
        return Ok(None);
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_only_for_this_process() {
        let some = |s: &str| Some(s.to_owned());
        let ours = SocketActivation::from_vars(some("42"), some("2"), 42);
        assert_eq!(ours.fds.as_deref(), Some("2"));
        let theirs = SocketActivation::from_vars(some("41"), some("2"), 42);
        assert_eq!(theirs, SocketActivation::default());
        assert_eq!(
            SocketActivation::from_vars(None, some("2"), 42),
            SocketActivation::default()
        );
    }

    #[test]
    fn a_link_at_the_socket_path_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let before = std::fs::metadata(&target).unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = bind_unix(&link, Some(0o666)).unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
        // Given after the bind, through the node: a link or a file is
        // never the socket made here.
        let ids = ServiceIds {
            uid: Some(65534),
            gid: 65534,
        };
        assert!(give(&link, &ids).is_err());
        assert!(give(&target, &ids).is_err());
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
    }

    /// Root is needed to give a socket away: CI runs as root, and this
    /// fails rather than skips without it.
    #[test]
    fn socket_given_to_the_service_ids() {
        // SAFETY: geteuid(2) cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("given.sock");
        // No mode: the umask is the process's, and other tests create files
        // meanwhile (the daemon sets it only at start; the end-to-end
        // cases check the mode).
        let _listener = UnixListener::bind(&path).unwrap();
        let mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        let ids = ServiceIds {
            uid: Some(65534),
            gid: 65533,
        };
        give(&path, &ids).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (65534, 65533, mode)
        );
        // Given once: now it is not ours, so not given again.
        assert!(give(&path, &ids).is_err());
    }
}
