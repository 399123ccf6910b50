//! `-u USER` / `-g GROUP`: the ids the daemon runs as. They are looked up at
//! start (before any thread exists, so an unknown user stops start-up at
//! once), the Unix sockets the daemon binds are given to them
//! (`listen::bind_unix`), and the process switches to them after binding.

use std::ffi::CString;

/// The user and group of `-u`/`-g` (README.md "Deploy").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceIds {
    /// `-u`'s user id; `None` keeps the current one.
    pub uid: Option<libc::uid_t>,
    /// `-g`'s group, else `-u`'s primary group from the passwd database.
    pub gid: libc::gid_t,
}

/// The ids for `user` and `group` (names or numeric ids); `None` when
/// neither is given. The group defaults to the user's primary group from
/// the passwd database, for a numeric user id too (`-u 4242` is the
/// passwd entry of uid 4242, never gid 4242); a user id without a passwd
/// entry needs `-g`.
pub fn service_ids(user: Option<&str>, group: Option<&str>) -> Result<Option<ServiceIds>, String> {
    let user_ids = match user {
        Some(name) => Some(lookup_user(name)?),
        None => None,
    };
    let gid = match (group, user_ids) {
        (Some(name), _) => lookup_group(name)?,
        (None, Some((_, Some(gid)))) => gid,
        (None, Some((uid, None))) => {
            return Err(format!(
                "user id {uid} has no entry in the passwd database: give its group with -g"
            ))
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(ServiceIds {
        uid: user_ids.map(|(uid, _)| uid),
        gid,
    }))
}

impl ServiceIds {
    /// Switch to the group, then the user.
    pub fn switch(&self) -> Result<(), String> {
        // The runtime's threads already exist: glibc's setgroups/setgid/setuid
        // apply the change to every thread of the process (POSIX semantics via
        // its SIGSETXID broadcast; musl does the same, and the BSDs' and
        // macOS's credentials are the process's), so no thread keeps root.
        let gid = self.gid;
        // SAFETY: plain libc calls with valid arguments.
        if unsafe { libc::setgroups(1, &gid) } != 0 || unsafe { libc::setgid(gid) } != 0 {
            return Err(format!(
                "cannot switch to group id {gid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if let Some(uid) = self.uid {
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
}

/// Run a reentrant `get*_r` lookup with a buffer that grows on ERANGE.
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

/// The user id of `name` and its primary group when the passwd database
/// knows it.
fn lookup_user(name: &str) -> Result<(libc::uid_t, Option<libc::gid_t>), String> {
    let cname = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    let failed = |e: std::io::Error| format!("cannot look up user {name:?}: {e}");
    // The reentrant lookups: they do not share a static buffer.
    let found = reentrant(|pw: &mut libc::passwd, buf, result| {
        // SAFETY: every pointer is valid for the call and `buf.len()` is
        // the size of `buf`.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pw, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map_err(failed)?;
    if let Some(pw) = found {
        return Ok((pw.pw_uid, Some(pw.pw_gid)));
    }
    let uid = name
        .parse::<libc::uid_t>()
        .map_err(|_| format!("unknown user {name:?}"))?;
    let found = reentrant(|pw: &mut libc::passwd, buf, result| {
        // SAFETY: as above.
        unsafe { libc::getpwuid_r(uid, pw, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map_err(failed)?;
    Ok((uid, found.map(|pw| pw.pw_gid)))
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

    /// A passwd entry whose primary group differs from its user id
    /// (Debian's `sync` is 4:65534).
    fn user_with_other_primary_group() -> (libc::uid_t, libc::gid_t) {
        let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        passwd
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
            })
            .find(|&(uid, gid)| uid != 0 && uid != gid)
            .expect("a passwd entry whose uid is not its gid")
    }

    #[test]
    fn root_and_numeric_ids_resolve() {
        assert_eq!(lookup_user("root"), Ok((0, Some(0))));
        assert_eq!(lookup_group("root"), Ok(0));
        assert_eq!(lookup_group("4242"), Ok(4242));
        assert!(lookup_user("no-such-user-here").is_err());
        assert!(lookup_group("no-such-group-here").is_err());
        assert!(lookup_user("nul\0byte").is_err());
    }

    #[test]
    fn numeric_user_takes_its_passwd_primary_group() {
        let (uid, gid) = user_with_other_primary_group();
        assert_eq!(
            service_ids(Some(&uid.to_string()), None),
            Ok(Some(ServiceIds {
                uid: Some(uid),
                gid
            }))
        );
    }

    #[test]
    fn user_id_without_passwd_entry_needs_a_group() {
        let unknown = "3999999";
        let err = service_ids(Some(unknown), None).unwrap_err();
        assert!(err.contains("-g"), "{err}");
        assert_eq!(
            service_ids(Some(unknown), Some("4242")),
            Ok(Some(ServiceIds {
                uid: Some(3_999_999),
                gid: 4242
            }))
        );
        assert_eq!(
            service_ids(None, Some("root")),
            Ok(Some(ServiceIds { uid: None, gid: 0 }))
        );
        assert_eq!(service_ids(None, None), Ok(None));
    }
}
