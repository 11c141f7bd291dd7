//! A process killed while it waits on the filesystem dies at once, whatever
//! it waits for: the next `events` line, a `ctl wait`, a session's output,
//! a one-shot `exec`. Without the daemon's help the kernel would keep it,
//! unkillable, until the answer came.

mod common;

use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use common::{require_docker, Daemon};

/// SIGKILLs `child` and asserts it is gone soon: seconds, not the minutes
/// the request it waits on would take.
fn dies_at_once(mut child: Child, what: &str) {
    child.kill().expect("kill");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait()).ok());
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what}: the killed process is still there"));
    assert!(!status.expect("wait").success(), "{what}");
}

#[test]
fn killed_waiters_on_events_and_ctl_wait_die_at_once() {
    let d = Daemon::start();
    d.ok("mkdir machines/a");
    dies_at_once(d.blocked("exec cat events"), "cat events");
    dies_at_once(
        d.blocked("exec cat machines/a/events"),
        "cat machines/a/events",
    );
    // A pending machine that nobody starts: the wait would take 10 minutes.
    dies_at_once(
        d.blocked("echo 'wait running 600' > machines/a/ctl"),
        "ctl wait",
    );
    // The daemon serves on, and the killed wait left no trace.
    assert_eq!(d.read("machines/a/status"), "pending\n");
    assert_eq!(d.read("machines/a/error"), "");
    d.ok("rmdir machines/a");
}

#[test]
fn killed_exec_clients_die_at_once_and_the_machine_serves_on() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);
    dies_at_once(
        d.blocked("echo 'sleep 600' > machines/web/exec"),
        "one-shot exec",
    );
    // A session whose command prints nothing: its reader waits for output.
    dies_at_once(
        d.blocked(
            "exec 3< machines/web/exec.new; read n <&3
             echo 'sleep 600' > machines/web/sessions/$n/ctl
             exec cat machines/web/sessions/$n/stdout",
        ),
        "session stdout",
    );
    dies_at_once(
        d.blocked(
            "exec 3< machines/web/exec.new; read n <&3
             echo 'sleep 600' > machines/web/sessions/$n/ctl
             exec cat machines/web/sessions/$n/exit",
        ),
        "session exit",
    );
    // Their sessions went with them, and exec still works.
    d.until(
        "[ -z \"$(ls machines/web/sessions)\" ]",
        30,
        "sessions gone",
    );
    assert_eq!(
        d.ok("echo 'echo hi' > machines/web/exec; cat machines/web/exec"),
        "hi\n"
    );
}
