//! What only Cloud Hypervisor machines do, through the mounted filesystem
//! against the real binary: hot-plug (vCPUs, memory, disks) visible in
//! `info`, snapshots (which fail on this host: the VM must carry on), and
//! restores that fail cleanly.

mod common;

use common::expect_errno;
use common::kernel::test_kernel;
use common::vm::{self, config, create, error, info, run_files, status, vmm_processes, Vmm};
use common::vmm::{raw_disk, Tap};

const CH: Vmm = Vmm::CloudHypervisor;

fn details(d: &common::Daemon) -> serde_json::Value {
    info(d, "vm")["runtime_info"]["details"].clone()
}

fn disk_ids(d: &common::Daemon) -> Vec<String> {
    details(d)["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn resize_and_disk_hot_plug_show_in_info() {
    let Some(d) = vm::daemon(CH) else { return };
    let host = tempfile::tempdir().unwrap();
    let root = raw_disk(host.path(), "root.img", 8);
    let data = raw_disk(host.path(), "data.img", 4);
    let extra = format!(
        r#""max_vcpus":2,"hotplug_mem_mib":128,"rootfs_path":"{}""#,
        root.display()
    );
    create(&d, "vm", &config(CH, &test_kernel(), &extra));
    d.ok("echo start > machines/vm/ctl");
    let before = details(&d);
    assert_eq!(before["vcpus"], 1);
    assert_eq!(before["max_vcpus"], 2);
    assert_eq!(before["memory_mib"], 64);
    assert_eq!(before["hotplug_mib"], 128);
    assert_eq!(disk_ids(&d), ["rootfs"]);

    d.ok("echo 'resize vcpus=2' > machines/vm/ctl");
    assert_eq!(details(&d)["vcpus"], 2);
    d.ok("echo 'resize mem=192' > machines/vm/ctl");
    assert_eq!(details(&d)["memory_mib"], 192);
    // Beyond what the VM was booted for: Cloud Hypervisor's own reason.
    let stderr = d.fails("/bin/echo 'resize vcpus=3' > machines/vm/ctl");
    expect_errno(&stderr, "Input/output error");
    assert!(
        error(&d, "vm").contains("exceed maximum"),
        "{}",
        error(&d, "vm")
    );
    assert_eq!(details(&d)["vcpus"], 2);

    d.ok(&format!(
        "echo 'add-disk {} id=data1 ro' > machines/vm/ctl",
        data.display()
    ));
    assert_eq!(disk_ids(&d), ["rootfs", "data1"]);
    let added = &details(&d)["disks"][1];
    assert_eq!(added["readonly"], true);
    assert_eq!(added["path"], data.display().to_string());
    let stderr = d.fails(&format!(
        "/bin/echo 'add-disk {} id=data1' > machines/vm/ctl",
        data.display()
    ));
    expect_errno(&stderr, "Input/output error");
    assert!(
        error(&d, "vm").contains("not unique"),
        "{}",
        error(&d, "vm")
    );
    // A disk with no id gets one. (Cloud Hypervisor locks an image: a
    // second device needs a second image.)
    let more = raw_disk(host.path(), "more.img", 4);
    d.ok(&format!(
        "echo 'add-disk {}' > machines/vm/ctl",
        more.display()
    ));
    assert_eq!(disk_ids(&d).len(), 3);
    let stderr = d.fails("/bin/echo 'add-disk /nonexistent.img id=x' > machines/vm/ctl");
    expect_errno(&stderr, "No such file or directory");
    assert!(error(&d, "vm").contains("/nonexistent.img"));

    d.ok("echo 'remove-device data1' > machines/vm/ctl");
    assert!(!disk_ids(&d).contains(&"data1".to_owned()));
    let stderr = d.fails("/bin/echo 'remove-device nope' > machines/vm/ctl");
    expect_errno(&stderr, "Input/output error");
    assert!(error(&d, "vm").contains("nope"), "{}", error(&d, "vm"));
    assert_eq!(status(&d, "vm"), "running");

    // What was hot-plugged lasts for the run: the next boots from the spec.
    d.ok("echo kill > machines/vm/ctl && echo start > machines/vm/ctl");
    assert_eq!(details(&d)["vcpus"], 1);
    assert_eq!(disk_ids(&d), ["rootfs"]);
    // Hot-plug needs a running VM.
    d.ok("echo pause > machines/vm/ctl");
    let stderr = d.fails("/bin/echo 'resize vcpus=2' > machines/vm/ctl");
    expect_errno(&stderr, "Invalid argument");
    d.ok("echo kill > machines/vm/ctl");
}

#[test]
fn a_failed_snapshot_leaves_the_vm_running_and_says_why() {
    let Some(d) = vm::daemon(CH) else { return };
    let host = tempfile::tempdir().unwrap();
    create(&d, "vm", &config(CH, &test_kernel(), ""));
    d.ok("echo start > machines/vm/ctl");
    let snap = host.path().join("snap");
    let stderr = d.fails(&format!(
        "/bin/echo 'snapshot {}' > machines/vm/ctl",
        snap.display()
    ));
    // This host's nested KVM refuses GetNestedState: the snapshot cannot
    // succeed here whatever we do (see ../shared/vmm/README.md).
    expect_errno(&stderr, "Input/output error");
    let err = error(&d, "vm");
    assert!(
        err.starts_with("snapshot: PUT /api/v1/vm.snapshot"),
        "{err}"
    );
    assert!(err.contains("could not be snapshotted"), "{err}");
    assert_eq!(status(&d, "vm"), "running");
    assert_eq!(
        info(&d, "vm")["runtime_info"]["state"],
        "Running",
        "resumed"
    );
    // Of a paused VM: it stays paused.
    d.ok("echo pause > machines/vm/ctl");
    d.fails(&format!(
        "/bin/echo 'snapshot {}' > machines/vm/ctl",
        snap.display()
    ));
    assert_eq!(status(&d, "vm"), "paused");
    assert_eq!(info(&d, "vm")["runtime_info"]["state"], "Paused");
    d.ok("echo resume > machines/vm/ctl");
    d.ok("echo 'shutdown 0' > machines/vm/ctl");

    // Restores that cannot work: ENOENT for no snapshot at all, Cloud
    // Hypervisor's reason for a bad one; nothing left running either way.
    let stderr = d.fails(&format!(
        "/bin/echo 'restore {}' > machines/vm/ctl",
        snap.display()
    ));
    expect_errno(&stderr, "No such file or directory");
    assert!(
        error(&d, "vm").contains("config.json"),
        "{}",
        error(&d, "vm")
    );
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("config.json"), b"{}").unwrap();
    let stderr = d.fails(&format!(
        "/bin/echo 'restore {}' > machines/vm/ctl",
        snap.display()
    ));
    expect_errno(&stderr, "Input/output error");
    let err = error(&d, "vm");
    assert!(err.contains("vm.restore"), "{err}");
    assert_eq!(status(&d, "vm"), "stopped");
    assert!(vmm_processes(&d).is_empty());
    let files = run_files(&d, "vm");
    assert!(
        !files.contains("api.sock") && !files.contains("cloud-hypervisor.pid"),
        "{files:?}"
    );
}

#[test]
fn a_tap_device_and_the_guest_address_reach_cloud_hypervisor() {
    let Some(d) = vm::daemon(CH) else { return };
    let tap = Tap::new();
    let extra = format!(
        r#""network":{{"tap_device":"{}","guest_ip":"172.30.0.2","guest_mac":"06:00:ac:1e:00:02"}}"#,
        tap.name
    );
    create(&d, "vm", &config(CH, &test_kernel(), &extra));
    d.ok("echo start > machines/vm/ctl");
    let rt = &info(&d, "vm")["runtime_info"];
    let net = &rt["details"]["vm"]["config"]["net"][0];
    assert_eq!(net["tap"], tap.name.as_str());
    assert_eq!(net["mac"], "06:00:ac:1e:00:02");
    let cmdline = rt["details"]["vm"]["config"]["payload"]["cmdline"]
        .as_str()
        .unwrap();
    assert!(
        cmdline.contains("ip=172.30.0.2:::255.255.255.0::eth0:off"),
        "{cmdline}"
    );
    assert_eq!(rt["addresses"][0], "172.30.0.2");
    d.ok("echo kill > machines/vm/ctl && rmdir machines/vm");
}
