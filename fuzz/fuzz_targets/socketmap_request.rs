//! Socketmap requests: the per-connection reader never panics and stops
//! after its one fatal reply.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::socketmap::{parse_request, Event, RequestReader};

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
    let mut reader = RequestReader::new(10_000);
    reader.push(data);
    let mut fatal = 0;
    while let Some(event) = reader.next_event() {
        if let Event::Fatal(reply) = event {
            assert!(reply.payload().len() <= 100_000);
            fatal += 1;
        }
    }
    assert!(fatal <= 1);
});
