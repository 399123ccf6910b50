//! The DNSSEC self-check (README.md "Postfix and the daemon must use the same validating
//! resolver", docs/ARCHITECTURE.md "Operations"): with a zone that has `dane: true`, the daemon
//! asks the root's SOA with the DO bit after READY and on SIGHUP (and, when configured, a name
//! that must fail validation), logs one warning when the resolver does not validate and
//! another when it does not answer, and exports `mta_sts_dnssec_validating`;
//! `--check-config` and `mta-sts-query --dane` run the same check.

use std::path::Path;
use std::time::Duration;

use super::admin::{http, metrics_yaml};
use super::persist::wait_until;
use super::{start, Bins};
use crate::{run_bounded, run_query, Daemon, World};

/// How long a check may take to show (the world answers at once; a silent resolver takes the
/// default zone's `timeout`).
const WAIT: Duration = Duration::from_secs(20);

const VALIDATES: &str = "the resolver validates DNSSEC";
const NOT_VALIDATING: &str = "the resolver does not validate DNSSEC";
const NO_ANSWER: &str = "the resolver did not answer the DNSSEC check";

/// The metrics text of the daemon whose socket is in `dir`.
fn metrics(dir: &Path) -> String {
    let (status, body) = http(&dir.join("metrics.sock"), "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the metrics show `mta_sts_dnssec_validating <value>`; panics with the log if not.
fn wait_metric(d: &Daemon, dir: &Path, value: u8) {
    let line = format!("\nmta_sts_dnssec_validating {value}\n");
    let shown = wait_until(WAIT, || metrics(dir).contains(&line));
    assert!(
        shown,
        "{line:?} not in\n{}\nlog:\n{}",
        metrics(dir),
        d.log()
    );
}

/// Waits until the log holds `needle` `times` times; panics with the log if not.
fn wait_log(d: &Daemon, needle: &str, times: usize) {
    let seen = wait_until(WAIT, || d.log().matches(needle).count() >= times);
    assert!(seen, "{needle:?} ({times}x) not in log:\n{}", d.log());
}

/// A validating resolver: metric 1, an info line, no warning; the root's SOA was asked with
/// DO. After the resolver stops validating, SIGHUP runs the check again: the warning (with
/// what to do) and metric 0.
pub fn validating_then_sighup_rechecks(bins: &Bins) {
    let world = World::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = start(
        bins,
        &world,
        &format!("default_zone:\n  dane: true\n{}", metrics_yaml(dir.path())),
    );
    wait_metric(&d, dir.path(), 1);
    wait_log(&d, VALIDATES, 1);
    assert!(world.dns.dnssec_queries(".") >= 1);
    assert!(!d.log().contains(NOT_VALIDATING), "{}", d.log());
    world.dns.set_validating(false);
    d.signal(libc::SIGHUP);
    wait_metric(&d, dir.path(), 0);
    wait_log(&d, NOT_VALIDATING, 1);
    let log = d.log();
    assert!(log.contains("came without the AD bit"), "{log}");
    assert!(log.contains("unbound, the same one Postfix uses"), "{log}");
}

/// A resolver that never answers: READY comes first (the daemon answers at once), then the
/// "did not answer" warning, once, and metric 0.
pub fn silent_resolver_warns_after_ready(bins: &Bins) {
    let world = World::new();
    world.dns.silent(".");
    let dir = tempfile::tempdir().expect("temp dir");
    let d = start(
        bins,
        &world,
        &format!(
            "default_zone:\n  dane: true\n  timeout: 2\n{}",
            metrics_yaml(dir.path())
        ),
    );
    // A key that is no domain needs no DNS: answered while the check waits.
    assert_eq!(d.client().query("postfix", "[1.2.3.4]"), "NOTFOUND ");
    wait_metric(&d, dir.path(), 0);
    wait_log(&d, NO_ANSWER, 1);
    let log = d.log();
    // The daemon's READY line (`<date> <time> INFO  ready`).
    let ready = log.find("INFO  ready\n").unwrap_or(usize::MAX);
    let warned = log.find(NO_ANSWER).unwrap_or(0);
    assert!(ready < warned, "READY after the check:\n{log}");
    assert!(log.contains(". SOA: DNS timeout"), "{log}");
    assert_eq!(log.matches(NO_ANSWER).count(), 1, "{log}");
    assert!(!log.contains(NOT_VALIDATING), "{log}");
}

/// Without a zone that has `dane: true` nothing is asked and there is no metric; a SIGHUP
/// that turns DANE on runs the check.
pub fn only_with_dane(bins: &Bins) {
    let world = World::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = start(bins, &world, &metrics_yaml(dir.path()));
    // A lookup that goes to the DNS: the check would have been asked before or beside it;
    // and a while more for a check that would come late (the timeout is 4 s, the check's
    // first query goes out at once).
    assert_eq!(d.client().query("postfix", "none.example"), "NOTFOUND ");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(world.dns.queries("."), 0, "log:\n{}", d.log());
    assert!(!metrics(dir.path()).contains("mta_sts_dnssec_validating "));
    assert!(!d.log().contains("DNSSEC check"), "{}", d.log());
    let config = std::fs::read_to_string(d.config_path()).expect("read config");
    std::fs::write(
        d.config_path(),
        format!("{config}default_zone:\n  dane: true\n"),
    )
    .expect("write config");
    d.signal(libc::SIGHUP);
    wait_metric(&d, dir.path(), 1);
    assert!(world.dns.dnssec_queries(".") >= 1);
}

/// `resolver.dnssec_test_name`: SERVFAIL for it (what a validating resolver answers for a
/// bogus name) keeps metric 1; an answer for it, with the root still signed, means the
/// resolver does not validate (it passes on an AD bit it did not check).
pub fn test_name_must_fail_validation(bins: &Bins) {
    let world = World::new();
    world.dns.servfail("bogus.test");
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = world
        .config_yaml(&format!(
            "default_zone:\n  dane: true\n{}",
            metrics_yaml(dir.path())
        ))
        .replacen(
            "resolver:\n",
            "resolver:\n  dnssec_test_name: bogus.test\n",
            1,
        );
    let d = Daemon::start(bins.daemon, &yaml, &["-v", "debug"]);
    wait_metric(&d, dir.path(), 1);
    wait_log(&d, "bogus.test failed validation with SERVFAIL", 1);
    assert!(world.dns.dnssec_queries("bogus.test") >= 1);
    world.dns.heal("bogus.test");
    world
        .dns
        .set_a("bogus.test", &[std::net::Ipv4Addr::new(192, 0, 2, 1)]);
    d.signal(libc::SIGHUP);
    wait_metric(&d, dir.path(), 0);
    wait_log(
        &d,
        "bogus.test, whose signatures are broken, was answered",
        1,
    );
}

/// `--check-config` runs the check when a zone has `dane: true` and says what it found (a
/// resolver that does not validate is a warning: the daemon would start); without DANE it
/// asks nothing.
pub fn check_config_runs_the_check(bins: &Bins) {
    let world = World::new();
    let run = |extra: &str| {
        let path = world.write_config(extra);
        let mut cmd = std::process::Command::new(bins.daemon);
        cmd.arg("--check-config").arg("-c").arg(path);
        run_bounded(cmd, Duration::from_secs(30))
    };
    let (code, out, err) = run("default_zone:\n  dane: true\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("ok: DNSSEC check: {VALIDATES}")),
        "{out}{err}"
    );
    world.dns.set_validating(false);
    let (code, out, err) = run("default_zone:\n  dane: true\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("warning: DNSSEC check: {NOT_VALIDATING}")),
        "{out}{err}"
    );
    let before = world.dns.queries(".");
    let (code, out, err) = run("");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("DNSSEC"), "{out}");
    assert_eq!(world.dns.queries("."), before);
}

/// `mta-sts-query --dane` says whether the DANE answer it shows rests on a validating
/// resolver, in text and in `--json`.
pub fn query_dane_says_whether_validating(bins: &Bins) {
    let world = World::new();
    let config = world.write_config("").display().to_string();
    let (_, out, err) = run_query(bins.query, &["-c", &config, "--dane", "q.example"]);
    assert!(
        out.contains(&format!("dnssec: validating ({VALIDATES}")),
        "{out}{err}"
    );
    let (_, out, err) = run_query(
        bins.query,
        &["-c", &config, "--dane", "--json", "q.example"],
    );
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}{err}"));
    assert_eq!(v["dnssec"]["validating"], true, "{v}");
    assert_eq!(v["dnssec"]["status"], "validating", "{v}");
    world.dns.set_validating(false);
    let (_, out, err) = run_query(bins.query, &["-c", &config, "--dane", "q.example"]);
    assert!(
        out.contains(&format!("dnssec: not_validating ({NOT_VALIDATING}")),
        "{out}{err}"
    );
    assert!(err.contains(NOT_VALIDATING), "{err}");
    // Without --dane: no check.
    let before = world.dns.queries(".");
    let (_, out, _) = run_query(bins.query, &["-c", &config, "q.example"]);
    assert!(!out.contains("dnssec"), "{out}");
    assert_eq!(world.dns.queries("."), before);
}
