mod common;

use common::{require_docker, Daemon};

#[test]
fn full_lifecycle_from_a_shell() {
    require_docker();
    let d = Daemon::start();
    assert!(d.read("README").contains("every machine is a directory"));
    d.ok("mkdir machines/web");
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert_eq!(d.read("machines/web/error"), "");
    d.ok(r#"echo '{"runtime_type":"docker","image":"'"$IMAGE"'","cmd":["sleep","600"],"env":{"GREETING":"hi"}}' > machines/web/config"#);
    let config = d.read("machines/web/config");
    assert!(config.contains("\"GREETING\": \"hi\""), "{config}");

    d.ok("echo start > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    assert_eq!(d.ok("ls by-status/running"), "web\n");
    assert_eq!(d.ok("ls by-runtime/docker"), "web\n");
    assert_eq!(
        d.ok("readlink by-status/running/web"),
        "../../machines/web\n"
    );
    assert_eq!(d.containers().len(), 1);

    let out = d.ok("echo 'sh -c \"echo $GREETING; echo oops >&2; exit 3\"' > machines/web/exec && cat machines/web/exec machines/web/exec.stderr machines/web/exec.exit");
    assert_eq!(out, "hi\noops\n3\n");

    // The same open file returns its own command's output.
    let out = d.ok("exec 3<>machines/web/exec; echo 'echo mine' >&3; cat <&3");
    assert_eq!(out, "mine\n");

    d.ok("echo pause > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "paused\n");
    d.ok("echo resume > machines/web/ctl");
    d.ok("echo kill > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    d.ok("rmdir machines/web");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
fn logs_keep_a_runs_last_lines_and_follow_restart_policy_restarts() {
    require_docker();
    let d = Daemon::start();
    // Prints and exits at once: the last lines arrive as the run ends.
    d.machine(
        "burst",
        r#"["sh","-c","for i in 1 2 3 4 5 6 7 8 9; do echo line $i; done; exit 3"]"#,
    );
    d.ok("echo start > machines/burst/ctl; /bin/echo 'wait failed 20' > machines/burst/ctl");
    assert_eq!(
        d.ok("grep -c '^line' machines/burst/logs"),
        "9\n",
        "logs: {}",
        d.read("machines/burst/logs")
    );

    // Docker restarts this one by itself; each run's line must reach logs.
    d.ok(r#"mkdir machines/again && echo '{"image":"'"$IMAGE"'","cmd":["sh","-c","echo run; sleep 1; exit 1"],"restart":"always"}' > machines/again/config && echo start > machines/again/ctl"#);
    let runs = d.ok(
        "for i in $(seq 1 60); do n=$(grep -c '^run' machines/again/logs); [ \"$n\" -ge 3 ] && break; sleep 0.5; done; echo $n",
    );
    assert!(
        runs.trim().parse::<u32>().unwrap_or(0) >= 3,
        "only {runs} runs in logs"
    );
    assert_eq!(d.read("machines/again/status"), "running\n");
    d.ok("echo kill > machines/again/ctl");
}

#[test]
fn a_failed_start_keeps_the_last_run() {
    require_docker();
    let d = Daemon::start();
    d.machine("web", r#"["sh","-c","echo hello from run one; exit 0"]"#);
    d.ok("echo start > machines/web/ctl; /bin/echo 'wait stopped 20' > machines/web/ctl");
    let info_before = d.read("machines/web/info");
    assert!(info_before.contains("\"exit_code\": 0"), "{info_before}");
    let id_before = container_id(&info_before);
    // A failure after the new container was created: its host port is taken.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    d.ok(&format!(
        r#"echo '{{"image":"'"$IMAGE"'","cmd":["sleep","600"],"ports":[{{"host_port":{port},"container_port":80}}]}}' > machines/web/config"#
    ));
    let err = d.fails("/bin/echo start > machines/web/ctl");
    assert!(err.contains("Input/output error"), "{err}");
    let error = d.read("machines/web/error");
    assert!(error.starts_with("start: start container: "), "{error}");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    assert!(d.read("machines/web/logs").contains("hello from run one"));
    assert_eq!(
        d.containers().len(),
        1,
        "the new container was left, or the last run's is gone"
    );
    let info_after = d.read("machines/web/info");
    assert_eq!(container_id(&info_after), id_before, "{info_after}");
    assert!(info_after.contains("\"exit_code\": 0"), "{info_after}");
    // With the port free, the same config starts.
    drop(taken);
    d.ok("echo start > machines/web/ctl && echo kill > machines/web/ctl");
}

fn container_id(info: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(info).expect("info is JSON");
    v["runtime_info"]["handle"]
        .as_str()
        .expect("a container id")
        .to_owned()
}

#[test]
fn switching_runtime_type_leaves_a_deletable_pending_machine() {
    require_docker();
    let d = Daemon::start();
    d.machine("web", r#"["true"]"#);
    d.ok("echo start > machines/web/ctl; /bin/echo 'wait stopped 20' > machines/web/ctl");
    assert_eq!(d.containers().len(), 1);
    d.ok(r#"echo '{"runtime_type":"firecracker","kernel_image_path":"/boot/vmlinux"}' > machines/web/config"#);
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert!(
        d.containers().is_empty(),
        "the docker container outlived the switch"
    );
    assert_eq!(d.ok("ls by-runtime/firecracker"), "web\n");
    d.ok("rmdir machines/web");
}

#[test]
fn config_edits_in_place_with_ed_and_vim() {
    let d = Daemon::start();
    d.ok(r#"mkdir machines/e && echo '{"image":"busybox","vcpu_count":1}' > machines/e/config"#);
    d.ok(r#"printf ',s/"vcpu_count": 1/"vcpu_count": 2/\nw\nq\n' | ed -s machines/e/config"#);
    assert!(d.read("machines/e/config").contains("\"vcpu_count\": 2,"));
    d.ok(r#"vim -es -u NONE -c '%s/"vcpu_count": 2/"vcpu_count": 3/' -c 'wq' machines/e/config"#);
    assert!(d.read("machines/e/config").contains("\"vcpu_count\": 3,"));
    // A bad edit is refused whole and the spec stays as it was.
    d.fails(
        r#"vim -es -u NONE -c '%s/"vcpu_count": 3/"vcpu_count": "x"/' -c 'wq' machines/e/config"#,
    );
    assert!(d.read("machines/e/config").contains("\"vcpu_count\": 3,"));
    assert!(d.read("machines/e/error").contains("vcpu_count"));
    assert_eq!(d.ok("head -n 1 machines/e/config"), "{\n");
    assert_eq!(d.ok("grep -c '\"image\"' machines/e/config"), "1\n");
    assert_eq!(d.ok("less -F machines/e/config | grep -c busybox"), "1\n");
}
