//! The Firecracker client and supervision against the real binary.

use std::path::Path;
use std::time::Duration;

use hyper::StatusCode;
use hyperfleet::runtime::firecracker::api::{
    BootSource, Drive, FirecrackerApi, InstanceState, LogLevel, Logger, MachineConfiguration,
    MemoryBackend, Metrics, NetworkInterface, SnapshotCreateParams, SnapshotLoadParams,
    SnapshotType, Vsock,
};
use hyperfleet::runtime::http::HttpError;
use hyperfleet::runtime::process::ProcessHandle;
use hyperfleet::runtime::vmm_process::{Vmm, VmmError, VmmExit};

use crate::common::kernel::{not_an_elf, test_kernel};
use crate::common::vmm::{
    error_chain, firecracker_bin, firecracker_command, raw_disk, runtime_dir, start_firecracker,
    KillOnDrop, Running, Tap, READY_TIMEOUT,
};

const GRACE: Duration = Duration::from_secs(5);

fn machine(vcpus: u32, mib: u64) -> MachineConfiguration {
    MachineConfiguration {
        vcpu_count: vcpus,
        mem_size_mib: mib,
        ..Default::default()
    }
}

fn boot(kernel: &Path) -> BootSource {
    BootSource {
        kernel_image_path: kernel.to_owned(),
        boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
        initrd_path: None,
    }
}

/// The status and VMM message of an API error, or a panic naming it.
fn status_of(err: &HttpError) -> (StatusCode, &str) {
    match err {
        HttpError::Status {
            status, message, ..
        } => (*status, message.as_str()),
        other => panic!("expected an error status, got {}", error_chain(other)),
    }
}

/// Configures and boots the test kernel with 1 vCPU and 64 MiB.
async fn boot_minimal(api: &FirecrackerApi) {
    api.put_machine_config(&machine(1, 64)).await.unwrap();
    api.put_boot_source(&boot(&test_kernel())).await.unwrap();
    api.instance_start().await.unwrap();
}

#[tokio::test]
async fn boots_pauses_snapshots_and_restores() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let d = dir.path();
    let (mut fc, api) = start_firecracker(&bin, d).await;

    let info = api.describe_instance().await.unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    assert_eq!(info.id, "hyperfleet-test");

    api.put_logger(&Logger {
        log_path: Some(d.join("fc.log")),
        level: Some(LogLevel::Info),
        show_level: Some(true),
        show_log_origin: Some(false),
        module: None,
    })
    .await
    .unwrap();
    api.put_metrics(&Metrics {
        metrics_path: d.join("fc.metrics"),
    })
    .await
    .unwrap();
    api.put_machine_config(&machine(1, 128)).await.unwrap();
    api.put_boot_source(&boot(&test_kernel())).await.unwrap();
    let disk = raw_disk(d, "root.img", 8);
    api.put_drive(&Drive {
        drive_id: "rootfs".into(),
        path_on_host: Some(disk.clone()),
        is_root_device: true,
        is_read_only: Some(false),
        ..Default::default()
    })
    .await
    .unwrap();
    let vsock = d.join("vsock.sock");
    api.put_vsock(&Vsock {
        guest_cid: 3,
        uds_path: vsock.clone(),
    })
    .await
    .unwrap();
    assert!(
        vsock.exists(),
        "Firecracker binds the vsock socket at PUT /vsock"
    );

    api.instance_start().await.unwrap();
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    let config = api.vm_config().await.unwrap();
    assert_eq!(config.machine_config.unwrap().mem_size_mib, 128);
    assert_eq!(config.drives.len(), 1);
    assert_eq!(
        config.drives[0].path_on_host.as_deref(),
        Some(disk.as_path())
    );
    assert_eq!(config.vsock.unwrap().guest_cid, 3);

    api.pause().await.unwrap();
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    api.resume().await.unwrap();
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::Running
    );

    // A snapshot of the paused VM.
    api.pause().await.unwrap();
    let snapshot = d.join("vm.snap");
    let memory = d.join("vm.mem");
    api.create_snapshot(&SnapshotCreateParams {
        snapshot_path: snapshot.clone(),
        mem_file_path: memory.clone(),
        snapshot_type: Some(SnapshotType::Full),
    })
    .await
    .unwrap();
    assert!(std::fs::metadata(&snapshot).unwrap().len() > 0);
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), 128 << 20);
    api.resume().await.unwrap();

    // The halting kernel has no keyboard driver: Ctrl+Alt+Del is accepted
    // and ignored, and the VMM keeps running.
    api.send_ctrl_alt_del().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), fc.vmm.wait()).await;
    assert!(
        waited.is_err(),
        "Firecracker exited after SendCtrlAltDel: {waited:?}"
    );
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::Running
    );

    api.flush_metrics().await.unwrap();
    assert!(std::fs::metadata(d.join("fc.metrics")).unwrap().len() > 0);
    let log = std::fs::read_to_string(d.join("fc.log")).unwrap();
    assert!(
        log.contains("InstanceStart") || log.contains("/actions"),
        "{log}"
    );

    // Firecracker has no SIGTERM handler: it dies of the signal, within
    // the grace, and leaves its sockets behind.
    let exit = fc.vmm.terminate(GRACE).await.unwrap();
    assert_eq!(exit, VmmExit::Signal(libc::SIGTERM));
    assert!(!fc.vmm.handle().is_alive());
    drop(fc);

    // Restore into a fresh process in a fresh directory.
    let dir2 = runtime_dir();
    let (mut restored, api2) = start_firecracker(&bin, dir2.path()).await;
    api2.load_snapshot(&SnapshotLoadParams {
        snapshot_path: snapshot,
        mem_backend: MemoryBackend::file(&memory),
        resume_vm: Some(false),
        track_dirty_pages: None,
        network_overrides: vec![],
        // Firecracker leaves the old vsock socket on disk; restore onto a
        // path of the new runtime dir.
        vsock_override: Some(hyperfleet::runtime::firecracker::api::VsockOverride {
            uds_path: dir2.path().join("vsock.sock"),
        }),
    })
    .await
    .unwrap();
    assert_eq!(
        api2.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    api2.resume().await.unwrap();
    assert_eq!(
        api2.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    restored.vmm.terminate(GRACE).await.unwrap();
}

#[tokio::test]
async fn accepts_a_tap_device_as_network_interface() {
    let Some(bin) = firecracker_bin() else { return };
    let tap = Tap::new();
    let dir = runtime_dir();
    let (mut fc, api) = start_firecracker(&bin, dir.path()).await;
    api.put_network_interface(&NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: tap.name.clone(),
        guest_mac: Some("06:00:ac:10:00:02".into()),
        mtu: None,
    })
    .await
    .unwrap();
    boot_minimal(&api).await;
    let config = api.vm_config().await.unwrap();
    assert_eq!(config.network_interfaces.len(), 1);
    assert_eq!(config.network_interfaces[0].host_dev_name, tap.name);
    assert_eq!(
        config.network_interfaces[0].guest_mac.as_deref(),
        Some("06:00:ac:10:00:02")
    );
    fc.vmm.terminate(GRACE).await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_firecrackers_reason() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let d = dir.path();
    let (mut fc, api) = start_firecracker(&bin, d).await;

    let err = api.put_machine_config(&machine(0, 128)).await.unwrap_err();
    let (status, message) = status_of(&err);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("number of vCPUs"), "{message}");
    assert!(
        err.to_string().contains("PUT /machine-config: 400"),
        "{err}"
    );

    // A kernel that does not exist is refused at boot-source already.
    let err = api
        .put_boot_source(&boot(&d.join("no-such-kernel")))
        .await
        .unwrap_err();
    let (status, message) = status_of(&err);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message.contains("kernel file cannot be opened"),
        "{message}"
    );

    // Post-boot calls before the boot.
    let err = api.pause().await.unwrap_err();
    assert!(
        status_of(&err).1.contains("not supported before starting"),
        "{err}"
    );
    let err = api.send_ctrl_alt_del().await.unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::BAD_REQUEST);

    // A vsock socket path that is taken.
    let taken = d.join("taken.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&taken).unwrap();
    let err = api
        .put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: taken,
        })
        .await
        .unwrap_err();
    assert!(
        status_of(&err).1.contains("Address already in use"),
        "{err}"
    );

    // A file that is not a kernel passes boot-source and fails the start;
    // the VMM stays up, not started.
    api.put_machine_config(&machine(1, 64)).await.unwrap();
    api.put_boot_source(&boot(&not_an_elf(d))).await.unwrap();
    let err = api.instance_start().await.unwrap_err();
    let (status, message) = status_of(&err);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("Invalid bzImage"), "{message}");
    assert!(fc.vmm.handle().is_alive());
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::NotStarted
    );
    fc.vmm.terminate(GRACE).await.unwrap();
}

#[tokio::test]
async fn configuration_is_refused_after_boot() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let (mut fc, api) = start_firecracker(&bin, dir.path()).await;
    boot_minimal(&api).await;

    let err = api.put_machine_config(&machine(1, 64)).await.unwrap_err();
    assert!(
        status_of(&err).1.contains("not supported after starting"),
        "{err}"
    );
    let err = api.instance_start().await.unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::BAD_REQUEST);
    // A snapshot of a running VM is refused: it must be paused first.
    let err = api
        .create_snapshot(&SnapshotCreateParams {
            snapshot_path: dir.path().join("s"),
            mem_file_path: dir.path().join("m"),
            snapshot_type: None,
        })
        .await
        .unwrap_err();
    assert!(
        status_of(&err).1.contains("unavailable while running"),
        "{err}"
    );
    fc.vmm.terminate(GRACE).await.unwrap();
}

#[tokio::test]
async fn restarts_in_the_same_runtime_dir() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let vsock = dir.path().join("vsock.sock");
    for round in 0..3 {
        // Make sure a stale API socket and vsock socket are in the way, as a
        // VMM killed with SIGKILL leaves them.
        for path in [dir.path().join("api.sock"), vsock.clone()] {
            if !path.exists() {
                drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            }
        }
        let mut cmd = firecracker_command(&bin, dir.path());
        cmd = cmd.socket(&vsock);
        let mut vmm = Vmm::spawn(&cmd).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let _guard = KillOnDrop(vmm.handle());
        let api = FirecrackerApi::new(&cmd.sockets[0]);
        vmm.wait_ready(&cmd.sockets[0], READY_TIMEOUT, || api.describe_instance())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", error_chain(&e)));
        api.put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: vsock.clone(),
        })
        .await
        .unwrap();
        boot_minimal(&api).await;
        // SIGKILL, as a crash would: nothing is cleaned up.
        vmm.terminate(Duration::ZERO).await.unwrap();
    }
}

#[tokio::test]
async fn a_stale_socket_not_declared_makes_firecracker_exit_early() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let socket = dir.path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    // The API socket is left out of `sockets`, so nothing removes it.
    let mut cmd = firecracker_command(&bin, dir.path());
    cmd.sockets.clear();
    let mut vmm = Vmm::spawn(&cmd).unwrap();
    let _guard = KillOnDrop(vmm.handle());
    let api = FirecrackerApi::new(&socket);
    let err = vmm
        .wait_ready(&socket, READY_TIMEOUT, || api.describe_instance())
        .await
        .unwrap_err();
    match &err {
        VmmError::EarlyExit { exit, output, .. } => {
            assert_eq!(*exit, VmmExit::Code(1));
            let text = output.to_string();
            assert!(text.contains("Failed to open the API socket"), "{text}");
        }
        other => panic!("expected EarlyExit, got {}", error_chain(other)),
    }
}

#[tokio::test]
async fn a_vmm_outlives_its_handles_and_is_re_adopted() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let (fc, api) = start_firecracker(&bin, dir.path()).await;
    boot_minimal(&api).await;
    let spawned = fc.vmm.handle();
    // The daemon "dies": every handle is dropped; the VMM runs on (the guard
    // only cleans up after the test).
    let Running {
        vmm,
        cmd,
        guard: _guard,
        ..
    } = fc;
    drop(vmm);
    drop(api);

    let recorded = ProcessHandle::read(&cmd.pid_file).unwrap().unwrap();
    assert_eq!(recorded, spawned);
    assert!(recorded.is_alive());
    let mut adopted = Vmm::adopt(&cmd).unwrap().expect("still running");
    assert!(!adopted.is_child());
    let api = FirecrackerApi::new(&cmd.sockets[0]);
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    // A second start for the same machine is refused, never duplicated.
    assert!(matches!(
        Vmm::spawn(&cmd),
        Err(VmmError::AlreadyRunning { .. })
    ));

    // SAFETY: kill(2) on the VMM's pid, which is_alive just confirmed.
    assert_eq!(unsafe { libc::kill(recorded.pid as i32, libc::SIGKILL) }, 0);
    let exit = tokio::time::timeout(Duration::from_secs(5), adopted.wait())
        .await
        .expect("exit noticed")
        .unwrap();
    assert_eq!(exit, VmmExit::Unknown);
    let err = api.describe_instance().await.unwrap_err();
    assert!(err.is_unreachable(), "{}", error_chain(&err));
}
