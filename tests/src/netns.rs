//! A private network and mount namespace for a whole process (the benchmark, the Postfix
//! delivery tests), so that programs with no test settings (the Python original, Postfix:
//! /etc/resolv.conf, the default trust store, port 443 or 25) meet the hermetic world, and no
//! traffic leaves loopback.
//!
//! Inside: only `lo`, brought up; /etc/resolv.conf bind-mounted over by `nameserver
//! 127.0.0.1` and `options trust-ad` for this process and its children only (mounts are made
//! private first, so nothing propagates to the host). `trust-ad` makes glibc pass on the AD
//! bit of the world's DNS server, which plays a validating resolver (RFC 6840 §5.7), so
//! Postfix's own DANE code (`smtp_dns_support_level = dnssec`) sees signed answers.

use std::ffi::CString;
use std::io::Error;
use std::path::Path;

/// Enters the namespaces. Must run before the process starts any thread (unshare(2) refuses
/// CLONE_NEWNS in a multi-threaded process). Returns the temp file mounted over
/// /etc/resolv.conf, to keep until the end.
pub fn enter() -> Result<tempfile::NamedTempFile, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root for unshare(CLONE_NEWNET | CLONE_NEWNS)".into());
    }
    // SAFETY: plain unshare(2), no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } != 0 {
        return Err(format!("unshare: {}", Error::last_os_error()));
    }
    mount(None, "/", libc::MS_REC | libc::MS_PRIVATE)
        .map_err(|e| format!("make / private: {e}"))?;
    loopback_up().map_err(|e| format!("bring lo up: {e}"))?;
    let mut resolv = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    std::io::Write::write_all(&mut resolv, b"nameserver 127.0.0.1\noptions trust-ad\n")
        .map_err(|e| format!("write resolv.conf: {e}"))?;
    mount(Some(resolv.path()), "/etc/resolv.conf", libc::MS_BIND)
        .map_err(|e| format!("bind-mount /etc/resolv.conf: {e}"))?;
    Ok(resolv)
}

/// mount(2) of `source` (none: a propagation change) on `target`.
fn mount(source: Option<&Path>, target: &str, flags: libc::c_ulong) -> Result<(), Error> {
    let source = source
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
        .transpose()
        .map_err(Error::other)?;
    let target = CString::new(target).map_err(Error::other)?;
    let none = c"none";
    // SAFETY: NUL-terminated strings that outlive the call; no filesystem data.
    let rc = unsafe {
        libc::mount(
            source.as_deref().unwrap_or(none).as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::last_os_error())
    }
}

/// `ip link set lo up` (SIOCGIFFLAGS, SIOCSIFFLAGS; netdevice(7)).
fn loopback_up() -> Result<(), Error> {
    // SAFETY: a plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid fd and a valid ifreq for both requests; the union's flags member is the
    // one these requests read and write.
    let rc = unsafe {
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        rc
    };
    let err = Error::last_os_error();
    // SAFETY: our own fd, closed once.
    unsafe {
        libc::close(fd);
    }
    if rc == 0 {
        Ok(())
    } else {
        Err(err)
    }
}
