//! Socketmap requests: the per-connection state machine never panics,
//! answers every request it hands out, and emits at most one PERM.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::socketmap::{parse_request, Connection, Reply};

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
    let mut conn = Connection::new(10_000, 64);
    for chunk in data.chunks(7) {
        conn.handle_input(chunk);
        while let Some((seq, _)) = conn.poll_request() {
            conn.handle_reply(seq, Reply::NotFound);
        }
    }
    conn.handle_end_of_input();
    let out = String::from_utf8_lossy(conn.transmit()).into_owned();
    assert!(out.matches("PERM ").count() <= 1);
    conn.handle_written(conn.transmit().len());
    assert!(conn.is_finished());
});
