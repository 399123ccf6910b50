//! JSON log lines (README.md "Logs and logrotate", docs/ARCHITECTURE.md "Logs"):
//! `--log-format json` and `log_format: json` make every line of the log one JSON object,
//! a lookup's with its fields taken from the decision (the metrics' source names), and
//! names from outside (zones, keys) escaped so that no line can be forged.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{lookup, publish_enforce, secure, start_with, Bins, NOTFOUND};
use crate::World;

/// A zone name that would forge a line, close a JSON string, drive a terminal and reorder
/// what a reader sees, were it written raw.
const HOSTILE_ZONE: &str = "evil\"},\\\nFORGED\u{1b}[31m\u{7f}\u{202e}\u{2028}zone";
/// A key that is no domain, with a quote, a backslash and controls.
const HOSTILE_KEY: &str = "bad\"\\key\u{7}\u{85}";

/// Every line of the log file at `path`, each parsed as one JSON object with a
/// `YYYY-MM-DDTHH:MM:SSZ` time, a level and a message; panics naming the line otherwise.
fn json_lines(path: &Path) -> Vec<Value> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    assert!(!log.is_empty(), "empty log file");
    // What the daemon must write escaped (controls, bidirectional controls, line
    // separators): none of it raw, in any line.
    let raw = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(
                c,
                '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                    | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            )
    };
    assert!(!log.chars().any(raw), "a raw control in the log:\n{log:?}");
    log.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nlog:\n{log}"));
            let time = value["time"].as_str().unwrap_or_default();
            let shape = time.len() == 20
                && time.bytes().enumerate().all(|(i, b)| match i {
                    4 | 7 => b == b'-',
                    10 => b == b'T',
                    13 | 16 => b == b':',
                    19 => b == b'Z',
                    _ => b.is_ascii_digit(),
                });
            assert!(shape, "time {time:?} in {line}");
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .contains(&value["level"].as_str().unwrap_or_default()),
                "level in {line}"
            );
            assert!(value["message"].is_string(), "message in {line}");
            value
        })
        .collect()
}

/// The one lookup line for `domain` in `zone` with `source`; panics with the lines if there
/// is not exactly one.
fn lookup_line<'a>(lines: &'a [Value], domain: &str, zone: &str, source: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["domain"] == domain && l["zone"] == zone && l["source"] == source)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{domain:?} {zone:?} {source}: {found:?}\nlines: {lines:#?}"
    );
    found[0]
}

/// The lookups both cases make, and what their lines say: a fetch, a fresh hit, no policy,
/// a hostile zone name and a key that is no domain.
fn lookups_and_their_lines(d: &crate::Daemon, logfile: &Path) -> Vec<Value> {
    assert_eq!(
        lookup(d, "postfix", "logged.example"),
        secure("mx.logged.example")
    );
    assert_eq!(lookup(d, "postfix", "nopolicy.example"), NOTFOUND);
    let mut c = d.client();
    c.send_raw(&crate::socketmap_client::netstring(
        format!("{HOSTILE_ZONE} logged.example").as_bytes(),
    ));
    assert!(c.read_reply().is_some_and(|r| r.starts_with("OK secure")));
    c.send_raw(&crate::socketmap_client::netstring(
        format!("postfix {HOSTILE_KEY}").as_bytes(),
    ));
    assert_eq!(c.read_reply().as_deref(), Some(NOTFOUND));
    let lines = json_lines(logfile);
    let fetched = lookup_line(&lines, "logged.example", "postfix", "fetched");
    assert_eq!(fetched["level"], "INFO");
    assert_eq!(fetched["class"], "secure");
    assert_eq!(fetched["reason"], "policy fetched");
    // A TLS handshake and a fetch take a while: measured, not a placeholder.
    assert!(
        fetched["duration_ms"].as_u64().is_some_and(|ms| ms >= 1),
        "{fetched}"
    );
    let none = lookup_line(&lines, "nopolicy.example", "postfix", "no_policy");
    assert_eq!(none["class"], "notfound");
    assert!(
        none["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("no policy published")),
        "{none}"
    );
    let invalid = lookup_line(&lines, HOSTILE_KEY, "postfix", "invalid_key");
    assert_eq!(invalid["class"], "notfound");
    assert_eq!(invalid["level"], "DEBUG");
    assert_eq!(invalid["duration_ms"], 0);
    lines
}

/// `--log-format json`: every line from the first is JSON; a lookup answered from memory
/// says `fresh`, with no time spent.
pub fn json_lines_from_the_command_line(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "logged.example", "1", &["mx.logged.example"]);
    let logfile = world.dir().join("daemon.log");
    let d = start_with(
        bins,
        &world,
        "",
        &["--log-format", "json", "-l", &logfile.display().to_string()],
    );
    let lines = lookups_and_their_lines(&d, &logfile);
    let fresh = lookup_line(&lines, "logged.example", HOSTILE_ZONE, "fresh");
    assert_eq!(fresh["class"], "secure");
    assert_eq!(fresh["level"], "DEBUG");
    assert_eq!(fresh["duration_ms"], 0);
    assert!(lines.iter().any(|l| l["message"] == "ready"), "{lines:#?}");
}

/// `log_format: json` in the config, with `cache_grace: 0` so that the second lookup of a
/// domain re-checks its TXT id: `revalidated`. A reload to `log_format: text` applies at once.
pub fn json_lines_from_the_config(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "logged.example", "1", &["mx.logged.example"]);
    let logfile = world.dir().join("daemon.log");
    let d = start_with(
        bins,
        &world,
        "log_format: json\ncache_grace: 0\n",
        &["-l", &logfile.display().to_string()],
    );
    let lines = lookups_and_their_lines(&d, &logfile);
    let again = lookup_line(&lines, "logged.example", HOSTILE_ZONE, "revalidated");
    assert_eq!(again["class"], "secure");
    assert_eq!(
        again["reason"],
        "policy id unchanged, cached policy confirmed"
    );
    // Back to text on SIGHUP: the reload's own line is already text.
    let config = std::fs::read_to_string(d.config_path()).expect("read config");
    let text = config.replace("log_format: json", "log_format: text");
    std::fs::write(d.config_path(), text).expect("write config");
    d.signal(libc::SIGHUP);
    let reloaded = super::persist::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&logfile).is_ok_and(|log| {
            log.lines()
                .any(|l| l.contains(" INFO  configuration reloaded"))
        })
    });
    let log = std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(reloaded, "log:\n{log}");
}
