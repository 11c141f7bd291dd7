//! `hyperfleet exec` as `docker exec`: stdin piped through, output streamed
//! as it comes, an interactive shell on a real pty (typing, window resizes,
//! Ctrl-C, the exit code), signals forwarded, timeouts that keep what was
//! printed, and 100 MB through a stream intact. Driven through real
//! processes and ptys (Python's `pty` module plays the terminal).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use common::{require_docker, Daemon, BIN};

/// A daemon with one running machine `web` whose PID 1 idles.
fn web() -> Daemon {
    require_docker();
    let d = Daemon::start();
    d.running(
        "web",
        r#"["sh","-c","trap 'exit 0' TERM; while :; do sleep 1; done"]"#,
    );
    d
}

fn hf(d: &Daemon) -> Command {
    let mut c = Command::new(BIN);
    c.env("HYPERFLEET_MOUNT", &d.mount);
    c
}

#[test]
fn stdin_is_piped_through_and_the_exit_code_comes_back() {
    let d = web();
    assert_eq!(
        d.ok("printf 'a\\nb\\n' | $HF exec web -- wc -l").trim(),
        "2"
    );
    assert_eq!(d.ok("printf 'x y' | $HF exec web cat"), "x y");
    // Streams keep to their own side; the exit code is the command's.
    let out = d.sh("$HF exec web sh -c 'echo out; echo err >&2; exit 3'");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // -e, -w and -u reach the command.
    let out =
        d.ok("$HF exec -e A=1 -e B=two -w /tmp -u nobody web sh -c 'echo $A $B $(pwd) $(id -u)'");
    assert_eq!(out, "1 two /tmp 65534\n");
    // `--` is needed only before a command that starts with '-'.
    assert_eq!(d.ok("$HF exec web -- ls -d /"), "/\n");
}

#[test]
fn exit_codes_say_how_the_command_ended() {
    let d = web();
    let code = |script: &str| d.sh(script).status.code();
    assert_eq!(code("$HF exec web sh -c 'kill -TERM $$'"), Some(128 + 15));
    // As `docker exec` says it.
    assert_eq!(code("$HF exec web no-such-command"), Some(126));
    assert_eq!(code("$HF exec nosuch true"), Some(125));
    let out = d.sh("$HF exec nosuch true");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no machine named"));
    d.ok("echo stop > machines/web/ctl");
    let out = d.sh("$HF exec web true");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid argument") && err.contains("stopped"),
        "{err}"
    );
}

#[test]
fn output_streams_before_the_command_ends_and_a_timeout_keeps_it() {
    let d = web();
    let mut child = hf(&d)
        .args([
            "exec",
            "web",
            "sh",
            "-c",
            "echo first; sleep 30; echo never",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn exec");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("first line");
    assert_eq!(first, "first\n");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the line came only when the command ended"
    );
    let _ = child.kill();
    let _ = child.wait();

    let out = d.sh("$HF exec --timeout 1 web sh -c 'echo partial; sleep 30; echo never'");
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "partial\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    // The command is gone, not left running.
    assert_eq!(
        d.ok("$HF exec web sh -c 'ps -o args | grep -c \"[s]leep 30\" || true'"),
        "0\n"
    );
}

#[test]
fn ctrl_c_and_sigterm_reach_the_command_not_the_client() {
    let d = web();
    for (sig, name) in [(libc::SIGINT, "INT"), (libc::SIGTERM, "TERM")] {
        let script = format!(
            "trap 'echo got-{name}; exit 5' {name}; echo ready; while :; do sleep 0.1; done"
        );
        let mut child = hf(&d)
            .args(["exec", "web", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn exec");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("ready");
        assert_eq!(line, "ready\n");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("rest");
        let status = child.wait().expect("wait");
        assert_eq!(rest, format!("got-{name}\n"));
        assert_eq!(status.code(), Some(5), "the command's own exit code");
    }
}

#[test]
fn a_hundred_megabytes_go_through_a_stream_intact() {
    let d = web();
    let out = d.ok("head -c 100000000 /dev/urandom > /tmp/hf-100mb.$$ && \
         a=$(sha256sum < /tmp/hf-100mb.$$) && \
         b=$($HF exec -i web cat < /tmp/hf-100mb.$$ | sha256sum) && \
         rm -f /tmp/hf-100mb.$$ && [ \"$a\" = \"$b\" ] && echo same");
    assert_eq!(out, "same\n");
}

/// Drives `hyperfleet exec -it web sh` on a pty, as a person at a
/// terminal would: a command, a resize, Ctrl-C, `exit 3`.
const PTY_SCRIPT: &str = r#"
import fcntl, os, pty, select, signal, struct, sys, termios, time
hf, mount = sys.argv[1], sys.argv[2]
os.environ["HYPERFLEET_MOUNT"] = mount
pid, fd = pty.fork()
if pid == 0:
    os.execv(hf, [hf, "exec", "-it", "web", "sh"])
def size(rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
seen = b""
def expect(pat, timeout=30):
    global seen
    end = time.time() + timeout
    while pat not in seen:
        left = end - time.time()
        if left <= 0:
            sys.exit("timed out waiting for %r; saw %r" % (pat, seen[-400:]))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                sys.exit("pty closed waiting for %r; saw %r" % (pat, seen[-400:]))
            seen += chunk
    seen = seen[seen.index(pat) + len(pat):]
size(24, 80)
time.sleep(0.2)
os.write(fd, b"echo sum-$((40+2))\r")
expect(b"sum-42")
os.write(fd, b"stty size\r")
expect(b"24 80")
size(33, 111)
time.sleep(0.5)
os.write(fd, b"stty size\r")
expect(b"33 111")
os.write(fd, b"sleep 300; echo not-interrupted\r")
time.sleep(1)
os.write(fd, b"\x03")
os.write(fd, b"echo back-$((3*3))\r")
expect(b"back-9", timeout=20)
if b"not-interrupted" in seen:
    sys.exit("Ctrl-C did not interrupt sleep")
os.write(fd, b"exit 3\r")
_, status = os.waitpid(pid, 0)
print("exit", os.waitstatus_to_exitcode(status))
"#;

#[test]
fn an_interactive_shell_on_a_pty_types_resizes_interrupts_and_exits() {
    let d = web();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PTY_SCRIPT)
        .arg(BIN)
        .arg(&d.mount)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pty session failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exit 3");
    // The session is gone once the client is.
    assert_eq!(d.ok("ls machines/web/sessions"), "");
}

// ----- with the fake runtime: no Docker needed -----

/// A daemon whose Firecracker machine `vm` runs, on the fake engine, the
/// fake's streaming commands (`cat`, `hold`, `yes`, `vanish`).
fn fake_vm() -> (Daemon, tempfile::TempDir) {
    let engine = tempfile::tempdir().expect("engine dir");
    let d = Daemon::start_with_env(&[(
        "HYPERFLEET_FAKE_RUNTIME",
        &format!("firecracker:{}", engine.path().display()),
    )]);
    let kernel = engine.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").expect("kernel");
    d.ok(&format!(
        r#"mkdir machines/vm && /bin/echo '{{"runtime_type":"firecracker","kernel_image_path":"{}"}}' > machines/vm/config && echo start > machines/vm/ctl"#,
        kernel.display()
    ));
    assert_eq!(d.read("machines/vm/status"), "running\n");
    (d, engine)
}

/// The child's status once it exits, or None if it is still running after
/// `secs` (a hung client: the test fails rather than hangs).
fn exits_within(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_exec_as_sigpipe_would() {
    let (d, _engine) = fake_vm();
    let mut child = hf(&d)
        .args(["exec", "vm", "yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn exec");
    // As `| head -c 10`: some output, then the reader is gone.
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 10];
    out.read_exact(&mut first).expect("first bytes");
    assert_eq!(&first, b"y\ny\ny\ny\ny\n");
    drop(out);
    let status = exits_within(&mut child, 20);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(128 + libc::SIGPIPE),
        "the client must end once its stdout is gone"
    );
    d.until(
        "[ -z \"$(ls machines/vm/sessions)\" ]",
        10,
        "the session ends with its client",
    );
}

#[test]
fn an_unknown_end_is_a_failure_not_a_success() {
    let (d, _engine) = fake_vm();
    // `vanish` ends without its runtime saying how.
    let out = d.sh("$HF exec vm vanish");
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown"), "{err}");
    assert_eq!(d.sh("$HF exec vm exit 3").status.code(), Some(3));
}

#[test]
fn dash_n_leaves_stdin_to_the_caller() {
    let (d, _engine) = fake_vm();
    // A piped stdin is passed on by default, as ssh does...
    assert_eq!(d.ok("printf x | $HF exec vm cat"), "x");
    // ...but not with -n, so a read loop keeps its input.
    let out = d.ok("printf 'a\\nb\\n' | while read n; do $HF exec -n vm cat; echo \"$n\"; done");
    assert_eq!(out, "a\nb\n");
}
