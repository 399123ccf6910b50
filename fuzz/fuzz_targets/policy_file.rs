//! Policy files: never panics; an accepted policy has a capped max_age and
//! mx patterns unless its mode is none.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::policy::{parse_policy, Mode, MAX_AGE_CAP};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = parse_policy(data) {
        assert!(policy.max_age <= MAX_AGE_CAP);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
    }
});
