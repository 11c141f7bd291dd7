//! microVMs through the mounted filesystem, the same for Firecracker and
//! Cloud Hypervisor, against the real binaries: the lifecycle, the console
//! in `logs`, deaths, a daemon `kill -9` and its restart, many VMs at once,
//! and bad input. Each test runs for both VMMs and skips (with a note) when
//! a binary is missing. The guest is the test kernel: it writes a line on
//! its serial console and halts, ignoring Ctrl+Alt+Del and the power button,
//! so every graceful stop here ends in the runtime's forced fallback.

mod common;

use std::time::{Duration, Instant};

use common::kernel::{greeting_kernel, not_an_elf, GREETING};
use common::vm::{
    self, alive, config, create, error, info, logs, run_dir, run_files, status, vmm_pid,
    vmm_processes, wait_until, Vmm,
};
use common::vmm::raw_disk;
use common::{expect_errno, Daemon};

const BOTH: [Vmm; 2] = [Vmm::Firecracker, Vmm::CloudHypervisor];

/// How many times the guest's greeting is in `logs`.
fn greetings(d: &Daemon, name: &str) -> usize {
    logs(d, name).matches(GREETING).count()
}

/// Waits until the greeting has reached `logs` (the console is copied
/// while the VM runs).
fn greeted(d: &Daemon, name: &str) {
    wait_until(
        &format!("{name} greets in logs"),
        Duration::from_secs(10),
        || greetings(d, name) >= 1,
    );
}

fn lifecycle(kind: Vmm) {
    let Some(d) = vm::daemon(kind) else { return };
    let disks = tempfile::tempdir().unwrap();
    let root = raw_disk(disks.path(), "root.img", 8);
    let data = raw_disk(disks.path(), "data.img", 4);
    let extra = format!(
        r#""rootfs_path":"{}","disks":[{{"path":"{}","id":"data","read_only":true}}]"#,
        root.display(),
        data.display()
    );
    create(&d, "vm", &config(kind, &greeting_kernel(), &extra));
    assert_eq!(d.read("machines/vm/ctl"), kind.ctl_listing());
    assert_eq!(
        d.read(&format!("runtimes/{}/status", kind.runtime_type()))
            .split(':')
            .next(),
        Some("available")
    );

    d.ok("echo start > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "running");
    greeted(&d, "vm");
    let pid = vmm_pid(&d, "vm");
    assert_eq!(
        vmm_processes(&d),
        [pid].into(),
        "one VMM, the one info names"
    );
    let rt = &info(&d, "vm")["runtime_info"];
    assert_eq!(rt["state"], "Running");
    assert_eq!(rt["runtime"], kind.runtime_type());
    assert_eq!(rt["details"]["vmm"]["child_of_daemon"], true);
    let started = rt["started_at"].as_str().unwrap_or_default();
    assert!(started.len() == 24 && started.ends_with('Z'), "{started}");
    let files = run_files(&d, "vm");
    for f in ["api.sock", "vsock.sock", "console.log", "vmm.log"] {
        assert!(
            files.contains(f),
            "{f} missing from the runtime dir: {files:?}"
        );
    }

    d.ok("echo pause > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "paused");
    assert_eq!(info(&d, "vm")["runtime_info"]["state"], "Paused");
    d.fails("/bin/echo pause > machines/vm/ctl");
    d.ok("echo resume > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "running");
    assert_eq!(info(&d, "vm")["runtime_info"]["state"], "Running");

    // The guest ignores the polite request: the forced stop follows the grace.
    let t = Instant::now();
    d.ok("echo 'shutdown 1' > machines/vm/ctl");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "shutdown 1 took {took:?}"
    );
    assert_eq!(status(&d, "vm"), "stopped");
    assert_eq!(error(&d, "vm"), "");
    assert!(!alive(pid), "the VMM is gone after the shutdown");
    assert!(vmm_processes(&d).is_empty());
    let files = run_files(&d, "vm");
    assert!(
        !files.contains("api.sock") && !files.contains("vsock.sock"),
        "sockets outlived the VMM: {files:?}"
    );
    assert_eq!(info(&d, "vm")["runtime_info"]["state"], "exited");

    // Start after stop, over and over: stale sockets never get in the way.
    let mut pids = vec![pid];
    for round in 0..3 {
        d.ok("echo start > machines/vm/ctl");
        assert_eq!(status(&d, "vm"), "running", "round {round}");
        let pid = vmm_pid(&d, "vm");
        assert!(!pids.contains(&pid), "round {round}: a new VMM each run");
        pids.push(pid);
        greeted(&d, "vm");
        assert_eq!(greetings(&d, "vm"), 1, "round {round}: logs is this run's");
        d.ok("echo kill > machines/vm/ctl");
        assert_eq!(status(&d, "vm"), "stopped", "round {round}");
        assert!(!alive(pid));
    }

    // restart = stop (the default grace, 10 s, then forced) + start.
    d.ok("echo start > machines/vm/ctl");
    let before = vmm_pid(&d, "vm");
    d.ok("echo restart > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "running");
    let after = vmm_pid(&d, "vm");
    assert_ne!(before, after);
    assert!(!alive(before));
    assert_eq!(vmm_processes(&d), [after].into());
    d.ok("echo 'wait running 5' > machines/vm/ctl");

    d.fails("rmdir machines/vm");
    d.ok("echo kill > machines/vm/ctl && rmdir machines/vm");
    let dir = d.state.join("run");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "rmdir leaves nothing"
    );
    assert!(vmm_processes(&d).is_empty());
}

#[test]
fn lifecycle_firecracker() {
    lifecycle(Vmm::Firecracker);
}

#[test]
fn lifecycle_cloud_hypervisor() {
    lifecycle(Vmm::CloudHypervisor);
}

/// VMs survive a `kill -9` of the daemon and are re-adopted (same
/// processes, none started twice); one that died meanwhile is failed.
fn daemon_kill9(kind: Vmm) {
    let Some(mut d) = vm::daemon(kind) else {
        return;
    };
    let conf = config(kind, &greeting_kernel(), "");
    for name in ["a", "b", "c"] {
        create(&d, name, &conf);
        d.ok(&format!("echo start > machines/{name}/ctl"));
        greeted(&d, name);
    }
    d.ok("echo pause > machines/b/ctl");
    let pids: Vec<u32> = ["a", "b", "c"].iter().map(|n| vmm_pid(&d, n)).collect();
    assert_eq!(vmm_processes(&d), pids.iter().copied().collect());

    d.kill9();
    // The VMMs do not notice.
    std::thread::sleep(Duration::from_millis(200));
    assert!(pids.iter().all(|p| alive(*p)), "a VMM died with its daemon");
    // SAFETY: kill(2) on the VMM of machine c, alive just above.
    unsafe { libc::kill(pids[2] as i32, libc::SIGKILL) };
    wait_until("c's VMM is gone", Duration::from_secs(5), || {
        !alive(pids[2])
    });
    d.spawn();

    for (name, pid, state) in [("a", pids[0], "Running"), ("b", pids[1], "Paused")] {
        assert_eq!(status(&d, name), state.to_lowercase(), "{name}");
        assert_eq!(
            vmm_pid(&d, name),
            pid,
            "{name} is re-adopted, not restarted"
        );
        let rt = &info(&d, name)["runtime_info"];
        assert_eq!(rt["state"], state);
        assert_eq!(rt["details"]["vmm"]["child_of_daemon"], false);
        // The console is resumed where it was, not copied again.
        assert_eq!(greetings(&d, name), 1, "{name}'s logs");
    }
    assert_eq!(
        vmm_processes(&d),
        [pids[0], pids[1]].into(),
        "exactly the two survivors, none duplicated"
    );
    assert_eq!(status(&d, "c"), "failed");
    let err = error(&d, "c");
    assert!(
        err.contains("exit status is unknown") && err.contains("while hyperfleet was not running"),
        "{err}"
    );

    // The adopted VMMs are not the new daemon's children: stops still work.
    d.ok("echo stop > machines/a/ctl");
    d.ok("echo kill > machines/b/ctl");
    for name in ["a", "b"] {
        assert_eq!(status(&d, name), "stopped");
    }
    assert!(vmm_processes(&d).is_empty());
    // And they start again, as children.
    d.ok("echo start > machines/c/ctl");
    assert_eq!(
        info(&d, "c")["runtime_info"]["details"]["vmm"]["child_of_daemon"],
        true
    );
    d.ok("echo kill > machines/c/ctl");
}

#[test]
fn daemon_kill9_readopts_firecracker() {
    daemon_kill9(Vmm::Firecracker);
}

#[test]
fn daemon_kill9_readopts_cloud_hypervisor() {
    daemon_kill9(Vmm::CloudHypervisor);
}

/// A VMM killed from outside: `failed`, with the signal and the VMM's last
/// log line in `error`; with a restart policy, it comes back.
fn killed_from_outside(kind: Vmm) {
    let Some(d) = vm::daemon(kind) else { return };
    create(&d, "vm", &config(kind, &greeting_kernel(), ""));
    d.ok("echo start > machines/vm/ctl");
    let pid = vmm_pid(&d, "vm");
    // SAFETY: kill(2) on the VMM the daemon reports.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    d.ok("echo 'wait failed 10' > machines/vm/ctl");
    let err = error(&d, "vm");
    assert!(err.contains("killed by signal 9 (SIGKILL)"), "{err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains(kind.runtime_type()), "{err}");
    assert_eq!(info(&d, "vm")["exit"], "killed by signal 9 (SIGKILL)");
    assert!(vmm_processes(&d).is_empty());
    // Its logs are kept.
    assert_eq!(greetings(&d, "vm"), 1);

    create(
        &d,
        "phoenix",
        &config(kind, &greeting_kernel(), r#""restart":"on-failure""#),
    );
    d.ok("echo start > machines/phoenix/ctl");
    let first = vmm_pid(&d, "phoenix");
    // SAFETY: as above.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    wait_until("phoenix is back", Duration::from_secs(15), || {
        status(&d, "phoenix") == "running"
            && info(&d, "phoenix")["runtime_info"]["pid"]
                .as_u64()
                .is_some_and(|p| p != u64::from(first))
    });
    let second = vmm_pid(&d, "phoenix");
    assert!(alive(second));
    // A requested stop is not a failure: no restart.
    d.ok("echo kill > machines/phoenix/ctl");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&d, "phoenix"), "stopped");
    assert!(vmm_processes(&d).is_empty());
}

#[test]
fn killed_from_outside_firecracker() {
    killed_from_outside(Vmm::Firecracker);
}

#[test]
fn killed_from_outside_cloud_hypervisor() {
    killed_from_outside(Vmm::CloudHypervisor);
}

/// 20 VMs created and started at once by 20 separate processes.
fn twenty_in_parallel(kind: Vmm) {
    let Some(d) = vm::daemon(kind) else { return };
    let conf = config(kind, &greeting_kernel(), "");
    let out = d.ok(&format!(
        r#"T=$(mktemp -d)
for i in $(seq 1 20); do
  ( mkdir machines/vm$i && printf '%s' '{conf}' > machines/vm$i/config && /bin/echo start > machines/vm$i/ctl ) 2>"$T/err.$i" &
done
wait
for i in $(seq 1 20); do [ -s "$T/err.$i" ] && echo "vm$i: $(cat "$T/err.$i")"; done
rm -rf "$T"
echo done"#
    ));
    assert_eq!(out.trim(), "done", "some starts failed:\n{out}");
    let mut pids = std::collections::BTreeSet::new();
    for i in 1..=20 {
        let name = format!("vm{i}");
        assert_eq!(status(&d, &name), "running", "{name}: {}", error(&d, &name));
        pids.insert(vmm_pid(&d, &name));
    }
    assert_eq!(pids.len(), 20, "twenty distinct VMMs");
    assert_eq!(
        vmm_processes(&d),
        pids,
        "exactly the twenty, as the host sees it"
    );

    d.ok(r#"for i in $(seq 1 20); do ( /bin/echo kill > machines/vm$i/ctl && rmdir machines/vm$i ) & done; wait"#);
    assert_eq!(d.ok("ls machines | wc -l").trim(), "0");
    assert!(vmm_processes(&d).is_empty());
    assert!(pids.iter().all(|p| !alive(*p)));
    let run = d.state.join("run");
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
}

#[test]
fn twenty_in_parallel_firecracker() {
    twenty_in_parallel(Vmm::Firecracker);
}

#[test]
fn twenty_in_parallel_cloud_hypervisor() {
    twenty_in_parallel(Vmm::CloudHypervisor);
}

/// Every refused request: its errno, one line in `error` naming the cause,
/// the status unchanged, nothing running, nothing left in the runtime dir.
fn bad_input(kind: Vmm) {
    let Some(d) = vm::daemon(kind) else { return };
    let host = tempfile::tempdir().unwrap();
    let kernel = greeting_kernel();
    create(&d, "vm", &config(kind, &kernel, ""));

    // Refused at config time: the old config stays.
    let before = d.read("machines/vm/config");
    for (path, words) in [
        ("vmlinux", "must be an absolute path"),
        ("/boot/../vmlinux", "must not contain '..'"),
    ] {
        let conf = config(kind, std::path::Path::new(path), "");
        let stderr = d.fails(&format!(
            "/usr/bin/printf '%s' '{conf}' > machines/vm/config"
        ));
        expect_errno(&stderr, "Invalid argument");
        let err = error(&d, "vm");
        assert!(
            err.contains("kernel_image_path") && err.contains(words),
            "{err}"
        );
        assert_eq!(d.read("machines/vm/config"), before);
    }
    let stderr = d.fails("/bin/echo frobnicate > machines/vm/ctl");
    expect_errno(&stderr, "Invalid argument");
    assert!(error(&d, "vm").contains("frobnicate"));

    let exits_at_once = vm::script(
        host.path(),
        "vmm-exits",
        "echo 'no such option: --api-sock' >&2\nexit 1",
    );
    let not_executable = host.path().join("vmm-not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let dir_as_rootfs = host.path().join("rootfs-dir");
    std::fs::create_dir(&dir_as_rootfs).unwrap();
    let junk = not_an_elf(host.path());
    let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
        (
            "a missing kernel",
            config(kind, std::path::Path::new("/nonexistent/vmlinux"), ""),
            "No such file or directory",
            vec!["kernel_image_path", "/nonexistent/vmlinux"],
        ),
        (
            "a missing VMM binary",
            config(kind, &kernel, r#""vmm_binary":"/nowhere/vmm""#),
            "No such file or directory",
            vec!["vmm_binary", "/nowhere/vmm"],
        ),
        (
            "a VMM binary that cannot be executed",
            config(
                kind,
                &kernel,
                &format!(r#""vmm_binary":"{}""#, not_executable.display()),
            ),
            "No such file or directory",
            vec!["vmm_binary", "not executable"],
        ),
        (
            "a VMM that exits at once",
            config(
                kind,
                &kernel,
                &format!(r#""vmm_binary":"{}""#, exits_at_once.display()),
            ),
            "Input/output error",
            vec!["exited", "code 1", "no such option: --api-sock"],
        ),
        (
            "a kernel that is not an ELF",
            config(kind, &junk, ""),
            "Input/output error",
            vec!["Invalid bzImage"],
        ),
        (
            "rootfs_path pointing at a directory",
            config(
                kind,
                &kernel,
                &format!(r#""rootfs_path":"{}""#, dir_as_rootfs.display()),
            ),
            "No such file or directory",
            vec!["rootfs_path", "is not a regular file or block device"],
        ),
    ];
    for (what, conf, errno, words) in cases {
        d.ok(&format!("printf '%s' '{conf}' > machines/vm/config"));
        let stderr = d.fails("/bin/echo start > machines/vm/ctl");
        expect_errno(&stderr, errno);
        let err = d.read("machines/vm/error");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err:?}");
        for w in words {
            assert!(err.contains(w), "{what}: error does not say {w:?}: {err}");
        }
        assert_eq!(status(&d, "vm"), "pending", "{what}: status unchanged");
        assert!(
            vmm_processes(&d).is_empty(),
            "{what}: a VMM was left running"
        );
        let files = run_files(&d, "vm");
        for f in [
            "api.sock",
            "vsock.sock",
            &format!("{}.pid", kind.runtime_type()),
        ] {
            assert!(!files.contains(f), "{what}: {f} left behind: {files:?}");
        }
    }

    // A machine that ran keeps its status and its last run's logs.
    d.ok(&format!(
        "printf '%s' '{}' > machines/vm/config",
        config(kind, &kernel, "")
    ));
    d.ok("echo start > machines/vm/ctl");
    greeted(&d, "vm");
    d.ok("echo kill > machines/vm/ctl");
    d.ok(&format!(
        "printf '%s' '{}' > machines/vm/config",
        config(kind, &junk, "")
    ));
    d.fails("/bin/echo start > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "stopped");
    assert_eq!(greetings(&d, "vm"), 1, "the last run's logs are kept");
    assert!(vmm_processes(&d).is_empty());
    assert!(run_dir(&d, "vm").exists());
}

#[test]
fn bad_input_firecracker() {
    bad_input(Vmm::Firecracker);
}

#[test]
fn bad_input_cloud_hypervisor() {
    bad_input(Vmm::CloudHypervisor);
}

/// A VMM whose machine is gone from the store (say, the daemon died in the
/// middle of a delete) is found by its pid file and removed when the
/// daemon starts, with its runtime directory.
fn orphan_swept(kind: Vmm) {
    let Some(mut d) = vm::daemon(kind) else {
        return;
    };
    create(&d, "gone", &config(kind, &greeting_kernel(), ""));
    create(&d, "kept", &config(kind, &greeting_kernel(), ""));
    d.ok("echo start > machines/gone/ctl && echo start > machines/kept/ctl");
    let orphan = vmm_pid(&d, "gone");
    let kept = vmm_pid(&d, "kept");
    let dir = run_dir(&d, "gone");
    d.kill9();
    let db = rusqlite::Connection::open(d.state.join("hyperfleet.db")).unwrap();
    db.execute("DELETE FROM machines WHERE name = 'gone'", [])
        .unwrap();
    drop(db);
    d.spawn();
    wait_until("the orphan is removed", Duration::from_secs(10), || {
        !alive(orphan) && !dir.exists()
    });
    assert_eq!(
        vmm_processes(&d),
        [kept].into(),
        "the other VM is untouched"
    );
    assert_eq!(status(&d, "kept"), "running");
    d.ok("echo kill > machines/kept/ctl");
}

#[test]
fn orphan_swept_firecracker() {
    orphan_swept(Vmm::Firecracker);
}

#[test]
fn orphan_swept_cloud_hypervisor() {
    orphan_swept(Vmm::CloudHypervisor);
}

/// The daemon dies while a start waits for its VMM (a stand-in that never
/// opens its API socket): the restarted daemon rolls the start back, so the
/// machine is failed with the reason and the VMM is gone, not adopted.
fn start_cut_short(kind: Vmm) {
    let Some(mut d) = vm::daemon(kind) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let silent = vm::script(host.path(), "silent-vmm", "exec sleep 120");
    let extra = format!(r#""vmm_binary":"{}""#, silent.display());
    create(&d, "vm", &config(kind, &greeting_kernel(), &extra));
    let pid_file = run_dir(&d, "vm").join(format!("{}.pid", kind.runtime_type()));
    // The start is left hanging (its writer gets ENOTCONN when the daemon dies).
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg("echo start > machines/vm/ctl")
        .current_dir(&d.mount)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the stand-in VMM is spawned",
        Duration::from_secs(5),
        || pid_file.exists(),
    );
    let spawned = vmm_processes(&d);
    assert_eq!(spawned.len(), 1);
    assert_eq!(status(&d, "vm"), "starting");
    d.kill9();
    let _ = writer.wait();
    d.spawn();
    wait_until("the start is rolled back", Duration::from_secs(10), || {
        status(&d, "vm") == "failed"
    });
    let err = error(&d, "vm");
    assert!(
        err.contains("never answered on its API socket")
            && err.contains("hyperfleet stopped while starting it"),
        "{err}"
    );
    assert!(vmm_processes(&d).is_empty());
    assert!(spawned.iter().all(|p| !alive(*p)));
}

#[test]
fn start_cut_short_firecracker() {
    start_cut_short(Vmm::Firecracker);
}

#[test]
fn start_cut_short_cloud_hypervisor() {
    start_cut_short(Vmm::CloudHypervisor);
}

/// With no VMM binary configured, the runtime says which variable to set,
/// and a start fails with ECONNREFUSED; a machine naming its own binary
/// still starts.
#[test]
fn without_a_binary_the_runtime_is_unavailable() {
    let bins: Vec<_> = BOTH.iter().map(|k| k.binary()).collect();
    let d = Daemon::start_with_env(&[
        ("HYPERFLEET_FIRECRACKER_BIN", ""),
        ("HYPERFLEET_CLOUD_HYPERVISOR_BIN", ""),
    ]);
    for (kind, bin) in BOTH.into_iter().zip(bins) {
        let var = match kind {
            Vmm::Firecracker => "HYPERFLEET_FIRECRACKER_BIN",
            Vmm::CloudHypervisor => "HYPERFLEET_CLOUD_HYPERVISOR_BIN",
        };
        let health = d.read(&format!("runtimes/{}/status", kind.runtime_type()));
        assert!(
            health.starts_with("unavailable: ") && health.contains(var),
            "{health}"
        );
        let name = format!("no-bin-{}", kind.runtime_type());
        create(&d, &name, &config(kind, &greeting_kernel(), ""));
        let stderr = d.fails(&format!("/bin/echo start > machines/{name}/ctl"));
        expect_errno(&stderr, "Connection refused");
        assert!(error(&d, &name).contains(var), "{}", error(&d, &name));
        assert_eq!(status(&d, &name), "pending");
        let Some(bin) = bin else { continue };
        // A config path may not climb with `..`.
        let bin = std::fs::canonicalize(bin).unwrap();
        let own = format!(r#""vmm_binary":"{}""#, bin.display());
        d.ok(&format!(
            "printf '%s' '{}' > machines/{name}/config && echo start > machines/{name}/ctl",
            config(kind, &greeting_kernel(), &own)
        ));
        assert_eq!(status(&d, &name), "running");
        d.ok(&format!("echo kill > machines/{name}/ctl"));
    }
    assert!(vmm_processes(&d).is_empty());
}
