//! What only Firecracker machines do, through the mounted filesystem against
//! the real binary: snapshots and restores, a TAP device, and the refusal of
//! the hot-plug verbs Firecracker lacks.

mod common;

use common::expect_errno;
use common::kernel::{greeting_kernel, test_kernel};
use common::vm::{
    self, alive, config, create, error, info, run_files, status, vmm_pid, vmm_processes, Vmm,
};
use common::vmm::{raw_disk, Tap};

const FC: Vmm = Vmm::Firecracker;

#[test]
fn hot_plug_verbs_are_not_supported() {
    let Some(d) = vm::daemon(FC) else { return };
    let host = tempfile::tempdir().unwrap();
    let disk = raw_disk(host.path(), "d.img", 1);
    create(&d, "vm", &config(FC, &test_kernel(), ""));
    d.ok("echo start > machines/vm/ctl");
    for cmd in [
        "resize vcpus=2".to_owned(),
        "resize mem=256".to_owned(),
        format!("add-disk {} id=data", disk.display()),
        "remove-device data".to_owned(),
    ] {
        let stderr = d.fails(&format!("/bin/echo '{cmd}' > machines/vm/ctl"));
        expect_errno(&stderr, "Operation not supported");
        let err = error(&d, "vm");
        assert!(
            err.starts_with("firecracker does not support"),
            "{cmd}: {err}"
        );
        assert_eq!(status(&d, "vm"), "running", "{cmd}");
    }
    assert!(!d.read("machines/vm/ctl").contains("resize"));
    d.ok("echo kill > machines/vm/ctl");
}

#[test]
fn snapshot_then_restore_into_a_fresh_firecracker() {
    let Some(d) = vm::daemon(FC) else { return };
    let host = tempfile::tempdir().unwrap();
    let root = raw_disk(host.path(), "root.img", 8);
    let extra = format!(r#""rootfs_path":"{}""#, root.display());
    create(&d, "vm", &config(FC, &greeting_kernel(), &extra));
    d.ok("echo start > machines/vm/ctl");
    let first = vmm_pid(&d, "vm");

    // Of a running VM: paused for the snapshot, running again after.
    let snap = host.path().join("snap");
    d.ok(&format!(
        "echo 'snapshot {}' > machines/vm/ctl",
        snap.display()
    ));
    assert_eq!(status(&d, "vm"), "running");
    assert_eq!(info(&d, "vm")["runtime_info"]["state"], "Running");
    assert!(std::fs::metadata(snap.join("vmstate")).unwrap().len() > 0);
    assert_eq!(
        std::fs::metadata(snap.join("memory")).unwrap().len(),
        64 << 20
    );

    // Of a paused VM: it stays paused.
    let paused_snap = host.path().join("paused-snap");
    d.ok("echo pause > machines/vm/ctl");
    d.ok(&format!(
        "echo 'snapshot {}' > machines/vm/ctl",
        paused_snap.display()
    ));
    assert_eq!(status(&d, "vm"), "paused");
    assert_eq!(info(&d, "vm")["runtime_info"]["state"], "Paused");
    assert!(paused_snap.join("vmstate").exists());

    // Restore is for a machine that is not running.
    let stderr = d.fails(&format!(
        "/bin/echo 'restore {}' > machines/vm/ctl",
        snap.display()
    ));
    expect_errno(&stderr, "Operation already in progress");
    d.ok("echo 'shutdown 0' > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "stopped");
    assert!(!alive(first));

    d.ok(&format!(
        "echo 'restore {}' > machines/vm/ctl",
        snap.display()
    ));
    assert_eq!(status(&d, "vm"), "running");
    let restored = vmm_pid(&d, "vm");
    assert_ne!(restored, first, "a fresh process");
    let rt = &info(&d, "vm")["runtime_info"];
    assert_eq!(rt["state"], "Running");
    assert_eq!(
        rt["details"]["vm_config"]["vsock"]["uds_path"]
            .as_str()
            .map(|p| p.ends_with("/vsock.sock")),
        Some(true)
    );
    assert_eq!(vmm_processes(&d), [restored].into());
    // The restored VM is a VM like any other.
    d.ok("echo pause > machines/vm/ctl && echo resume > machines/vm/ctl");
    d.ok("echo kill > machines/vm/ctl");

    // Restored again from the same snapshot: the stale sockets go.
    d.ok(&format!(
        "echo 'restore {}' > machines/vm/ctl",
        paused_snap.display()
    ));
    assert_eq!(status(&d, "vm"), "running");
    d.ok("echo kill > machines/vm/ctl");

    // A directory that holds no snapshot: ENOENT, nothing started.
    let empty = host.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stderr = d.fails(&format!(
        "/bin/echo 'restore {}' > machines/vm/ctl",
        empty.display()
    ));
    expect_errno(&stderr, "No such file or directory");
    assert!(error(&d, "vm").contains("vmstate"), "{}", error(&d, "vm"));
    assert_eq!(status(&d, "vm"), "stopped");
    // A snapshot that Firecracker cannot load: its reason, nothing left.
    std::fs::write(empty.join("vmstate"), b"garbage").unwrap();
    std::fs::write(empty.join("memory"), b"garbage").unwrap();
    let stderr = d.fails(&format!(
        "/bin/echo 'restore {}' > machines/vm/ctl",
        empty.display()
    ));
    expect_errno(&stderr, "Input/output error");
    let err = error(&d, "vm");
    assert!(err.contains("PUT /snapshot/load"), "{err}");
    assert_eq!(status(&d, "vm"), "stopped");
    assert!(vmm_processes(&d).is_empty());
    let files = run_files(&d, "vm");
    assert!(
        !files.contains("api.sock") && !files.contains("firecracker.pid"),
        "{files:?}"
    );
    // A relative directory is refused by the parser.
    let stderr = d.fails("/bin/echo 'snapshot snap' > machines/vm/ctl");
    expect_errno(&stderr, "Invalid argument");
}

#[test]
fn a_tap_device_and_the_guest_address_reach_firecracker() {
    let Some(d) = vm::daemon(FC) else { return };
    let tap = Tap::new();
    let extra = format!(
        r#""network":{{"tap_device":"{}","tap_ip":"172.31.0.1","guest_ip":"172.31.0.2","guest_mac":"06:00:ac:1f:00:02"}}"#,
        tap.name
    );
    create(&d, "vm", &config(FC, &test_kernel(), &extra));
    d.ok("echo start > machines/vm/ctl");
    let rt = &info(&d, "vm")["runtime_info"];
    let ifaces = &rt["details"]["vm_config"]["network-interfaces"];
    assert_eq!(ifaces[0]["host_dev_name"], tap.name.as_str());
    assert_eq!(ifaces[0]["guest_mac"], "06:00:ac:1f:00:02");
    let args = rt["details"]["vm_config"]["boot-source"]["boot_args"]
        .as_str()
        .unwrap();
    assert!(
        args.contains("ip=172.31.0.2::172.31.0.1:255.255.255.0::eth0:off"),
        "{args}"
    );
    assert_eq!(rt["addresses"][0], "172.31.0.2");
    d.ok("echo kill > machines/vm/ctl");
    // The next run gets the same device back.
    d.ok("echo start > machines/vm/ctl");
    assert_eq!(status(&d, "vm"), "running");
    d.ok("echo kill > machines/vm/ctl && rmdir machines/vm");
}
