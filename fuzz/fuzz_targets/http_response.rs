//! HTTP responses: the incremental parser never panics, never returns a
//! body over the cap, and gives the same result however the input is split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::http::{Progress, ResponseParser, MAX_POLICY_BODY};

fn run(data: &[u8], split: usize) -> Option<Vec<u8>> {
    let mut parser = ResponseParser::new(MAX_POLICY_BODY);
    for chunk in data.chunks(split) {
        match parser.feed(chunk) {
            Ok(Progress::Partial) => {}
            Ok(Progress::Complete(body)) => return Some(body),
            Err(_) => return None,
        }
    }
    parser.finish().ok()
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len().max(1));
    if let Some(body) = &whole {
        assert!(body.len() <= MAX_POLICY_BODY);
    }
    let split = data.first().map(|b| usize::from(*b % 16) + 1).unwrap_or(1);
    assert_eq!(run(data, split), whole);
});
