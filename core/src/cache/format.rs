//! The serialised form of policies shared with the Python original: its
//! `pol_body` JSON object, exactly as its policy parser builds it (README.md
//! "Caches shared with the Python original"); times as float Unix seconds,
//! which is what Python's `time.time()` writes and what keeps milliseconds.
//!
//! The Python original answers TLSRPT requests with one `policy_string` per
//! `pol_body` key, so `pol_body` carries nothing of ours: its keys are the
//! policy's own, in published order, and the policy lines (RFC 8460 §4.4)
//! are rebuilt from them when read.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::policy::{parse_mx, require_mx, Mode, Policy, PolicyError, MAX_AGE_CAP};

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
    /// The policy breaks a rule a fetched one is held to (RFC 8461 §3.2):
    /// its mx patterns reach the Postfix reply, and a store may have been
    /// written by another program.
    #[error("cached {0}")]
    Policy(#[from] PolicyError),
}

/// A JSON object with its keys in document order (serde_json's map sorts
/// them), so the policy lines can be rebuilt in published order.
#[derive(Debug, Default)]
pub struct OrderedObject(pub Vec<(String, Value)>);

impl OrderedObject {
    /// The value of `key` (the last one, as Python's `json.loads` keeps).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = map.next_entry::<String, Value>()? {
                    items.push(item);
                }
                Ok(OrderedObject(items))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

/// The `pol_body` keys of `policy` in published order: each key where it
/// first appears (every `mx` line joins the one `mx` list, as the Python
/// parser collects them), `max_age` as a number, every other value as the
/// published text; `version`, `mode`, `max_age` and `mx` are always there.
fn body_items(policy: &Policy) -> Vec<(String, Value)> {
    let mut items: Vec<(String, Value)> = Vec::new();
    let value_of = |key: &str, text: &str| match key {
        "mx" => Value::from(policy.mx.clone()),
        "max_age" => Value::from(policy.max_age),
        "mode" => Value::from(policy.mode.as_str()),
        _ => Value::from(text),
    };
    for line in &policy.lines {
        let Some((key, text)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim_ascii();
        if key.is_empty() || items.iter().any(|(k, _)| k == key) {
            continue;
        }
        items.push((key.to_owned(), value_of(key, text.trim_ascii())));
    }
    for key in ["version", "mode", "max_age", "mx"] {
        if !items.iter().any(|(k, _)| k == key) {
            items.push((key.to_owned(), value_of(key, "STSv1")));
        }
    }
    items
}

/// Serialise a policy as the `pol_body` JSON object the Python original's
/// parser would have built from it (`mx` a list, `max_age` a number, other
/// keys as published), keys in published order (RFC 8461 §3.2).
pub fn policy_to_json(policy: &Policy) -> String {
    let fields: Vec<String> = body_items(policy)
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
        .collect();
    format!("{{{}}}", fields.join(","))
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

/// A `pol_body` value as policy-line text: strings as they are, anything
/// else as its JSON.
fn line_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The policy lines rebuilt from `pol_body` in key order: `key: value`,
/// one `mx: ..` line per mx pattern (RFC 8460 §4.4 `policy_string`).
fn rebuilt_lines(body: &OrderedObject) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, value) in &body.0 {
        let key = key.trim_ascii();
        if key.is_empty() || key == "lines" {
            continue;
        }
        match (key, value) {
            ("mx", Value::Array(items)) => {
                lines.extend(items.iter().map(|m| format!("mx: {}", line_text(m))));
            }
            _ => lines.push(format!("{key}: {}", line_text(value))),
        }
    }
    lines
}

/// The policy of a `pol_body` object (ours or the Python original's).
pub fn policy_from_body(body: &OrderedObject) -> Result<Policy, CacheFormatError> {
    let version = body
        .get("version")
        .and_then(Value::as_str)
        .ok_or(CacheFormatError::Field("version"))?;
    if version.trim() != "STSv1" {
        return Err(CacheFormatError::Version(version.to_owned()));
    }
    let mode = match body
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
    let published_max_age = body
        .get("max_age")
        .and_then(as_secs)
        .ok_or(CacheFormatError::Field("max_age"))?;
    // A `none` policy may have no mx at all (RFC 8461 §3.2).
    let mx: Vec<String> = match body.get("mx") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => string_list(v, "mx")?
            .iter()
            .map(|m| parse_mx(m.trim()))
            .collect::<Result<_, _>>()?,
    };
    require_mx(mode, &mx)?;
    // Records of our earlier releases kept the lines under `lines`.
    let lines = match body.get("lines") {
        Some(v) => string_list(v, "lines")?,
        None => rebuilt_lines(body),
    };
    Ok(Policy {
        mode,
        max_age: published_max_age.min(MAX_AGE_CAP),
        mx,
        lines: lines.into(),
    })
}

/// Parse a `pol_body` JSON object written by [`policy_to_json`] or by the
/// Python original (extra keys kept as policy lines; `max_age` capped to
/// [`MAX_AGE_CAP`] as RFC 8461 §3.2 allows).
pub fn policy_from_json(text: &str) -> Result<Policy, CacheFormatError> {
    match serde_json::from_str::<OrderedObject>(text) {
        Ok(body) => policy_from_body(&body),
        // Valid JSON of another kind, or not JSON at all.
        Err(e) => match serde_json::from_str::<Value>(text) {
            Ok(_) => Err(CacheFormatError::NotObject),
            Err(_) => Err(CacheFormatError::Json(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn policy(max_age: u64) -> Policy {
        Policy {
            mode: Mode::Enforce,
            max_age,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mail.example.com".into(),
                "mx: *.example.net".into(),
                format!("max_age: {max_age}"),
            ]
            .into(),
        }
    }

    fn keys(text: &str) -> Vec<String> {
        let body: OrderedObject = serde_json::from_str(text).unwrap();
        body.0.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn policy_json_is_pythons_pol_body_in_published_order() {
        let p = policy(604800);
        let text = policy_to_json(&p);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"version": "STSv1", "mode": "enforce",
                   "mx": ["mail.example.com", "*.example.net"], "max_age": 604800})
        );
        assert_eq!(keys(&text), ["version", "mode", "mx", "max_age"]);
        assert_eq!(policy_from_json(&text).unwrap(), p);
    }

    #[test]
    fn extension_keys_are_kept_first_value_wins() {
        let mut p = policy(86400);
        p.lines.push("x-future: something: else");
        p.lines.push("mode: testing");
        let text = policy_to_json(&p);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["x-future"], "something: else");
        assert_eq!(v["mode"], "enforce");
        // The repeated line is lost in the round trip; the rest is exact.
        let back = policy_from_json(&text).unwrap();
        assert!(back.lines.iter().eq(p.lines.iter().take(6)));
    }

    #[test]
    fn policy_without_lines_gets_the_required_keys() {
        let mut p = policy(60);
        p.lines.clear();
        p.mode = Mode::None;
        p.mx.clear();
        let v: Value = serde_json::from_str(&policy_to_json(&p)).unwrap();
        assert_eq!(
            v,
            json!({"version": "STSv1", "mode": "none", "max_age": 60, "mx": []})
        );
    }

    #[test]
    fn python_pol_body_is_read_in_its_order() {
        let text = r#"{"mx": ["mail.example.com"], "version": "STSv1", "mode": "enforce", "max_age": 86400}"#;
        let p = policy_from_json(text).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.mx, vec!["mail.example.com".to_owned()]);
        assert_eq!(
            p.lines,
            vec![
                "mx: mail.example.com",
                "version: STSv1",
                "mode: enforce",
                "max_age: 86400",
            ]
        );
    }

    #[test]
    fn earlier_records_with_lines_are_read() {
        let text = r#"{"version": "STSv1", "mode": "enforce", "max_age": 5,
            "mx": ["a.example"], "lines": ["version: STSv1", "mx: a.example"]}"#;
        assert_eq!(
            policy_from_json(text).unwrap().lines,
            ["version: STSv1", "mx: a.example"]
        );
    }

    #[test]
    fn python_variants_tolerated() {
        // none without mx, extra keys, max_age as string, over the cap, a blank key.
        let p = policy_from_json(
            r#"{"version": "STSv1", "mode": "none", "max_age": "99999999", "x-extra": 1, "": ""}"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::None);
        assert_eq!(p.max_age, MAX_AGE_CAP);
        assert!(p.mx.is_empty());
        assert_eq!(
            p.lines,
            [
                "version: STSv1",
                "mode: none",
                "max_age: 99999999",
                "x-extra: 1"
            ]
        );
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

    /// A stored policy's mx patterns reach the Postfix reply: a store
    /// written by another program cannot put words, braces or U-labels
    /// into it, nor an empty `match=` (RFC 8461 §3.2, the rules of a
    /// fetched policy).
    #[test]
    fn stored_mx_held_to_the_policy_rules() {
        let with_mx = |mode: &str, mx: &str| {
            policy_from_json(&format!(
                r#"{{"version":"STSv1","mode":"{mode}","max_age":1,"mx":{mx}}}"#
            ))
        };
        for bad in [
            r#"["a.example servername=evil"]"#,
            r#"["a.example}"]"#,
            r#"["bücher.example"]"#,
            r#"["a.example:b.example"]"#,
            r#"["192.0.2.1"]"#,
            r#"[""]"#,
        ] {
            assert!(
                matches!(
                    with_mx("enforce", bad),
                    Err(CacheFormatError::Policy(PolicyError::BadMx(_)))
                ),
                "{bad}"
            );
        }
        for mode in ["enforce", "testing"] {
            for empty in ["[]", "null"] {
                assert!(matches!(
                    with_mx(mode, empty),
                    Err(CacheFormatError::Policy(PolicyError::NoMx))
                ));
            }
        }
        let p = with_mx("enforce", r#"[" MAIL.Example.com ", "*.example.net"]"#).unwrap();
        assert_eq!(p.mx, ["mail.example.com", "*.example.net"]);
        assert_eq!(
            CacheFormatError::Policy(PolicyError::NoMx).to_string(),
            "cached policy in enforce or testing mode lists no mx"
        );
    }

    #[test]
    fn seconds_are_read_leniently() {
        assert_eq!(
            secs_to_millis(&json!(1_700_000_000)),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            secs_to_millis(&json!(1_700_000_000.25)),
            Some(1_700_000_000_250)
        );
        assert_eq!(secs_to_millis(&json!(" 5.5 ")), Some(5_500));
        assert_eq!(secs_to_millis(&json!(-1)), None);
        assert_eq!(secs_to_millis(&json!(null)), None);
    }

    proptest! {
        #[test]
        fn policy_from_json_never_panics(s in ".*") {
            let _ = policy_from_json(&s);
        }

        /// Policies whose lines are `key: value` with each key once (mx
        /// lines together) survive the round trip exactly.
        #[test]
        fn canonical_policies_round_trip(
            mode in prop_oneof![Just(Mode::Enforce), Just(Mode::Testing), Just(Mode::None)],
            max_age in 0..=MAX_AGE_CAP,
            mx in proptest::collection::vec("(\\*\\.)?[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{1,10}){1,2}", 1..4),
            ext in proptest::collection::btree_map("x-[a-z]{1,8}", "[a-z0-9]([a-z0-9 :]{0,10}[a-z0-9])?", 0..3),
        ) {
            let mut lines = vec!["version: STSv1".to_owned(), format!("mode: {}", mode.as_str())];
            lines.extend(mx.iter().map(|m| format!("mx: {m}")));
            lines.push(format!("max_age: {max_age}"));
            lines.extend(ext.iter().map(|(k, v)| format!("{k}: {v}")));
            let p = Policy { mode, max_age, mx, lines: lines.into() };
            prop_assert_eq!(policy_from_json(&policy_to_json(&p)).unwrap(), p);
        }
    }
}
