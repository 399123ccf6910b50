//! Proof through Postfix itself (docs/ARCHITECTURE.md "Testing"): a real Postfix instance
//! ([`crate::postfix`]) asks the daemon for each destination's TLS policy and delivers to
//! test MX hosts ([`crate::smtp_sink`]) in a private network namespace, and each case asserts
//! what Postfix's SMTP client did with the answer: delivered over verified TLS, or deferred
//! with nothing reaching the MX host (RFC 8461 §4, §5; RFC 7672 §2.2 for DANE).
//!
//! Run from a `harness = false` test binary of each driver: the namespace must be entered
//! before any thread starts, which cargo's test harness does not allow. Needs root, and fails
//! without it.

use std::net::{Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::ca::{self_signed, Validity};
use crate::cases::{publish_enforce, sts_txt};
use crate::postfix::{Postfix, Route};
use crate::smtp_sink::SmtpSink;
use crate::{netns, policy_body, Behaviour, Daemon, World};

/// How long Postfix may take to deliver or defer one message.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// The daemon's `cache_grace`: short, so the cached case's second lookup re-checks the TXT
/// record (the published state it must ignore).
const CACHE_GRACE: u64 = 1;
/// The socketmap names Postfix uses: the default for most domains, the others routed.
const STS_ZONE: &str = "postfix";
const DANE_ZONE: &str = "dane";
const TLSRPT_ZONE: &str = "tlsrpt";
/// First sink address; each case's MX host has its own, upwards.
const FIRST_SINK: u8 = 10;

/// The certificate an MX host presents in STARTTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cert {
    /// Issued by the test CA (Postfix's `smtp_tls_CAfile`) for the MX host's name.
    Valid,
    /// Issued by the test CA for another name.
    OtherName,
    /// Self-signed for the MX host's name.
    SelfSigned,
}

/// What a domain publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publishes {
    /// An MTA-STS policy in this mode, listing these `mx` patterns (`{mx}`: the MX host).
    Sts(&'static str, &'static [&'static str]),
    /// Nothing: no TXT record, no policy host.
    Nothing,
    /// A signed zone with a DANE-EE SPKI SHA2-256 TLSA record for the MX host, matching
    /// its key or not (RFC 7672 §3.1.1).
    Dane { matching: bool },
}

/// What Postfix must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// `status=sent` after a TLS connection Postfix logs with this trust level
    /// (`Verified`, `Untrusted`).
    Sent(&'static str),
    /// `status=deferred (Server certificate not verified)` after Postfix logged the failed
    /// check with this reason, and nothing at the MX host.
    Deferred(&'static str),
    /// On Postfix before 3.10, which does not know the TLSRPT attributes: the policy is
    /// refused (`invalid attribute name`) and the mail deferred, nothing at the MX host; on
    /// 3.10 and later, as `Sent("Verified")`.
    TlsrptNeeds310,
}

/// One delivery: mail to `<name>@<name>.example`, whose MX host `mx.<name>.example` has its
/// own sink.
struct Case {
    name: &'static str,
    /// The socketmap name Postfix asks with.
    zone: &'static str,
    publishes: Publishes,
    /// Ignored for [`Publishes::Dane`], whose MX host is always self-signed: only DANE can
    /// make Postfix trust it.
    cert: Cert,
    /// The answer the daemon logs for the domain (`<domain> (zone <zone>): <answer>`), or
    /// `None` when Postfix must not ask it.
    answer: Option<&'static str>,
    want: Outcome,
}

/// Postfix's reasons for a failed certificate check (OpenSSL's texts).
const HOSTNAME_MISMATCH: &str = "num=62:hostname mismatch";
const SELF_SIGNED: &str = "self-signed certificate";
/// The deferral reason of every failed check.
const NOT_VERIFIED: &str = "status=deferred (Server certificate not verified)";

/// The daemon's log for an enforce policy it answered (fetched or cached).
const ENFORCE: &str = "enforce policy";

/// The policy's own MX host as a pattern.
const OWN: &[&str] = &["{mx}"];

const CASES: &[Case] = &[
    Case {
        name: "enforce-valid",
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", OWN),
        cert: Cert::Valid,
        answer: Some(ENFORCE),
        want: Outcome::Sent("Verified"),
    },
    Case {
        name: "enforce-wrong-name",
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", OWN),
        cert: Cert::OtherName,
        answer: Some(ENFORCE),
        want: Outcome::Deferred(HOSTNAME_MISMATCH),
    },
    Case {
        name: "enforce-self-signed",
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", OWN),
        cert: Cert::SelfSigned,
        answer: Some(ENFORCE),
        want: Outcome::Deferred(SELF_SIGNED),
    },
    Case {
        name: "enforce-mx-not-listed",
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", &["mx.elsewhere.example"]),
        cert: Cert::Valid,
        answer: Some(ENFORCE),
        want: Outcome::Deferred(HOSTNAME_MISMATCH),
    },
    Case {
        name: "enforce-wildcard",
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", &["*.{domain}"]),
        cert: Cert::Valid,
        answer: Some(ENFORCE),
        want: Outcome::Sent("Verified"),
    },
    Case {
        name: "testing-bad-cert",
        zone: STS_ZONE,
        publishes: Publishes::Sts("testing", OWN),
        cert: Cert::SelfSigned,
        answer: Some("NOTFOUND, testing policy"),
        want: Outcome::Sent("Untrusted"),
    },
    Case {
        name: "no-policy",
        zone: STS_ZONE,
        publishes: Publishes::Nothing,
        cert: Cert::SelfSigned,
        answer: Some("NOTFOUND, no policy"),
        want: Outcome::Sent("Untrusted"),
    },
    Case {
        name: EXEMPT,
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", OWN),
        cert: Cert::SelfSigned,
        answer: None,
        want: Outcome::Sent("Untrusted"),
    },
    Case {
        name: CHROOT,
        zone: STS_ZONE,
        publishes: Publishes::Sts("enforce", OWN),
        cert: Cert::SelfSigned,
        answer: Some(ENFORCE),
        want: Outcome::Deferred(SELF_SIGNED),
    },
    Case {
        name: "dane-match",
        zone: DANE_ZONE,
        publishes: Publishes::Dane { matching: true },
        cert: Cert::SelfSigned,
        answer: Some("dane-only"),
        want: Outcome::Sent("Verified"),
    },
    Case {
        name: "dane-mismatch",
        zone: DANE_ZONE,
        publishes: Publishes::Dane { matching: false },
        cert: Cert::SelfSigned,
        answer: Some("dane-only"),
        want: Outcome::Deferred("num=65:no matching DANE TLSA records"),
    },
    Case {
        name: "tlsrpt-zone",
        zone: TLSRPT_ZONE,
        publishes: Publishes::Sts("enforce", OWN),
        cert: Cert::Valid,
        answer: Some(ENFORCE),
        want: Outcome::TlsrptNeeds310,
    },
];

/// The case delivered by a chrooted smtp(8) asking a daemon on a Unix socket inside the
/// jail ([`CHROOT_SOCKET`], relative to the queue directory).
const CHROOT: &str = "chroot-unix-socket";
const CHROOT_SOCKET: &str = "mta-sts/mta-sts.sock";

/// The case whose domain the static table exempts.
const EXEMPT: &str = "exempt-broken-receiver";

/// The cached case's domain: enforce, delivered; then the TXT record and the policy host go
/// and the MX host presents a self-signed certificate: still enforced (RFC 8461 §3.3, §5.1).
const CACHED: &str = "cached";

/// Names reported for the cached case.
const CACHED_FIRST: &str = "cached-first-delivery";
const CACHED_AFTER: &str = "cached-enforce-after-domain-stops-publishing";

/// The whole run; the exit code of the test binary. `daemon` is the driver's program. The
/// cases share one Postfix and one daemon, so they run together: `--list` lists them, and a
/// filter (libtest's substring rule) that matches none skips the run.
pub fn main(daemon: &str) -> ExitCode {
    let names: Vec<String> = CASES
        .iter()
        .map(|c| c.name)
        .chain([CACHED_FIRST, CACHED_AFTER])
        .map(|n| format!("delivery::{n}"))
        .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for name in &names {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !names.iter().any(|n| filters.iter().any(|f| n.contains(*f))) {
        println!(
            "\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
            names.len()
        );
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    // Before any thread: unshare(2) refuses a mount namespace to a threaded process.
    let _resolv = match netns::enter() {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "Postfix delivery tests: {e}. They need root with CAP_SYS_ADMIN (unshare, \
                 mount), as CI has; they fail rather than skip without it."
            );
            return ExitCode::FAILURE;
        }
    };
    let failed = run(daemon);
    println!(
        "\ntest result: {}. {} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        names.len().saturating_sub(failed),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Sets up the world, the daemons and Postfix, runs every case and prints each result as it
/// is known; the number of failed cases.
fn run(daemon: &str) -> usize {
    let world = World::on_ports(53, 0);
    let sinks: Vec<SmtpSink> = CASES
        .iter()
        .enumerate()
        .map(|(i, case)| publish_case(&world, case, sink_ip(i)))
        .collect();
    // The cached case: a valid MX host now, a self-signed one at the next address later.
    let cached_ip = sink_ip(CASES.len());
    let cached_bad_ip = sink_ip(CASES.len() + 1);
    let cached_mx = mx_host(CACHED);
    let cached_sink = sink(&world, &cached_mx, Cert::Valid, cached_ip);
    let cached_bad_sink = sink(&world, &cached_mx, Cert::SelfSigned, cached_bad_ip);
    publish_enforce(&world, &domain(CACHED), "1", &[&cached_mx]);
    world
        .dns
        .set_mx(&domain(CACHED), &[(10, &cached_mx)], false);
    world.dns.set_a(&cached_mx, &[cached_ip]);

    let mut d = Daemon::start(daemon, &world.config_yaml(&zones()), &["-v", "debug"]);
    let routed: Vec<(String, String)> = CASES
        .iter()
        .filter(|c| c.zone != STS_ZONE)
        .map(|c| (domain(c.name), d.map(c.zone)))
        .collect();
    let chrooted = domain(CHROOT);
    let chroot_map = format!("socketmap:unix:{CHROOT_SOCKET}:{STS_ZONE}");
    let mut routes: Vec<Route<'_>> = routed
        .iter()
        .map(|(d, m)| Route {
            domain: d,
            policy_map: m,
            chroot: false,
        })
        .collect();
    // README "Postfix set-up": in the chroot, the socket path relative to the queue directory.
    routes.push(Route {
        domain: &chrooted,
        policy_map: &chroot_map,
        chroot: true,
    });
    // A static table before the socketmap exempts a receiver whose certificate is broken
    // (README "Questions operators ask"): its first match wins.
    let exempt = domain(EXEMPT);
    let exceptions = [(exempt.as_str(), "may")];
    let postfix = Postfix::start(&d.map(STS_ZONE), &exceptions, &routes, world.ca.ca_pem());
    let jailed = jailed_daemon(daemon, &world, &postfix);

    for case in CASES {
        postfix.send(&recipient(case.name));
    }
    postfix.send(&recipient(CACHED));
    let tlsrpt_known = postfix_version() >= (3, 10);
    let mut failed = 0;
    let mut report = |name: &str, result: Result<String, String>| match result {
        Ok(lines) => println!("test delivery::{name} ... ok\n    {lines}"),
        Err(e) => {
            failed += 1;
            println!("test delivery::{name} ... FAILED\n    {e}");
        }
    };
    for (i, case) in CASES.iter().enumerate() {
        let want = match case.want {
            Outcome::TlsrptNeeds310 if tlsrpt_known => Outcome::Sent("Verified"),
            want => want,
        };
        let asked = if case.name == CHROOT { &jailed } else { &d };
        let rcpt = recipient(case.name);
        let result = check(&postfix, &sinks[i], &rcpt, sink_ip(i), want)
            .and_then(|lines| catch(|| format!("{lines}\n    {}", daemon_answered(asked, case))));
        report(case.name, result);
    }
    let first = check(
        &postfix,
        &cached_sink,
        &recipient(CACHED),
        cached_ip,
        Outcome::Sent("Verified"),
    );
    report(CACHED_FIRST, first);

    // The domain stops publishing: TXT gone and the policy host down (its name now points
    // where nothing listens; with the TXT record gone the daemon has no reason to fetch, but
    // a fetch could not succeed either); its MX host now fails verification. The daemon
    // re-checks the TXT record after cache_grace and must keep answering the cached enforce
    // policy.
    let txt_name = format!("_mta-sts.{}", domain(CACHED));
    let txt_queries = world.dns.queries(&txt_name);
    world.dns.remove(&txt_name);
    world.dns.set_a(
        &crate::policy_host(&domain(CACHED)),
        &[Ipv4Addr::new(127, 0, 0, 99)],
    );
    world.dns.set_a(&cached_mx, &[cached_bad_ip]);
    // Past cache_grace since the fetch, so the next lookup re-checks the TXT record.
    std::thread::sleep(Duration::from_secs(CACHE_GRACE) + Duration::from_millis(200));
    let again = format!("again-{}", recipient(CACHED));
    postfix.send(&again);
    let after = check(
        &postfix,
        &cached_bad_sink,
        &again,
        cached_bad_ip,
        Outcome::Deferred(SELF_SIGNED),
    )
    .and_then(|line| {
        catch(|| {
            assert!(
                world.dns.queries(&txt_name) > txt_queries,
                "the daemon did not re-check the TXT record after cache_grace"
            );
            line
        })
    });
    report(CACHED_AFTER, after);

    // Postfix has retried the deferred mail meanwhile (every second or two): a retry must not
    // have got through either, so a daemon that answered differently on a later lookup fails.
    for (i, case) in CASES.iter().enumerate() {
        if matches!(case.want, Outcome::Deferred(_)) {
            let rcpt = recipient(case.name);
            if let Err(e) = catch(|| still_deferred(&postfix, &sinks[i], &rcpt)) {
                report(&format!("{}-retries", case.name), Err(e));
            }
        }
    }
    if failed > 0 {
        println!(
            "\n---- Postfix maillog ----\n{}\n---- daemon log ----\n{}\n---- jailed daemon log ----\n{}",
            postfix.maillog(),
            d.log(),
            jailed.log()
        );
    }
    drop(postfix);
    d.terminate();
    drop(jailed);
    failed
}

/// The daemon's config after the world's `resolver:` section: zone `dane` checks DANE first,
/// zone `tlsrpt` adds the TLSRPT attributes.
fn zones() -> String {
    format!(
        "cache_grace: {CACHE_GRACE}\nzones:\n  {DANE_ZONE}:\n    dane: true\n  \
         {TLSRPT_ZONE}:\n    tlsrpt: true\n"
    )
}

/// The daemon's log line for `case`'s domain says the expected answer, or there is none
/// when Postfix must not have asked.
fn daemon_answered(daemon: &Daemon, case: &Case) -> String {
    let log = daemon.log();
    let prefix = format!("{} (zone {}): ", domain(case.name), case.zone);
    let line = log.lines().find(|l| l.contains(&prefix));
    match case.answer {
        Some(answer) => {
            let want = format!("{prefix}{answer}");
            assert!(
                line.is_some_and(|l| l.contains(&want)),
                "the daemon did not log {want:?}: {line:?}"
            );
            want
        }
        None => {
            assert_eq!(line, None, "Postfix asked the daemon");
            format!("no daemon line for {}", domain(case.name))
        }
    }
}

/// No `status=sent` for `rcpt` and nothing at its sink, after every retry so far.
fn still_deferred(postfix: &Postfix, sink: &SmtpSink, rcpt: &str) -> String {
    let to = format!("to=<{rcpt}>");
    let sent: Vec<String> = postfix
        .lines_with(&to)
        .into_iter()
        .filter(|l| l.contains("status=sent"))
        .collect();
    assert!(sent.is_empty(), "a retry was delivered: {sent:?}");
    assert_eq!(sink.message_for(rcpt), None, "a retry reached the MX host");
    String::new()
}

/// Asserts one delivery's outcome from Postfix's log and the sink; the status line it read.
/// The MX host is `mx.<the recipient's domain>`, at `ip`.
fn check(
    postfix: &Postfix,
    sink: &SmtpSink,
    rcpt: &str,
    ip: Ipv4Addr,
    want: Outcome,
) -> Result<String, String> {
    catch(|| {
        let line = postfix
            .wait_for_line(&[&format!("to=<{rcpt}>"), "status="], OUTCOME_TIMEOUT)
            .unwrap_or_else(|| panic!("no delivery status for {rcpt}"));
        let rcpt_domain = rcpt.rsplit_once('@').map_or(rcpt, |(_, d)| d);
        let peer = format!("mx.{rcpt_domain}[{ip}]:25");
        match want {
            Outcome::Sent(trust) => {
                assert!(line.contains("status=sent"), "want sent: {line}");
                let tls = format!("{trust} TLS connection established to {peer}");
                assert!(
                    !postfix.lines_with(&tls).is_empty(),
                    "no log line {tls:?} for {rcpt}"
                );
                let got = sink.message_for(rcpt);
                assert!(
                    got.as_ref().is_some_and(|m| m.tls),
                    "the MX host did not get the message over TLS: {got:?}"
                );
                format!("{line}\n    {tls}")
            }
            Outcome::Deferred(reason) => {
                assert!(line.contains(NOT_VERIFIED), "want deferred: {line}");
                let check = format!("verification failed for {peer}: {reason}");
                assert!(
                    !postfix.lines_with(&check).is_empty(),
                    "no log line {check:?} for {rcpt}"
                );
                assert_eq!(sink.message_for(rcpt), None, "mail reached the MX host");
                format!("{line}\n    {check}")
            }
            Outcome::TlsrptNeeds310 => {
                assert!(
                    line.contains("status=deferred (client TLS configuration problem)"),
                    "want deferred: {line}"
                );
                let refused =
                    format!("smtp_tls_policy_maps, next-hop destination \"{rcpt_domain}\"");
                let attr = "invalid attribute name: \"policy_type\"";
                let found = postfix.lines_with(&refused);
                let found = found.iter().find(|l| l.contains(attr));
                assert!(found.is_some(), "no log line {refused:?} .. {attr:?}");
                assert_eq!(sink.message_for(rcpt), None, "mail reached the MX host");
                format!("{line}\n    {refused} .. {attr}")
            }
        }
    })
}

/// A second daemon on `<queue>/mta-sts/mta-sts.sock` as README "Postfix set-up" has it: the
/// directory group `postfix`, mode 0750, the socket 0666 (the directory keeps others out).
fn jailed_daemon(bin: &str, world: &World, postfix: &Postfix) -> Daemon {
    let socket = postfix.queue_dir().join(CHROOT_SOCKET);
    let dir = socket.parent().expect("the socket is in a directory");
    std::fs::create_dir(dir).expect("mkdir the socket's directory");
    // The daemon runs as root here; in the README it is the service user.
    crate::chown("root:postfix", dir);
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
        .expect("chmod 0750");
    Daemon::start_on(
        std::path::Path::new(bin),
        crate::Listen::Unix(socket.clone()),
        &world.config_yaml(&format!("mode: 0666\n{}", zones())),
        &["-v", "debug"],
    )
}

/// Postfix's (major, minor) version, from `postconf -dh mail_version`.
fn postfix_version() -> (u32, u32) {
    let postconf = crate::find_program("postconf").expect("Postfix's postconf is installed");
    let mut cmd = std::process::Command::new(postconf);
    cmd.args(["-dh", "mail_version"]);
    let (code, out, err) = crate::run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(code, 0, "postconf -dh mail_version: {err}");
    // `3.7.11`, or a snapshot's `3.11-20250620`: the leading digits of the first two parts.
    let number = |p: &str| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    };
    let mut parts = out.trim().split(['.', '-']).map(number);
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => panic!("unexpected mail_version {out:?}"),
    }
}

/// Runs `f`, turning a panic into its message.
fn catch(f: impl FnOnce() -> String) -> Result<String, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

fn domain(name: &str) -> String {
    format!("{name}.example")
}

fn mx_host(name: &str) -> String {
    format!("mx.{}", domain(name))
}

fn recipient(name: &str) -> String {
    format!("{name}@{}", domain(name))
}

fn sink_ip(i: usize) -> Ipv4Addr {
    let last = u8::try_from(i).ok().and_then(|i| i.checked_add(FIRST_SINK));
    Ipv4Addr::new(127, 0, 0, last.expect("fewer than 245 sinks"))
}

/// Publishes `case` (MX record, MX host address, policy or TLSA) and starts its sink.
fn publish_case(world: &World, case: &Case, ip: Ipv4Addr) -> SmtpSink {
    let domain = domain(case.name);
    let mx = mx_host(case.name);
    match case.publishes {
        Publishes::Sts(mode, patterns) => {
            let patterns: Vec<String> = patterns
                .iter()
                .map(|p| p.replace("{mx}", &mx).replace("{domain}", &domain))
                .collect();
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            world.add_policy_domain(
                &domain,
                &sts_txt("1"),
                Behaviour::policy(&policy_body(mode, 86400, &refs)),
            );
        }
        Publishes::Nothing => {}
        Publishes::Dane { .. } => world.dns.sign_zone(&domain),
    }
    let signed = matches!(case.publishes, Publishes::Dane { .. });
    world.dns.set_mx(&domain, &[(10, &mx)], signed);
    world.dns.set_a_with(&mx, &[ip], signed);
    if let Publishes::Dane { matching } = case.publishes {
        let cert = self_signed(&[&mx]);
        let mut digest = Sha256::digest(&cert.spki_der).to_vec();
        if !matching {
            digest.iter_mut().for_each(|b| *b ^= 0xff);
        }
        world
            .dns
            .set_tlsa(&format!("_25._tcp.{mx}"), &[(3, 1, 1, digest)], true);
        return bind_sink(cert.identity, ip);
    }
    sink(world, &mx, case.cert, ip)
}

/// A sink on `ip`:25 presenting `cert` for `mx`.
fn sink(world: &World, mx: &str, cert: Cert, ip: Ipv4Addr) -> SmtpSink {
    let identity = match cert {
        Cert::Valid => world.ca.identity(&[mx], Validity::Valid),
        Cert::OtherName => world.ca.identity(&["other-name.example"], Validity::Valid),
        Cert::SelfSigned => self_signed(&[mx]).identity,
    };
    bind_sink(identity, ip)
}

fn bind_sink(identity: native_tls::Identity, ip: Ipv4Addr) -> SmtpSink {
    SmtpSink::bind(SocketAddr::from((ip, 25)), identity)
        .unwrap_or_else(|e| panic!("bind an SMTP sink on {ip}:25: {e}"))
}
