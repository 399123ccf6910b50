//! Key normalisation: never panics; what it accepts is a valid host name
//! and normalises to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::domain::{is_valid_hostname, normalize_key};

fuzz_target!(|data: &[u8]| {
    let Ok(key) = std::str::from_utf8(data) else { return };
    if let Ok(domain) = normalize_key(key) {
        assert!(is_valid_hostname(domain.as_str()));
        assert_eq!(normalize_key(domain.as_str()).ok(), Some(domain));
    }
});
