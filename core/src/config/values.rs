//! Typed readers of single YAML values, as PyYAML (YAML 1.1) would have read
//! them: each takes the value and its key path and returns the typed value
//! or an error naming the path.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_yaml::Value;

use super::{is_secret_key, ConfigError, REDACTED};

/// Path shown for errors about the document itself.
pub(super) const ROOT: &str = "(top level)";

pub(super) fn join(parent: &str, key: &str) -> String {
    if parent == ROOT {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A value as quoted in messages: strings in quotes, others as written.
pub(super) fn render(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// The error for a value of the wrong kind; the value of a credential
/// (`password: 12345678` read as a number) is not quoted.
pub(super) fn wrong_type(path: &str, expected: &'static str, got: &Value) -> ConfigError {
    let key = path.rsplit('.').next().unwrap_or(path);
    ConfigError::WrongType {
        path: path.to_owned(),
        expected,
        got: if is_secret_key(key) {
            REDACTED.to_owned()
        } else {
            render(got)
        },
    }
}

pub(super) fn invalid(path: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The typed readers below take `(value, path)` as returned by
/// [`Section::get`] and return `None` when the key is absent.
pub(super) type At<'a> = (Option<&'a Value>, String);

pub(super) fn string((value, path): At<'_>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(&path, "a string", other)),
    }
}

pub(super) fn required(
    (value, path): At<'_>,
    context: &'static str,
) -> Result<String, ConfigError> {
    match string((value, path.clone()))? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ConfigError::Missing { path, context }),
    }
}

/// A boolean, accepting the YAML 1.1 words PyYAML reads as booleans.
pub(super) fn boolean((value, path): At<'_>) -> Result<Option<bool>, ConfigError> {
    const EXPECTED: &str = "a boolean (true/false, yes/no, on/off)";
    match value {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(Some(true)),
            "false" | "no" | "n" | "off" => Ok(Some(false)),
            _ => Err(wrong_type(&path, EXPECTED, &Value::String(s.clone()))),
        },
        Some(other) => Err(wrong_type(&path, EXPECTED, other)),
    }
}

/// A non-negative whole number.
pub(super) fn whole((value, path): At<'_>) -> Result<Option<(u64, String)>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(|u| (u, path))),
        Some(other) => Err(wrong_type(&path, "a whole number", other)),
    }
}

/// A count of at least one (sizes, limits, threads).
pub(super) fn count(at: At<'_>) -> Result<Option<usize>, ConfigError> {
    match whole(at)? {
        None => Ok(None),
        Some((n, path)) => match usize::try_from(n) {
            Ok(n) if n > 0 => Ok(Some(n)),
            Ok(_) => Err(invalid(&path, "must be at least 1")),
            Err(_) => Err(invalid(&path, "is too large")),
        },
    }
}

pub(super) fn port(at: At<'_>) -> Result<Option<u16>, ConfigError> {
    match whole(at)? {
        None => Ok(None),
        Some((n, path)) => match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(invalid(&path, &format!("port {n} out of range 1..65535"))),
        },
    }
}

/// Any finite number, integer or float.
pub(super) fn number((value, path): At<'_>) -> Result<Option<f64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64().filter(|f| f.is_finite()) {
            Some(f) => Ok(Some(f)),
            None => Err(wrong_type(
                &path,
                "a finite number",
                &Value::Number(n.clone()),
            )),
        },
        Some(other) => Err(wrong_type(&path, "a number", other)),
    }
}

/// A duration in seconds (`4`, `0.5`); zero only where `allow_zero`.
pub(super) fn seconds(
    (value, path): At<'_>,
    allow_zero: bool,
) -> Result<Option<Duration>, ConfigError> {
    let secs = match value {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()),
        Some(_) => None,
    };
    let Some(secs) = secs else {
        let got = value.map(render).unwrap_or_default();
        return Err(ConfigError::WrongType {
            path,
            expected: "a number of seconds",
            got,
        });
    };
    if secs < 0.0 || (secs == 0.0 && !allow_zero) {
        let bound = if allow_zero {
            "negative"
        } else {
            "zero or negative"
        };
        return Err(invalid(&path, &format!("must not be {bound}, got {secs}")));
    }
    match Duration::try_from_secs_f64(secs) {
        // A positive value below a nanosecond would silently become zero.
        Ok(d) if d.is_zero() && !allow_zero => Err(invalid(&path, "is below one nanosecond")),
        Ok(d) => Ok(Some(d)),
        Err(_) => Err(invalid(&path, "is too large")),
    }
}

/// Unix permission bits. PyYAML reads `0666` as octal; serde_yaml leaves
/// it a string, so strings of digits are read as octal (like chmod), with
/// an optional `0o`. Numbers are taken as they are (`438`, `0o666`).
pub(super) fn mode((value, path): At<'_>) -> Result<Option<u32>, ConfigError> {
    let bits = match value {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().and_then(|u| u32::try_from(u).ok()),
        Some(Value::String(s)) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                None
            } else {
                u32::from_str_radix(digits, 8).ok()
            }
        }
        Some(_) => None,
    };
    match bits {
        Some(b) if b <= 0o7777 => Ok(Some(b)),
        Some(b) => Err(invalid(&path, &format!("permissions {b:o} exceed 7777"))),
        None => Err(wrong_type(
            &path,
            "octal permissions such as 0666",
            value.unwrap_or(&Value::Null),
        )),
    }
}

/// `log_format`: `text` or `json` (`cli::LogFormat`, as `--log-format`).
pub(super) fn log_format(at: At<'_>) -> Result<Option<crate::cli::LogFormat>, ConfigError> {
    let path = at.1.clone();
    match string(at)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|reason| invalid(&path, reason)),
    }
}

/// A nameserver: `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`; port 53 by default.
pub(super) fn nameserver(value: &Value, path: &str) -> Result<SocketAddr, ConfigError> {
    const EXPECTED: &str = "a nameserver address such as 127.0.0.1, ::1 or [::1]:5353";
    let Value::String(text) = value else {
        return Err(wrong_type(path, EXPECTED, value));
    };
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            bare.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .ok_or_else(|| wrong_type(path, EXPECTED, value))
}

/// `sentinels`: a non-empty list of `[host, port]` pairs, as redis-py's
/// `Sentinel` takes them.
pub(super) fn sentinel_list((value, path): At<'_>) -> Result<Vec<(String, u16)>, ConfigError> {
    const EXPECTED: &str = "a [host, port] pair";
    let items = match value {
        None => {
            return Err(ConfigError::Missing {
                path,
                context: "for the redis_sentinel cache",
            })
        }
        Some(Value::Sequence(items)) if !items.is_empty() => items,
        Some(other) => return Err(wrong_type(&path, "a list of [host, port] pairs", other)),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{path}[{i}]");
            let Value::Sequence(pair) = item else {
                return Err(wrong_type(&at, EXPECTED, item));
            };
            match pair.as_slice() {
                [Value::String(host), port_value] if !host.is_empty() => {
                    match port((Some(port_value), format!("{at}[1]")))? {
                        Some(p) => Ok((host.clone(), p)),
                        None => Err(wrong_type(&at, EXPECTED, item)),
                    }
                }
                _ => Err(wrong_type(&at, EXPECTED, item)),
            }
        })
        .collect()
}

/// A string (split at commas) or a list of strings: asyncpg's `host`.
pub(super) fn string_or_list((value, path): At<'_>) -> Result<Vec<String>, ConfigError> {
    const EXPECTED: &str = "a string or a list of strings";
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err(wrong_type(&format!("{path}[{i}]"), "a string", other)),
            })
            .collect(),
        Some(other) => Err(wrong_type(&path, EXPECTED, other)),
    }
}

/// A port or a list of ports: asyncpg's `port`.
pub(super) fn port_or_list((value, path): At<'_>) -> Result<Vec<u16>, ConfigError> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{path}[{i}]");
                port((Some(item), at.clone()))?.ok_or_else(|| wrong_type(&at, "a port", item))
            })
            .collect(),
        Some(one) => Ok(port((Some(one), path))?.into_iter().collect()),
    }
}
