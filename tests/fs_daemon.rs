//! The daemon as a process: SIGINT ends it as cleanly as SIGTERM does, and
//! it works for a user who is not root.
mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{containers_with_label, expect_errno, is_mounted, require_docker, Daemon, BIN};

fn status(d: &Daemon, name: &str) -> String {
    d.read(&format!("machines/{name}/status")).trim().to_owned()
}

/// Leaves promptly on SIGTERM, so stops cost no grace period.
const IDLE: &str = r#"["sh","-c","trap \"exit 0\" TERM; sleep 600 & wait"]"#;

#[test]
fn sigint_unmounts_exits_zero_and_a_restart_shows_the_same_machines() {
    require_docker();
    let mut d = Daemon::start();
    for name in ["p", "r", "s"] {
        d.machine(name, IDLE);
    }
    d.ok("echo start > machines/r/ctl");
    d.ok("echo start > machines/s/ctl && echo stop > machines/s/ctl");
    let names = ["p", "r", "s"];
    let before: Vec<(String, String, String)> = names
        .iter()
        .map(|n| {
            (
                d.read(&format!("machines/{n}/id")),
                d.read(&format!("machines/{n}/config")),
                status(&d, n),
            )
        })
        .collect();
    let r_ctr = d.info("r")["runtime_info"]["handle"]
        .as_str()
        .expect("r's container")
        .to_owned();
    let started = |id: &str| common::docker(&["inspect", "-f", "{{.State.StartedAt}}", id]);
    let r_started = started(&r_ctr);

    let exit = d.stop_with(libc::SIGINT);
    assert_eq!(
        exit.code(),
        Some(0),
        "daemon exited with {exit}; log:\n{}",
        d.log()
    );
    assert!(!is_mounted(&d.mount), "SIGINT must unmount");
    let left: Vec<_> = std::fs::read_dir(&d.mount)
        .expect("mount point is a plain directory again")
        .collect();
    assert!(left.is_empty(), "mount point is not empty: {left:?}");
    assert!(
        !d.state.join("hyperfleet.pid").exists(),
        "the pid file outlived the daemon"
    );
    // The daemon going away does not take the machines with it.
    assert_eq!(
        common::docker(&["inspect", "-f", "{{.State.Status}}", &r_ctr]),
        "running"
    );

    d.spawn();
    assert_eq!(d.ok("ls machines"), "p\nr\ns\n");
    for (n, (id, config, st)) in names.iter().zip(&before) {
        assert_eq!(&d.read(&format!("machines/{n}/id")), id, "{n}");
        assert_eq!(&d.read(&format!("machines/{n}/config")), config, "{n}");
        assert_eq!(&status(&d, n), st, "{n}");
    }
    assert_eq!(
        before.iter().map(|b| b.2.as_str()).collect::<Vec<_>>(),
        ["pending", "running", "stopped"]
    );
    // r was re-adopted, not started again.
    assert_eq!(d.info("r")["runtime_info"]["handle"], r_ctr.as_str());
    assert_eq!(started(&r_ctr), r_started);
    assert_eq!(
        d.ok("echo 'echo still here' > machines/r/exec && cat machines/r/exec"),
        "still here\n"
    );
}

// --- a daemon that is not root ---

const USER: &str = "hftest";

/// Makes this host usable by a non-root daemon for the length of a test,
/// and puts back what it changed:
/// - the user `hftest` (created if absent, and kept: it is only a name);
/// - /dev/fuse is 0600 root here, where Debian has it 0666: without read
///   and write on it nobody but root can mount FUSE (fusermount3 opens it
///   with the caller's rights), so it is made 0666 and restored after;
/// - the Docker socket is root:docker 0660, so the user joins the `docker`
///   group (README: "Docker machines also need access to the Docker
///   socket"), and leaves it after.
///
/// An exclusive lock on a file in /tmp serialises tests that do this, so
/// one test's restore never pulls the rug from under another's set-up.
struct NonRootHost {
    _lock: File,
    fuse_mode: Option<u32>,
    joined_docker: bool,
    uid: u32,
    gid: u32,
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl NonRootHost {
    fn prepare() -> NonRootHost {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test sets up a user and devices, so it runs as root"
        );
        let lock = File::create("/tmp/hyperfleet-test-nonroot.lock").expect("lock file");
        // SAFETY: flock on a descriptor we own; blocks until it is ours.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

        if !run("id", &["-u", USER]).status.success() {
            must("useradd", &["-m", "-s", "/bin/sh", USER]);
        }
        let uid: u32 = must("id", &["-u", USER]).parse().expect("uid");
        let gid: u32 = must("id", &["-g", USER]).parse().expect("gid");

        let mode = std::fs::metadata("/dev/fuse")
            .expect("/dev/fuse exists")
            .permissions()
            .mode()
            & 0o7777;
        let fuse_mode = (mode & 0o006 != 0o006).then(|| {
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
                .expect("chmod /dev/fuse");
            mode
        });

        let groups = must("id", &["-nG", USER]);
        let joined_docker = !groups.split_whitespace().any(|g| g == "docker");
        if joined_docker {
            must("gpasswd", &["-a", USER, "docker"]);
        }
        NonRootHost {
            _lock: lock,
            fuse_mode,
            joined_docker,
            uid,
            gid,
        }
    }
}

impl Drop for NonRootHost {
    fn drop(&mut self) {
        if let Some(mode) = self.fuse_mode {
            let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode));
        }
        if self.joined_docker {
            let _ = run("gpasswd", &["-d", USER, "docker"]);
        }
    }
}

/// A daemon run by `hftest` on a mount and state dir of its own. Its mount
/// has no `allow_other`, so even root cannot look inside: every script runs
/// as the user.
struct UserDaemon {
    mount: PathBuf,
    state: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl UserDaemon {
    fn start(host: &NonRootHost) -> UserDaemon {
        let dir = tempfile::Builder::new()
            .prefix("hf-user-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mount = dir.path().join("mnt");
        let state = dir.path().join("state");
        for d in [&mount, &state] {
            std::fs::create_dir(d).expect("mkdir");
            std::os::unix::fs::chown(d, Some(host.uid), Some(host.gid)).expect("chown");
        }
        let log = File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new("runuser")
            .args(["-u", USER, "--", BIN, "daemon", "--foreground", "--mount"])
            .arg(&mount)
            .arg("--state-dir")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn runuser");
        let mut d = UserDaemon {
            mount,
            state,
            child: Some(child),
            dir,
        };
        // The pid file appears once the mount is up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.daemon_pid().is_none() || !is_mounted(&d.mount) {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the daemon of {USER} exited with {st}; log:\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "no mount; log:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state.join("hyperfleet.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs `script` as the user, in the mount point (which root, who
    /// spawns the user's shell, may not even enter).
    fn sh(&self, script: &str) -> Output {
        Command::new("runuser")
            .args(["-u", USER, "--", "sh", "-c"])
            .arg(format!("cd \"$HYPERFLEET_MOUNT\" || exit 98\n{script}"))
            .current_dir(self.dir.path())
            .env("IMAGE", common::image())
            .env("HF", BIN)
            .env("HYPERFLEET_MOUNT", &self.mount)
            .output()
            .expect("runuser sh")
    }

    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "script failed as {USER} ({}):\n{script}\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            common::tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "script unexpectedly succeeded as {USER}:\n{script}\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn instance(&self) -> String {
        let conn = rusqlite::Connection::open(self.state.join("hyperfleet.db")).expect("db");
        conn.query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
            r.get(0)
        })
        .expect("instance id")
    }

    fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("hyperfleet.instance={}", self.instance()))
    }

    /// SIGTERM to the daemon; waits for it (and runuser) to exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.daemon_pid().expect("daemon pid");
        // SAFETY: signalling the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for UserDaemon {
    fn drop(&mut self) {
        if self.state.join("hyperfleet.db").exists() {
            let ids = self.containers();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = self.daemon_pid() {
                // SAFETY: signalling the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mount) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn a_daemon_run_by_a_normal_user_manages_machines_and_kills_timed_out_execs() {
    require_docker();
    let host = NonRootHost::prepare();
    let out = run("runuser", &["-u", USER, "--", BIN, "--version"]);
    assert!(
        out.status.success(),
        "{USER} cannot run {BIN}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = UserDaemon::start(&host);
    assert!(
        d.ok("cat runtimes/docker/status").starts_with("available"),
        "docker is not usable by {USER}"
    );

    // The daemon runs as the user; its files are the user's, and the mount
    // is the user's alone.
    let pid = d.daemon_pid().expect("daemon pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uids = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line");
    assert!(
        uids.split_whitespace().all(|u| u == host.uid.to_string()),
        "the daemon is not {USER} alone: Uid {uids}"
    );
    assert_eq!(d.ok("id -un"), format!("{USER}\n"));
    assert_eq!(mode_of(&d.state.join("hyperfleet.lock")) & 0o077, 0);
    assert!(
        std::fs::read_dir(&d.mount).is_err(),
        "root looked into a mount that has no allow_other"
    );

    d.ok(&format!(
        r#"mkdir machines/web && /bin/echo '{{"image":"'"$IMAGE"'","cmd":{IDLE}}}' > machines/web/config"#
    ));
    d.ok("echo start > machines/web/ctl");
    assert_eq!(d.ok("cat machines/web/status"), "running\n");
    assert_eq!(d.containers().len(), 1);
    // The workload is root inside its container; the daemon is not.
    assert_eq!(
        d.ok("echo 'id -u' > machines/web/exec && cat machines/web/exec machines/web/exec.exit"),
        "0\n0\n"
    );
    assert_eq!(d.ok("$HF exec web -- echo via-client"), "via-client\n");

    // A timed-out exec is killed although the daemon may not signal the
    // container's (root) processes: it falls back to `kill` inside. (The
    // timeout leaves the engine time to report the exec's pid even on a busy
    // host; fs_promises has the case where it does not.)
    for cmd in ["sleep 300", "sleep 301; echo never"] {
        let stderr = d.fails(&format!(
            r#"/bin/echo '{{"cmd":["sh","-c","{cmd}"],"timeout":3}}' > machines/web/exec"#
        ));
        expect_errno(&stderr, "Connection timed out");
        let err = d.ok("cat machines/web/error");
        assert!(
            err.contains("did not finish") && !err.contains("could not be killed"),
            "{err}"
        );
    }
    let ps = d.ok("echo ps > machines/web/exec && cat machines/web/exec");
    assert!(ps.contains("sleep 600"), "ps output unexpected: {ps}");
    assert!(
        !ps.contains("sleep 300"),
        "timed-out command still runs:\n{ps}"
    );
    assert!(
        !ps.contains("sleep 301"),
        "timed-out command still runs:\n{ps}"
    );
    assert_eq!(d.ok("cat machines/web/status"), "running\n");

    d.ok("echo stop > machines/web/ctl");
    assert_eq!(d.ok("cat machines/web/status"), "stopped\n");
    // Gracefully: the workload left on SIGTERM by itself.
    assert!(
        d.ok("cat machines/web/info").contains("\"exit_code\": 0,"),
        "{}",
        d.ok("cat machines/web/info")
    );
    d.ok("rmdir machines/web");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty(), "rmdir left a container");

    let exit = d.stop();
    assert!(
        exit.success(),
        "daemon exited with {exit}; log:\n{}",
        d.log()
    );
    assert!(!is_mounted(&d.mount), "SIGTERM must unmount");
}
