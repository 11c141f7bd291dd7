//! Nothing can wedge a machine: a start stuck in an image pull is cancelled
//! by `kill`, `stop` or `rmdir`; a pull that makes no progress fails by
//! itself; a second command on a busy machine gets EBUSY naming the first;
//! a slow start never holds up other machines; `wait` never misses a
//! status the machine passed through.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::{Behaviour, Registry};
use common::{expect_errno, require_docker, Daemon};

/// Runs `script` in the mount in the background; its result is read later.
fn background(d: &Daemon, script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&d.mount)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().expect("wait for sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls until `machines/<name>/status` reads `want`.
fn await_status(d: &Daemon, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = d.read(&format!("machines/{name}/status"));
        if st.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {want} (is {st:?}); log:\n{}",
            common::tail(&d.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A machine whose start hangs in the pull of an image from a registry
/// that accepts connections and never answers.
fn stuck_starting(d: &Daemon, registry: &Registry, name: &str) -> Child {
    d.ok(&format!(
        r#"mkdir machines/{name} && /bin/echo '{{"image":"{}","cmd":["sleep","600"]}}' > machines/{name}/config"#,
        registry.image("slow")
    ));
    let start = background(d, &format!("/bin/echo start > machines/{name}/ctl"));
    await_status(d, name, "starting");
    start
}

#[test]
fn kill_and_stop_cancel_a_start_stuck_in_an_image_pull() {
    require_docker();
    let d = Daemon::start();
    let registry = Registry::start(Behaviour::Hang);
    for verb in ["kill", "stop"] {
        let start = stuck_starting(&d, &registry, verb);
        // The stop overtakes the start instead of queueing behind it.
        d.ok(&format!("/bin/echo {verb} > machines/{verb}/ctl"));
        assert_eq!(d.read(&format!("machines/{verb}/status")), "stopped\n");
        let error = d.read(&format!("machines/{verb}/error"));
        assert!(
            error.contains(&format!("start was cancelled by {verb}")),
            "{error}"
        );
        let (ok, stderr) = finish(start);
        assert!(!ok, "the cancelled start reported success");
        expect_errno(&stderr, "Operation canceled");
        assert!(
            d.read(&format!("machines/{verb}/logs"))
                .contains("start was cancelled"),
            "the log does not say what happened"
        );
    }
    assert!(
        d.containers().is_empty(),
        "a cancelled start left a container"
    );
    // A cancelled machine starts normally once its config is fixed.
    d.ok(r#"/bin/echo '{"image":"'"$IMAGE"'","cmd":["sleep","600"]}' > machines/kill/config && echo start > machines/kill/ctl && echo kill > machines/kill/ctl"#);
}

#[test]
fn rmdir_of_a_machine_stuck_starting_deletes_it() {
    require_docker();
    let d = Daemon::start();
    let registry = Registry::start(Behaviour::Hang);
    let start = stuck_starting(&d, &registry, "web");
    d.ok("rmdir machines/web");
    assert_eq!(d.ok("ls machines"), "");
    let (ok, _) = finish(start);
    assert!(!ok);
    assert!(d.containers().is_empty());
    // The name is free again.
    d.ok("mkdir machines/web && cat machines/web/status");
}

#[test]
fn a_pull_that_makes_no_progress_fails_with_etimedout() {
    require_docker();
    let d = Daemon::start_with_env(&[("HYPERFLEET_PULL_STALL_SECS", "2")]);
    let registry = Registry::start(Behaviour::Hang);
    d.ok(&format!(
        r#"mkdir machines/web && /bin/echo '{{"image":"{}"}}' > machines/web/config"#,
        registry.image("slow")
    ));
    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "Connection timed out");
    let error = d.read("machines/web/error");
    assert!(error.contains("made no progress for 2s"), "{error}");
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert!(d.containers().is_empty());
}

#[test]
fn wait_running_sees_a_workload_that_exits_at_once() {
    require_docker();
    let d = Daemon::start_with_env(&[("HYPERFLEET_LOG", "info,hyperfleet::core=debug")]);
    d.machine("flash", r#"["true"]"#);
    let wait = background(&d, "/bin/echo 'wait running 30' > machines/flash/ctl");
    // The wait is blocked in the daemon before the start is issued.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log().contains("waiting") {
        assert!(
            Instant::now() < deadline,
            "the wait never reached the daemon"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    d.ok("echo start > machines/flash/ctl; /bin/echo 'wait stopped 30' > machines/flash/ctl");
    let (ok, stderr) = finish(wait);
    assert!(ok, "wait running missed the brief run: {stderr}");
}

// ----- with the fake runtime: hangs on demand -----

/// A daemon whose Firecracker machines run on the fake engine in `engine`.
fn fake_daemon(engine: &std::path::Path) -> Daemon {
    Daemon::start_with_env(&[
        (
            "HYPERFLEET_FAKE_RUNTIME",
            &format!("firecracker:{}", engine.display()),
        ),
        ("HYPERFLEET_BUSY_WAIT_SECS", "1"),
    ])
}

fn fake_vm(d: &Daemon, kernel: &std::path::Path, name: &str) {
    d.ok(&format!(
        r#"mkdir machines/{name} && /bin/echo '{{"runtime_type":"firecracker","kernel_image_path":"{}"}}' > machines/{name}/config"#,
        kernel.display()
    ));
}

fn knobs(engine: &std::path::Path, json: &str) {
    std::fs::write(engine.join("knobs.json"), json).expect("write knobs");
}

#[test]
fn a_second_command_on_a_busy_machine_is_ebusy_and_names_the_first() {
    let engine = tempfile::tempdir().unwrap();
    let d = fake_daemon(engine.path());
    let kernel = engine.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    fake_vm(&d, &kernel, "vm");
    knobs(engine.path(), r#"{"ops":{"start":{"hang":true}}}"#);
    let start = background(&d, "/bin/echo start > machines/vm/ctl");
    await_status(&d, "vm", "starting");
    let stderr = d.fails("/bin/echo pause > machines/vm/ctl");
    expect_errno(&stderr, "Device or resource busy");
    let error = d.read("machines/vm/error");
    assert!(
        error.contains("cannot pause: start has been in progress for"),
        "{error}"
    );
    // info says what is in progress.
    let info: serde_json::Value = serde_json::from_str(&d.read("machines/vm/info")).unwrap();
    assert_eq!(info["operation"]["name"], "start", "{info}");
    assert!(info["operation"]["running_for_secs"].as_f64().unwrap() > 0.0);
    // Once the engine answers, the start completes.
    knobs(engine.path(), "{}");
    let (ok, stderr) = finish(start);
    assert!(ok, "{stderr}");
    assert_eq!(d.read("machines/vm/status"), "running\n");
}

#[test]
fn a_slow_start_never_stalls_other_machines() {
    let engine = tempfile::tempdir().unwrap();
    let d = fake_daemon(engine.path());
    let kernel = engine.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    fake_vm(&d, &kernel, "slow");
    fake_vm(&d, &kernel, "quick");
    // Only this machine's start hangs.
    knobs(engine.path(), r#"{"ops":{"start:slow":{"hang":true}}}"#);
    let start = background(&d, "/bin/echo start > machines/slow/ctl");
    await_status(&d, "slow", "starting");
    // Another machine goes through its whole life meanwhile.
    assert_eq!(d.ok("ls by-status/starting"), "slow\n");
    d.ok("echo start > machines/quick/ctl && echo 'echo hi' > machines/quick/exec && echo kill > machines/quick/ctl && rmdir machines/quick");
    assert_eq!(d.read("machines/slow/status"), "starting\n");
    knobs(engine.path(), "{}");
    let (ok, stderr) = finish(start);
    assert!(ok, "{stderr}");
    assert_eq!(d.read("machines/slow/status"), "running\n");
}
