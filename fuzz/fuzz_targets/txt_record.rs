//! `_mta-sts` TXT records: never panics; an accepted id is 1 to 32
//! letters and digits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::txt::{parse_sts_record, parse_sts_records};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = parse_sts_record(data) {
        assert!((1..=32).contains(&record.id.len()));
        assert!(record.id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    let records: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let _ = parse_sts_records(&records);
});
