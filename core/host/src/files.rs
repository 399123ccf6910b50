//! The files the daemon writes as root at start (the `-p` pidfile, the
//! `-l` log file), in directories the service user may own (README.md
//! "Deploy"): whoever owns the directory can put a symbolic link, a hard
//! link or a FIFO at the name, so the name is opened without following
//! anything and the file checked before a byte is written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Open `path` for writing, created if missing (Python's default mode,
/// 0666 less the umask), truncated or (`append`) appended to. Refused
/// when the last component is a symbolic link (`O_NOFOLLOW`), when it is
/// not a regular file, or when it has other hard links; nothing is
/// truncated or written before those checks pass. Components before the
/// last are followed: `/var/run` is a symbolic link on most systems.
pub fn open_for_writing(path: &Path, append: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        // O_NONBLOCK: opening a FIFO planted at the name fails (ENXIO) or
        // returns at once instead of waiting for a reader; it changes
        // nothing for the regular file that is kept.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| refused_link(path, e))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refusal("is not a regular file"));
    }
    if meta.nlink() > 1 {
        return Err(refusal(&format!(
            "has {} hard links: it may be another file's",
            meta.nlink()
        )));
    }
    if !append {
        file.set_len(0)?;
    }
    Ok(file)
}

/// `O_NOFOLLOW` fails on a symbolic link (ELOOP on Linux, EMLINK on
/// FreeBSD, EFTYPE on NetBSD): say so plainly.
fn refused_link(path: &Path, error: io::Error) -> io::Error {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        refusal("is a symbolic link")
    } else {
        error
    }
}

fn refusal(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}; refused, as its directory's owner could have put it there"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn writes_a_new_file_and_truncates_or_appends_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        open_for_writing(&path, false)
            .unwrap()
            .write_all(b"long first text\n")
            .unwrap();
        open_for_writing(&path, false)
            .unwrap()
            .write_all(b"1\n")
            .unwrap();
        assert_eq!(read(&path), "1\n");
        open_for_writing(&path, true)
            .unwrap()
            .write_all(b"2\n")
            .unwrap();
        assert_eq!(read(&path), "1\n2\n");
    }

    #[test]
    fn symlink_hard_link_and_fifo_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        for append in [false, true] {
            let err = open_for_writing(&link, append).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
            let err = open_for_writing(&hard, append).unwrap_err();
            assert!(err.to_string().contains("hard links"), "{err}");
        }
        assert_eq!(read(&target), "precious\n");
        let fifo = dir.path().join("fifo");
        let cpath = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
        // No reader: refused at once rather than waiting for one.
        assert!(open_for_writing(&fifo, true).is_err());
    }
}
