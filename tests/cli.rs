//! The CLI people expect: `ps`, `create`, `start`, `stop`, `kill`,
//! `restart`, `rm`, `logs`, `inspect`, `wait`, `stop-daemon`, completions
//! and the man page; each a client of the mounted filesystem, each error
//! printed with its errno and the machine's own `error` line. And the
//! daemon's manners: what it prints on start, plain-text logs with a line
//! per lifecycle operation, a systemd unit that verifies.

mod common;

use std::process::Command;

use common::{require_docker, Daemon, BIN};

#[test]
fn the_docker_verbs_drive_a_machine_through_its_life() {
    require_docker();
    let d = Daemon::start();
    assert_eq!(
        d.ok("$HF create web --image \"$IMAGE\" -- sh -c 'echo hello-from-web; trap \"exit 0\" TERM; while :; do sleep 1; done'"),
        "web\n"
    );
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert_eq!(d.ok("$HF start web"), "web\n");
    let ps = d.ok("$HF ps");
    let mut lines = ps.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "RUNTIME",
            "STATUS",
            "UPTIME",
            "IMAGE/KERNEL",
            "ADDRESSES"
        ]
    );
    let row = lines.next().expect("a row for web");
    assert!(
        row.starts_with("web") && row.contains("docker") && row.contains("running"),
        "{ps}"
    );
    assert!(row.contains("hyperfleet-test/busybox"), "{ps}");
    let json: serde_json::Value = serde_json::from_str(&d.ok("$HF ps --format json")).unwrap();
    assert_eq!(json[0]["name"], "web");
    assert_eq!(json[0]["status"], "running");
    assert!(!json[0]["addresses"].as_array().unwrap().is_empty());

    d.ok("/bin/echo 'wait running 10' > machines/web/ctl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !d.read("machines/web/logs").contains("hello-from-web") {
        assert!(std::time::Instant::now() < deadline, "no output in logs");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(d.ok("$HF logs web"), "hello-from-web\n");
    assert_eq!(d.ok("$HF logs --tail 1 web"), "hello-from-web\n");
    let inspect: serde_json::Value = serde_json::from_str(&d.ok("$HF inspect web")).unwrap();
    assert_eq!(inspect[0]["name"], "web");
    assert_eq!(inspect[0]["runtime_info"]["state"], "running");

    // Files in and out, as `docker cp`.
    let out = d.ok(
        "t=$(mktemp -d) && printf 'payload\\n' > $t/a && $HF cp $t/a web:/tmp/a && \
         $HF exec web cat /tmp/a && $HF cp web:/tmp/a - && rm -rf $t",
    );
    assert_eq!(out, "payload\npayload\n");
    let out = d.sh("$HF cp web:/no/such/file /tmp/x");
    assert!(!out.status.success());

    assert_eq!(d.ok("$HF restart web"), "web\n");
    assert_eq!(d.ok("$HF stop web"), "web\n");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    // Not running now: `ps` leaves it out, `ps -a` shows it.
    assert_eq!(d.ok("$HF ps").lines().count(), 1);
    assert!(d.ok("$HF ps -a").contains("stopped"));
    // `wait` with no status: until it no longer runs; prints its exit code.
    assert_eq!(d.ok("$HF wait web"), "0\n");

    d.ok("$HF start web");
    let out = d.sh("$HF rm web");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Device or resource busy") && err.contains("stop it before removing it"),
        "{err}"
    );
    assert_eq!(d.ok("$HF rm -f web"), "web\n");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty());
}

#[test]
fn errors_print_the_errno_and_the_machines_error_line() {
    require_docker();
    let d = Daemon::start();
    d.ok("$HF create web --image \"$IMAGE\" -- sleep 600");
    let out = d.sh("$HF stop web");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stop web: Invalid argument")
            && err.contains("cannot stop a machine that is pending"),
        "{err}"
    );
    let out = d.sh("$HF start nosuch");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no machine named \"nosuch\""));
    // A refused config leaves nothing half-made.
    let out = d.sh("echo '{\"imgae\":1}' | $HF create bad -f -");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imgae"));
    assert_eq!(d.ok("ls machines"), "web\n");
    let out = d.sh("$HF create web --image x");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    // With no daemon: a clear word, not a stack of ENOENTs.
    let out = Command::new(BIN)
        .args(["ps"])
        .env("HYPERFLEET_MOUNT", "/nonexistent/mount")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `hyperfleet daemon` running?"));
}

#[test]
fn the_daemon_says_where_it_is_logs_plainly_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mount, state) = (dir.path().join("mnt"), dir.path().join("state"));
    let out = Command::new(BIN)
        .args(["daemon", "--mount"])
        .arg(&mount)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("daemon");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "is serving",
        &format!("mount: {}", mount.display()),
        "hyperfleet.log",
        "REST:  off",
        "hyperfleet stop-daemon --state-dir",
    ] {
        assert!(said.contains(needle), "{needle:?} not in:\n{said}");
    }
    let pid = std::fs::read_to_string(state.join("hyperfleet.pid")).unwrap();
    assert!(said.contains(&format!("pid {}", pid.trim())), "{said}");
    let ok = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&mount)
            .env("HF", BIN)
            .env("HYPERFLEET_MOUNT", &mount)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    };
    ok("mkdir machines/web && echo '{}' > machines/web/config && ! echo start > machines/web/ctl 2>/dev/null");
    let out = Command::new(BIN)
        .args(["stop-daemon", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!common::is_mounted(&mount));
    let log = std::fs::read_to_string(state.join("hyperfleet.log")).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the log file:\n{log}"
    );
    assert!(!log.contains("Not Implemented"), "{log}");
    assert!(
        log.contains("created") && log.contains("machine=web"),
        "{log}"
    );
    assert!(
        log.contains("op=start") && log.contains("operation failed"),
        "{log}"
    );
    // Nothing left to stop: said plainly.
    let out = Command::new(BIN)
        .args(["stop-daemon", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon is serving"));
}

#[test]
fn completions_the_man_page_and_the_systemd_unit() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("stop-daemon"), "{shell}");
    }
    // bash accepts the script it is given.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({BIN} completions bash) && complete -p hyperfleet"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let man = run(&["man"]);
    assert!(man.starts_with(".ie") && man.contains(".TH hyperfleet 1"));

    // The unit verifies (with its binary and man page where it says).
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/hyperfleet.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("KillMode=process"));
    let unit_path = dir.path().join("hyperfleet.service");
    std::fs::write(&unit_path, unit.replace("/usr/local/bin/hyperfleet", BIN)).unwrap();
    let man_dir = dir.path().join("man1");
    std::fs::create_dir(&man_dir).unwrap();
    std::fs::write(man_dir.join("hyperfleet.1"), man).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .env("MANPATH", dir.path())
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn events_prints_changes_as_they_happen_and_a_machines_stream_ends_with_it() {
    use std::io::{BufRead, BufReader};
    let d = Daemon::start();
    d.ok("mkdir machines/a");
    let mut all = d.blocked("exec $HF events");
    let one = d.blocked("exec $HF events a");
    let mut all_lines = BufReader::new(all.stdout.take().expect("stdout")).lines();
    d.fails("echo bogus > machines/a/ctl");
    d.ok("mkdir machines/b && rmdir machines/a");
    let what = |line: &str| {
        line.splitn(4, ' ')
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let seen: Vec<String> = (0..3)
        .map(|_| what(&all_lines.next().expect("a line").expect("read")))
        .collect();
    assert_eq!(seen, ["a error", "b created", "a deleted"]);
    // a's stream ended with a: the command exits by itself, 0.
    let out = one.wait_with_output().expect("events a");
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(what)
        .collect();
    assert_eq!(lines, ["a error", "a deleted"]);
    all.kill().ok();
    all.wait().ok();
    // A closed pipe ends it quietly; an unknown machine is a clear error.
    let head = d.blocked("$HF events | head -1 >/dev/null; echo done");
    d.ok("mkdir machines/c && rmdir machines/c");
    let out = head.wait_with_output().expect("head");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let err = d.fails("$HF events nosuch");
    assert!(err.contains("no machine named \"nosuch\""), "{err}");
}

#[test]
fn ps_shows_a_machine_it_cannot_read_and_says_why() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    d.ok("mkdir machines/web");
    // Another user may reach the mount (a root daemon lets every user in),
    // but not `config`, which is the owner's alone.
    let parent = d.mount.parent().expect("mount parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = d.sh("setpriv --reuid=65534 --regid=65534 --clear-groups $HF ps -a");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [["web", "?", "pending", "-", "?"]],
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("cannot read web/config") && stderr.contains("ermission denied"),
        "{stderr}"
    );
    // As its owner, nothing is unknown.
    let own = d.ok("$HF ps -a");
    assert!(!own.contains('?'), "{own}");
}
