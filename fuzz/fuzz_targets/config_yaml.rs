//! Config files: arbitrary text gives a config or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_yaml(text);
    }
});
