//! The serialised form of policies and entries shared with the Python
//! original (its `pol_body` JSON object; times as float Unix seconds, which
//! is what Python's `time.time()` writes and what keeps milliseconds).

use serde_json::{json, Value};

use super::entry::CacheEntry;
use crate::policy::{Mode, Policy, MAX_AGE_CAP};

/// Why a serialised cache record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CacheFormatError {
    /// The text is not JSON.
    #[error("cache record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not an object.
    #[error("cache record is not a JSON object")]
    NotObject,
    /// A required field is missing or has the wrong type.
    #[error("cache record field `{0}` is missing or malformed")]
    Field(&'static str),
    /// The policy's `version` is not `STSv1` (RFC 8461 §3.2).
    #[error("cached policy has version {0:?}, expected STSv1")]
    Version(String),
}

fn policy_value(policy: &Policy) -> Value {
    json!({
        "version": "STSv1",
        "mode": policy.mode.as_str(),
        "max_age": policy.max_age,
        "mx": policy.mx,
        "lines": policy.lines,
    })
}

/// Serialise a policy as the Python original's `pol_body` JSON object
/// (`version`, `mode`, `max_age`, `mx`) plus our `lines` key holding the
/// published policy lines (RFC 8461 §3.2; RFC 8460 §4.4 `policy_string`).
pub fn policy_to_json(policy: &Policy) -> String {
    policy_value(policy).to_string()
}

/// Read a seconds value leniently: Python may write an int, a float (from
/// `time.time()`) or, in old records, a numeric string.
fn as_secs(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // Truncation is intended; `as` saturates, never panics.
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Read a Unix time in seconds (integer, float or numeric string, as Python
/// writes it) as milliseconds.
pub fn secs_to_millis(v: &Value) -> Option<u64> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    f64_secs_to_millis(secs)
}

/// Float Unix seconds to milliseconds; `None` for negative or not finite.
pub fn f64_secs_to_millis(secs: f64) -> Option<u64> {
    // `as` saturates, never panics.
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64)
}

/// Milliseconds as float Unix seconds, the form Python reads.
pub fn millis_to_f64_secs(ms: u64) -> f64 {
    // Exact for any wall clock of this era (well under 2^53 ms).
    ms as f64 / 1000.0
}

fn string_list(v: &Value, field: &'static str) -> Result<Vec<String>, CacheFormatError> {
    let items = v.as_array().ok_or(CacheFormatError::Field(field))?;
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or(CacheFormatError::Field(field))
        })
        .collect()
}

fn policy_from_value(v: &Value) -> Result<Policy, CacheFormatError> {
    let obj = v.as_object().ok_or(CacheFormatError::NotObject)?;
    let version = obj
        .get("version")
        .and_then(Value::as_str)
        .ok_or(CacheFormatError::Field("version"))?;
    if version != "STSv1" {
        return Err(CacheFormatError::Version(version.to_owned()));
    }
    let mode = match obj
        .get("mode")
        .and_then(Value::as_str)
        .map(|m| m.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        _ => return Err(CacheFormatError::Field("mode")),
    };
    let published_max_age = obj
        .get("max_age")
        .and_then(as_secs)
        .ok_or(CacheFormatError::Field("max_age"))?;
    // A `none` policy may have no mx at all (RFC 8461 §3.2).
    let mx: Vec<String> = match obj.get("mx") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => string_list(v, "mx")?
            .into_iter()
            .map(|m| m.to_ascii_lowercase())
            .collect(),
    };
    let lines = match obj.get("lines") {
        Some(v) => string_list(v, "lines")?,
        // Python records have no `lines`: rebuild the policy as published.
        None => {
            let mut lines = vec![
                "version: STSv1".to_owned(),
                format!("mode: {}", mode.as_str()),
                format!("max_age: {published_max_age}"),
            ];
            lines.extend(mx.iter().map(|m| format!("mx: {m}")));
            lines
        }
    };
    Ok(Policy {
        mode,
        max_age: published_max_age.min(MAX_AGE_CAP),
        mx,
        lines,
    })
}

/// Parse a `pol_body` JSON object written by [`policy_to_json`] or by the
/// Python original (no `lines` key; extra keys ignored; `max_age` capped to
/// [`MAX_AGE_CAP`] as RFC 8461 §3.2 allows).
pub fn policy_from_json(text: &str) -> Result<Policy, CacheFormatError> {
    policy_from_value(&serde_json::from_str(text)?)
}

/// Serialise a whole entry for the Redis backend:
/// `{"ts": checked_at, "pol_id": .., "pol_body": {..}, "fetched_at": ..}`,
/// times in float Unix seconds.
pub fn entry_to_json(entry: &CacheEntry) -> String {
    json!({
        "ts": millis_to_f64_secs(entry.checked_at_ms),
        "pol_id": entry.policy_id,
        "pol_body": policy_value(&entry.policy),
        "fetched_at": millis_to_f64_secs(entry.fetched_at_ms),
    })
    .to_string()
}

/// Parse an entry written by [`entry_to_json`]. A record without
/// `fetched_at` (written by the Python original, which only kept `ts`) is
/// taken as fetched at `ts`; `pol_body` may also be a JSON string.
pub fn entry_from_json(text: &str) -> Result<CacheEntry, CacheFormatError> {
    let value: Value = serde_json::from_str(text)?;
    let obj = value.as_object().ok_or(CacheFormatError::NotObject)?;
    let checked_at_ms = obj
        .get("ts")
        .and_then(secs_to_millis)
        .ok_or(CacheFormatError::Field("ts"))?;
    let policy_id = obj
        .get("pol_id")
        .and_then(Value::as_str)
        .ok_or(CacheFormatError::Field("pol_id"))?
        .to_owned();
    let policy = match obj.get("pol_body") {
        Some(Value::String(s)) => policy_from_json(s)?,
        Some(v) => policy_from_value(v)?,
        None => return Err(CacheFormatError::Field("pol_body")),
    };
    let fetched_at_ms = match obj.get("fetched_at") {
        None | Some(Value::Null) => checked_at_ms,
        Some(v) => secs_to_millis(v).ok_or(CacheFormatError::Field("fetched_at"))?,
    };
    Ok(CacheEntry {
        policy_id,
        policy,
        fetched_at_ms,
        checked_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_age: u64) -> Policy {
        Policy {
            mode: Mode::Enforce,
            max_age,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                format!("max_age: {max_age}"),
                "mx: mail.example.com".into(),
                "mx: *.example.net".into(),
            ],
        }
    }

    fn entry(fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
        CacheEntry {
            policy_id: "20160831085700Z".into(),
            policy: policy(86400),
            fetched_at_ms,
            checked_at_ms,
        }
    }

    #[test]
    fn policy_json_round_trip() {
        let p = policy(604800);
        let text = policy_to_json(&p);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], "STSv1");
        assert_eq!(v["mode"], "enforce");
        assert_eq!(v["max_age"], 604800);
        assert_eq!(v["mx"], json!(["mail.example.com", "*.example.net"]));
        assert_eq!(policy_from_json(&text).unwrap(), p);
    }

    #[test]
    fn python_pol_body_is_read() {
        let text = r#"{"mx": ["mail.example.com"], "version": "STSv1", "mode": "enforce", "max_age": 86400}"#;
        let p = policy_from_json(text).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.mx, vec!["mail.example.com".to_owned()]);
        assert_eq!(
            p.lines,
            vec![
                "version: STSv1",
                "mode: enforce",
                "max_age: 86400",
                "mx: mail.example.com"
            ]
        );
    }

    #[test]
    fn python_variants_tolerated() {
        // none without mx, extra keys, max_age as string, over the cap.
        let p = policy_from_json(
            r#"{"version": "STSv1", "mode": "none", "max_age": "99999999", "x-extra": 1}"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::None);
        assert_eq!(p.max_age, MAX_AGE_CAP);
        assert!(p.mx.is_empty());
        assert_eq!(p.lines[2], "max_age: 99999999");
    }

    #[test]
    fn bad_policy_json_is_an_error() {
        assert!(matches!(
            policy_from_json("nope"),
            Err(CacheFormatError::Json(_))
        ));
        assert!(matches!(
            policy_from_json("[1]"),
            Err(CacheFormatError::NotObject)
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv2","mode":"enforce","max_age":1,"mx":[]}"#),
            Err(CacheFormatError::Version(_))
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv1","mode":"bogus","max_age":1,"mx":[]}"#),
            Err(CacheFormatError::Field("mode"))
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv1","mode":"enforce","max_age":-1,"mx":[]}"#),
            Err(CacheFormatError::Field("max_age"))
        ));
        assert!(matches!(
            policy_from_json(r#"{"version":"STSv1","mode":"enforce","max_age":1,"mx":[3]}"#),
            Err(CacheFormatError::Field("mx"))
        ));
    }

    #[test]
    fn entry_json_round_trip() {
        let e = entry(1_700_000_000_001, 1_700_000_005_250);
        let text = entry_to_json(&e);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ts"], 1_700_000_005.25);
        assert_eq!(v["fetched_at"], 1_700_000_000.001);
        assert_eq!(v["pol_id"], "20160831085700Z");
        assert_eq!(entry_from_json(&text).unwrap(), e);
    }

    #[test]
    fn entry_without_fetched_at_uses_ts() {
        let text = r#"{"ts": 1700000000.75, "pol_id": "abc", "pol_body":
            {"mx": ["mail.example.com"], "version": "STSv1", "mode": "testing", "max_age": 60}}"#;
        let e = entry_from_json(text).unwrap();
        assert_eq!(e.checked_at_ms, 1_700_000_000_750);
        assert_eq!(e.fetched_at_ms, 1_700_000_000_750);
        // Python's integer seconds are read as such.
        let text = r#"{"ts": 1700000000, "pol_id": "abc", "pol_body":
            {"mx": ["m.example"], "version": "STSv1", "mode": "enforce", "max_age": 60}}"#;
        assert_eq!(entry_from_json(text).unwrap().checked_at_ms, 1_700_000_000_000);
        assert_eq!(e.policy.mode, Mode::Testing);
        // pol_body as a JSON string is accepted too.
        let text = r#"{"ts": 5, "pol_id": "abc", "pol_body":
            "{\"version\": \"STSv1\", \"mode\": \"none\", \"max_age\": 60}"}"#;
        assert_eq!(entry_from_json(text).unwrap().policy.mode, Mode::None);
        assert!(matches!(
            entry_from_json(r#"{"ts": 5, "pol_body": {}}"#),
            Err(CacheFormatError::Field("pol_id"))
        ));
    }

    proptest! {
        #[test]
        fn policy_from_json_never_panics(s in ".*") {
            let _ = policy_from_json(&s);
            let _ = entry_from_json(&s);
        }

        #[test]
        fn entry_round_trips(
            mode in prop_oneof![Just(Mode::Enforce), Just(Mode::Testing), Just(Mode::None)],
            max_age in 0..=MAX_AGE_CAP,
            mx in proptest::collection::vec("[a-z0-9.*-]{1,20}", 0..4),
            lines in proptest::collection::vec(".{0,30}", 0..6),
            id in "[A-Za-z0-9]{1,32}",
            fetched_at_ms in 0u64..1u64 << 50,
            checked_at_ms in 0u64..1u64 << 50,
        ) {
            let e = CacheEntry {
                policy_id: id,
                policy: Policy { mode, max_age, mx, lines },
                fetched_at_ms,
                checked_at_ms,
            };
            prop_assert_eq!(entry_from_json(&entry_to_json(&e)).unwrap(), e.clone());
            prop_assert_eq!(policy_from_json(&policy_to_json(&e.policy)).unwrap(), e.policy);
        }
    }
}
