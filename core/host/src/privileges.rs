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

fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let cname = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy
    // the two ids out at once (single-threaded start-up).
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if !pw.is_null() {
        return Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
    }
    match name.parse::<libc::uid_t>() {
        Ok(uid) => Ok((uid, uid)),
        Err(_) => Err(format!("unknown user {name:?}")),
    }
}

fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    let cname = CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    // SAFETY: as in lookup_user.
    let gr = unsafe { libc::getgrnam(cname.as_ptr()) };
    if !gr.is_null() {
        return Ok(unsafe { (*gr).gr_gid });
    }
    name.parse::<libc::gid_t>()
        .map_err(|_| format!("unknown group {name:?}"))
}
