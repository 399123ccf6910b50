//! A second Postfix instance (the Debian package's programs) with its own configuration
//! directory, queue directory and `maillog_file`, for the delivery tests: its SMTP client asks
//! the daemon for each destination's TLS policy through `smtp_tls_policy_maps` and delivers
//! to the test MX hosts, and its log says what it did. It must run inside a private network
//! namespace ([`crate::netns`]), where its DNS is the test world's. Needs root (`postfix
//! start`, `sendmail -C`). Dropping it stops it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{find_program, run_bounded, run_bounded_with_input, wait_until};

/// How long a `postfix` or `sendmail` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The services this instance runs: no `smtpd` (nothing listens) and no chroot, except in
/// the routed transports that ask for it ([`Route`]), appended per instance.
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Files a chrooted smtp(8) reads inside the jail (`queue/etc/...`), as Debian's init script
/// copies them: DNS resolution and the `smtp` service port.
const JAIL_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/localtime",
];

/// A destination delivered by a transport of its own.
pub struct Route<'a> {
    /// The destination domain (a transport map key).
    pub domain: &'a str,
    /// The transport's `smtp_tls_policy_maps`.
    pub policy_map: &'a str,
    /// Whether the transport's smtp(8) runs chrooted in the queue directory (Debian's
    /// default for `smtp` in master.cf).
    pub chroot: bool,
}

/// How long the master may take to log that it started, or to exit after `postfix stop`.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One Postfix instance in a temp dir: `etc/` (main.cf, master.cf, transport, tls_policy,
/// the CA file), `queue/`, `data/`, `maillog`. Its master runs in the foreground as our
/// child (`postfix start-fg`), so it dies with the test process even when that is killed.
pub struct Postfix {
    dir: tempfile::TempDir,
    master: Option<Child>,
}

impl Postfix {
    /// Writes the configuration and starts the instance. `policy_map` is the default
    /// `smtp_tls_policy_maps`, after a static `texthash:` table holding `exceptions`
    /// (`(domain, policy)`, README "Questions operators ask": exempting a receiver); each
    /// destination of `routes` is delivered by a transport of its own (how a relay uses a
    /// second socketmap name). `ca_pem` is trusted for `secure` verification. Panics with
    /// the log if the instance does not start.
    pub fn start(
        policy_map: &str,
        exceptions: &[(&str, &str)],
        routes: &[Route<'_>],
        ca_pem: &str,
    ) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("postfix-")
            .tempdir()
            .expect("temp dir for postfix");
        // Postfix's daemons run as `postfix`: they read the CA file and the maps.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).expect("mkdir etc");
        let jail = dir.path().join("queue").join("etc");
        fs::create_dir_all(&jail).expect("mkdir queue/etc");
        for file in JAIL_FILES.iter().map(Path::new) {
            if let (Some(name), true) = (file.file_name(), file.exists()) {
                fs::copy(file, jail.join(name)).expect("copy a file into the jail");
            }
        }
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("mkdir data");
        // Its `data_directory` must belong to `mail_owner`.
        crate::chown("postfix", &data);
        fs::write(etc.join("ca.pem"), ca_pem).expect("write CA file");

        let mut master = MASTER_CF.to_string();
        let mut transport = String::new();
        for (i, route) in routes.iter().enumerate() {
            let service = format!("smtp-routed{i}");
            let chroot = if route.chroot { "y" } else { "n" };
            master.push_str(&format!(
                "{service} unix - - {chroot} - - smtp -o smtp_tls_policy_maps={}\n",
                route.policy_map
            ));
            transport.push_str(&format!("{} {service}:\n", route.domain));
        }
        fs::write(etc.join("master.cf"), master).expect("write master.cf");
        fs::write(etc.join("transport"), transport).expect("write transport");
        let exceptions: String = exceptions
            .iter()
            .map(|(domain, policy)| format!("{domain} {policy}\n"))
            .collect();
        fs::write(etc.join("tls_policy"), exceptions).expect("write tls_policy");
        let root = dir.path().display();
        let main_cf = format!(
            "\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
biff = no
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
transport_maps = texthash:{root}/etc/transport
smtp_tls_policy_maps = texthash:{root}/etc/tls_policy, {policy_map}
smtp_tls_security_level = may
smtp_tls_CAfile = {root}/etc/ca.pem
smtp_tls_loglevel = 1
smtp_dns_support_level = dnssec
smtp_connect_timeout = 5s
smtp_helo_timeout = 10s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
"
        );
        fs::write(etc.join("main.cf"), main_cf).expect("write main.cf");
        let postfix = find_program("postfix").expect("Postfix is installed");
        let mut cmd = Command::new(postfix);
        cmd.arg("-c").arg(&etc).arg("start-fg");
        crate::child_setup(&mut cmd, None, None);
        let output = |name: &str| fs::File::create(dir.path().join(name)).expect("output file");
        let master = cmd
            .stdin(Stdio::null())
            .stdout(output("master.out"))
            .stderr(output("master.out"))
            .spawn()
            .expect("spawn postfix start-fg");
        let mut pf = Postfix {
            dir,
            master: Some(master),
        };
        let mut exited = None;
        let started = wait_until(START_STOP_TIMEOUT, || {
            exited = pf.master.as_mut().and_then(|m| m.try_wait().ok().flatten());
            exited.is_some() || pf.maillog().contains("daemon started")
        });
        if !started || exited.is_some() {
            panic!(
                "postfix start-fg: {exited:?}\n{}\nmaillog:\n{}",
                fs::read_to_string(pf.dir.path().join("master.out")).unwrap_or_default(),
                pf.maillog()
            );
        }
        pf
    }

    /// The queue directory, where chrooted services live (`queue_directory`).
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// The configuration directory (`-c`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The whole `maillog_file` so far.
    pub fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Submits a short message from `postmaster@relay.test` to `recipient` (`sendmail -C`,
    /// which needs root for another instance).
    pub fn send(&self, recipient: &str) {
        let sendmail = find_program("sendmail").expect("Postfix's sendmail is installed");
        let message = format!(
            "From: postmaster@relay.test\nTo: {recipient}\nSubject: delivery test\n\nTLS policy test.\n"
        );
        let mut cmd = Command::new(sendmail);
        cmd.arg("-C")
            .arg(self.config_dir())
            .args(["-f", "postmaster@relay.test", "--", recipient]);
        let (code, out, err) = run_bounded_with_input(cmd, message.as_bytes(), COMMAND_TIMEOUT);
        assert_eq!(code, 0, "sendmail to {recipient}: {out}{err}");
    }

    /// Waits up to `timeout` for a log line containing every one of `parts`, returning it.
    pub fn wait_for_line(&self, parts: &[&str], timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .maillog()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string);
            found.is_some()
        });
        found
    }

    /// The log lines containing `part`.
    pub fn lines_with(&self, part: &str) -> Vec<String> {
        self.maillog()
            .lines()
            .filter(|l| l.contains(part))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        // `postfix stop` lets the master stop its children; SIGKILL if it does not exit.
        if let Some(postfix) = find_program("postfix") {
            let mut cmd = Command::new(postfix);
            cmd.arg("-c").arg(self.config_dir()).arg("stop");
            let _ = run_bounded(cmd, COMMAND_TIMEOUT);
        }
        wait_until(START_STOP_TIMEOUT, || {
            !matches!(master.try_wait(), Ok(None))
        });
        let _ = master.kill();
        let _ = master.wait();
    }
}
