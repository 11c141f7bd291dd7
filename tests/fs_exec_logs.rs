//! `exec`, `ctl wait` and `logs` through the mounted filesystem, as a user
//! at a shell would use them, against real Docker.
//!
//! Scripts that check an errno's text use coreutils `/bin/echo`: dash's
//! builtin `echo` reports every failed write as "I/O error".
mod common;

use std::time::{Duration, Instant};

use common::{expect_errno, require_docker, Daemon};

/// The numbers N of every `line N` in `text`.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[test]
fn exec_output_stderr_and_exit_code_from_plain_shell() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);

    // Nothing ran yet: the result files are empty.
    assert_eq!(d.ok("cat machines/web/exec machines/web/exec.exit"), "");

    let out = d.ok(
        "echo 'sh -c \"echo to-out; echo to-err >&2; exit 3\"' > machines/web/exec \
         && cat machines/web/exec && echo --- && cat machines/web/exec.stderr \
         && echo --- && cat machines/web/exec.exit",
    );
    assert_eq!(out, "to-out\n---\nto-err\n---\n3\n");

    // A command's non-zero exit is a result, not a failed write; its files
    // are reachable with ordinary tools.
    d.ok("echo 'ls /no/such/dir' > machines/web/exec");
    assert_eq!(d.read("machines/web/exec"), "");
    assert!(
        d.read("machines/web/exec.stderr").contains("/no/such/dir"),
        "{}",
        d.read("machines/web/exec.stderr")
    );
    assert_ne!(d.read("machines/web/exec.exit"), "0\n");
    assert_eq!(
        d.ok("stat -c %s machines/web/exec.exit"),
        format!("{}\n", d.read("machines/web/exec.exit").len())
    );

    // Shell quoting is honoured without running a shell on the host.
    d.ok(r#"echo 'sh -c "echo a   b"' > machines/web/exec"#);
    assert_eq!(d.read("machines/web/exec"), "a b\n");
    d.ok(r#"printf '%s\n' "echo 'x   y' \"q\\\"uote\" back\\ slash" > machines/web/exec"#);
    assert_eq!(d.read("machines/web/exec"), "x   y q\"uote back slash\n");
    // No host shell: `|` and `$HOME` reach the command literally.
    d.ok(r#"echo 'echo a | $HOME' > machines/web/exec"#);
    assert_eq!(d.read("machines/web/exec"), "a | $HOME\n");
    assert_eq!(d.read("machines/web/exec.exit"), "0\n");
}

#[test]
fn exec_json_form_with_env_timeout_and_json_result() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);

    d.ok(r#"echo '{"cmd":["sh","-c","echo A=$A B=$B"],"timeout":5,"env":{"A":"1","B":"two words"}}' > machines/web/exec"#);
    assert_eq!(d.read("machines/web/exec"), "A=1 B=two words\n");
    assert_eq!(d.read("machines/web/exec.exit"), "0\n");

    // result=json: read back on the same fd, one JSON object.
    let out = d.ok(r#"exec 3<>machines/web/exec
           echo '{"cmd":["sh","-c","echo hi; echo bad >&2; exit 5"],"result":"json"}' >&3
           cat <&3"#);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["stdout"], "hi\n", "{out}");
    assert_eq!(v["stderr"], "bad\n", "{out}");
    assert_eq!(v["exit_code"], 5, "{out}");
    // The plain files agree.
    assert_eq!(d.read("machines/web/exec"), "hi\n");
    assert_eq!(d.read("machines/web/exec.stderr"), "bad\n");
    assert_eq!(d.read("machines/web/exec.exit"), "5\n");

    // One fd, several commands in turn: each read gives that command's result.
    let out = d.ok(r#"exec 3<>machines/web/exec
           echo 'echo one' >&3; cat <&3
           echo '{"cmd":["echo","two"],"result":"json"}' >&3; cat <&3
           echo 'echo three' >&3; cat <&3"#);
    assert_eq!(
        out,
        "one\n{\"exit_code\":0,\"stderr\":\"\",\"stderr_truncated\":false,\"stdout\":\"two\\n\",\"stdout_truncated\":false}\nthree\n"
    );
    d.ok(r#"echo '{"cmd":["sh","-c","echo hi; echo bad >&2; exit 5"]}' > machines/web/exec"#);
    assert_eq!(d.read("machines/web/exec"), "hi\n");
    assert_eq!(d.read("machines/web/exec.stderr"), "bad\n");
    assert_eq!(d.read("machines/web/exec.exit"), "5\n");

    // Bad exec requests are EINVAL and say why.
    for bad in [
        r#"{"cmd":[]}"#,
        r#"{"cmd":["true"],"timeout":0}"#,
        r#"{"cmd":["true"],"bogus":1}"#,
        r#"{"cmd":"true"}"#,
        "echo 'unterminated",
    ] {
        let stderr = d.fails(&format!(
            "/bin/echo '{}' > machines/web/exec",
            bad.replace('\'', r"'\''")
        ));
        expect_errno(&stderr, "Invalid argument");
        let err = d.read("machines/web/error");
        assert!(err.contains("invalid command"), "{bad}: {err}");
    }
    // The last good result is still there.
    assert_eq!(d.read("machines/web/exec"), "hi\n");

    // Past the one-shot cap, output is cut and exec.stderr says so; the
    // JSON result flags it.
    d.ok(r#"echo 'sh -c "head -c 17000000 /dev/zero; echo err >&2"' > machines/web/exec"#);
    assert_eq!(
        d.ok("wc -c < machines/web/exec").trim(),
        (16 << 20).to_string()
    );
    let stderr = d.read("machines/web/exec.stderr");
    assert!(
        stderr.starts_with("err\nhyperfleet: stdout cut at 16 MiB"),
        "{stderr}"
    );
    assert_eq!(
        d.ok("stat -c %s machines/web/exec.stderr").trim(),
        stderr.len().to_string()
    );
}

#[test]
fn concurrent_execs_each_get_their_own_output() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();

    // Eight users of the same exec file at once, each on its own fd. Each
    // command answers only once all eight are running in the container
    // together (or says `alone` after 20 s).
    d.ok(&format!(
        r#"for i in 1 2 3 4 5 6 7 8; do
             ( exec 3<>machines/web/exec
               echo "sh -c 'touch /tmp/in.$i; n=0; until [ \$(ls /tmp | grep -c ^in) -ge 8 ]; do n=\$((n+1)); [ \$n -lt 400 ] || {{ echo alone-$i; exit 99; }}; sleep 0.05; done; echo out-$i; echo err-$i >&2; exit $i'" >&3 || exit 1
               cat <&3 > {t}/out.$i ) &
           done
           wait"#
    ));
    for i in 1..=8 {
        let out = std::fs::read_to_string(tmp.path().join(format!("out.{i}"))).expect("output");
        assert_eq!(
            out,
            format!("out-{i}\n"),
            "user {i} got someone else's output"
        );
    }
    // The shared files hold one whole result: stdout, stderr and exit of
    // the same command.
    let out = d.read("machines/web/exec");
    let n: u32 = out
        .trim()
        .strip_prefix("out-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("exec holds {out:?}"));
    assert_eq!(d.read("machines/web/exec.stderr"), format!("err-{n}\n"));
    assert_eq!(d.read("machines/web/exec.exit"), format!("{n}\n"));
}

#[test]
fn exec_timeout_fails_the_write_and_kills_the_command() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);

    let stderr = d.fails(r#"/bin/echo '{"cmd":["sleep","30"],"timeout":1}' > machines/web/exec"#);
    expect_errno(&stderr, "Connection timed out");
    let err = d.read("machines/web/error");
    assert!(
        err.contains("timed out") && err.contains("sleep 30"),
        "{err}"
    );

    // A command whose work runs in a child: the whole tree goes, and soon
    // after the timeout: had it lived 10 s, it would have left a mark.
    let stderr = d.fails(
        r#"/bin/echo '{"cmd":["sh","-c","sleep 10; touch /tmp/outlived; sleep 31; echo never"],"timeout":1}' > machines/web/exec"#,
    );
    expect_errno(&stderr, "Connection timed out");

    // The commands are gone from the container.
    d.ok("echo 'ps' > machines/web/exec");
    let ps = d.read("machines/web/exec");
    assert!(ps.contains("sleep 600"), "ps output unexpected: {ps}");
    assert!(
        !ps.contains("sleep 30"),
        "timed-out command still runs:\n{ps}"
    );
    assert!(
        !ps.contains("sleep 10") && !ps.contains("sleep 31"),
        "timed-out child still runs:\n{ps}"
    );
    // Gone, and gone before its tenth second.
    d.ok("echo 'ls /tmp' > machines/web/exec");
    assert_eq!(
        d.read("machines/web/exec"),
        "",
        "the timed-out command lived on"
    );
    assert_eq!(d.read("machines/web/status"), "running\n");
}

#[test]
fn exec_into_a_stopped_machine_is_einval() {
    require_docker();
    let d = Daemon::start();
    d.machine("web", r#"["sleep","600"]"#);
    // Never started.
    let stderr = d.fails("/bin/echo 'echo hi' > machines/web/exec");
    expect_errno(&stderr, "Invalid argument");
    assert!(d.read("machines/web/error").contains("pending"));

    d.ok("echo start > machines/web/ctl && echo 'echo before' > machines/web/exec");
    d.ok("echo kill > machines/web/ctl");
    let stderr = d.fails("/bin/echo 'echo hi' > machines/web/exec");
    expect_errno(&stderr, "Invalid argument");
    let err = d.read("machines/web/error");
    assert!(err.contains("exec") && err.contains("stopped"), "{err}");
    // The earlier result stays readable.
    assert_eq!(d.read("machines/web/exec"), "before\n");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
}

#[test]
fn exec_client_splits_streams_and_passes_the_exit_code() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);

    let out = d.sh("$HF exec web -- sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let out = d.sh("$HF exec web -- echo second");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\n");

    // A machine that does not exist: the client fails, it does not hang.
    let out = d.sh("$HF exec nosuch -- true");
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn a_long_exec_does_not_block_other_machines() {
    require_docker();
    let d = Daemon::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let s = shared.path().display();
    d.ok(&format!(
        r#"mkdir machines/slow && /bin/echo '{{"image":"'"$IMAGE"'","cmd":["sleep","600"],"volumes":[{{"host_path":"{s}","container_path":"/shared"}}]}}' > machines/slow/config"#
    ));
    d.ok("echo start > machines/slow/ctl");
    d.running("other", r#"["sleep","600"]"#);

    let out = d.ok(&format!(
        r#"( echo "sh -c 'touch /shared/started; until [ -e /shared/release ]; do sleep 0.05; done; echo slow-done'" > machines/slow/exec ) &
           SLOW=$!
           # The exec is in flight once the container has touched the marker.
           i=0; while [ ! -e {s}/started ]; do i=$((i+1)); [ $i -lt 400 ] || exit 9; sleep 0.05; done
           cat machines/other/status
           ls machines
           cat machines/slow/status
           echo 'echo other-exec' > machines/other/exec && cat machines/other/exec
           # Everything above answered while the slow exec still runs: it
           # cannot end before it is released.
           if kill -0 $SLOW 2>/dev/null; then echo still-in-flight; else echo finished-already; fi
           touch {s}/release
           wait $SLOW && echo slow-ok"#
    ));
    assert_eq!(
        out,
        "running\nother\nslow\nrunning\nother-exec\nstill-in-flight\nslow-ok\n"
    );
    assert_eq!(d.read("machines/slow/exec"), "slow-done\n");
}

#[test]
fn wait_returns_when_another_process_kills_and_times_out_otherwise() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);

    // The kill goes in once the waiter is blocked in its write(2) to ctl
    // (/proc/PID/syscall names the call a process is blocked in). Had the
    // kill queued behind the wait, the wait would time out and fail.
    let out = d.ok(&format!(
        r#"( echo 'wait stopped 30' > machines/web/ctl ) &
           W=$!
           end=$(( $(date +%s) + 20 ))
           until grep -q '^{write} ' /proc/$W/syscall 2>/dev/null; do
             [ $(date +%s) -lt $end ] || {{ echo never-blocked; exit 1; }}
             sleep 0.02
           done
           kill -0 $W && echo waiting
           cat machines/web/status
           echo kill > machines/web/ctl && echo killed
           wait $W && echo waited
           cat machines/web/status"#,
        write = libc::SYS_write
    ));
    assert_eq!(out, "waiting\nrunning\nkilled\nwaited\nstopped\n");

    let t0 = Instant::now();
    let stderr = d.fails("/bin/echo 'wait running 1' > machines/web/ctl");
    let took = t0.elapsed();
    expect_errno(&stderr, "Connection timed out");
    assert!(
        took >= Duration::from_millis(900),
        "gave up early: {took:?}"
    );
    // Its own timeout, not the 300 s default.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // A wait reads; its timeout is the waiter's, not a failure of the
    // machine's, so `error` is left as it was.
    let err = d.read("machines/web/error");
    assert!(!err.contains("within 1s"), "{err}");
    assert_eq!(d.read("machines/web/status"), "stopped\n");

    // Waiting for the status a machine already has returns at once.
    d.ok("echo 'wait stopped 5' > machines/web/ctl");
}

#[test]
fn logs_work_with_cat_grep_head_tail_and_tail_f() {
    require_docker();
    let d = Daemon::start();
    d.running(
        "web",
        r#"["sh","-c","i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]"#,
    );
    // Until a few lines are there.
    d.ok(
        r#"i=0; until [ "$(grep -c '^line ' machines/web/logs)" -ge 5 ]; do
              i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done"#,
    );

    let logs = d.ok("cat machines/web/logs");
    let nums = line_numbers(&logs);
    assert!(nums.len() >= 5, "{logs}");
    assert_eq!(
        nums,
        (0..nums.len() as u64).collect::<Vec<_>>(),
        "lines missing or out of order:\n{logs}"
    );

    assert_eq!(d.ok("grep -x 'line 3' machines/web/logs"), "line 3\n");
    assert_eq!(d.ok("grep -c -x 'line 1' machines/web/logs"), "1\n");

    let head = d.ok("head -n 3 machines/web/logs");
    assert_eq!(head.lines().count(), 3, "{head}");
    assert!(logs.starts_with(&head), "head:\n{head}\ncat:\n{logs}");
    assert!(head.contains("line 0\n"), "{head}");

    let tail = d.ok("tail -n 2 machines/web/logs");
    let t = line_numbers(&tail);
    assert_eq!(t.len(), 2, "{tail}");
    assert_eq!(t[1], t[0] + 1, "{tail}");
    assert!(
        t[0] >= nums[nums.len() - 2],
        "tail is older than cat:\n{tail}"
    );

    // tail -f shows lines that did not exist when it started.
    let before = d.ok("cat machines/web/logs");
    let max_before = line_numbers(&before).into_iter().max().unwrap_or(0);
    let awaited = max_before + 3;
    let followed = d.ok(&format!(
        "timeout 60 tail -n 1 -f machines/web/logs | grep -m 1 -x 'line {awaited}'"
    ));
    assert_eq!(
        followed,
        format!("line {awaited}\n"),
        "tail -f showed no new lines (before: up to {max_before})"
    );

    // The size of live files is their real length.
    assert_eq!(
        d.ok("stat -c %s machines/web/status"),
        format!("{}\n", d.ok("cat machines/web/status").len())
    );
    assert_eq!(
        d.ok("stat -c %s machines/web/config"),
        format!("{}\n", d.ok("cat machines/web/config").len())
    );
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn logs_size_matches_content_at_a_quiet_moment() {
    require_docker();
    let d = Daemon::start();
    d.running(
        "web",
        r#"["sh","-c","for i in 1 2 3 4 5 6 7 8; do echo line $i; done; echo done; sleep 600"]"#,
    );
    d.ok(r#"i=0; until grep -qx done machines/web/logs; do
              i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done"#);
    let size = d.ok("stat -c %s machines/web/logs");
    let wc = d.ok("cat machines/web/logs | wc -c");
    assert_eq!(size.trim(), wc.trim());
    let logs = d.read("machines/web/logs");
    assert_eq!(size.trim(), logs.len().to_string());
    assert_eq!(line_numbers(&logs), (1..=8).collect::<Vec<_>>(), "{logs}");
    // Reading in odd-sized pieces gives the same bytes.
    assert_eq!(d.ok("dd if=machines/web/logs bs=7 status=none"), logs);
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn workload_exiting_by_itself_ends_failed_or_stopped() {
    require_docker();
    let d = Daemon::start();
    // Each runs until told to leave (a file appears), then exits with its code.
    d.machine(
        "bad",
        r#"["sh","-c","until [ -e /tmp/go ]; do sleep 0.05; done; exit 4"]"#,
    );
    d.machine(
        "good",
        r#"["sh","-c","until [ -e /tmp/go ]; do sleep 0.05; done; exit 0"]"#,
    );
    d.ok("echo start > machines/bad/ctl && echo start > machines/good/ctl");
    assert_eq!(d.read("machines/bad/status"), "running\n");
    assert_eq!(d.read("machines/good/status"), "running\n");
    d.ok("echo 'touch /tmp/go' > machines/bad/exec && echo 'touch /tmp/go' > machines/good/exec");

    d.ok("echo 'wait failed 15' > machines/bad/ctl");
    assert_eq!(d.read("machines/bad/status"), "failed\n");
    let err = d.read("machines/bad/error");
    assert!(err.contains("exited with code 4"), "{err}");
    assert_eq!(d.ok("ls by-status/failed"), "bad\n");

    d.ok("echo 'wait stopped 15' > machines/good/ctl");
    assert_eq!(d.read("machines/good/status"), "stopped\n");
    assert_eq!(d.ok("ls by-status/stopped"), "good\n");

    // Both can be started again and removed.
    d.ok("echo start > machines/bad/ctl && echo 'touch /tmp/go' > machines/bad/exec && echo 'wait failed 15' > machines/bad/ctl");
    d.ok("rmdir machines/bad machines/good");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty());
}
