//! Administration requests: the sans-IO parser never panics, gives the same
//! result however the input is split, serves only `GET /metrics` on TCP and
//! keeps no body over the limit or outside an import.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::admin::{Command, Listener, Progress, Refusal, RequestParser};

const LIMIT: usize = 4096;

fn run(listener: Listener, data: &[u8], split: usize) -> Result<Progress, Refusal> {
    let mut parser = RequestParser::new(listener, LIMIT);
    for chunk in data.chunks(split) {
        match parser.feed(chunk)? {
            Progress::Partial => {}
            done => return Ok(done),
        }
    }
    Ok(Progress::Partial)
}

fuzz_target!(|data: &[u8]| {
    let (listener, data) = match data.split_first() {
        Some((b, rest)) if b & 1 == 0 => (Listener::Tcp, rest),
        Some((_, rest)) => (Listener::Unix, rest),
        None => return,
    };
    let whole = run(listener, data, data.len().max(1));
    if let Ok(Progress::Complete(request)) = &whole {
        assert!(request.body.len() <= LIMIT);
        assert!(request.body.is_empty() || request.command == Command::Import);
        assert!(listener == Listener::Unix || request.command == Command::Metrics);
    }
    let split = data.first().map(|b| usize::from(*b % 32) + 1).unwrap_or(1);
    assert_eq!(run(listener, data, split), whole);
});
