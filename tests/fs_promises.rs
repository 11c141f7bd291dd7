//! The lifecycle promises of the README, each checked through the mounted
//! filesystem with a shell, against real Docker: what `restart`, `stop`,
//! `shutdown N`, `pause`/`resume` do to a workload, the errnos of verbs that
//! have nothing to do, the size cap of `logs`, the exit codes of
//! `hyperfleet exec`, what may not be renamed, created or removed, and an
//! operation whose writer is killed.
//!
//! Workloads record what happened to them (a line per start, "got TERM") in
//! a host directory bind-mounted at `/shared`, so each check waits for an
//! event rather than for a guessed amount of time. Scripts that check an
//! errno's text use coreutils `/bin/echo`: dash's builtin `echo` reports
//! every failed write as "I/O error".
mod common;

use serde_json::json;

use common::{expect_errno, require_docker, Daemon, Shared};

/// The container of a machine's current (or last) run, from its `info`.
fn handle(d: &Daemon, name: &str) -> String {
    let info = d.info(name);
    info["runtime_info"]["handle"]
        .as_str()
        .unwrap_or_else(|| panic!("no container in info of {name}: {info}"))
        .to_owned()
}

/// The machine's `error` file: exactly one line, mentioning `needle`.
fn error_line(d: &Daemon, name: &str, needle: &str) -> String {
    let err = d.read(&format!("machines/{name}/error"));
    assert!(
        err.ends_with('\n') && err.lines().count() == 1,
        "error of {name} is not one line: {err:?}"
    );
    assert!(
        err.contains(needle),
        "error of {name} lacks {needle:?}: {err:?}"
    );
    err
}

/// Docker's own word for the state of container `id`.
fn docker_state(id: &str) -> String {
    common::docker(&["inspect", "-f", "{{.State.Status}}", id])
}

/// A config running `script` under `sh -c` with the shared dir mounted.
fn sh_config(shared: &Shared, script: &str) -> serde_json::Value {
    json!({
        "image": common::image(),
        "cmd": ["sh", "-c", script],
        "volumes": [shared.volume()],
    })
}

/// Marks each start and each SIGTERM in /shared/runs; leaves on SIGTERM.
const RECORDS_RUNS: &str = "trap 'echo term >> /shared/runs; exit 0' TERM; \
                            echo start >> /shared/runs; sleep 600 & wait";

#[test]
fn restart_stops_the_run_gracefully_and_starts_a_new_one() {
    require_docker();
    let d = Daemon::start();
    let shared = Shared::new();
    let runs = shared.path().join("runs");
    let runs_are = |want: &str| {
        let cond = format!("[ \"$(cat {} 2>/dev/null)\" = '{want}' ]", runs.display());
        assert!(
            d.poll(&cond, 30),
            "runs should be {want:?}, are {:?}",
            shared.read("runs")
        );
    };
    d.machine_with_config("web", &sh_config(&shared, RECORDS_RUNS));
    d.ok("echo start > machines/web/ctl");
    runs_are("start");
    let first = handle(&d, "web");

    // Running: SIGTERM to the old run, then a new run in a new container.
    d.ok("echo restart > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    runs_are("start\nterm\nstart");
    let second = handle(&d, "web");
    assert_ne!(second, first, "restart did not make a new run");
    assert_eq!(
        d.containers(),
        vec![second.clone()],
        "the old run's container was kept"
    );
    assert_eq!(docker_state(&second), "running");

    // Paused: thawed, stopped gracefully, started again.
    d.ok("echo pause > machines/web/ctl && echo restart > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    runs_are("start\nterm\nstart\nterm\nstart");
    let third = handle(&d, "web");
    assert_ne!(third, second);
    assert_eq!(docker_state(&third), "running");

    // Stopped: nothing to stop, so only a start.
    d.ok("echo kill > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    d.ok("echo restart > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    runs_are("start\nterm\nstart\nterm\nstart\nstart");
    assert_eq!(d.containers().len(), 1);
    assert_eq!(d.read("machines/web/error"), "");
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn stop_sends_sigterm_and_the_workload_leaves_on_its_own() {
    require_docker();
    let d = Daemon::start();
    let shared = Shared::new();
    d.machine_with_config(
        "web",
        &sh_config(
            &shared,
            "trap 'echo got TERM; echo got TERM > /shared/term; exit 0' TERM; \
             echo ready; sleep 600 & wait",
        ),
    );
    d.ok("echo start > machines/web/ctl");
    // The trap is set before `ready` is printed.
    d.until(
        "grep -qx ready machines/web/logs",
        30,
        "workload never got ready",
    );

    d.ok("echo stop > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    assert_eq!(shared.read("term"), "got TERM\n");
    // It left by its own `exit 0`, not by the SIGKILL after the grace.
    let info = d.info("web");
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(info["runtime_info"]["state"], "exited", "{info}");
    // What it printed on its way out is in its logs.
    d.until(
        "grep -qx 'got TERM' machines/web/logs",
        30,
        "the workload's last words never reached logs",
    );
    assert_eq!(d.read("machines/web/error"), "");
}

#[test]
fn shutdown_with_a_grace_kills_a_workload_that_ignores_sigterm() {
    require_docker();
    let d = Daemon::start();
    let shared = Shared::new();
    // Notes the SIGTERM (with the second it came) and carries on.
    d.machine_with_config(
        "web",
        &sh_config(
            &shared,
            "trap 'date +%s > /shared/term-at' TERM; echo ready; \
             while :; do sleep 0.1; done",
        ),
    );
    d.ok("echo start > machines/web/ctl");
    d.until(
        "grep -qx ready machines/web/logs",
        30,
        "workload never got ready",
    );

    d.ok("echo 'shutdown 1' > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    let term_at: i64 = shared.read("term-at").trim().parse().unwrap_or_else(|_| {
        panic!(
            "the workload never got SIGTERM: {:?}",
            shared.read("term-at")
        )
    });
    // It did not leave by itself: SIGKILL ended it.
    let info = d.info("web");
    assert_eq!(info["exit_code"], 137, "{info}");
    assert_eq!(info["runtime_info"]["exit_code"], 137, "{info}");
    // ...once the 1 s grace was over, not the 10 s of a plain `stop`. Both
    // times are the engine host's clock, read when the events happened.
    let finished = info["runtime_info"]["finished_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no finished_at: {info}"))
        .to_owned();
    let killed_at: i64 = d
        .ok(&format!("date -d '{finished}' +%s"))
        .trim()
        .parse()
        .expect("a time");
    let grace = killed_at - term_at;
    assert!(
        (0..=6).contains(&grace),
        "SIGKILL came {grace}s after SIGTERM (TERM at {term_at}, end at {finished})"
    );
    assert!(d.containers().iter().all(|c| docker_state(c) == "exited"));
}

#[test]
fn a_paused_machine_can_be_stopped() {
    require_docker();
    let d = Daemon::start();
    let shared = Shared::new();
    d.machine_with_config(
        "web",
        &sh_config(
            &shared,
            "trap 'echo got TERM > /shared/term; exit 0' TERM; echo ready; sleep 600 & wait",
        ),
    );
    d.ok("echo start > machines/web/ctl");
    d.until(
        "grep -qx ready machines/web/logs",
        30,
        "workload never got ready",
    );
    let ctr = handle(&d, "web");
    d.ok("echo pause > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "paused\n");
    assert_eq!(docker_state(&ctr), "paused");

    d.ok("echo stop > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    assert_eq!(docker_state(&ctr), "exited");
    // Thawed first, so the stop was a graceful one.
    assert_eq!(shared.read("term"), "got TERM\n");
    assert_eq!(d.info("web")["exit_code"], 0);
    assert_eq!(d.ok("ls by-status/stopped"), "web\n");
    assert_eq!(d.ok("ls by-status/paused"), "");
    // And it starts again from there.
    d.ok("echo start > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn verbs_with_nothing_to_do_are_ealready_and_change_nothing() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);
    let ctr = handle(&d, "web");

    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "Operation already in progress");
    error_line(&d, "web", "already running");
    let stderr = d.fails("/bin/echo resume > machines/web/ctl");
    expect_errno(&stderr, "Operation already in progress");
    error_line(&d, "web", "already running");
    assert_eq!(d.read("machines/web/status"), "running\n");
    assert_eq!(docker_state(&ctr), "running");

    d.ok("echo pause > machines/web/ctl");
    assert_eq!(d.read("machines/web/error"), "", "a success clears error");
    let stderr = d.fails("/bin/echo pause > machines/web/ctl");
    expect_errno(&stderr, "Operation already in progress");
    error_line(&d, "web", "already paused");
    assert_eq!(d.read("machines/web/status"), "paused\n");
    assert_eq!(docker_state(&ctr), "paused");
    let stderr = d.fails("/bin/echo start > machines/web/ctl");
    expect_errno(&stderr, "Operation already in progress");
    error_line(&d, "web", "already paused");

    d.ok("echo kill > machines/web/ctl");
    for verb in ["stop", "kill", "shutdown 1"] {
        let stderr = d.fails(&format!("/bin/echo '{verb}' > machines/web/ctl"));
        expect_errno(&stderr, "Operation already in progress");
        error_line(&d, "web", "already stopped");
        assert_eq!(d.read("machines/web/status"), "stopped\n");
    }
    // None of it made or started another container.
    assert_eq!(d.containers(), vec![ctr.clone()]);
    assert_eq!(docker_state(&ctr), "exited");
}

#[test]
fn resume_brings_a_paused_machine_back_to_running() {
    require_docker();
    let d = Daemon::start();
    let shared = Shared::new();
    // Counts, so that the workload visibly runs.
    d.machine_with_config(
        "web",
        &sh_config(
            &shared,
            "i=0; while :; do i=$((i+1)); echo $i > /shared/tick.new; \
             mv /shared/tick.new /shared/tick; sleep 0.05; done",
        ),
    );
    d.ok("echo start > machines/web/ctl");
    let tick = shared.path().join("tick");
    d.until(
        &format!("[ -s {} ]", tick.display()),
        30,
        "workload never ticked",
    );

    d.ok("echo pause > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "paused\n");
    assert_eq!(d.ok("ls by-status/paused"), "web\n");
    // Frozen: nothing runs in it, not even an exec.
    let stderr = d.fails("/bin/echo 'echo hi' > machines/web/exec");
    expect_errno(&stderr, "Invalid argument");

    d.ok("echo resume > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    assert_eq!(d.ok("ls by-status/running"), "web\n");
    assert_eq!(d.ok("ls by-status/paused"), "");
    assert_eq!(docker_state(&handle(&d, "web")), "running");
    assert_eq!(d.read("machines/web/error"), "");
    // The workload carries on from where it was frozen.
    let after: u64 = shared.read("tick").trim().parse().expect("a count");
    d.until(
        &format!("[ \"$(cat {})\" -gt {} ]", tick.display(), after + 5),
        30,
        "the workload does not run after resume",
    );
    assert_eq!(
        d.ok("echo 'echo alive' > machines/web/exec && cat machines/web/exec"),
        "alive\n"
    );
    d.ok("echo kill > machines/web/ctl");
}

/// The cap of `logs` (src/core/logsink.rs `LOG_CAP`) and the line put where
/// earlier output was dropped.
const LOG_CAP: usize = 16 << 20;
const DROPPED: &str = "[hyperfleet: earlier output dropped, log exceeded its size cap]\n";

#[test]
fn logs_past_16_mib_start_over_and_say_so() {
    require_docker();
    let d = Daemon::start();
    // Lines of 10,000 bytes: the engine hands over output a line at a time,
    // and 20 MB of short lines would take the daemon a minute to copy.
    let line = format!("{}\n", "0123456789".repeat(1000));
    let flood = 20_000_000;
    d.machine(
        "chatty",
        &format!(
            r#"["sh","-c","l=0123456789; for i in 1 2 3; do l=$l$l$l$l$l$l$l$l$l$l; done; yes $l | head -c {flood}; echo; echo END-OF-FLOOD; sleep 600"]"#
        ),
    );
    d.ok("echo start > machines/chatty/ctl");
    // While the output pours in, the log never grows past the cap.
    let sizes = d.ok("end=$(( $(date +%s) + 120 ))
         until tail -c 100 machines/chatty/logs | grep -q END-OF-FLOOD; do
           [ $(date +%s) -lt $end ] || { echo TIMEOUT; exit 0; }
           stat -c %s machines/chatty/logs
           sleep 0.05
         done");
    assert!(!sizes.contains("TIMEOUT"), "the flood never ended in logs");
    let sizes: Vec<usize> = sizes.lines().map(|l| l.parse().expect("a size")).collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        largest <= LOG_CAP + 64 * 1024,
        "logs reached {largest} bytes (cap {LOG_CAP})"
    );

    let size: usize = d
        .ok("stat -c %s machines/chatty/logs")
        .trim()
        .parse()
        .expect("size");
    let logs = d.ok("cat machines/chatty/logs");
    assert_eq!(size, logs.len(), "stat size is not the content's");
    assert!(size <= LOG_CAP + 64 * 1024, "logs is {size} bytes");
    // It starts over once: the marker, then the newest output, whole.
    let kept = logs.strip_prefix(DROPPED).unwrap_or_else(|| {
        panic!(
            "logs do not begin with the marker: {:?}",
            &logs[..200.min(logs.len())]
        )
    });
    assert!(!kept.contains(DROPPED.trim_end()), "marker twice");
    let mut stream = line.repeat(flood / line.len() + 1);
    stream.truncate(flood);
    stream.push_str("\nEND-OF-FLOOD\n");
    assert!(
        stream.ends_with(kept),
        "what logs kept is not the end of the output ({} bytes kept)",
        kept.len()
    );
    // Only what the cap forced out was dropped.
    assert!(
        kept.len() + LOG_CAP >= stream.len(),
        "kept {} of {} bytes: more was dropped than the cap requires",
        kept.len(),
        stream.len()
    );
    d.ok("echo kill > machines/chatty/ctl");
}

#[test]
fn hyperfleet_exec_exit_codes_say_how_the_command_ended() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);
    let code = |script: &str| d.sh(script).status.code();

    assert_eq!(code("$HF exec web -- true"), Some(0));
    assert_eq!(code("$HF exec web -- sh -c 'exit 7'"), Some(7));
    assert_eq!(code("$HF exec web -- sh -c 'exit 124'"), Some(124));

    // Timed out: 124, as timeout(1) does, and the command is gone.
    let out = d.sh("$HF exec --timeout 1 web -- sleep 30");
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(!d.ok("$HF exec web -- ps").contains("sleep 30"));

    // Could not run: 125, as docker exec does.
    let out = d.sh("$HF exec nosuch -- true");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    d.ok("echo kill > machines/web/ctl");
    let out = d.sh("$HF exec web -- true");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped"),
        "the reason is not given: {stderr}"
    );
}

#[test]
fn an_exec_that_times_out_while_it_starts_is_killed_all_the_same() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);
    // Timeouts so short that they may run out while the engine is still
    // starting the command: whenever it does start, it must not outlive
    // the failed write. Each command is told apart by its sleep.
    let timeouts = ["0.005", "0.01", "0.02", "0.05", "0.1"];
    for (i, t) in timeouts.iter().enumerate() {
        let stderr = d.fails(&format!(
            r#"/bin/echo '{{"cmd":["sh","-c","sleep 30{i}"],"timeout":{t}}}' > machines/web/exec"#
        ));
        expect_errno(&stderr, "Connection timed out");
    }
    let ps = d.ok("echo ps > machines/web/exec && cat machines/web/exec");
    assert!(ps.contains("sleep 600"), "ps output unexpected: {ps}");
    let survivors: Vec<&str> = ps.lines().filter(|l| l.contains("sleep 30")).collect();
    assert!(
        survivors.is_empty(),
        "timed-out commands still run: {survivors:?}; last error: {}",
        d.read("machines/web/error")
    );
    assert_eq!(d.read("machines/web/status"), "running\n");
}

#[test]
fn the_tree_cannot_be_renamed_added_to_or_removed_from() {
    require_docker();
    let d = Daemon::start();
    d.ok("mkdir machines/a machines/b");
    let files = d.ok("ls machines/a");
    let config = d.read("machines/a/config");
    let id = d.read("machines/a/id");

    for script in [
        // rename
        "mv machines/a/config machines/a/x",
        "mv machines/a/status machines/b/status",
        "mv machines/a machines/b",
        "mv machines/a machines/c",
        // create
        "touch machines/a/new",
        "/bin/echo x > machines/a/new",
        "touch machines/new-file",
        // unlink outside a machine
        "rm by-status/pending/a",
    ] {
        let stderr = d.fails(script);
        expect_errno(&stderr, "Operation not permitted");
    }
    // A machine's files go only with the machine: there is no link of
    // theirs to unlink (which is what lets `rm -rf` reach the rmdir).
    let stderr = d.fails("rm machines/a/status");
    expect_errno(&stderr, "No such file or directory");
    d.ok("rm -f machines/a/config");

    assert_eq!(d.ok("ls machines"), "a\nb\n");
    assert_eq!(d.ok("ls machines/a"), files);
    assert_eq!(d.ok("ls machines/b"), files);
    assert_eq!(d.read("machines/a/config"), config);
    assert_eq!(d.read("machines/a/id"), id);
    assert_eq!(d.ok("ls by-status/pending"), "a\nb\n");
}
