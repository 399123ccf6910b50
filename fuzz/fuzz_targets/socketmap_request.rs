//! Socketmap requests: the per-connection state machine never panics,
//! answers every request it hands out, and emits at most one PERM.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::config::Limits;
use mta_sts_core::socketmap::{parse_request, Connection, ConnectionLimits, Reply};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
    let now = Instant::now();
    let limits = ConnectionLimits {
        max_request: 10_000,
        max_pending: 64,
        ..ConnectionLimits::from(&Limits::default())
    };
    let mut conn = Connection::new(limits, now);
    let mut out = Vec::new();
    // Answer and write everything the connection gives, as a driver does.
    let pump = move |conn: &mut Connection, out: &mut Vec<u8>| {
        while let Some((seq, _)) = conn.poll_request() {
            conn.handle_reply(seq, Reply::NotFound);
            out.extend_from_slice(conn.transmit());
            conn.handle_written(conn.transmit().len(), now);
        }
        out.extend_from_slice(conn.transmit());
        conn.handle_written(conn.transmit().len(), now);
    };
    for chunk in data.chunks(7) {
        if conn.wants_input() {
            conn.handle_input(chunk, now);
        }
        pump(&mut conn, &mut out);
    }
    conn.handle_end_of_input();
    pump(&mut conn, &mut out);
    assert!(String::from_utf8_lossy(&out).matches("PERM ").count() <= 1);
    assert!(conn.is_finished());
});
