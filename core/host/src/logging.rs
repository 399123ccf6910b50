//! A small `log` backend: one line per record, UTC timestamp, to stderr or
//! to the `-l` log file.

use log::{LevelFilter, Log, Metadata, Record};
use mta_sts_core::service::civil_from_days;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    level: LevelFilter,
    file: Option<Arc<LogFile>>,
}

/// The `-l` log file, reopened on SIGHUP (after logrotate moved it).
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

/// The log file in use, for [`reopen_log`].
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// The log file is opened as root at start, in a directory the service
/// user may own: never through a link (`files::open_for_writing`).
fn open_append(path: &Path) -> std::io::Result<File> {
    crate::files::open_for_writing(path, true)
}

/// Reopen the `-l` log file (SIGHUP, after log rotation). Nothing to do
/// when logging to stderr.
pub fn reopen_log() -> std::io::Result<()> {
    if let Some(log) = LOG_FILE.get() {
        let fresh = open_append(&log.path)?;
        *log.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
    Ok(())
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let raw = record.args().to_string();
        let message = escape_controls(&raw);
        let line = format!("{} {:<5} {message}\n", timestamp(), record.level());
        match &self.file {
            Some(log) => {
                if let Ok(mut f) = log.file.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// `text` with every control character (and the Unicode bidirectional
/// overrides) written as an escape: log messages quote keys, zone names,
/// TXT records, policy lines and server errors that came from outside, and
/// none of them may start a forged line or drive a terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Install the logger at `level`, appending to `logfile` when given.
pub fn init_logging(level: LevelFilter, logfile: Option<&Path>) -> std::io::Result<()> {
    let file = match logfile {
        Some(path) => {
            let log = Arc::new(LogFile {
                path: path.to_owned(),
                file: Mutex::new(open_append(path)?),
            });
            let _ = LOG_FILE.set(log.clone());
            Some(log)
        }
        None => None,
    };
    // A second call (tests) keeps the first logger: not an error.
    if log::set_boxed_logger(Box::new(Logger { level, file })).is_ok() {
        log::set_max_level(level);
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain zone"), "plain zone");
        assert_eq!(
            escape_controls("z\nINFO forged\r\u{1b}[31m\u{202e}x\u{7f}"),
            "z\\nINFO forged\\r\\u{1b}[31m\\u{202e}x\\u{7f}"
        );
    }
}
