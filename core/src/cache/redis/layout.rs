//! One domain's record in the Python original's Redis layout (README.md
//! "Caches shared with the Python original"): a sorted set under the
//! domain's key whose one member is 16 seed bytes followed by the JSON
//! `[pol_id, pol_body]`, scored with the last check time in float Unix
//! seconds.
//!
//! Python fills the seed with `uuid4()` bytes and reads past them. Ours
//! carry the fetch time instead (RFC 8461 §5.1: a policy's lifetime counts
//! from its fetch), behind a marker no version-4 UUID can start with (its
//! seventh byte is `0x4_`, ours is `0x00`), so Python never sees it and we
//! tell its members from ours.

use serde_json::Value;

use crate::cache::format::{f64_secs_to_millis, policy_from_body, policy_to_json, OrderedObject};
use crate::cache::{CacheEntry, CacheFormatError};

/// Length of the seed in front of every member's JSON.
pub const SEED_LEN: usize = 16;

/// The first half of our seeds: `MTASTS`, a zero byte (never the seventh
/// byte of a UUIDv4) and the layout version 1; the second half is the fetch
/// time in Unix milliseconds, big-endian.
pub const SEED_MARKER: [u8; 8] = *b"MTASTS\x00\x01";

/// The sorted-set member of `entry`: our seed (marker and fetch time), then
/// `[pol_id, pol_body]` as JSON.
pub fn encode_member(entry: &CacheEntry) -> Vec<u8> {
    let json = format!(
        "[{},{}]",
        Value::from(entry.policy_id.as_str()),
        policy_to_json(&entry.policy)
    );
    let mut member = Vec::with_capacity(SEED_LEN + json.len());
    member.extend_from_slice(&SEED_MARKER);
    member.extend_from_slice(&entry.fetched_at_ms.to_be_bytes());
    member.extend_from_slice(json.as_bytes());
    member
}

/// The fetch time our seed carries, or `None` for a seed of the Python
/// original (random bytes).
pub fn seed_fetched_at(member: &[u8]) -> Option<u64> {
    let marker = member.get(..SEED_MARKER.len())?;
    let time = member.get(SEED_MARKER.len()..SEED_LEN)?;
    let time: [u8; 8] = time.try_into().ok()?;
    (marker == SEED_MARKER).then(|| u64::from_be_bytes(time))
}

/// The entry of a member and its score (the check time, float Unix seconds
/// as text). A member written by the Python original counts as fetched at
/// its check time, the only time it keeps.
pub fn decode_member(member: &[u8], score: &str) -> Result<CacheEntry, CacheFormatError> {
    let checked_at_ms = score
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(f64_secs_to_millis)
        .ok_or(CacheFormatError::Field("score"))?;
    let json = member
        .get(SEED_LEN..)
        .ok_or(CacheFormatError::Field("member"))?;
    let (policy_id, body): (String, OrderedObject) = serde_json::from_slice(json)?;
    Ok(CacheEntry {
        policy_id,
        policy: policy_from_body(&body)?,
        fetched_at_ms: seed_fetched_at(member).unwrap_or(checked_at_ms),
        checked_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Policy};
    use proptest::prelude::*;

    fn entry(fetched_at_ms: u64, checked_at_ms: u64) -> CacheEntry {
        CacheEntry {
            policy_id: "20240101".into(),
            policy: Policy {
                mode: Mode::Enforce,
                max_age: 86400,
                mx: vec!["mx.example.com".into()],
                lines: vec![
                    "version: STSv1".into(),
                    "mode: enforce".into(),
                    "mx: mx.example.com".into(),
                    "max_age: 86400".into(),
                ]
                .into(),
            },
            fetched_at_ms,
            checked_at_ms,
        }
    }

    #[test]
    fn member_round_trip_keeps_both_times() {
        let e = entry(1_700_000_000_123, 1_700_000_100_456);
        let member = encode_member(&e);
        assert_eq!(&member[..8], b"MTASTS\x00\x01");
        // What Python reads past the seed.
        let json: Value = serde_json::from_slice(&member[SEED_LEN..]).unwrap();
        assert_eq!(json[0], "20240101");
        assert_eq!(json[1]["mx"], serde_json::json!(["mx.example.com"]));
        assert_eq!(json[1]["max_age"], 86400);
        assert_eq!(json[1].as_object().unwrap().len(), 4);
        assert_eq!(decode_member(&member, "1700000100.456").unwrap(), e);
    }

    #[test]
    fn python_member_counts_as_fetched_at_its_score() {
        // A UUIDv4 seed (seventh byte 0x4_), then Python's json.dumps.
        let mut member = vec![0x9a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x4c, 0x07];
        member.extend_from_slice(&[0x88, 9, 10, 11, 12, 13, 14, 15]);
        member.extend_from_slice(
            br#"["py1", {"mx": ["mx.example.com"], "version": "STSv1", "mode": "enforce", "max_age": 86400}]"#,
        );
        assert_eq!(seed_fetched_at(&member), None);
        let e = decode_member(&member, "1700000000").unwrap();
        assert_eq!(e.policy_id, "py1");
        assert_eq!(
            (e.fetched_at_ms, e.checked_at_ms),
            (1_700_000_000_000, 1_700_000_000_000)
        );
        assert_eq!(e.policy.mx, ["mx.example.com"]);
    }

    #[test]
    fn bad_members_are_errors() {
        assert!(decode_member(b"short", "1").is_err());
        let mut m = encode_member(&entry(1, 1));
        assert!(decode_member(&m, "nan").is_err());
        assert!(decode_member(&m, "-5").is_err());
        m.truncate(SEED_LEN + 3);
        assert!(decode_member(&m, "1").is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(member in proptest::collection::vec(any::<u8>(), 0..64), score in "\\PC{0,12}") {
            let _ = decode_member(&member, &score);
        }

        #[test]
        fn times_round_trip(fetched in 0u64..1 << 50, checked in 0u64..1 << 50) {
            let e = entry(fetched, checked);
            let score = crate::cache::millis_to_f64_secs(checked).to_string();
            prop_assert_eq!(decode_member(&encode_member(&e), &score).unwrap(), e);
        }
    }
}
