//! `-u USER` / `-g GROUP`: drop root privileges after binding the socket.

use std::ffi::CString;

/// Switch to `group` then `user` (names or numeric ids). The group defaults
/// to the user's primary group when only a user is given.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    let user_ids = match user {
        Some(name) => Some(lookup_user(name)?),
        None => None,
    };
    let gid = match (group, user_ids) {
        (Some(name), _) => Some(lookup_group(name)?),
        (None, Some((_, gid))) => Some(gid),
        (None, None) => None,
    };
    // The runtime's threads already exist: glibc's setgroups/setgid/setuid
    // apply the change to every thread of the process (POSIX semantics via
    // its SIGSETXID broadcast), so no thread keeps root.
    if let Some(gid) = gid {
        // SAFETY: plain libc calls with valid arguments.
        if unsafe { libc::setgroups(1, &gid) } != 0 || unsafe { libc::setgid(gid) } != 0 {
            return Err(format!(
                "cannot switch to group id {gid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some((uid, _)) = user_ids {
        // SAFETY: as above.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(format!(
                "cannot switch to user id {uid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Run a reentrant `get*nam_r` lookup with a buffer that grows on ERANGE.
/// `call` fills `result` and returns the error number (0 on success).
fn reentrant<T>(
    mut call: impl FnMut(&mut T, &mut [libc::c_char], &mut *mut T) -> libc::c_int,
) -> Result<Option<T>, std::io::Error> {
    let mut size = 1024usize;
    loop {
        // SAFETY: `T` is a plain C struct (passwd or group) for which all
        // zero bytes is a valid value; it is only read after the call fills it.
        let mut record: T = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; size];
        let mut result: *mut T = std::ptr::null_mut();
        match call(&mut record, &mut buf, &mut result) {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(record)),
            libc::ERANGE if size < 1 << 20 => size *= 4,
            errno => return Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
}

fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let cname = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    // getpwnam_r: the thread-safe lookup (the runtime's threads exist by now).
    let found = reentrant(|pw: &mut libc::passwd, buf, result| {
        // SAFETY: every pointer is valid for the call and `buf.len()` is
        // the size of `buf`.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pw, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map_err(|e| format!("cannot look up user {name:?}: {e}"))?;
    if let Some(pw) = found {
        return Ok((pw.pw_uid, pw.pw_gid));
    }
    match name.parse::<libc::uid_t>() {
        Ok(uid) => Ok((uid, uid)),
        Err(_) => Err(format!("unknown user {name:?}")),
    }
}

fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    let cname = CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    let found = reentrant(|gr: &mut libc::group, buf, result| {
        // SAFETY: as in lookup_user.
        unsafe { libc::getgrnam_r(cname.as_ptr(), gr, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map_err(|e| format!("cannot look up group {name:?}: {e}"))?;
    if let Some(gr) = found {
        return Ok(gr.gr_gid);
    }
    name.parse::<libc::gid_t>()
        .map_err(|_| format!("unknown group {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_numeric_ids_resolve() {
        assert_eq!(lookup_user("root"), Ok((0, 0)));
        assert_eq!(lookup_group("root"), Ok(0));
        assert_eq!(lookup_user("4242"), Ok((4242, 4242)));
        assert_eq!(lookup_group("4242"), Ok(4242));
        assert!(lookup_user("no-such-user-here").is_err());
        assert!(lookup_group("no-such-group-here").is_err());
        assert!(lookup_user("nul\0byte").is_err());
    }
}
