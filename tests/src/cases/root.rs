//! Started as root (README.md "Deploy"): the daemon writes its pidfile and
//! log, and binds its Unix sockets, in directories the service user may
//! own, and must not follow what that user plants there; `-u` and `-g`
//! pick the ids it runs as. These cases need root, which CI has: they fail,
//! not skip, without it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ops::process_ids;
use super::{expect, publish_enforce, secure, Bins, RawProcess};
use crate::{Daemon, World};

/// nobody's ids.
const NOBODY: u32 = 65534;
/// What a root-owned file holds before an attack, and must hold after.
const PRECIOUS: &str = "precious\n";

fn must_be_root() {
    // SAFETY: geteuid(2) cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this case needs root");
}

/// A directory of the service user (nobody) in the world's dir, and a
/// root-owned file outside it.
fn service_dir_and_target(world: &World) -> (PathBuf, PathBuf) {
    let dir = world.dir().join("service");
    std::fs::create_dir(&dir).expect("service dir");
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown service dir");
    let target = world.dir().join("root-owned");
    std::fs::write(&target, PRECIOUS).expect("root-owned file");
    (dir, target)
}

/// Starts the daemon with `args` on its own port and waits (up to 20 s)
/// for it to exit, or for `target` to change (it followed a link): its
/// exit code (`None`: still running) and output.
fn start_expecting_refusal(
    bins: &Bins,
    world: &World,
    extra: &str,
    args: &[&str],
    target: &Path,
) -> (Option<i32>, String) {
    let config = world.write_config(&format!("port: {}\n{extra}", crate::free_port()));
    let mut all = vec!["-c", config.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out_dir = world.dir().join(format!("run-{}", args.len()));
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let mut daemon = RawProcess::spawn(bins.daemon, &all, &out_dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(code) = daemon.exited() {
            return (Some(code), daemon.output());
        }
        if std::fs::read_to_string(target).ok().as_deref() != Some(PRECIOUS) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (daemon.exited(), daemon.output())
}

/// Asserts `target` is as [`service_dir_and_target`] made it: content,
/// owner and mode.
fn assert_untouched(target: &Path, mode: u32, output: &str) {
    let text = std::fs::read_to_string(target).unwrap_or_default();
    assert_eq!(text, PRECIOUS, "root-owned file written; output:\n{output}");
    let meta = std::fs::metadata(target).expect("target metadata");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, mode),
        "root-owned file changed; output:\n{output}"
    );
}

/// `-p DIR/pid` where the service user made `pid` a symbolic link to a
/// root-owned file: the daemon refuses to start, saying why, and the file
/// is unchanged.
pub fn pidfile_symlink_refused(bins: &Bins) {
    must_be_root();
    let world = World::new();
    let (dir, target) = service_dir_and_target(&world);
    let mode = std::fs::metadata(&target).expect("target").mode() & 0o7777;
    let pidfile = dir.join("pid");
    std::os::unix::fs::symlink(&target, &pidfile).expect("symlink");
    let pidfile = pidfile.display().to_string();
    let (code, out) =
        start_expecting_refusal(bins, &world, "", &["-u", "nobody", "-p", &pidfile], &target);
    assert_untouched(&target, mode, &out);
    assert_eq!(code, Some(1), "output:\n{out}");
    assert!(
        out.contains(&pidfile) && out.contains("symbolic link"),
        "output:\n{out}"
    );
}

/// `-l DIR/log` where `log` is a symbolic link to a root-owned file: the
/// daemon refuses to start, saying why, and the file is unchanged.
pub fn logfile_symlink_refused(bins: &Bins) {
    must_be_root();
    let world = World::new();
    let (dir, target) = service_dir_and_target(&world);
    let mode = std::fs::metadata(&target).expect("target").mode() & 0o7777;
    let logfile = dir.join("log");
    std::os::unix::fs::symlink(&target, &logfile).expect("symlink");
    let logfile = logfile.display().to_string();
    let (code, out) =
        start_expecting_refusal(bins, &world, "", &["-u", "nobody", "-l", &logfile], &target);
    assert_untouched(&target, mode, &out);
    assert_eq!(code, Some(1), "output:\n{out}");
    assert!(
        out.contains(&logfile) && out.contains("symbolic link"),
        "output:\n{out}"
    );
}

/// The log file is reopened on SIGHUP (logrotate): when the owner of its
/// directory put a symbolic link at its name in the meantime, the daemon
/// keeps the old file and says so there, and the link's target is
/// unchanged (root here: no `-u`, so nothing else would stop the write).
pub fn reopened_log_symlink_not_followed(bins: &Bins) {
    must_be_root();
    let world = World::new();
    let (dir, target) = service_dir_and_target(&world);
    let mode = std::fs::metadata(&target).expect("target").mode() & 0o7777;
    let logfile = dir.join("log");
    let d = Daemon::start(
        bins.daemon,
        &world.config_yaml(""),
        &["-l", logfile.to_str().expect("utf-8 path")],
    );
    // Answering starts before the SIGHUP handler is installed; "ready" is
    // logged after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !std::fs::read_to_string(&logfile)
            .unwrap_or_default()
            .contains("INFO  ready")
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rotated = dir.join("log.1");
    std::fs::rename(&logfile, &rotated).expect("rotate");
    std::os::unix::fs::symlink(&target, &logfile).expect("symlink");
    d.signal(libc::SIGHUP);
    let said = "cannot reopen the log file";
    let deadline = Instant::now() + Duration::from_secs(20);
    let old_log = || std::fs::read_to_string(&rotated).unwrap_or_default();
    while Instant::now() < deadline
        && !old_log().contains(said)
        && std::fs::read_to_string(&target).ok().as_deref() == Some(PRECIOUS)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_untouched(&target, mode, &old_log());
    assert!(
        old_log().contains("symbolic link"),
        "log:\n{}\noutput:\n{}",
        old_log(),
        d.log()
    );
}

/// A symbolic link at the socketmap socket's or the metrics socket's
/// path, to a root-owned file: the daemon refuses to start and neither
/// follows the link nor changes the file's mode or owner.
pub fn socket_path_symlink_not_followed(bins: &Bins) {
    must_be_root();
    let world = World::new();
    let (dir, target) = service_dir_and_target(&world);
    let mode = std::fs::metadata(&target).expect("target").mode() & 0o7777;
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let link = crate::daemon::yaml_str(&link.display().to_string());
    let free = crate::daemon::yaml_str(&dir.join("free.sock").display().to_string());
    for extra in [
        format!("path: {link}\nmode: 0666\n"),
        format!("path: {free}\nmode: 0666\nmetrics:\n  path: {link}\n  mode: 0666\n"),
    ] {
        let (code, out) = start_expecting_refusal(bins, &world, &extra, &["-u", "nobody"], &target);
        assert_untouched(&target, mode, &out);
        assert_eq!(code, Some(1), "config:\n{extra}output:\n{out}");
        assert!(out.contains("not a socket"), "output:\n{out}");
        let _ = std::fs::remove_file(dir.join("free.sock"));
    }
}

/// With `-u nobody`, the socketmap socket and the metrics socket belong
/// to nobody (as if bound after the privilege drop), with their modes.
pub fn unix_sockets_belong_to_the_service_user(bins: &Bins) {
    must_be_root();
    let world = World::new();
    publish_enforce(&world, "owned.example", "1", &["mx.owned.example"]);
    let admin = world.dir().join("admin.sock");
    let extra = format!(
        "mode: 0660\nmetrics:\n  path: {}\n",
        crate::daemon::yaml_str(&admin.display().to_string())
    );
    let d = Daemon::start_unix(bins.daemon, &world.config_yaml(&extra), &["-u", "nobody"]);
    expect(&d, "postfix", "owned.example", &secure("mx.owned.example"));
    let crate::Listen::Unix(socketmap) = d.listen().clone() else {
        panic!("not a Unix socket daemon");
    };
    for (path, mode) in [(socketmap, 0o660), (admin, 0o600)] {
        let meta = std::fs::symlink_metadata(&path).expect("socket");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (NOBODY, NOBODY, mode),
            "{}; log:\n{}",
            path.display(),
            d.log()
        );
    }
}

/// `-u UID` (a number) without `-g` runs with that user's primary group
/// from the passwd database, not the group with the same number.
pub fn numeric_user_gets_its_primary_group(bins: &Bins) {
    must_be_root();
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let (uid, gid) = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let id = |n: usize| fields.get(n)?.parse::<u32>().ok();
            Some((id(2)?, id(3)?))
        })
        .find(|&(uid, gid)| uid != 0 && uid != gid)
        .expect("a passwd entry whose primary group is not its user id");
    let world = World::new();
    publish_enforce(&world, "numeric.example", "1", &["mx.numeric.example"]);
    let d = Daemon::start(
        bins.daemon,
        &world.config_yaml(""),
        &["-u", &uid.to_string()],
    );
    expect(
        &d,
        "postfix",
        "numeric.example",
        &secure("mx.numeric.example"),
    );
    let pid = d.pid().expect("pid");
    let (ids, status) = process_ids(pid);
    assert_eq!(ids("Uid:"), format!("{uid} {uid} {uid} {uid}"), "{status}");
    assert_eq!(ids("Gid:"), format!("{gid} {gid} {gid} {gid}"), "{status}");
}

/// Started as root without `-u`, the daemon warns that it keeps root;
/// with `-u` it does not.
pub fn root_without_user_warned(bins: &Bins) {
    must_be_root();
    let world = World::new();
    let warning = "running as root";
    let d = Daemon::start(bins.daemon, &world.config_yaml(""), &[]);
    assert!(d.log().contains(warning), "log:\n{}", d.log());
    let d = Daemon::start(bins.daemon, &world.config_yaml(""), &["-u", "nobody"]);
    assert!(!d.log().contains(warning), "log:\n{}", d.log());
}

/// The logrotate file's postrotate script (run as root) signals the pid in
/// the service user's pidfile only when that process is the daemon: a
/// compromised service user that writes another pid, or -1 (every
/// process), makes root signal nothing. The daemon itself is told to
/// reopen its log.
pub fn logrotate_signals_only_the_daemon(bins: &Bins) {
    must_be_root();
    let world = World::new();
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/logrotate/mta-sts-daemon"
    ))
    .expect("contrib/logrotate/mta-sts-daemon");
    let script = conf
        .split_once("postrotate\n")
        .and_then(|(_, rest)| rest.split_once("endscript"))
        .map(|(script, _)| script)
        .expect("a postrotate script");
    let pidfile = world.dir().join("mta-sts-daemon.pid");
    let pid_path = pidfile.to_str().expect("utf-8 path");
    assert!(
        script.contains("/run/mta-sts/mta-sts-daemon.pid"),
        "{script}"
    );
    // The branch without systemd, on this test's pidfile.
    let script = script
        .replace("[ -d /run/systemd/system ]", "false")
        .replace("/run/mta-sts/mta-sts-daemon.pid", pid_path);
    let postrotate = || {
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh");
        assert!(status.success(), "postrotate failed: {status}");
    };
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    for planted in [bystander.id().to_string(), "-1".to_owned()] {
        std::fs::write(&pidfile, format!("{planted}\n")).expect("pidfile");
        postrotate();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            bystander.try_wait().expect("bystander").is_none(),
            "the script signalled the pid {planted} planted in the pidfile"
        );
    }
    let _ = bystander.kill();
    let _ = bystander.wait();
    let logfile = world.dir().join("daemon.log");
    let _d = Daemon::start(
        bins.daemon,
        &world.config_yaml(""),
        &["-p", pid_path, "-l", logfile.to_str().expect("utf-8 path")],
    );
    let log = || std::fs::read_to_string(&logfile).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !log().contains("INFO  ready") {
        std::thread::sleep(Duration::from_millis(20));
    }
    postrotate();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !log().contains("reloaded") {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log().contains("reloaded"), "log:\n{}", log());
}
