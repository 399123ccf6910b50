//! A small `log` backend: one line per record, UTC timestamp, to stderr or
//! to the `-l` log file; text, or one JSON object per line with the
//! record's fields (docs/ARCHITECTURE.md "Logs").

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};
use mta_sts_core::cli::LogFormat;
use mta_sts_core::service::utc;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Lines are JSON objects (`--log-format json`, `log_format: json`).
static JSON: AtomicBool = AtomicBool::new(false);
/// `--log-format` was given: the config's `log_format` does not apply.
static FORMAT_FROM_COMMAND_LINE: AtomicBool = AtomicBool::new(false);

fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// The config's `log_format`, once the config is read (at start and on
/// each reload); `--log-format` wins over it (docs/ARCHITECTURE.md "Logs").
pub fn use_config_log_format(format: LogFormat) {
    if !FORMAT_FROM_COMMAND_LINE.load(Ordering::Relaxed) {
        set_format(format);
    }
}

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
        let time = utc(crate::unix_ms());
        let line = if JSON.load(Ordering::Relaxed) {
            json_line(record, &time)
        } else {
            text_line(record, &time)
        };
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

/// `YYYY-MM-DD HH:MM:SS LEVEL message`: `time` (RFC 3339, as
/// [`utc`] writes it) with a space for the `T` and no `Z`, and the message
/// with its controls escaped; the record's fields are not written.
fn text_line(record: &Record<'_>, time: &str) -> String {
    let time = time.replacen('T', " ", 1);
    let time = time.trim_end_matches('Z');
    let raw = record.args().to_string();
    let message = escape_controls(&raw);
    format!("{time} {:<5} {message}\n", record.level())
}

/// One JSON object: `time`, `level`, `message`, then the record's fields
/// in order (numbers as numbers, anything else as a string). Every string
/// goes through [`push_json_str`], so no value can end the line or the
/// object early.
fn json_line(record: &Record<'_>, time: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"time\":");
    push_json_str(&mut out, time);
    out.push_str(",\"level\":");
    push_json_str(&mut out, record.level().as_str());
    out.push_str(",\"message\":");
    push_json_str(&mut out, &record.args().to_string());
    // Writing to a String cannot fail, and the visitor never returns an
    // error: the line is written whole.
    let _ = record.key_values().visit(&mut JsonFields(&mut out));
    out.push_str("}\n");
    out
}

/// Appends each field as `,"key":value`.
struct JsonFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push(',');
        push_json_str(self.0, key.as_str());
        self.0.push(':');
        match (value.to_u64(), value.to_i64()) {
            (Some(n), _) => {
                let _ = write!(self.0, "{n}");
            }
            (None, Some(n)) => {
                let _ = write!(self.0, "{n}");
            }
            (None, None) => match value.to_borrowed_str() {
                Some(s) => push_json_str(self.0, s),
                None => push_json_str(self.0, &value.to_string()),
            },
        }
        Ok(())
    }
}

/// `text` as a JSON string (serde_json's escaping: quotes, backslashes,
/// controls below U+0020), with what [`must_escape`] names that JSON
/// leaves raw (DEL, C1 controls, bidirectional overrides) written as
/// `\uXXXX` too: the same guarantee as the text format's.
fn push_json_str(out: &mut String, text: &str) {
    let quoted = serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\""));
    for c in quoted.chars() {
        if must_escape(c) {
            // All of them are in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

/// Characters no log line may hold raw: controls (a newline would start a
/// forged line, an escape sequence drive a terminal) and the Unicode
/// bidirectional overrides (which reorder what a reader sees).
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates reorder
            // what a reader sees; the line and paragraph separators break
            // lines in some viewers.
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character (and the Unicode bidirectional
/// controls and line separators, [`must_escape`]) written as an escape:
/// log messages quote keys, zone names, TXT records, policy lines and
/// server errors that came from outside, and none of them may start a
/// forged line or drive a terminal.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Install the logger at `level`, appending to `logfile` when given, in
/// `format` when the command line gave one (else text until the config's
/// `log_format` is read: [`use_config_log_format`]).
pub fn init_logging(
    level: LevelFilter,
    logfile: Option<&Path>,
    format: Option<LogFormat>,
) -> std::io::Result<()> {
    if let Some(format) = format {
        FORMAT_FROM_COMMAND_LINE.store(true, Ordering::Relaxed);
        set_format(format);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: &str = "2026-12-06T10:00:00Z";

    /// What reaches the log from outside, at its worst: a line break and a
    /// forged line, quotes and backslashes that would end a JSON string,
    /// C0 and C1 controls, DEL, an escape sequence, a bidirectional override.
    const HOSTILE: &str =
        "a\nINFO forged\r\"},\"level\":\"ERROR\\\u{0}\u{1b}[31m\u{7f}\u{85}\u{202e}z";

    /// `f` with a record at info of `message` and `fields`.
    fn with_record<T>(
        message: &str,
        fields: &[(&str, Value<'_>)],
        f: impl FnOnce(&Record<'_>) -> T,
    ) -> T {
        f(&Record::builder()
            .args(format_args!("{message}"))
            .level(log::Level::Info)
            .key_values(&fields)
            .build())
    }

    /// Every line is one JSON object with the time, level, message and
    /// every field, strings and numbers alike read back exactly; nothing
    /// raw that could break or reorder the line is left in it.
    #[test]
    fn json_lines_parse_back_whatever_the_fields_hold() {
        let reason = format!("lookup failed: {HOSTILE}");
        let fields = [
            ("domain", Value::from(HOSTILE)),
            ("zone", Value::from("z\u{2066}one")),
            ("class", Value::from("notfound")),
            ("source", Value::from("failed")),
            ("reason", Value::from_display(&reason)),
            ("duration_ms", Value::from(1234u64)),
        ];
        let line = with_record(HOSTILE, &fields, |r| json_line(r, TIME));
        assert!(line.ends_with("}\n"), "{line}");
        let body = &line[..line.len() - 1];
        assert!(!body.chars().any(must_escape), "raw control in {body:?}");
        assert!(
            body.contains("\\u202e") && body.contains("\\u0085"),
            "{body}"
        );
        let parsed: serde_json::Value = serde_json::from_str(body).expect("one JSON object");
        let expected = serde_json::json!({
            "time": TIME,
            "level": "INFO",
            "message": HOSTILE,
            "domain": HOSTILE,
            "zone": "z\u{2066}one",
            "class": "notfound",
            "source": "failed",
            "reason": reason,
            "duration_ms": 1234,
        });
        assert_eq!(parsed, expected);
    }

    /// The time, level and message come first, then the fields in the
    /// order given; a record without fields (every line but a lookup's) is
    /// the first three.
    #[test]
    fn json_line_order() {
        let fields = [
            ("domain", Value::from("example.com")),
            ("duration_ms", Value::from(7u64)),
        ];
        let line = with_record("m", &fields, |r| json_line(r, TIME));
        assert_eq!(
            line,
            "{\"time\":\"2026-12-06T10:00:00Z\",\"level\":\"INFO\",\"message\":\"m\",\
             \"domain\":\"example.com\",\"duration_ms\":7}\n"
        );
        let line = with_record("ready", &[], |r| json_line(r, TIME));
        assert_eq!(
            line,
            "{\"time\":\"2026-12-06T10:00:00Z\",\"level\":\"INFO\",\"message\":\"ready\"}\n"
        );
    }

    /// The text format is what it was: time, level padded to five, the
    /// message with controls escaped; a lookup's fields are not written.
    #[test]
    fn text_lines_are_unchanged_and_carry_no_fields() {
        let fields = [("domain", Value::from("example.com"))];
        let line = with_record(
            "example.com (zone z): cached enforce policy",
            &fields,
            |r| text_line(r, TIME),
        );
        assert_eq!(
            line,
            "2026-12-06 10:00:00 INFO  example.com (zone z): cached enforce policy\n"
        );
        let line = with_record("z\nforged", &[], |r| text_line(r, TIME));
        assert_eq!(line, "2026-12-06 10:00:00 INFO  z\\nforged\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain zone"), "plain zone");
        assert_eq!(
            escape_controls("z\nINFO forged\r\u{1b}[31m\u{202e}x\u{7f}"),
            "z\\nINFO forged\\r\\u{1b}[31m\\u{202e}x\\u{7f}"
        );
    }
}
