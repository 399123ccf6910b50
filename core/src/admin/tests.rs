use super::*;
use proptest::prelude::*;

const LIMIT: usize = 1000;

fn parse(listener: Listener, bytes: &[u8]) -> Result<Progress, Refusal> {
    RequestParser::new(listener, LIMIT).feed(bytes)
}

fn command(listener: Listener, head: &str) -> Result<Command, Refusal> {
    match parse(listener, head.as_bytes())? {
        Progress::Complete(r) => Ok(r.command),
        Progress::Partial => panic!("partial: {head:?}"),
    }
}

fn tcp(request_line: &str, host: &str) -> Result<Command, Refusal> {
    command(
        Listener::Tcp,
        &format!("{request_line}\r\nHost: {host}\r\n\r\n"),
    )
}

fn unix(request_line: &str) -> Result<Command, Refusal> {
    command(Listener::Unix, &format!("{request_line}\r\n\r\n"))
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

#[test]
fn tcp_serves_get_metrics_and_nothing_else() {
    assert_eq!(
        tcp("GET /metrics HTTP/1.1", "localhost"),
        Ok(Command::Metrics)
    );
    assert_eq!(
        tcp("GET /metrics?x=1 HTTP/1.0", "127.0.0.1:9461"),
        Ok(Command::Metrics)
    );
    for line in [
        "GET /cache HTTP/1.1",
        "POST /cache HTTP/1.1",
        "DELETE /cache HTTP/1.1",
        "GET /cache/example.com HTTP/1.1",
        "DELETE /cache/example.com HTTP/1.1",
    ] {
        assert_eq!(tcp(line, "localhost"), Err(Refusal::NotOnTcp), "{line}");
    }
    assert_eq!(
        tcp("POST /metrics HTTP/1.1", "localhost"),
        Err(Refusal::MethodNotAllowed)
    );
    assert_eq!(tcp("GET / HTTP/1.1", "localhost"), Err(Refusal::NotFound));
    assert_eq!(Refusal::NotOnTcp.status(), 404);
}

#[test]
fn unix_serves_metrics_and_the_cache() {
    assert_eq!(unix("GET /metrics HTTP/1.1"), Ok(Command::Metrics));
    assert_eq!(unix("GET /cache HTTP/1.1"), Ok(Command::Export));
    assert_eq!(unix("DELETE /cache HTTP/1.1"), Ok(Command::PurgeAll));
    assert_eq!(
        unix("GET /cache/Example.COM HTTP/1.1"),
        Ok(Command::Show(d("example.com")))
    );
    assert_eq!(
        unix("DELETE /cache/example.com HTTP/1.1"),
        Ok(Command::Purge(d("example.com")))
    );
    assert_eq!(unix("PUT /cache HTTP/1.1"), Err(Refusal::MethodNotAllowed));
    assert_eq!(
        unix("POST /cache/example.com HTTP/1.1"),
        Err(Refusal::MethodNotAllowed)
    );
    assert_eq!(unix("GET /cache/not..a HTTP/1.1"), Err(Refusal::BadDomain));
    assert_eq!(unix("GET /cachex HTTP/1.1"), Err(Refusal::NotFound));
    // No Host needed on the socket: only its file mode decides who connects.
    assert_eq!(unix("GET /cache HTTP/1.0"), Ok(Command::Export));
}

#[test]
fn tcp_host_must_name_loopback() {
    for host in [
        "localhost",
        "LOCALHOST:9461",
        "localhost.",
        "127.0.0.1",
        "127.1.2.3:80",
        "[::1]",
        "[::1]:9461",
        "localhost:",
    ] {
        assert_eq!(
            tcp("GET /metrics HTTP/1.1", host),
            Ok(Command::Metrics),
            "{host}"
        );
    }
    for host in [
        "evil.example",
        "evil.example:9461",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.0.0.1",
        "0.0.0.0",
        "[::2]",
        "[::1",
        "[::1]x",
        "::1",
        "localhost:99999x",
        "localhost:1:2",
        "",
    ] {
        assert_eq!(
            tcp("GET /metrics HTTP/1.1", host),
            Err(Refusal::ForeignHost),
            "{host}"
        );
    }
    assert_eq!(Refusal::ForeignHost.status(), 421);
    let no_host = command(Listener::Tcp, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(no_host, Err(Refusal::Host));
    let two = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n";
    assert_eq!(command(Listener::Tcp, two), Err(Refusal::Host));
}

#[test]
fn bodies_only_for_imports_and_within_the_limit() {
    let import = |len: usize, body: &str| {
        RequestParser::new(Listener::Unix, LIMIT)
            .feed(format!("POST /cache HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{body}").as_bytes())
    };
    assert_eq!(
        import(3, "abcdef"),
        Ok(Progress::Complete(Request {
            command: Command::Import,
            body: b"abc".to_vec()
        }))
    );
    assert_eq!(import(5, "ab"), Ok(Progress::Partial));
    assert_eq!(import(LIMIT, ""), Ok(Progress::Partial));
    assert_eq!(import(LIMIT + 1, ""), Err(Refusal::BodyTooLarge));
    assert_eq!(unix("POST /cache HTTP/1.1"), Err(Refusal::LengthRequired));
    let chunked = "POST /cache HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        command(Listener::Unix, chunked),
        Err(Refusal::TransferEncoding)
    );
    // No body at all on TCP, nor on other commands.
    let tcp_body = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx";
    assert_eq!(command(Listener::Tcp, tcp_body), Err(Refusal::BodyTooLarge));
    let zero = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(command(Listener::Tcp, zero), Ok(Command::Metrics));
    let delete = "DELETE /cache HTTP/1.1\r\nContent-Length: 2\r\n\r\nxx";
    assert_eq!(command(Listener::Unix, delete), Err(Refusal::BodyTooLarge));
    for bad in ["-1", "1x", "", "+1", "99999999999999999999999999"] {
        let head = format!("POST /cache HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            command(Listener::Unix, &head),
            Err(Refusal::Malformed),
            "{bad}"
        );
    }
    let twice = "POST /cache HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx";
    assert_eq!(command(Listener::Unix, twice), Err(Refusal::Malformed));
}

#[test]
fn the_head_is_bounded() {
    let mut p = RequestParser::new(Listener::Unix, LIMIT);
    assert_eq!(
        p.feed(b"GET /metrics HTTP/1.1\r\nX: "),
        Ok(Progress::Partial)
    );
    let filler = vec![b'a'; MAX_HEAD];
    assert_eq!(p.feed(&filler), Err(Refusal::HeadTooLarge));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
    let head = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    assert_eq!(command(Listener::Unix, &head), Err(Refusal::HeadTooLarge));
    assert_eq!(
        parse(Listener::Unix, b"\x00\x01 junk\r\n\r\n"),
        Err(Refusal::Malformed)
    );
}

#[test]
fn import_limit_fits_a_full_export() {
    assert_eq!(import_limit(0), MIN_IMPORT_LIMIT);
    assert_eq!(import_limit(10_000), MIN_IMPORT_LIMIT);
    assert_eq!(import_limit(100_000), 100_000 * IMPORT_BYTES_PER_ENTRY);
    assert_eq!(import_limit(usize::MAX), usize::MAX);
}

#[test]
fn responses_are_framed() {
    let r = response(421, TEXT, b"no\n");
    assert_eq!(
        r,
        b"HTTP/1.1 421 Misdirected Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n"
    );
    let refused = String::from_utf8(refusal_response(Refusal::NotOnTcp)).unwrap();
    assert!(
        refused.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{refused}"
    );
    assert!(refused.ends_with("metrics.path`)\n"), "{refused}");
}

/// Feed `data` in pieces of `split` bytes; the first non-`Partial` result.
fn run(listener: Listener, data: &[u8], split: usize) -> Result<Progress, Refusal> {
    let mut p = RequestParser::new(listener, 64);
    for chunk in data.chunks(split.max(1)) {
        match p.feed(chunk)? {
            Progress::Partial => {}
            done => return Ok(done),
        }
    }
    Ok(Progress::Partial)
}

fn request_text() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "G T"]);
    let path = prop::sample::select(vec![
        "/metrics",
        "/cache",
        "/cache/a.example",
        "/cache/A..b",
        "/x",
        "*",
    ]);
    let host = prop::sample::select(vec![
        "",
        "Host: localhost\r\n",
        "Host: [::1]:1\r\n",
        "Host: evil.example\r\n",
    ]);
    let length = prop::option::of(0usize..100);
    let body = prop::collection::vec(any::<u8>(), 0..100);
    (method, path, host, length, body).prop_map(|(m, p, h, len, body)| {
        let mut out = format!("{m} {p} HTTP/1.1\r\n{h}").into_bytes();
        if let Some(len) = len {
            out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    })
}

proptest! {
    #[test]
    fn never_panics_on_any_input(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
        unix in any::<bool>(),
    ) {
        let listener = if unix { Listener::Unix } else { Listener::Tcp };
        let mut p = RequestParser::new(listener, 64);
        for piece in &pieces {
            if !matches!(p.feed(piece), Ok(Progress::Partial)) {
                break;
            }
        }
    }

    #[test]
    fn split_invariant(
        data in prop_oneof![request_text(), prop::collection::vec(any::<u8>(), 0..300)],
        split in 1usize..40,
        unix in any::<bool>(),
    ) {
        let listener = if unix { Listener::Unix } else { Listener::Tcp };
        let whole = run(listener, &data, data.len());
        prop_assert_eq!(run(listener, &data, split), whole.clone());
        if let Ok(Progress::Complete(r)) = &whole {
            prop_assert!(r.body.len() <= 64);
            prop_assert!(r.body.is_empty() || r.command == Command::Import);
            prop_assert!(listener == Listener::Unix || r.command == Command::Metrics);
        }
    }
}
