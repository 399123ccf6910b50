//! Postfix's own socketmap client, `postmap -q`, against the running daemon over TCP and a
//! Unix socket (socketmap_table(5); socketmap_table(5)).

use super::{publish_enforce, start, Bins};
use crate::{postmap_query, Daemon, PostmapOutcome, World};

const ZONES: &str = "zones:\n  rpt:\n    tlsrpt: true\n";

fn publish(world: &World) {
    publish_enforce(
        world,
        "pm.example",
        "1",
        &["mx1.pm.example", "*.pm.example"],
    );
}

fn check(d: &Daemon) {
    let r = postmap_query("pm.example", &d.map("postfix"));
    assert_eq!(
        r.outcome(),
        PostmapOutcome::Found("secure match=mx1.pm.example:.pm.example servername=hostname".into()),
        "{r:?}; log:\n{}",
        d.log()
    );
    let r = postmap_query("nopolicy.example", &d.map("postfix"));
    assert_eq!(r.outcome(), PostmapOutcome::NotFound, "{r:?}");
    let r = postmap_query("[pm.example]:25", &d.map("rpt"));
    assert_eq!(
        r.outcome(),
        PostmapOutcome::Found(
            "secure match=mx1.pm.example:.pm.example servername=hostname policy_type=sts \
             policy_domain=pm.example mx_host_pattern=mx1.pm.example mx_host_pattern=*.pm.example \
             { policy_string = version: STSv1 } { policy_string = mode: enforce } \
             { policy_string = mx: mx1.pm.example } { policy_string = mx: *.pm.example } \
             { policy_string = max_age: 86400 }"
                .into()
        ),
        "{r:?}"
    );
}

/// `postmap -q KEY socketmap:inet:127.0.0.1:PORT:NAME`: enforce, no policy, TLSRPT zone.
pub fn postmap_over_tcp(bins: &Bins) {
    let world = World::new();
    publish(&world);
    let d = start(bins, &world, ZONES);
    check(&d);
}

/// `postmap -q KEY socketmap:unix:PATH:NAME`: the same over a Unix socket.
pub fn postmap_over_unix_socket(bins: &Bins) {
    let world = World::new();
    publish(&world);
    let d = Daemon::start_unix(bins.daemon, &world.config_yaml(ZONES), &["-v", "debug"]);
    check(&d);
}
