//! The HTTPS policy fetch (RFC 8461 §3.3, RFC 8461 §3.3): status, redirects,
//! content type, framing, size cap, and a policy host that never answers.

use std::time::{Duration, Instant};

use super::{expect, expect_notfound, publish_enforce, secure, start, sts_txt, Bins};
use crate::{policy_body, Behaviour, Encoding, World};

fn enforce_body(domain: &str) -> String {
    policy_body("enforce", 86400, &[&format!("mx.{domain}")])
}

/// Publishes `domain` (TXT id 1) with `behaviour` at its policy host.
fn publish_with(world: &World, domain: &str, behaviour: Behaviour) {
    world.add_policy_domain(domain, &sts_txt("1"), behaviour);
}

/// A body over 64 KiB that begins with a valid policy (then unknown keys).
fn oversized_body(domain: &str) -> String {
    let mut body = enforce_body(domain);
    while body.len() < 200 * 1024 {
        body.push_str("x-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    }
    body
}

/// The request is `GET /.well-known/mta-sts.txt` over HTTP/1.1 with `Host: mta-sts.<d>`.
pub fn policy_request_shape(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "shape.example", "1", &["mx.shape.example"]);
    let d = start(bins, &world, "");
    expect(&d, "postfix", "shape.example", &secure("mx.shape.example"));
    let head = world.last_request("shape.example").unwrap_or_default();
    let first = head.lines().next().unwrap_or_default();
    assert_eq!(first, "GET /.well-known/mta-sts.txt HTTP/1.1", "{head}");
    let host = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("host")
            .then(|| v.trim().split(':').next().unwrap_or_default().to_string())
    });
    assert_eq!(host.as_deref(), Some("mta-sts.shape.example"), "{head}");
}

/// `404 Not Found`: no policy.
pub fn status_404(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "notfound.example",
        Behaviour::Status(404, "not here\n".into()),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "notfound.example");
    assert_eq!(world.requests("notfound.example"), 1);
}

/// A `301` redirect is not followed, even to a valid policy.
pub fn redirect_not_followed(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "target.example", "1", &["mx.target.example"]);
    publish_with(
        &world,
        "redirect.example",
        Behaviour::Redirect("https://mta-sts.target.example/.well-known/mta-sts.txt".into()),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "redirect.example");
    assert_eq!(world.requests("redirect.example"), 1);
    assert_eq!(world.requests("target.example"), 0, "redirect followed");
}

/// `Content-Type: text/html`: rejected.
pub fn text_html_rejected(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "html.example",
        Behaviour::Policy {
            body: enforce_body("html.example"),
            content_type: Some("text/html".into()),
            encoding: Encoding::Length,
        },
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "html.example");
}

/// `Content-Type: text/plain; charset=utf-8`: accepted.
pub fn text_plain_with_charset_accepted(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "charset.example",
        Behaviour::Policy {
            body: enforce_body("charset.example"),
            content_type: Some("text/plain; charset=utf-8".into()),
            encoding: Encoding::Length,
        },
    );
    let d = start(bins, &world, "");
    expect(
        &d,
        "postfix",
        "charset.example",
        &secure("mx.charset.example"),
    );
}

/// A 200 KB body announced by `Content-Length`: rejected.
pub fn oversized_by_content_length(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "big.example",
        Behaviour::Policy {
            body: oversized_body("big.example"),
            content_type: None,
            encoding: Encoding::Length,
        },
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "big.example");
}

/// A 200 KB chunked body: rejected while streaming.
pub fn oversized_chunked(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "bigchunk.example",
        Behaviour::Policy {
            body: oversized_body("bigchunk.example"),
            content_type: None,
            encoding: Encoding::Chunked,
        },
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "bigchunk.example");
}

/// A small chunked body (many chunks): accepted.
pub fn chunked_small_accepted(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "chunk.example",
        Behaviour::Policy {
            body: enforce_body("chunk.example"),
            content_type: None,
            encoding: Encoding::Chunked,
        },
    );
    let d = start(bins, &world, "");
    expect(&d, "postfix", "chunk.example", &secure("mx.chunk.example"));
}

/// A policy host that never answers: `NOTFOUND ` once the zone timeout (1 s) is over,
/// within a margin of 1.5 s.
pub fn hanging_policy_host_times_out(bins: &Bins) {
    let world = World::new();
    publish_with(&world, "hang.example", Behaviour::Hang);
    let d = start(bins, &world, "default_zone:\n  timeout: 1\n");
    let t = Instant::now();
    expect_notfound(&d, "hang.example");
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(took >= Duration::from_millis(800), "too quick: {took:?}");
    assert_eq!(world.requests("hang.example"), 1);
}

/// A policy host that resets the connection: `NOTFOUND `.
pub fn reset_by_policy_host(bins: &Bins) {
    let world = World::new();
    publish_with(&world, "reset.example", Behaviour::Reset);
    let d = start(bins, &world, "");
    expect_notfound(&d, "reset.example");
}

/// A `500` from the policy host: `NOTFOUND `.
pub fn status_500(bins: &Bins) {
    let world = World::new();
    publish_with(
        &world,
        "err.example",
        Behaviour::Status(500, "oops\n".into()),
    );
    let d = start(bins, &world, "");
    expect_notfound(&d, "err.example");
}
