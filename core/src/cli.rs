//! Command lines of `mta-sts-daemon` and `mta-sts-query` (README.md
//! "Programs"): the options of the Python
//! postfix-mta-sts-resolver 1.5, parsed with pico-args.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;

/// Default daemon configuration file, as in the Python original.
pub const DEFAULT_CONFIG: &str = "/etc/mta-sts-daemon.yml";
/// Where the Python original's README puts the file: read when `-c` is not
/// given and only this one exists.
pub const FALLBACK_CONFIG: &str = "/etc/postfix/mta-sts-daemon.yml";

/// `-v/--verbosity` levels of the Python programs (README.md "Programs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
    /// `fatal` (logged as errors: `log` has no higher level).
    Fatal,
}

impl LogLevel {
    /// The `log` filter for this level; `fatal` maps to `Error`.
    pub fn to_log_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Fatal => log::LevelFilter::Error,
        }
    }
}

impl FromStr for LogLevel {
    type Err = &'static str;

    /// Parses `debug|info|warn|error|fatal`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "fatal" => Ok(LogLevel::Fatal),
            _ => Err("expected one of debug, info, warn, error, fatal"),
        }
    }
}

/// `--log-format` and the config's `log_format` (ours): how log lines are
/// written (docs/ARCHITECTURE.md "Logs").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `YYYY-MM-DD HH:MM:SS LEVEL message`, controls escaped (the default).
    #[default]
    Text,
    /// One JSON object per line, with a lookup's fields beside the message.
    Json,
}

impl FromStr for LogFormat {
    type Err = &'static str;

    /// Parses `text|json`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json"),
        }
    }
}

/// Options of `mta-sts-daemon` (README.md "Programs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonArgs {
    /// `-v/--verbosity` (default `info`).
    pub verbosity: LogLevel,
    /// `-c/--config` (default `/etc/mta-sts-daemon.yml`).
    pub config: PathBuf,
    /// True when `-c` was given (no fallback to [`FALLBACK_CONFIG`]).
    pub config_given: bool,
    /// `--check-config` (ours): validate the configuration and exit.
    pub check_config: bool,
    /// `-l/--logfile`: log to this file instead of stderr.
    pub logfile: Option<PathBuf>,
    /// `--log-format` (ours): wins over the config's `log_format`, and
    /// applies from the first line (logging starts before the config is
    /// read).
    pub log_format: Option<LogFormat>,
    /// `-p/--pidfile`: write the process id here.
    pub pidfile: Option<PathBuf>,
    /// `-u/--user`: drop privileges to this user.
    pub user: Option<String>,
    /// `-g/--group`: drop privileges to this group.
    pub group: Option<String>,
    /// `--disable-uvloop`: accepted for compatibility, no effect.
    pub disable_uvloop: bool,
}

/// Arguments of `mta-sts-query` (README.md "Programs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryArgs {
    /// `-v/--verbosity` (default `warn`).
    pub verbosity: LogLevel,
    /// `--log-format` (ours, default `text`): how warnings on standard
    /// error are written.
    pub log_format: LogFormat,
    /// What to do: look a domain up, or administer the cache.
    pub action: QueryAction,
    /// `--json`: print the result as JSON (ours).
    pub json: bool,
    /// `-c/--config` (ours): reuse the daemon's `resolver` settings, or
    /// name the cache to administer.
    pub config: Option<PathBuf>,
    /// `--dane` (ours): also check DANE (RFC 7672), as a `dane: true` zone
    /// would; without it, DANE is checked when the config's `default_zone`
    /// has `dane: true`.
    pub dane: bool,
}

/// What `mta-sts-query` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAction {
    /// `DOMAIN [KNOWN_ID]`: fetch the policy of `domain`; with `known_id`
    /// (RFC 8461 §3.1), an unchanged TXT id means no fetch.
    Lookup {
        /// The domain.
        domain: String,
        /// A policy id already known.
        known_id: Option<String>,
    },
    /// `--cache COMMAND`: administer the daemon's cache.
    Cache(CacheCommand),
}

/// `mta-sts-query --cache` commands (README.md "Cache administration").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheCommand {
    /// `list`: one line per cached domain.
    List,
    /// `show DOMAIN`.
    Show(String),
    /// `export`: JSON lines on standard output.
    Export,
    /// `import FILE` (`-` for standard input).
    Import(PathBuf),
    /// `purge DOMAIN`.
    Purge(String),
    /// `purge --all`.
    PurgeAll,
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliOutcome<T> {
    /// Run with these arguments.
    Run(T),
    /// `-h/--help`: print this text and exit 0.
    Help(String),
    /// `-V/--version`: print this text and exit 0.
    Version(String),
}

/// A command line that cannot be run; the message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// An option we do not know.
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    /// An option given twice.
    #[error("option '{0}' given more than once")]
    Repeated(String),
    /// An option that takes a value was last, or given no value.
    #[error("option '{0}' needs a value")]
    MissingValue(String),
    /// An option value that does not parse.
    #[error("invalid value '{value}' for '{option}': {reason}")]
    InvalidValue {
        /// The option as written.
        option: String,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A required positional argument is absent.
    #[error("missing argument {0}")]
    MissingArgument(&'static str),
    /// More positional arguments than the program takes.
    #[error("unexpected argument '{0}'")]
    UnexpectedArgument(String),
    /// An argument that is not valid UTF-8 where text is needed.
    #[error("argument is not valid UTF-8: {0:?}")]
    NotUtf8(OsString),
}

const DAEMON_USAGE: &str = "\
Usage: mta-sts-daemon [-h] [-V] [-v LEVEL] [-c FILE] [-l FILE] [--log-format FORMAT]
                      [-p FILE] [-u USER] [-g GROUP] [--disable-uvloop] [--check-config]

Postfix socketmap server answering with each domain's MTA-STS TLS policy.

Options:
  -h, --help               show this help and exit
  -V, --version            show the version and exit
  -v, --verbosity LEVEL    debug, info, warn, error or fatal (default: info)
  -c, --config FILE        configuration file (default: /etc/mta-sts-daemon.yml,
                           else /etc/postfix/mta-sts-daemon.yml if only it exists)
  -l, --logfile FILE       log to FILE instead of stderr
      --log-format FORMAT  text or json, one JSON object per line (default: the
                           config's log_format, else text)
  -p, --pidfile FILE       write the process id to FILE
  -u, --user USER          run as USER
  -g, --group GROUP        run as GROUP
      --disable-uvloop     accepted for compatibility; no effect
      --check-config       check the configuration, print every problem, exit 0 or 1
";

const QUERY_USAGE: &str = "\
Usage: mta-sts-query [-h] [-V] [-v LEVEL] [--log-format FORMAT] [-c FILE] [--json] [--dane]
                     DOMAIN [KNOWN_ID]
       mta-sts-query [-v LEVEL] [--log-format FORMAT] -c FILE [--json] --cache COMMAND

Look up the MTA-STS policy of DOMAIN and print it (with DANE, also the DANE
status of each MX host and the answer the daemon would give), or administer
the daemon's cache.

Arguments:
  DOMAIN                   domain whose policy is fetched
  KNOWN_ID                 policy id already known: skip the fetch if unchanged

Cache commands (--cache COMMAND):
  list                     cached domains: mode, id, fetched, expires, last check
  show DOMAIN              one domain's cached policy
  export                   every entry as JSON lines on standard output
  import FILE              entries from FILE (JSON lines; - for standard input)
  purge DOMAIN             forget DOMAIN's policy (in the running daemon too)
  purge --all              forget every policy

Options:
  -h, --help               show this help and exit
  -V, --version            show the version and exit
  -v, --verbosity LEVEL    debug, info, warn, error or fatal (default: warn)
      --log-format FORMAT  log lines on stderr as text or json (default: text)
  -c, --config FILE        daemon configuration whose `resolver` section to use
      --json               print the result as JSON
      --dane               also check DANE (default: the config's default_zone dane)
      --cache COMMAND      administer the cache named by -c (see above)
";

/// `mta-sts-daemon --help` text.
pub fn daemon_usage() -> &'static str {
    DAEMON_USAGE
}

/// `mta-sts-query --help` text.
pub fn query_usage() -> &'static str {
    QUERY_USAGE
}

/// Parses `mta-sts-daemon` arguments (without argv\[0\]).
pub fn parse_daemon_args(args: Vec<OsString>) -> Result<CliOutcome<DaemonArgs>, CliError> {
    const KNOWN: &[&str] = &[
        "-h",
        "--help",
        "-V",
        "--version",
        "-v",
        "--verbosity",
        "-c",
        "--config",
        "-l",
        "--logfile",
        "--log-format",
        "-p",
        "--pidfile",
        "-u",
        "--user",
        "-g",
        "--group",
        "--disable-uvloop",
        "--check-config",
    ];
    let (mut p, after_dashes) = prepare(args);
    if let Some(outcome) = help_or_version(&mut p, daemon_usage(), "mta-sts-daemon") {
        return Ok(outcome);
    }
    let config = path(&mut p, ["-c", "--config"])?;
    let parsed = DaemonArgs {
        verbosity: verbosity(&mut p)?.unwrap_or(LogLevel::Info),
        config_given: config.is_some(),
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        check_config: p.contains("--check-config"),
        logfile: path(&mut p, ["-l", "--logfile"])?,
        log_format: log_format(&mut p)?,
        pidfile: path(&mut p, ["-p", "--pidfile"])?,
        user: text(&mut p, ["-u", "--user"])?,
        group: text(&mut p, ["-g", "--group"])?,
        disable_uvloop: p.contains("--disable-uvloop"),
    };
    let free = leftovers(p, after_dashes, KNOWN)?;
    if let Some(extra) = free.into_iter().next() {
        return Err(CliError::UnexpectedArgument(extra));
    }
    Ok(CliOutcome::Run(parsed))
}

/// `-h`/`--help` and `-V`/`--version` win over everything else.
fn help_or_version<T>(
    p: &mut pico_args::Arguments,
    usage: &str,
    program: &str,
) -> Option<CliOutcome<T>> {
    if p.contains(["-h", "--help"]) {
        return Some(CliOutcome::Help(usage.to_owned()));
    }
    if p.contains(["-V", "--version"]) {
        return Some(CliOutcome::Version(version(program)));
    }
    None
}

/// Parses `mta-sts-query` arguments (without argv\[0\]).
pub fn parse_query_args(args: Vec<OsString>) -> Result<CliOutcome<QueryArgs>, CliError> {
    const KNOWN: &[&str] = &[
        "-h",
        "--help",
        "-V",
        "--version",
        "-v",
        "--verbosity",
        "--log-format",
        "-c",
        "--config",
        "--json",
        "--dane",
        "--cache",
        "--all",
    ];
    let (mut p, after_dashes) = prepare(args);
    if let Some(outcome) = help_or_version(&mut p, query_usage(), "mta-sts-query") {
        return Ok(outcome);
    }
    let verbosity = verbosity(&mut p)?.unwrap_or(LogLevel::Warn);
    let log_format = log_format(&mut p)?.unwrap_or_default();
    let config = path(&mut p, ["-c", "--config"])?;
    let json = p.contains("--json");
    let dane = p.contains("--dane");
    let cache = long_text(&mut p, "--cache")?;
    let all = p.contains("--all");
    let mut free = leftovers(p, after_dashes, KNOWN)?.into_iter();
    let action = match cache {
        None => {
            let domain = free.next().ok_or(CliError::MissingArgument("DOMAIN"))?;
            QueryAction::Lookup {
                domain,
                known_id: free.next(),
            }
        }
        Some(command) => QueryAction::Cache(match (command.as_str(), all) {
            ("list", false) => CacheCommand::List,
            ("export", false) => CacheCommand::Export,
            ("show", false) => {
                CacheCommand::Show(free.next().ok_or(CliError::MissingArgument("DOMAIN"))?)
            }
            ("import", false) => CacheCommand::Import(PathBuf::from(
                free.next().ok_or(CliError::MissingArgument("FILE"))?,
            )),
            ("purge", true) => CacheCommand::PurgeAll,
            ("purge", false) => CacheCommand::Purge(
                free.next()
                    .ok_or(CliError::MissingArgument("DOMAIN or --all"))?,
            ),
            (_, true) => return Err(CliError::UnknownOption("--all".into())),
            (other, false) => {
                return Err(CliError::InvalidValue {
                    option: "--cache".into(),
                    value: other.into(),
                    reason: "expected list, show, export, import or purge".into(),
                })
            }
        }),
    };
    if let Some(extra) = free.next() {
        return Err(CliError::UnexpectedArgument(extra));
    }
    Ok(CliOutcome::Run(QueryArgs {
        verbosity,
        log_format,
        action,
        json,
        config,
        dane,
    }))
}

fn version(program: &str) -> String {
    format!("{program} {}", env!("CARGO_PKG_VERSION"))
}

/// Splits `--name=value` into two arguments (pico-args is built without its
/// `eq-separator` feature) and sets apart everything after `--`, which is
/// positional whatever it looks like.
fn prepare(args: Vec<OsString>) -> (pico_args::Arguments, Vec<OsString>) {
    let mut before = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    for arg in rest.by_ref() {
        if arg == "--" {
            break;
        }
        match arg
            .to_str()
            .and_then(|s| s.strip_prefix("--")?.split_once('='))
        {
            Some((name, value)) => {
                before.push(OsString::from(format!("--{name}")));
                before.push(OsString::from(value));
            }
            None => before.push(arg),
        }
    }
    (pico_args::Arguments::from_vec(before), rest.collect())
}

/// What is left once the known options are taken: positional arguments, in
/// order. A leftover that looks like an option is unknown, or repeated.
fn leftovers(
    p: pico_args::Arguments,
    after_dashes: Vec<OsString>,
    known: &[&str],
) -> Result<Vec<String>, CliError> {
    let mut free = Vec::new();
    for arg in p.finish() {
        let arg = utf8(arg)?;
        if arg.len() > 1 && arg.starts_with('-') {
            return Err(if known.contains(&arg.as_str()) {
                CliError::Repeated(arg)
            } else {
                CliError::UnknownOption(arg)
            });
        }
        free.push(arg);
    }
    for arg in after_dashes {
        free.push(utf8(arg)?);
    }
    Ok(free)
}

fn utf8(arg: OsString) -> Result<String, CliError> {
    arg.into_string().map_err(CliError::NotUtf8)
}

fn verbosity(p: &mut pico_args::Arguments) -> Result<Option<LogLevel>, CliError> {
    let Some((option, value)) = raw(p, ["-v", "--verbosity"])? else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|reason: &str| CliError::InvalidValue {
            option,
            value,
            reason: reason.to_owned(),
        })
}

fn log_format(p: &mut pico_args::Arguments) -> Result<Option<LogFormat>, CliError> {
    let Some(value) = long_text(p, "--log-format")? else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|reason: &str| CliError::InvalidValue {
            option: "--log-format".to_owned(),
            value,
            reason: reason.to_owned(),
        })
}

fn path(
    p: &mut pico_args::Arguments,
    keys: [&'static str; 2],
) -> Result<Option<PathBuf>, CliError> {
    Ok(raw(p, keys)?.map(|(_, v)| PathBuf::from(v)))
}

fn text(p: &mut pico_args::Arguments, keys: [&'static str; 2]) -> Result<Option<String>, CliError> {
    Ok(raw(p, keys)?.map(|(_, v)| v))
}

/// The value of a long-only option (refused when empty).
fn long_text(p: &mut pico_args::Arguments, key: &'static str) -> Result<Option<String>, CliError> {
    let value: Option<String> = p.opt_value_from_str(key).map_err(|e| match e {
        pico_args::Error::OptionWithoutAValue(k) => CliError::MissingValue(k.to_owned()),
        pico_args::Error::NonUtf8Argument => CliError::NotUtf8(OsString::new()),
        other => CliError::InvalidValue {
            option: key.to_owned(),
            value: String::new(),
            reason: other.to_string(),
        },
    })?;
    match value {
        Some(v) if v.is_empty() => Err(CliError::InvalidValue {
            option: key.to_owned(),
            value: v,
            reason: "must not be empty".to_owned(),
        }),
        other => Ok(other),
    }
}

/// The value of an option and the spelling the user wrote; empty values are
/// refused because every option here names something.
fn raw(
    p: &mut pico_args::Arguments,
    keys: [&'static str; 2],
) -> Result<Option<(String, String)>, CliError> {
    let [short, long] = keys;
    let value: Option<String> = p.opt_value_from_str(keys).map_err(|e| match e {
        pico_args::Error::OptionWithoutAValue(k) => CliError::MissingValue(k.to_owned()),
        pico_args::Error::NonUtf8Argument => CliError::NotUtf8(OsString::new()),
        other => CliError::InvalidValue {
            option: long.to_owned(),
            value: String::new(),
            reason: other.to_string(),
        },
    })?;
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(CliError::InvalidValue {
            option: format!("{short}/{long}"),
            value: v,
            reason: "must not be empty".to_owned(),
        }),
        Some(v) => Ok(Some((format!("{short}/{long}"), v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn daemon(list: &[&str]) -> DaemonArgs {
        match parse_daemon_args(args(list)) {
            Ok(CliOutcome::Run(a)) => a,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    fn query(list: &[&str]) -> QueryArgs {
        match parse_query_args(args(list)) {
            Ok(CliOutcome::Run(a)) => a,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn daemon_defaults() {
        assert_eq!(
            daemon(&[]),
            DaemonArgs {
                verbosity: LogLevel::Info,
                config: PathBuf::from("/etc/mta-sts-daemon.yml"),
                config_given: false,
                check_config: false,
                logfile: None,
                log_format: None,
                pidfile: None,
                user: None,
                group: None,
                disable_uvloop: false,
            }
        );
    }

    #[test]
    fn daemon_every_option_short_and_long() {
        let expected = DaemonArgs {
            verbosity: LogLevel::Debug,
            config: PathBuf::from("/c.yml"),
            config_given: true,
            check_config: false,
            logfile: Some(PathBuf::from("/l.log")),
            log_format: Some(LogFormat::Json),
            pidfile: Some(PathBuf::from("/p.pid")),
            user: Some("mta-sts".to_owned()),
            group: Some("nogroup".to_owned()),
            disable_uvloop: true,
        };
        let short = [
            "-v",
            "debug",
            "-c",
            "/c.yml",
            "-l",
            "/l.log",
            "--log-format",
            "json",
            "-p",
            "/p.pid",
            "-u",
            "mta-sts",
            "-g",
            "nogroup",
            "--disable-uvloop",
        ];
        let long = [
            "--verbosity",
            "DEBUG",
            "--config",
            "/c.yml",
            "--logfile",
            "/l.log",
            "--log-format",
            "JSON",
            "--pidfile",
            "/p.pid",
            "--user",
            "mta-sts",
            "--group",
            "nogroup",
            "--disable-uvloop",
        ];
        let equals = [
            "--verbosity=debug",
            "--config=/c.yml",
            "--logfile=/l.log",
            "--log-format=json",
            "--pidfile=/p.pid",
            "--user=mta-sts",
            "--group=nogroup",
            "--disable-uvloop",
        ];
        assert_eq!(daemon(&short), expected);
        assert_eq!(daemon(&long), expected);
        assert_eq!(daemon(&equals), expected);
        // Order does not matter.
        let mut reversed: Vec<&str> = short.chunks(2).rev().flatten().copied().collect();
        reversed.rotate_left(1);
        assert_eq!(daemon(&reversed), expected);
    }

    /// `--log-format text|json` on both programs; anything else is a usage
    /// error naming the option.
    #[test]
    fn log_formats() {
        assert_eq!(
            daemon(&["--log-format", "text"]).log_format,
            Some(LogFormat::Text)
        );
        assert_eq!(
            query(&["--log-format=json", "example.com"]).log_format,
            LogFormat::Json
        );
        assert_eq!(
            parse_daemon_args(args(&["--log-format", "yaml"])),
            Err(CliError::InvalidValue {
                option: "--log-format".to_owned(),
                value: "yaml".to_owned(),
                reason: "expected text or json".to_owned(),
            })
        );
        assert_eq!(
            parse_query_args(args(&["--log-format", "example.com"])),
            Err(CliError::InvalidValue {
                option: "--log-format".to_owned(),
                value: "example.com".to_owned(),
                reason: "expected text or json".to_owned(),
            })
        );
    }

    #[test]
    fn log_levels() {
        for (word, level, filter) in [
            ("debug", LogLevel::Debug, log::LevelFilter::Debug),
            ("Info", LogLevel::Info, log::LevelFilter::Info),
            ("WARN", LogLevel::Warn, log::LevelFilter::Warn),
            ("error", LogLevel::Error, log::LevelFilter::Error),
            ("fatal", LogLevel::Fatal, log::LevelFilter::Error),
        ] {
            assert_eq!(daemon(&["-v", word]).verbosity, level);
            assert_eq!(level.to_log_filter(), filter);
        }
        assert_eq!(
            parse_daemon_args(args(&["-v", "loud"])),
            Err(CliError::InvalidValue {
                option: "-v/--verbosity".to_owned(),
                value: "loud".to_owned(),
                reason: "expected one of debug, info, warn, error, fatal".to_owned(),
            })
        );
    }

    #[test]
    fn daemon_errors() {
        assert_eq!(
            parse_daemon_args(args(&["--frobnicate"])),
            Err(CliError::UnknownOption("--frobnicate".to_owned()))
        );
        assert_eq!(
            parse_daemon_args(args(&["-x"])),
            Err(CliError::UnknownOption("-x".to_owned()))
        );
        assert_eq!(
            parse_daemon_args(args(&["-c"])),
            Err(CliError::MissingValue("-c".to_owned()))
        );
        assert_eq!(
            parse_daemon_args(args(&["--config"])),
            Err(CliError::MissingValue("--config".to_owned()))
        );
        assert_eq!(
            parse_daemon_args(args(&["-c", "a", "-c", "b"])),
            Err(CliError::Repeated("-c".to_owned()))
        );
        assert_eq!(
            parse_daemon_args(args(&["stray"])),
            Err(CliError::UnexpectedArgument("stray".to_owned()))
        );
        assert!(matches!(
            parse_daemon_args(args(&["--config="])),
            Err(CliError::InvalidValue { .. })
        ));
        let message = parse_daemon_args(args(&["--nope"]))
            .unwrap_err()
            .to_string();
        assert_eq!(message, "unknown option '--nope'");
    }

    #[test]
    fn help_and_version() {
        for h in ["-h", "--help"] {
            assert_eq!(
                parse_daemon_args(args(&["-c", "x", h])),
                Ok(CliOutcome::Help(daemon_usage().to_owned()))
            );
            assert_eq!(
                parse_query_args(args(&[h])),
                Ok(CliOutcome::Help(query_usage().to_owned()))
            );
        }
        for v in ["-V", "--version"] {
            assert_eq!(
                parse_daemon_args(args(&[v])),
                Ok(CliOutcome::Version(format!(
                    "mta-sts-daemon {}",
                    env!("CARGO_PKG_VERSION")
                )))
            );
            assert!(matches!(
                parse_query_args(args(&[v])),
                Ok(CliOutcome::Version(s)) if s.starts_with("mta-sts-query ")
            ));
        }
        assert!(daemon_usage().contains("--disable-uvloop"));
        assert!(query_usage().contains("KNOWN_ID"));
    }

    #[test]
    fn query_with_and_without_known_id() {
        assert_eq!(
            query(&["example.com"]),
            QueryArgs {
                verbosity: LogLevel::Warn,
                log_format: LogFormat::Text,
                action: QueryAction::Lookup {
                    domain: "example.com".to_owned(),
                    known_id: None,
                },
                json: false,
                config: None,
                dane: false,
            }
        );
        assert_eq!(
            query(&["-v", "info", "example.com", "20160831085700Z"]),
            QueryArgs {
                verbosity: LogLevel::Info,
                log_format: LogFormat::Text,
                action: QueryAction::Lookup {
                    domain: "example.com".to_owned(),
                    known_id: Some("20160831085700Z".to_owned()),
                },
                json: false,
                config: None,
                dane: false,
            }
        );
        // Options may come after the positional arguments.
        let q = query(&["example.com", "--json", "id1", "--config", "/c.yml"]);
        assert!(q.json && !q.dane);
        assert!(query(&["--dane", "example.com"]).dane);
        assert!(matches!(&q.action, QueryAction::Lookup { known_id: Some(id), .. } if id == "id1"));
        assert_eq!(q.config, Some(PathBuf::from("/c.yml")));
        let q = query(&["-c", "/c.yml", "--verbosity=error", "example.com"]);
        assert_eq!(q.config, Some(PathBuf::from("/c.yml")));
        assert_eq!(q.verbosity, LogLevel::Error);
        // After `--`, anything is positional.
        assert!(matches!(
            query(&["--", "-odd-"]).action,
            QueryAction::Lookup { domain, .. } if domain == "-odd-"
        ));
    }

    #[test]
    fn query_cache_commands() {
        let cache = |list: &[&str]| query(list).action;
        assert_eq!(
            cache(&["-c", "/c.yml", "--cache", "list"]),
            QueryAction::Cache(CacheCommand::List)
        );
        assert_eq!(
            cache(&["--cache", "show", "example.com"]),
            QueryAction::Cache(CacheCommand::Show("example.com".into()))
        );
        assert_eq!(
            cache(&["--cache", "export"]),
            QueryAction::Cache(CacheCommand::Export)
        );
        assert_eq!(
            cache(&["--cache", "import", "-"]),
            QueryAction::Cache(CacheCommand::Import("-".into()))
        );
        assert_eq!(
            cache(&["--cache", "purge", "example.com"]),
            QueryAction::Cache(CacheCommand::Purge("example.com".into()))
        );
        assert_eq!(
            cache(&["--cache", "purge", "--all"]),
            QueryAction::Cache(CacheCommand::PurgeAll)
        );
        assert!(parse_query_args(args(&["--cache", "frobnicate"])).is_err());
        assert_eq!(
            parse_query_args(args(&["--cache", "show"])),
            Err(CliError::MissingArgument("DOMAIN"))
        );
        assert!(parse_query_args(args(&["--cache", "list", "--all"])).is_err());
    }

    #[test]
    fn daemon_check_config_and_default_path() {
        let d = daemon(&["--check-config"]);
        assert!(d.check_config && !d.config_given);
    }

    #[test]
    fn query_errors() {
        assert_eq!(
            parse_query_args(args(&[])),
            Err(CliError::MissingArgument("DOMAIN"))
        );
        assert_eq!(
            parse_query_args(args(&["--json"])),
            Err(CliError::MissingArgument("DOMAIN"))
        );
        assert_eq!(
            parse_query_args(args(&["a.example", "id", "more"])),
            Err(CliError::UnexpectedArgument("more".to_owned()))
        );
        assert_eq!(
            parse_query_args(args(&["--disable-uvloop", "a.example"])),
            Err(CliError::UnknownOption("--disable-uvloop".to_owned()))
        );
        assert_eq!(
            parse_query_args(args(&["a.example", "-v"])),
            Err(CliError::MissingValue("-v".to_owned()))
        );
    }
}
