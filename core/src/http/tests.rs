use super::*;
use proptest::prelude::*;

const OK_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
const POLICY: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n";

/// Feeds `input` in one piece, then EOF if still partial.
fn run(input: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    match p.feed(input)? {
        Progress::Complete(body) => Ok(body),
        Progress::Partial => p.finish(),
    }
}

/// Feeds `input` in pieces of `step` bytes, then EOF if still partial.
fn run_split(input: &[u8], step: usize) -> Result<Vec<u8>, HttpError> {
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    for piece in input.chunks(step) {
        if let Progress::Complete(body) = p.feed(piece)? {
            return Ok(body);
        }
    }
    p.finish()
}

fn with_length(body: &str) -> String {
    format!("{OK_HEAD}Content-Length: {}\r\n\r\n{body}", body.len())
}

fn chunked_policy() -> String {
    format!(
        "{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n\
         10;name=value\r\nversion: STSv1\r\n\r\n\
         {:x}\r\n{}\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n",
        POLICY.len() - 16,
        &POLICY[16..]
    )
}

#[test]
fn request_is_http11_get_of_well_known_path() {
    let req = build_policy_request("mta-sts.example.com", "mta-sts-resolver/0.1");
    assert_eq!(
        req,
        b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n\
          User-Agent: mta-sts-resolver/0.1\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn content_length_body() {
    let input = with_length(POLICY) + "trailing garbage ignored";
    assert_eq!(run(input.as_bytes()).unwrap(), POLICY.as_bytes());
}

#[test]
fn content_length_completes_without_eof() {
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    let input = with_length(POLICY);
    assert_eq!(
        p.feed(input.as_bytes()),
        Ok(Progress::Complete(POLICY.as_bytes().to_vec()))
    );
    assert_eq!(p.feed(b"x"), Err(HttpError::Finished));
    assert_eq!(p.finish(), Err(HttpError::Finished));
}

#[test]
fn empty_content_length_body() {
    assert_eq!(run(with_length("").as_bytes()).unwrap(), b"");
}

#[test]
fn chunked_with_extensions_and_trailers() {
    assert_eq!(run(chunked_policy().as_bytes()).unwrap(), POLICY.as_bytes());
}

#[test]
fn chunked_with_bare_lf_and_uppercase_hex() {
    let input = format!("{OK_HEAD}Transfer-Encoding: Chunked\r\n\r\nA\nversion: S\n0\n\n");
    assert_eq!(run(input.as_bytes()).unwrap(), b"version: S");
}

#[test]
fn chunked_wins_over_content_length() {
    let input = format!(
        "{OK_HEAD}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    assert_eq!(run(input.as_bytes()).unwrap(), b"hello");
}

#[test]
fn body_delimited_by_close() {
    let input = format!("{OK_HEAD}\r\n{POLICY}");
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    assert_eq!(p.feed(input.as_bytes()), Ok(Progress::Partial));
    assert_eq!(p.finish().unwrap(), POLICY.as_bytes());
}

#[test]
fn one_byte_at_a_time_gives_same_body() {
    for input in [
        with_length(POLICY),
        chunked_policy(),
        format!("{OK_HEAD}\r\n{POLICY}"),
        format!("HTTP/1.1 100 Continue\r\n\r\n{}", with_length(POLICY)),
    ] {
        assert_eq!(run_split(input.as_bytes(), 1).unwrap(), POLICY.as_bytes());
    }
}

#[test]
fn interim_responses_are_skipped() {
    let input = format!(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n{}",
        with_length(POLICY)
    );
    assert_eq!(run(input.as_bytes()).unwrap(), POLICY.as_bytes());
}

#[test]
fn switching_protocols_is_refused() {
    let input = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
    assert_eq!(run(input.as_bytes()), Err(HttpError::Status(101)));
}

#[test]
fn not_found_is_refused() {
    let input = "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(run(input.as_bytes()), Err(HttpError::Status(404)));
}

#[test]
fn redirects_are_refused_not_followed() {
    for status in [301, 302, 307, 308] {
        let input = format!(
            "HTTP/1.1 {status} Moved\r\nLocation: https://evil.example/mta-sts.txt\r\n\r\n"
        );
        assert_eq!(
            run(input.as_bytes()),
            Err(HttpError::Redirect {
                status,
                location: "https://evil.example/mta-sts.txt".into()
            })
        );
    }
    let err = run(b"HTTP/1.1 302 Found\r\n\r\n").unwrap_err();
    assert_eq!(
        err,
        HttpError::Redirect {
            status: 302,
            location: String::new()
        }
    );
    assert!(err.to_string().contains("redirects are not followed"));
}

#[test]
fn content_type_must_be_text_plain() {
    let html = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n{POLICY}");
    assert_eq!(
        run(html.as_bytes()),
        Err(HttpError::ContentType("text/html".into()))
    );
    let plainer = "HTTP/1.1 200 OK\r\nContent-Type: text/plainer\r\n\r\nx";
    assert!(matches!(
        run(plainer.as_bytes()),
        Err(HttpError::ContentType(_))
    ));
    let missing = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    assert_eq!(run(missing.as_bytes()), Err(HttpError::MissingContentType));
}

#[test]
fn content_type_parameters_and_case_accepted() {
    for ct in [
        "text/plain; charset=utf-8",
        "TEXT/PLAIN",
        "Text/Plain;charset=\"UTF-8\"",
    ] {
        let input = format!("HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(run(input.as_bytes()).unwrap(), b"ok", "{ct}");
    }
}

#[test]
fn large_body_refused_by_content_length_before_reading() {
    let input = format!("{OK_HEAD}Content-Length: 200000\r\n\r\n");
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    assert_eq!(
        p.feed(input.as_bytes()),
        Err(HttpError::BodyTooLarge {
            limit: MAX_POLICY_BODY
        })
    );
    let huge = format!("{OK_HEAD}Content-Length: 18446744073709551615\r\n\r\n");
    assert!(matches!(
        run(huge.as_bytes()),
        Err(HttpError::BodyTooLarge { .. })
    ));
}

#[test]
fn large_chunked_body_refused_while_streaming() {
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    let head = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n");
    assert_eq!(p.feed(head.as_bytes()), Ok(Progress::Partial));
    let chunk = format!("1000\r\n{}\r\n", "a".repeat(0x1000));
    let mut result = Ok(Progress::Partial);
    for _ in 0..50 {
        result = p.feed(chunk.as_bytes());
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result,
        Err(HttpError::BodyTooLarge {
            limit: MAX_POLICY_BODY
        })
    );
    // A single chunk declared bigger than the limit is refused at once.
    let big = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n30D40\r\n");
    assert!(matches!(
        run(big.as_bytes()),
        Err(HttpError::BodyTooLarge { .. })
    ));
}

#[test]
fn large_body_by_close_refused_while_streaming() {
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    let head = format!("{OK_HEAD}\r\n");
    assert_eq!(p.feed(head.as_bytes()), Ok(Progress::Partial));
    let block = vec![b'a'; 8192];
    let mut fed = 0;
    let err = loop {
        match p.feed(&block) {
            Ok(_) => fed += block.len(),
            Err(e) => break e,
        }
        assert!(fed <= 200_000);
    };
    assert_eq!(
        err,
        HttpError::BodyTooLarge {
            limit: MAX_POLICY_BODY
        }
    );
    assert!(fed <= MAX_POLICY_BODY);
}

#[test]
fn body_of_exactly_the_limit_is_accepted() {
    let body = "a".repeat(MAX_POLICY_BODY);
    assert_eq!(
        run(with_length(&body).as_bytes()).unwrap().len(),
        MAX_POLICY_BODY
    );
    let by_close = format!("{OK_HEAD}\r\n{body}");
    assert_eq!(run(by_close.as_bytes()).unwrap().len(), MAX_POLICY_BODY);
}

#[test]
fn truncated_bodies() {
    let short = format!("{OK_HEAD}Content-Length: 100\r\n\r\nversion: STSv1");
    assert_eq!(run(short.as_bytes()), Err(HttpError::Truncated));
    let chunk = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhel");
    assert_eq!(run(chunk.as_bytes()), Err(HttpError::Truncated));
    let no_last = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    assert_eq!(run(no_last.as_bytes()), Err(HttpError::Truncated));
    let no_end = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\n");
    assert_eq!(run(no_end.as_bytes()), Err(HttpError::Truncated));
    assert_eq!(
        run(b"HTTP/1.1 200 OK\r\nContent-"),
        Err(HttpError::Truncated)
    );
    assert_eq!(run(b""), Err(HttpError::Truncated));
}

#[test]
fn invalid_content_length() {
    for cl in [
        "abc",
        "-1",
        "+5",
        "1 2",
        "5, 5",
        "",
        "99999999999999999999999",
    ] {
        let input = format!("{OK_HEAD}Content-Length: {cl}\r\n\r\n");
        assert_eq!(
            run(input.as_bytes()),
            Err(HttpError::InvalidContentLength),
            "{cl:?}"
        );
    }
    let conflict = format!("{OK_HEAD}Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        run(conflict.as_bytes()),
        Err(HttpError::InvalidContentLength)
    );
    let same = format!("{OK_HEAD}Content-Length: 2\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(run(same.as_bytes()).unwrap(), b"ab");
}

#[test]
fn invalid_chunks() {
    for body in [
        "zz\r\n",
        "\r\n",
        "-1\r\n",
        "11111111111111111\r\n",
        "5\r\nhelloXX\r\n",
    ] {
        let input = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n{body}");
        assert_eq!(
            run(input.as_bytes()),
            Err(HttpError::InvalidChunk),
            "{body:?}"
        );
    }
    // Endless trailers are cut off.
    let trailers = format!(
        "{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\n{}",
        "X-T: 1\r\n".repeat(MAX_TRAILERS / 8)
    );
    assert_eq!(run(trailers.as_bytes()), Err(HttpError::InvalidChunk));
    // An endless chunk extension is cut off.
    let ext = format!(
        "{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5;{}",
        "x".repeat(MAX_CHUNK_LINE)
    );
    assert_eq!(run(ext.as_bytes()), Err(HttpError::InvalidChunk));
}

#[test]
fn unsupported_transfer_encoding() {
    for te in ["gzip", "gzip, chunked", "chunked, chunked"] {
        let input = format!("{OK_HEAD}Transfer-Encoding: {te}\r\n\r\n");
        assert!(
            matches!(
                run(input.as_bytes()),
                Err(HttpError::UnsupportedTransferEncoding(_))
            ),
            "{te}"
        );
    }
}

#[test]
fn garbage_is_refused() {
    assert!(matches!(
        run(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        run(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\n\n"),
        Err(HttpError::Malformed(_))
    ));
}

#[test]
fn endless_head_is_cut_off() {
    let mut p = ResponseParser::new(MAX_POLICY_BODY);
    assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n"), Ok(Progress::Partial));
    let filler = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let err = loop {
        if let Err(e) = p.feed(filler) {
            break e;
        }
    };
    // The head never ends: the byte cap trips, not the header count.
    assert_eq!(err, HttpError::HeadTooLarge);
    let mut many = String::from(OK_HEAD);
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(run(many.as_bytes()), Err(HttpError::TooManyHeaders));
}

#[test]
fn errors_read_well_in_a_log() {
    assert_eq!(
        HttpError::Status(404).to_string(),
        "policy server answered HTTP status 404, expected 200"
    );
    assert_eq!(
        HttpError::BodyTooLarge { limit: 65536 }.to_string(),
        "policy body is larger than the 65536-byte limit"
    );
}

proptest! {
    #[test]
    fn never_panics_on_any_input(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
        max_body in 0usize..256,
    ) {
        let mut p = ResponseParser::new(max_body);
        for piece in &pieces {
            if p.feed(piece).is_err() {
                break;
            }
        }
        let _ = p.finish();
    }

    #[test]
    fn never_panics_after_a_valid_head(
        tail in proptest::collection::vec(any::<u8>(), 0..256),
        chunked in any::<bool>(),
    ) {
        let head = if chunked {
            format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n")
        } else {
            format!("{OK_HEAD}\r\n")
        };
        let mut p = ResponseParser::new(128);
        let _ = p.feed(head.as_bytes());
        let _ = p.feed(&tail);
        let _ = p.finish();
    }

    #[test]
    fn any_split_gives_the_same_body(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        chunk_len in 1usize..50,
        cuts in proptest::collection::vec(0usize..2000, 0..8),
        form in 0u8..3,
    ) {
        let mut input = match form {
            0 => format!("{OK_HEAD}Content-Length: {}\r\n\r\n", body.len()).into_bytes(),
            1 => format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n").into_bytes(),
            _ => format!("{OK_HEAD}\r\n").into_bytes(),
        };
        if form == 1 {
            for chunk in body.chunks(chunk_len) {
                input.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
                input.extend_from_slice(chunk);
                input.extend_from_slice(b"\r\n");
            }
            input.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        } else {
            input.extend_from_slice(&body);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        let mut p = ResponseParser::new(MAX_POLICY_BODY);
        let mut got = None;
        for pair in cuts.windows(2) {
            if let [a, b] = pair {
                if let Progress::Complete(b) = p.feed(&input[*a..*b]).unwrap() {
                    got = Some(b);
                    break;
                }
            }
        }
        let got = match got {
            Some(b) => b,
            None => p.finish().unwrap(),
        };
        prop_assert_eq!(got, body);
    }
}
