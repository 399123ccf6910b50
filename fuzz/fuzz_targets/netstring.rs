//! Netstring framing: the zero-copy parser and the buffered decoder agree
//! and never panic, whatever the bytes and their split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::netstring::{parse, Decoder, Parsed, DEFAULT_MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| usize::from(*b) + 1).unwrap_or(1);
    let mut decoder = Decoder::new(DEFAULT_MAX_REQUEST);
    for chunk in data.chunks(split) {
        decoder.push(chunk);
        while let Ok(Some(frame)) = decoder.next_frame() {
            assert!(frame.len() <= DEFAULT_MAX_REQUEST);
        }
    }
    if let Ok(Parsed::Complete { payload, consumed }) = parse(data, DEFAULT_MAX_REQUEST) {
        assert!(payload.end < consumed && consumed <= data.len());
    }
});
