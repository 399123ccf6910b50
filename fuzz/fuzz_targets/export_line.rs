//! Export lines (`GET /cache`, `POST /cache`, `--cache import`): any text
//! gives an entry or an error, never a panic; an entry read back is written
//! out as a line that reads back to the same policy, and writing is stable
//! from then on (the first write may lowercase `mx` in the policy's lines,
//! as the `mx` list already is).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::service::{export_line, parse_export_line};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((domain, entry)) = parse_export_line(text) {
        let line = export_line(&domain, &entry);
        let (d2, e2) = parse_export_line(&line).expect("an exported line reads back");
        assert_eq!(d2, domain);
        assert_eq!(e2.policy_id, entry.policy_id);
        assert_eq!(
            (e2.policy.mode, e2.policy.max_age, &e2.policy.mx),
            (entry.policy.mode, entry.policy.max_age, &entry.policy.mx)
        );
        let again = export_line(&d2, &e2);
        let (d3, e3) = parse_export_line(&again).expect("a rewritten line reads back");
        assert_eq!(export_line(&d3, &e3), again);
    }
});
