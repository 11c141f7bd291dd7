//! Bad input through the mounted filesystem: every rejected request must fail
//! its syscall with the fitting errno, explain itself in one line of the
//! machine's `error` file, and change nothing.
//!
//! Scripts run under `sh` (dash), whose builtin `echo`/`printf` report every
//! failed write as "I/O error"; they use coreutils `/bin/echo` and
//! `/usr/bin/printf` instead, which print the errno's text.
mod common;

use std::process::Command;

use common::{expect_errno, require_docker, Daemon};

/// The machine's `error` file: exactly one non-empty line that mentions
/// every one of `needles`. Returns the line.
fn error_line(d: &Daemon, name: &str, needles: &[&str]) -> String {
    let err = d.read(&format!("machines/{name}/error"));
    assert!(
        err.ends_with('\n') && err.lines().count() == 1 && !err.trim().is_empty(),
        "error file of {name} is not one line: {err:?}"
    );
    for n in needles {
        assert!(
            err.contains(n),
            "error file of {name} does not mention {n:?}: {err:?}"
        );
    }
    err
}

/// `ls machines`, one name per entry.
fn machines(d: &Daemon) -> Vec<String> {
    d.ok("ls -1a machines")
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .map(str::to_owned)
        .collect()
}

/// Docker's own view of a container: is it running?
fn docker_running(id: &str) -> bool {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// A machine with a config but never started; returns its config text.
fn pending_machine(d: &Daemon, name: &str) -> String {
    d.machine(name, r#"["sleep","600"]"#);
    assert_eq!(d.read(&format!("machines/{name}/status")), "pending\n");
    d.read(&format!("machines/{name}/config"))
}

#[test]
fn mkdir_refuses_bad_names_and_creates_nothing() {
    require_docker();
    let d = Daemon::start();

    let cases: &[(&str, &str)] = &[
        // (shell word for the name, errno text)
        ("machines/.hidden", "Invalid argument"),
        ("machines/...", "Invalid argument"),
        (
            &format!("machines/{}", "a".repeat(64)),
            "File name too long",
        ),
        ("'machines/a b'", "Invalid argument"),
        ("'machines/semi;colon'", "Invalid argument"),
        ("'machines/star*'", "Invalid argument"),
        ("'machines/back\\slash'", "Invalid argument"),
        ("\"machines/$(printf 'a\\nb')\"", "Invalid argument"),
        ("\"machines/$(printf 'bad\\377name')\"", "Invalid argument"),
    ];
    for (word, errno_text) in cases {
        let stderr = d.fails(&format!("mkdir {word}"));
        expect_errno(&stderr, errno_text);
    }
    assert!(
        machines(&d).is_empty(),
        "a refused mkdir left {:?}",
        machines(&d)
    );

    // 63 bytes is the longest name allowed.
    let longest = "b".repeat(63);
    d.ok(&format!("mkdir machines/{longest}"));
    assert_eq!(machines(&d), vec![longest.clone()]);
    assert_eq!(d.read(&format!("machines/{longest}/status")), "pending\n");
    assert!(d.containers().is_empty());
}

#[test]
fn mkdir_of_an_existing_name_is_eexist_and_leaves_it_alone() {
    require_docker();
    let d = Daemon::start();
    let config = pending_machine(&d, "web");
    let id = d.read("machines/web/id");

    let stderr = d.fails("mkdir machines/web");
    expect_errno(&stderr, "File exists");

    assert_eq!(machines(&d), vec!["web"]);
    assert_eq!(d.read("machines/web/id"), id);
    assert_eq!(d.read("machines/web/config"), config);
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert!(d.containers().is_empty());
}

#[test]
fn rejected_config_writes_explain_and_change_nothing() {
    require_docker();
    let d = Daemon::start();
    let config = pending_machine(&d, "web");

    let cases: &[(&str, &[&str])] = &[
        // (shell command writing to $C, words the error line must hold)
        ("/bin/echo 'not json' > $C", &["invalid config"]),
        ("/bin/echo '{\"image\":' > $C", &["invalid config", "EOF"]),
        ("/bin/echo '{\"imgae\":\"x\"}' > $C", &["imgae"]),
        ("/bin/echo '{\"vcpu_count\":\"two\"}' > $C", &["two"]),
        ("/bin/echo '{\"vcpu_count\":0}' > $C", &["vcpu_count"]),
        (
            "/bin/echo '{\"volumes\":[{\"host_path\":\"data\",\"container_path\":\"/d\"}]}' > $C",
            &["host_path", "absolute"],
        ),
        (
            "/bin/echo '{\"volumes\":[{\"host_path\":\"/srv/../etc\",\"container_path\":\"/d\"}]}' > $C",
            &["host_path", ".."],
        ),
        (
            "/bin/echo '{\"runtime_type\":\"firecracker\",\"kernel_image_path\":\"vmlinux\"}' > $C",
            &["kernel_image_path", "absolute"],
        ),
        (
            "/usr/bin/printf '{\"image\":\"bad\\377\"}' > $C",
            &["UTF-8"],
        ),
    ];
    let mut previous = String::new();
    for (cmd, needles) in cases {
        let stderr = d.fails(&format!("C=machines/web/config; {cmd}"));
        expect_errno(&stderr, "Invalid argument");
        let line = error_line(&d, "web", needles);
        // Each case explains itself: the line is not the previous case's.
        assert_ne!(line, previous, "error file not updated by: {cmd}");
        previous = line;
        assert_eq!(
            d.read("machines/web/config"),
            config,
            "config changed after: {cmd}"
        );
        assert_eq!(d.read("machines/web/status"), "pending\n");
    }
    assert!(d.containers().is_empty());

    // A good write afterwards still works; the last refusal's reason stays
    // in `error` (an editor restoring the old text must not wipe it).
    let last = d.read("machines/web/error");
    d.ok(r#"/bin/echo '{"image":"'"$IMAGE"'","vcpu_count":2}' > machines/web/config"#);
    assert!(d.read("machines/web/config").contains("\"vcpu_count\": 2"));
    assert_eq!(d.read("machines/web/error"), last);
}

#[test]
fn config_over_one_mib_is_efbig_and_changes_nothing() {
    require_docker();
    let d = Daemon::start();
    let config = pending_machine(&d, "web");
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = tmp.path().join("big.json");
    // A well-formed spec whose only fault is its size.
    let mut doc = String::from(r#"{"image":"x","env":{"A":""#);
    doc.push_str(&"a".repeat((1 << 20) + 4096));
    doc.push_str("\"}}\n");
    std::fs::write(&big, &doc).expect("write big config");

    let stderr = d.fails(&format!("cat {} > machines/web/config", big.display()));
    expect_errno(&stderr, "File too large");
    let err = error_line(&d, "web", &["too large"]);
    assert!(err.contains("1048576"), "limit not named: {err}");
    assert_eq!(d.read("machines/web/config"), config);
    assert_eq!(d.read("machines/web/status"), "pending\n");
}

#[test]
fn rejected_ctl_commands_explain_and_change_nothing() {
    require_docker();
    let d = Daemon::start();
    d.ok("mkdir machines/web");
    let config = d.read("machines/web/config");

    let cases: &[(&str, &str, &[&str])] = &[
        ("/bin/echo strat > $C", "Invalid argument", &["strat"]),
        ("/bin/echo '' > $C", "Invalid argument", &["empty"]),
        (
            "/bin/echo 'wait runing' > $C",
            "Invalid argument",
            &["runing"],
        ),
        (
            "/bin/echo 'wait running soon' > $C",
            "Invalid argument",
            &["soon"],
        ),
        // One write carrying two commands (coreutils printf writes it whole).
        (
            "/usr/bin/printf 'start\\nstop\\n' > $C",
            "Invalid argument",
            &["one command"],
        ),
        (
            "/usr/bin/printf 'st\\377rt' > $C",
            "Invalid argument",
            &["UTF-8"],
        ),
        // No image yet: start cannot proceed.
        ("/bin/echo start > $C", "Invalid argument", &["needs image"]),
        (
            "/bin/echo pause > $C",
            "Invalid argument",
            &["pause", "pending"],
        ),
    ];
    let mut previous = String::new();
    for (cmd, errno_text, needles) in cases {
        let stderr = d.fails(&format!("C=machines/web/ctl; {cmd}"));
        expect_errno(&stderr, errno_text);
        let line = error_line(&d, "web", needles);
        assert_ne!(line, previous, "error file not updated by: {cmd}");
        previous = line;
        assert_eq!(
            d.read("machines/web/status"),
            "pending\n",
            "status changed after: {cmd}"
        );
        assert_eq!(d.read("machines/web/config"), config);
    }
    assert!(
        d.containers().is_empty(),
        "a refused start made a container"
    );
}

#[test]
fn running_machine_refuses_start_rmdir_and_config() {
    require_docker();
    let d = Daemon::start();
    let config = pending_machine(&d, "web");
    d.ok("echo start > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    let ids = d.containers();
    assert_eq!(ids.len(), 1);

    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "Operation already in progress");
    error_line(&d, "web", &["already running"]);

    let stderr = d.fails("rmdir machines/web");
    expect_errno(&stderr, "Device or resource busy");
    error_line(&d, "web", &["running"]);
    assert_eq!(machines(&d), vec!["web"]);

    let stderr =
        d.fails(r#"/bin/echo '{"image":"'"$IMAGE"'","cmd":["true"]}' > machines/web/config"#);
    expect_errno(&stderr, "Device or resource busy");
    error_line(&d, "web", &["running", "config"]);
    assert_eq!(d.read("machines/web/config"), config);

    // Through all of it the machine kept running, in Docker too.
    assert_eq!(d.read("machines/web/status"), "running\n");
    assert_eq!(d.containers(), ids);
    assert!(docker_running(&ids[0]), "container no longer runs");

    d.ok("echo kill > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    let stderr = d.fails("/bin/echo pause > machines/web/ctl");
    expect_errno(&stderr, "Invalid argument");
    error_line(&d, "web", &["pause", "stopped"]);
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    assert!(!docker_running(&ids[0]));
}

#[test]
fn start_with_an_image_that_cannot_be_pulled_fails_cleanly() {
    require_docker();
    let d = Daemon::start();
    // A registry that says the image does not exist...
    let registry = common::registry::Registry::start(common::registry::Behaviour::NotFound);
    let image = registry.image("no-such-image");
    d.ok(&format!(
        r#"mkdir machines/web && /bin/echo '{{"image":"{image}","cmd":["sleep","600"]}}' > machines/web/config"#
    ));
    let config = d.read("machines/web/config");

    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "No such file or directory");
    error_line(&d, "web", &[&image, "start: pull image"]);
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert_eq!(d.read("machines/web/config"), config);
    assert!(d.containers().is_empty(), "failed start left a container");
    assert_eq!(d.ok("ls by-status/pending"), "web\n");
    assert_eq!(d.ok("ls by-status/starting"), "");
    // The pull attempt and its failure are in the machine's logs.
    let logs = d.read("machines/web/logs");
    assert!(
        logs.contains("[hyperfleet] image") && logs.contains("pulling"),
        "{logs}"
    );
    assert!(logs.contains("[hyperfleet] start failed"), "{logs}");

    // From `stopped` too: the status returns to stopped, not pending.
    d.ok(r#"/bin/echo '{"image":"'"$IMAGE"'","cmd":["sleep","600"]}' > machines/web/config"#);
    d.ok("echo start > machines/web/ctl && echo kill > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    d.ok(&format!(
        r#"/bin/echo '{{"image":"{image}","cmd":["sleep","600"]}}' > machines/web/config"#
    ));
    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "No such file or directory");
    error_line(&d, "web", &[&image]);
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    assert!(
        d.containers().iter().all(|id| !docker_running(id)),
        "a failed start left a running container"
    );

    // ...one that wants credentials, and one that cannot be reached: each
    // says so with its own errno.
    let locked = common::registry::Registry::start(common::registry::Behaviour::Unauthorized);
    let gone = common::registry::Registry::closed();
    for (registry, errno) in [(&locked, "Permission denied"), (&gone, "No route to host")] {
        d.ok(&format!(
            r#"/bin/echo '{{"image":"{}"}}' > machines/web/config"#,
            registry.image("x")
        ));
        let stderr = d.fails("/bin/echo start > machines/web/ctl");
        expect_errno(&stderr, errno);
        assert_eq!(d.read("machines/web/status"), "stopped\n");
    }
}

#[test]
fn docker_down_is_unavailable_and_start_is_econnrefused() {
    require_docker();
    let d = Daemon::start_with_env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let health = d.read("runtimes/docker/status");
    assert!(health.starts_with("unavailable"), "{health}");

    d.ok(r#"mkdir machines/web && /bin/echo '{"image":"'"$IMAGE"'","cmd":["sleep","600"]}' > machines/web/config"#);
    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "Connection refused");
    error_line(
        &d,
        "web",
        &["docker", "unavailable", "/nonexistent/docker.sock"],
    );
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert!(d.containers().is_empty());
    // Once the health probe has run (every 5 s), it names the cause too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let health = d.read("runtimes/docker/status");
        assert!(health.starts_with("unavailable"), "{health}");
        if health.contains("/nonexistent/docker.sock") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never names the cause: {health}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn read_only_files_and_the_directory_shape_are_refused() {
    require_docker();
    let d = Daemon::start();
    let config = pending_machine(&d, "web");
    let id = d.read("machines/web/id");
    let files = d.ok("ls machines/web");

    for f in [
        "status",
        "id",
        "error",
        "exec.stderr",
        "exec.exit",
        "logs",
        "info",
    ] {
        let stderr = d.fails(&format!("/bin/echo running > machines/web/{f}"));
        expect_errno(&stderr, "Permission denied");
        let stderr = d.fails(&format!("/bin/echo running >> machines/web/{f}"));
        expect_errno(&stderr, "Permission denied");
    }
    let stderr = d.fails("/bin/echo x > README");
    expect_errno(&stderr, "Permission denied");
    let stderr = d.fails("/bin/echo x > runtimes/docker/status");
    expect_errno(&stderr, "Permission denied");

    d.fails("touch machines/web/newfile");
    d.fails("/bin/echo x > machines/web/newfile");
    // A machine's files go only with the machine: unlinking one finds no
    // link to remove (which lets `rm -rf machines/web` reach its rmdir).
    let stderr = d.fails("rm machines/web/status");
    expect_errno(&stderr, "No such file or directory");
    d.ok("rm -f machines/web/config");
    d.fails("mkdir machines/web/sub");
    d.fails("mkdir by-status/new");
    d.fails("mv machines/web/status machines/web/status2");

    assert_eq!(d.ok("ls machines/web"), files);
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert_eq!(d.read("machines/web/id"), id);
    assert_eq!(d.read("machines/web/config"), config);
    assert!(d.containers().is_empty());
}

#[test]
fn dot_dot_paths_do_not_escape_or_create_anything() {
    require_docker();
    let d = Daemon::start();
    d.ok("mkdir machines/web");
    let root = d.ok("ls -a");

    // `..` is resolved by the kernel: this names `x` in the mount's root,
    // where nothing may be created.
    let stderr = d.fails("mkdir 'machines/../x'");
    expect_errno(&stderr, "Operation not permitted");
    d.fails("mkdir 'machines/web/../../x'");
    d.fails("mkdir 'machines/web/../web'");
    let stderr = d.fails("cat machines/../../etc/passwd");
    expect_errno(&stderr, "No such file or directory");
    d.fails("cat machines/web/../../etc/passwd");
    d.fails("cat 'machines/..%2f..%2fetc%2fpasswd'");
    d.fails("cat 'by-status/running/../../../etc/passwd'");

    assert_eq!(d.ok("ls -a"), root);
    assert_eq!(machines(&d), vec!["web"]);
    // The mount's parent got nothing either (it holds only the daemon's own dirs).
    let parent = d.mount.parent().expect("mount parent");
    assert!(!parent.join("x").exists());
    // `..` inside the mount still means what it should.
    assert_eq!(d.ok("cat machines/web/../web/status"), "pending\n");
    assert_eq!(d.ok("cd machines/web/.. && ls"), "web\n");
}

#[test]
fn concurrent_config_writers_leave_exactly_one_whole_config() {
    require_docker();
    let d = Daemon::start();
    d.ok("mkdir machines/web");
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();
    let out = d.ok(&format!(
        r#"for i in 0 1 2 3 4 5 6 7 8 9; do
             ( /bin/echo '{{"image":"'"$IMAGE"'","vcpu_count":'$((i+1))',"env":{{"N":"'$i'"}},"cmd":["sleep","'$i'"]}}' \
                 > machines/web/config 2>{t}/err.$i; echo $? > {t}/rc.$i ) &
           done
           wait
           for i in 0 1 2 3 4 5 6 7 8 9; do echo "$i $(cat {t}/rc.$i) $(cat {t}/err.$i)"; done"#
    ));
    let mut succeeded = 0;
    for line in out.lines() {
        let mut parts = line.splitn(3, ' ');
        let (i, rc, err) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if rc == "0" {
            succeeded += 1;
        } else {
            assert!(
                err.contains("Device or resource busy"),
                "writer {i} failed with something other than EBUSY: rc {rc}: {err}"
            );
        }
    }
    assert_eq!(out.lines().count(), 10, "{out}");
    assert!(succeeded >= 1, "no writer succeeded:\n{out}");

    let text = d.read("machines/web/config");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("config is not JSON ({e}):\n{text}"));
    let n: usize = v["env"]["N"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("config holds no writer's N:\n{text}"));
    assert!(n < 10, "{text}");
    // Every field comes from that one writer: no mix of two.
    assert_eq!(v["vcpu_count"], serde_json::json!(n + 1), "{text}");
    assert_eq!(
        v["cmd"],
        serde_json::json!(["sleep", n.to_string()]),
        "{text}"
    );
    assert_eq!(v["env"].as_object().map(|o| o.len()), Some(1), "{text}");
    // The winner's own write succeeded.
    let rc = std::fs::read_to_string(tmp.path().join(format!("rc.{n}"))).expect("rc");
    assert_eq!(
        rc.trim(),
        "0",
        "config holds a refused writer's spec:\n{out}"
    );
}

#[test]
fn oversized_ctl_and_exec_writes_fail_whole_and_run_nothing() {
    require_docker();
    let d = Daemon::start();
    d.machine("web", r#"["sleep","600"]"#);
    d.ok("echo start > machines/web/ctl");
    // One write() of "kill", padding past the kernel's split size, then
    // "start": no piece of it may run as a command of its own.
    let err = d.fails(
        "python3 -c 'import sys; sys.stdout.write(\"kill\" + \" \" * 2000000 + \"\\nstart\\n\")' > machines/web/ctl",
    );
    assert!(
        err.contains("File too large") || err.contains("Errno 27"),
        "{err}"
    );
    assert_eq!(d.read("machines/web/status"), "running\n");
    assert!(d.read("machines/web/error").contains("too large"));
    let err = d.fails(
        "python3 -c 'import sys; sys.stdout.write(\"touch /tmp/A\" + \" \" * 2000000 + \"\\ntouch /tmp/B\\n\")' > machines/web/exec",
    );
    assert!(
        err.contains("File too large") || err.contains("Errno 27"),
        "{err}"
    );
    d.ok("echo 'ls /tmp' > machines/web/exec");
    assert_eq!(
        d.read("machines/web/exec"),
        "",
        "a piece of the oversized write ran"
    );
}

#[test]
fn other_users_read_status_but_not_secrets_and_change_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    // The harness's temp dir is private; let another user reach the mount.
    let parent = d.mount.parent().expect("mount has a parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d.ok(r#"mkdir machines/web && echo '{"image":"busybox","env":{"TOKEN":"s3cret"}}' > machines/web/config"#);
    let as_nobody = |script: &str| {
        d.sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{script}'"
        ))
    };
    let out = as_nobody("cat machines/web/status && ls machines && ls by-status/pending");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pending\nweb\nweb\n");
    for script in [
        "cat machines/web/config",
        "cat machines/web/logs",
        "/bin/echo start > machines/web/ctl",
        "/bin/echo id > machines/web/exec",
        "mkdir machines/evil",
        "rmdir machines/web",
    ] {
        let out = as_nobody(script);
        assert!(!out.status.success(), "{script} succeeded for another user");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Permission denied"), "{script}: {err}");
    }
    assert_eq!(d.ok("ls machines"), "web\n");
    assert_eq!(d.read("machines/web/status"), "pending\n");
}
