//! The daemon goes away (SIGKILL or SIGTERM) and comes back on the same mount
//! and state dir: machines, configs and ids survive, live containers are
//! re-adopted rather than started again, what happened meanwhile is recorded,
//! and leftovers are cleaned up.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{containers_with_label, is_mounted, require_docker, Daemon, BIN};

const SLEEP: &str = r#"["sleep","600"]"#;

/// Runs the docker CLI; it must succeed. Returns trimmed stdout.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The one container (running or not) this daemon made for machine `name`.
fn container_of(d: &Daemon, name: &str) -> String {
    let instance = format!("label=hyperfleet.instance={}", d.instance());
    let machine = format!("label=hyperfleet.machine-name={name}");
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &instance,
        "--filter",
        &machine,
    ]);
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(
        ids.len(),
        1,
        "machine {name} should have one container: {ids:?}"
    );
    ids[0].to_owned()
}

/// Containers of this daemon that Docker reports as running.
fn running_containers(d: &Daemon) -> BTreeSet<String> {
    let instance = format!("label=hyperfleet.instance={}", d.instance());
    docker(&["ps", "-q", "--no-trunc", "--filter", &instance])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn all_containers(d: &Daemon) -> BTreeSet<String> {
    d.containers().into_iter().collect()
}

fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

fn info(d: &Daemon, name: &str) -> serde_json::Value {
    let text = d.read(&format!("machines/{name}/info"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("info of {name}: {e}: {text}"))
}

fn status(d: &Daemon, name: &str) -> String {
    d.read(&format!("machines/{name}/status")).trim().to_owned()
}

fn id(d: &Daemon, name: &str) -> String {
    d.read(&format!("machines/{name}/id")).trim().to_owned()
}

/// Removes containers made by hand, even when the test fails.
struct HandMade(Vec<String>);

impl Drop for HandMade {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.0)
                .output();
        }
    }
}

#[test]
fn kill9_then_restart_readopts_and_records_what_happened_meanwhile() {
    require_docker();
    let mut d = Daemon::start();
    for name in ["a", "b", "c", "p"] {
        d.machine(name, SLEEP);
    }
    d.ok("echo start > machines/a/ctl");
    d.ok("echo start > machines/b/ctl");
    d.ok("echo start > machines/c/ctl && echo kill > machines/c/ctl");
    assert_eq!(status(&d, "a"), "running");
    assert_eq!(status(&d, "b"), "running");
    assert_eq!(status(&d, "c"), "stopped");
    assert_eq!(status(&d, "p"), "pending");

    let a_ctr = container_of(&d, "a");
    let b_ctr = container_of(&d, "b");
    let c_ctr = container_of(&d, "c");
    assert_eq!(info(&d, "a")["runtime_info"]["handle"], a_ctr.as_str());
    let a_started = inspect(&a_ctr, "{{.State.StartedAt}}");
    let p_config = d.read("machines/p/config");
    let ids: Vec<String> = ["a", "b", "c", "p"].iter().map(|n| id(&d, n)).collect();
    let before = all_containers(&d);
    assert_eq!(before.len(), 3, "a, b and c ran; p never did");

    d.kill9();
    // SIGKILL leaves a dead FUSE mount behind.
    assert!(
        is_mounted(&d.mount),
        "the killed daemon's mount should linger"
    );
    // (Attributes may still come from the kernel's cache; an open asks.)
    let dead = std::fs::read(d.mount.join("README")).expect_err("mount is dead");
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN), "{dead}");

    // While nobody watches, b's container is killed.
    let instance = format!("label=hyperfleet.instance={}", d.instance());
    let b_out = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &instance,
        "--filter",
        "label=hyperfleet.machine-name=b",
    ]);
    assert_eq!(b_out, b_ctr);
    docker(&["kill", &b_ctr]);
    assert_eq!(docker(&["wait", &b_ctr]), "137");

    // Same mount, same state dir: the stale mount is cleared by the daemon.
    d.spawn();
    assert!(is_mounted(&d.mount));
    assert_eq!(d.ok("ls machines"), "a\nb\nc\np\n");

    // a: still the same container, never restarted, and usable.
    assert_eq!(status(&d, "a"), "running");
    assert_eq!(container_of(&d, "a"), a_ctr);
    assert_eq!(info(&d, "a")["runtime_info"]["handle"], a_ctr.as_str());
    assert_eq!(inspect(&a_ctr, "{{.State.StartedAt}}"), a_started);
    assert_eq!(
        d.ok(
            "echo 'echo still here' > machines/a/exec && cat machines/a/exec machines/a/exec.exit"
        ),
        "still here\n0\n"
    );

    // b: its exit is recorded and explained.
    assert_eq!(status(&d, "b"), "failed");
    let b_error = d.read("machines/b/error");
    assert!(b_error.contains("137"), "b's error: {b_error:?}");
    assert!(
        b_error.contains("while hyperfleet was not running"),
        "b's error: {b_error:?}"
    );
    assert_eq!(info(&d, "b")["exit_code"], 137);

    assert_eq!(status(&d, "c"), "stopped");
    assert_eq!(status(&d, "p"), "pending");
    assert_eq!(d.read("machines/p/config"), p_config);
    assert!(p_config.contains("\"sleep\""), "{p_config}");
    let ids_after: Vec<String> = ["a", "b", "c", "p"].iter().map(|n| id(&d, n)).collect();
    assert_eq!(ids_after, ids);

    assert_eq!(d.ok("ls by-status/running"), "a\n");
    assert_eq!(d.ok("ls by-status/failed"), "b\n");
    assert_eq!(d.ok("ls by-status/stopped"), "c\n");
    assert_eq!(d.ok("ls by-status/pending"), "p\n");

    // Nothing was started twice, nothing new appeared.
    assert_eq!(all_containers(&d), before);
    assert_eq!(running_containers(&d), BTreeSet::from([a_ctr.clone()]));
    assert_eq!(inspect(&c_ctr, "{{.State.Status}}"), "exited");

    // b can be started again from failed.
    d.ok("echo start > machines/b/ctl");
    assert_eq!(status(&d, "b"), "running");
    assert_eq!(d.read("machines/b/error"), "");
}

#[test]
fn sigterm_unmounts_and_a_restart_shows_everything_unchanged() {
    require_docker();
    let mut d = Daemon::start();
    for name in ["r", "s", "p"] {
        d.machine(name, SLEEP);
    }
    d.ok(r#"echo '{"image":"'"$IMAGE"'","cmd":["sleep","700"],"env":{"K":"v"}}' > machines/r/config"#);
    d.ok("echo start > machines/r/ctl");
    d.ok("echo start > machines/s/ctl && echo kill > machines/s/ctl");
    let names = ["p", "r", "s"];
    let configs: Vec<String> = names
        .iter()
        .map(|n| d.read(&format!("machines/{n}/config")))
        .collect();
    let ids: Vec<String> = names.iter().map(|n| id(&d, n)).collect();
    let r_ctr = container_of(&d, "r");
    let r_started = inspect(&r_ctr, "{{.State.StartedAt}}");
    let before = all_containers(&d);

    let exit = d.stop();
    assert!(
        exit.success(),
        "daemon exited with {exit}; log:\n{}",
        d.log()
    );
    assert!(!is_mounted(&d.mount), "SIGTERM must unmount");
    let left: Vec<_> = std::fs::read_dir(&d.mount)
        .expect("mount point is a plain directory again")
        .collect();
    assert!(left.is_empty(), "mount point is not empty: {left:?}");
    // The daemon stopping does not stop the machines.
    assert_eq!(inspect(&r_ctr, "{{.State.Status}}"), "running");

    d.spawn();
    assert_eq!(d.ok("ls machines"), "p\nr\ns\n");
    assert_eq!(status(&d, "p"), "pending");
    assert_eq!(status(&d, "r"), "running");
    assert_eq!(status(&d, "s"), "stopped");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(d.read(&format!("machines/{n}/config")), configs[i], "{n}");
        assert_eq!(id(&d, n), ids[i], "{n}");
    }
    assert_eq!(all_containers(&d), before);
    assert_eq!(container_of(&d, "r"), r_ctr);
    assert_eq!(inspect(&r_ctr, "{{.State.StartedAt}}"), r_started);
    assert_eq!(
        d.ok("echo 'sh -c \"echo $K\"' > machines/r/exec && cat machines/r/exec"),
        "v\n"
    );

    // Re-adopted means watched again: an exit behind the daemon's back is noticed.
    docker(&["kill", &r_ctr]);
    d.ok("echo 'wait failed 15' > machines/r/ctl");
    assert!(d.read("machines/r/error").contains("137"));
}

#[test]
fn restart_removes_orphaned_containers_of_this_instance_only() {
    require_docker();
    let mut d = Daemon::start();
    d.machine("keep", SLEEP);
    d.ok("echo start > machines/keep/ctl");
    let keep_ctr = container_of(&d, "keep");
    let instance = d.instance();
    let image = common::image();

    // Leftovers whose machine is not in the store: one named as the daemon
    // names its containers, one made entirely by hand.
    let named_id = uuid::Uuid::new_v4().to_string();
    let hand_id = uuid::Uuid::new_v4().to_string();
    let other_instance = uuid::Uuid::new_v4().simple().to_string();
    let mut made = HandMade(vec![]);
    let named = docker(&[
        "create",
        "--name",
        &format!("hyperfleet-{named_id}"),
        "--label",
        &format!("hyperfleet.instance={instance}"),
        "--label",
        &format!("hyperfleet.machine-id={named_id}"),
        &image,
        "sleep",
        "600",
    ]);
    made.0.push(named.clone());
    let hand = docker(&[
        "run",
        "-d",
        "--label",
        &format!("hyperfleet.instance={instance}"),
        "--label",
        &format!("hyperfleet.machine-id={hand_id}"),
        &image,
        "sleep",
        "600",
    ]);
    made.0.push(hand.clone());
    // Another daemon's container: not ours to touch.
    let foreign = docker(&[
        "create",
        "--label",
        &format!("hyperfleet.instance={other_instance}"),
        "--label",
        &format!("hyperfleet.machine-id={}", uuid::Uuid::new_v4()),
        &image,
        "sleep",
        "600",
    ]);
    made.0.push(foreign.clone());
    assert_eq!(d.containers().len(), 3);

    d.kill9();
    d.spawn();

    let gone = |label_id: &str| containers_with_label(&format!("hyperfleet.machine-id={label_id}"));
    assert!(gone(&named_id).is_empty(), "named orphan survived");
    assert!(
        gone(&hand_id).is_empty(),
        "hand-made orphan labelled with this instance survived"
    );
    assert_eq!(
        containers_with_label(&format!("hyperfleet.instance={other_instance}")),
        vec![foreign.clone()],
        "another instance's container must be left alone"
    );
    assert_eq!(all_containers(&d), BTreeSet::from([keep_ctr.clone()]));
    assert_eq!(status(&d, "keep"), "running");
}

#[test]
fn workloads_that_ended_while_the_daemon_was_down_show_how_they_ended() {
    require_docker();
    let mut d = Daemon::start();
    // Each runs until a file appears, then exits with a known code.
    d.machine(
        "zero",
        r#"["sh","-c","while [ ! -e /tmp/done ]; do sleep 0.1; done; exit 0"]"#,
    );
    d.machine(
        "three",
        r#"["sh","-c","while [ ! -e /tmp/done ]; do sleep 0.1; done; exit 3"]"#,
    );
    d.ok("echo start > machines/zero/ctl && echo start > machines/three/ctl");
    let zero = container_of(&d, "zero");
    let three = container_of(&d, "three");

    d.kill9();
    for ctr in [&zero, &three] {
        docker(&["exec", ctr, "touch", "/tmp/done"]);
    }
    assert_eq!(docker(&["wait", &zero]), "0");
    assert_eq!(docker(&["wait", &three]), "3");
    // Let the kernel's cached attributes of the dead mount expire, so that
    // even `stat` of the mount point says ENOTCONN when the daemon comes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&d.mount)
        .err()
        .and_then(|e| e.raw_os_error())
        != Some(libc::ENOTCONN)
    {
        assert!(
            Instant::now() < deadline,
            "the killed daemon's mount is not dead"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.spawn();

    assert_eq!(status(&d, "zero"), "stopped");
    assert_eq!(info(&d, "zero")["exit_code"], 0);
    assert_eq!(status(&d, "three"), "failed");
    assert_eq!(info(&d, "three")["exit_code"], 3);
    let err = d.read("machines/three/error");
    assert!(
        err.contains("exited with code 3") && err.contains("while hyperfleet was not running"),
        "{err:?}"
    );
    assert!(running_containers(&d).is_empty());
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    require_docker();
    let d = Daemon::start();
    d.ok("mkdir machines/one");
    let other = tempfile::tempdir().expect("tempdir");
    let other_mount = other.path().join("mnt");
    let mut child = Command::new(BIN)
        .args(["daemon", "--foreground", "--mount"])
        .arg(&other_mount)
        .arg("--state-dir")
        .arg(&d.state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn second daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second daemon on the same state dir kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second daemon exited with success");
    assert!(
        stderr.contains("lock"),
        "message should be about the lock: {stderr}"
    );
    assert!(!is_mounted(&other_mount), "second daemon mounted anyway");

    // The first one is untouched and keeps serving.
    assert!(is_mounted(&d.mount));
    d.ok("mkdir machines/two");
    assert_eq!(d.ok("ls machines"), "one\ntwo\n");
}

#[test]
fn rmdir_after_a_restart_removes_the_container_of_a_stopped_machine() {
    require_docker();
    let mut d = Daemon::start();
    d.machine("s", SLEEP);
    d.machine("f", SLEEP);
    d.ok("echo start > machines/s/ctl && echo kill > machines/s/ctl");
    d.ok("echo start > machines/f/ctl");
    let s_id = id(&d, "s");
    let f_id = id(&d, "f");
    let f_ctr = container_of(&d, "f");
    let by_id = |id: &str| containers_with_label(&format!("hyperfleet.machine-id={id}"));
    assert_eq!(
        by_id(&s_id).len(),
        1,
        "a stopped machine keeps its container"
    );

    let exit = d.stop();
    assert!(exit.success());
    // f dies while the daemon is down.
    docker(&["kill", &f_ctr]);
    d.spawn();
    assert_eq!(status(&d, "s"), "stopped");
    assert_eq!(status(&d, "f"), "failed");

    d.ok("rmdir machines/s");
    assert!(by_id(&s_id).is_empty(), "s's container survived rmdir");
    d.ok("rmdir machines/f");
    assert!(by_id(&f_id).is_empty(), "f's container survived rmdir");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty());

    // And the removal itself survives a restart.
    d.kill9();
    d.spawn();
    assert_eq!(d.ok("ls machines"), "");
}

#[test]
fn ids_and_inodes_survive_restarts() {
    require_docker();
    let mut d = Daemon::start();
    for name in ["a", "b", "c"] {
        d.machine(name, SLEEP);
    }
    d.ok("echo start > machines/a/ctl");
    d.ok("echo start > machines/c/ctl && echo kill > machines/c/ctl");
    let snapshot = |d: &Daemon| -> Vec<(String, String)> {
        ["a", "b", "c"]
            .iter()
            .map(|n| {
                let ino = d.ok(&format!("stat -c %i machines/{n}")).trim().to_owned();
                (id(d, n), ino)
            })
            .collect()
    };
    let before = snapshot(&d);
    let distinct: BTreeSet<&String> = before.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), 3);

    // Freshly cached attributes of the mount point: a restart right after
    // the kill still sees them, and must not take the dead mount for a live one.
    std::fs::metadata(&d.mount).expect("mount answers");
    d.kill9();
    d.spawn();
    assert_eq!(snapshot(&d), before, "after kill -9");
    assert!(d.stop().success());
    d.spawn();
    assert_eq!(snapshot(&d), before, "after SIGTERM");

    // A machine made after the restarts gets a fresh id and inode.
    d.ok("mkdir machines/d");
    let d_id = id(&d, "d");
    let d_ino = d.ok("stat -c %i machines/d").trim().to_owned();
    assert!(before.iter().all(|(id, ino)| *id != d_id && *ino != d_ino));
    assert_eq!(status(&d, "a"), "running");
}

/// Stops a detached daemon (found by its pid file) when the test ends.
struct Detached(std::path::PathBuf);

impl Drop for Detached {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.0.join("hyperfleet.pid")) else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            return;
        };
        // SAFETY: signalling the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_detaching_restart_right_after_kill9_returns_once_it_serves() {
    require_docker();
    let mut d = Daemon::start();
    d.machine("a", SLEEP);
    d.ok("echo start > machines/a/ctl");
    let old_pid = d.pid();
    // The kernel now caches README and machines/ of this mount.
    assert_eq!(d.ok("ls machines && cat README > /dev/null"), "a\n");
    d.kill9();

    // `hyperfleet daemon` without --foreground returns once the filesystem
    // answers, so the next command can use it.
    let out = Command::new(BIN)
        .args(["daemon", "--mount"])
        .arg(&d.mount)
        .arg("--state-dir")
        .arg(&d.state)
        .stdin(Stdio::null())
        .output()
        .expect("run detaching daemon");
    let _detached = Detached(d.state.clone());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.ok("ls machines"), "a\n");
    assert_eq!(status(&d, "a"), "running");
    let pid = std::fs::read_to_string(d.state.join("hyperfleet.pid")).expect("pid file");
    assert_ne!(pid.trim(), old_pid.to_string());
}

#[test]
fn a_container_removed_while_the_daemon_was_down_shows_failed_and_why() {
    require_docker();
    let mut d = Daemon::start();
    d.machine("gone", SLEEP);
    d.machine("kept", SLEEP);
    d.ok("echo start > machines/gone/ctl && echo start > machines/kept/ctl");
    let gone_ctr = container_of(&d, "gone");
    let kept_ctr = container_of(&d, "kept");
    let gone_id = id(&d, "gone");

    d.kill9();
    docker(&["rm", "-f", &gone_ctr]);
    d.spawn();

    assert_eq!(status(&d, "gone"), "failed");
    let err = d.read("machines/gone/error");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("disappeared") && err.contains("while hyperfleet was not running"),
        "{err:?}"
    );
    assert_eq!(d.ok("ls by-status/failed"), "gone\n");
    assert_eq!(id(&d, "gone"), gone_id);
    // Nothing was started in its place, and the other machine is untouched.
    assert!(containers_with_label(&format!("hyperfleet.machine-id={gone_id}")).is_empty());
    assert_eq!(status(&d, "kept"), "running");
    assert_eq!(all_containers(&d), BTreeSet::from([kept_ctr.clone()]));

    // From failed it starts afresh, and the error clears.
    d.ok("echo start > machines/gone/ctl");
    assert_eq!(status(&d, "gone"), "running");
    assert_eq!(d.read("machines/gone/error"), "");
    assert_eq!(
        d.ok("echo 'echo back' > machines/gone/exec && cat machines/gone/exec"),
        "back\n"
    );
}
