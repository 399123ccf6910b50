//! A small pool of SQLite connections used on the runtime's blocking pool
//! (`crate::blocking`), so the async executor never waits on the disk or on
//! a lock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use mta_sts_core::cache::StoreError;

use super::schema::prepare_file;

/// Connections of one database file, each used by one blocking job at a
/// time. A job holds one of as many turns as there are connections
/// (`crate::blocking::Jobs`), so one is idle whenever a job starts.
pub(super) struct Pool {
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub(super) fn open(path: &Path, timeout: Duration, threads: usize) -> Result<Pool, StoreError> {
        let fail = |e: rusqlite::Error| {
            // One line, not SQLite's whole integrity report.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().to_owned();
            let corrupt = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            );
            if corrupt {
                StoreError::CorruptFile {
                    path: path.display().to_string(),
                    reason: first,
                }
            } else {
                StoreError::Backend(format!("sqlite cache file {}: {first}", path.display()))
            }
        };
        let mut first = connect(path, timeout).map_err(fail)?;
        prepare_file(&mut first).map_err(fail)?;
        let mut idle = vec![first];
        for _ in 1..threads {
            idle.push(connect(path, timeout).map_err(fail)?);
        }
        Ok(Pool {
            idle: Mutex::new(idle),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panicking job never holds this lock: the list is always whole.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn with_conn<T>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock().pop().ok_or_else(|| {
            StoreError::Backend("sqlite: more cache jobs than connections".into())
        })?;
        // Hand the connection back even if the job panics (a transaction
        // it left open is rolled back when its guard unwinds).
        let result = catch_unwind(AssertUnwindSafe(|| job(&conn)));
        self.lock().push(conn);
        result.unwrap_or_else(|_| Err(StoreError::Backend("sqlite: a cache job panicked".into())))
    }
}

/// Open one connection with the settings every pooled connection needs.
fn connect(path: &Path, timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(timeout)?;
    // The first statement reads the file: a non-database or locked file
    // fails here. In WAL mode NORMAL keeps the file consistent without an
    // fsync per commit; losing a cache's last writes on power loss is
    // harmless.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}
