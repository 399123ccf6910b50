//! `mta-sts-query` (README.md "Programs"): status, fields, JSON output and exit codes,
//! pointed at the test world with `-c`.

use super::{publish_enforce, sts_txt, Bins};
use crate::{run_query, Behaviour, World};

fn config(world: &World) -> String {
    world.write_config("").display().to_string()
}

/// A valid policy: exit 0, status and every field shown.
pub fn query_valid(bins: &Bins) {
    let world = World::new();
    publish_enforce(
        &world,
        "q.example",
        "abc123",
        &["mx1.q.example", "*.q.example"],
    );
    let cfg = config(&world);
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "q.example"]);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "VALID",
        "abc123",
        "enforce",
        "86400",
        "mx1.q.example",
        "*.q.example",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}{err}");
    }
    assert!(!out.contains("NOT_CHANGED"), "{out}");
}

/// `--json`: one JSON object with domain, status, id and the policy.
pub fn query_json(bins: &Bins) {
    let world = World::new();
    publish_enforce(
        &world,
        "j.example",
        "id42",
        &["mx.j.example", "*.j.example"],
    );
    let cfg = config(&world);
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "--json", "j.example"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(v["domain"], "j.example", "{v}");
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["id"], "id42", "{v}");
    assert_eq!(v["policy"]["version"], "STSv1", "{v}");
    assert_eq!(v["policy"]["mode"], "enforce", "{v}");
    assert_eq!(v["policy"]["max_age"], 86400, "{v}");
    assert_eq!(
        v["policy"]["mx"],
        serde_json::json!(["mx.j.example", "*.j.example"]),
        "{v}"
    );
}

/// KNOWN_ID equal to the published id: NOT_CHANGED, exit 0, no policy fetch.
pub fn query_known_id_not_changed(bins: &Bins) {
    let world = World::new();
    publish_enforce(&world, "k.example", "same1", &["mx.k.example"]);
    let cfg = config(&world);
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "k.example", "same1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("NOT_CHANGED"), "{out}{err}");
    assert_eq!(world.requests("k.example"), 0);
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "k.example", "other"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("VALID") && !out.contains("NOT_CHANGED"),
        "{out}"
    );
    assert_eq!(world.requests("k.example"), 1);
}

/// No TXT record: NONE, exit 1.
pub fn query_no_txt(bins: &Bins) {
    let world = World::new();
    let cfg = config(&world);
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "none.example"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("NONE"), "{out}{err}");
    let (code, out, _) = run_query(bins.query, &["-c", &cfg, "--json", "none.example"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert_eq!(v["status"], "NONE", "{out}");
}

/// A fetch error (404): FETCH_ERROR, exit 2.
pub fn query_fetch_error(bins: &Bins) {
    let world = World::new();
    world.add_policy_domain(
        "e.example",
        &sts_txt("1"),
        Behaviour::Status(404, "no\n".into()),
    );
    let cfg = config(&world);
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "e.example"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("FETCH_ERROR"), "{out}{err}");
    let (code, out, _) = run_query(bins.query, &["-c", &cfg, "--json", "e.example"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert_eq!(v["status"], "FETCH_ERROR", "{out}");
    assert!(v["reason"].is_string(), "{out}");
}

/// Bad arguments: exit 2.
pub fn query_bad_args(bins: &Bins) {
    for args in [
        &[][..],
        &["-v", "loud", "example.com"][..],
        &["--no-such-option", "example.com"][..],
        &["a.example", "id1", "extra"][..],
    ] {
        let (code, out, err) = run_query(bins.query, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
    }
}

/// A policy host that never answers: FETCH_ERROR (exit 2) once the default zone's
/// timeout has passed, not a hang.
pub fn query_hanging_host_times_out(bins: &Bins) {
    let world = World::new();
    world.add_policy_domain("hang.example", &sts_txt("1"), Behaviour::Hang);
    let cfg = world
        .write_config("default_zone:\n  timeout: 1\n")
        .display()
        .to_string();
    let started = std::time::Instant::now();
    let (code, out, err) = run_query(bins.query, &["-c", &cfg, "hang.example"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("FETCH_ERROR") && out.contains("timed out"),
        "{out}{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
