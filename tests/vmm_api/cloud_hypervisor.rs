//! The Cloud Hypervisor client and supervision against the real binary.

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use hyperfleet::runtime::cloud_hypervisor::api::{
    CloudHypervisorApi, ConsoleConfig, CpusConfig, DiskConfig, MemoryConfig, PayloadConfig,
    VmConfig, VmResize, VmSnapshotConfig, VmState, VsockConfig, MIB,
};
use hyperfleet::runtime::http::HttpError;
use hyperfleet::runtime::process::ProcessHandle;
use hyperfleet::runtime::vmm_process::{Vmm, VmmError, VmmExit};

use crate::common::kernel::{not_an_elf, test_kernel};
use crate::common::vmm::{
    cloud_hypervisor_bin, cloud_hypervisor_command, error_chain, raw_disk, runtime_dir,
    start_cloud_hypervisor, KillOnDrop, Running, READY_TIMEOUT,
};

const GRACE: Duration = Duration::from_secs(5);

/// 1 vCPU (2 at most), 128 MiB (+256 MiB hot-pluggable), the test kernel.
fn vm_config(kernel: &Path) -> VmConfig {
    VmConfig {
        cpus: Some(CpusConfig {
            boot_vcpus: 1,
            max_vcpus: 2,
            ..Default::default()
        }),
        memory: Some(MemoryConfig {
            size: 128 * MIB,
            hotplug_size: Some(256 * MIB),
            ..Default::default()
        }),
        payload: PayloadConfig {
            kernel: Some(kernel.to_owned()),
            cmdline: Some("console=ttyS0".into()),
            ..Default::default()
        },
        serial: Some(ConsoleConfig::null()),
        console: Some(ConsoleConfig::off()),
        ..Default::default()
    }
}

fn status_of(err: &HttpError) -> (StatusCode, &str) {
    match err {
        HttpError::Status {
            status, message, ..
        } => (*status, message.as_str()),
        other => panic!("expected an error status, got {}", error_chain(other)),
    }
}

async fn state(api: &CloudHypervisorApi) -> VmState {
    api.vm_info().await.unwrap().state
}

#[tokio::test]
async fn boots_resizes_hot_plugs_and_shuts_down() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let dir = runtime_dir();
    let d = dir.path();
    let (mut ch, api) = start_cloud_hypervisor(&bin, d).await;

    let ping = api.vmm_ping().await.unwrap();
    assert_eq!(ping.pid, Some(i64::from(ch.pid())));
    let err = api.vm_info().await.unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::NOT_FOUND, "no VM yet");

    let serial = d.join("serial.log");
    let vsock = d.join("vsock.sock");
    let config = VmConfig {
        serial: Some(ConsoleConfig::file(&serial)),
        vsock: Some(VsockConfig {
            cid: 3,
            socket: vsock.clone(),
            iommu: None,
            id: None,
        }),
        ..vm_config(&test_kernel())
    };
    api.vm_create(&config).await.unwrap();
    assert_eq!(state(&api).await, VmState::Created);
    api.vm_boot().await.unwrap();
    let info = api.vm_info().await.unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.config.memory.as_ref().unwrap().size, 128 * MIB);
    assert_eq!(info.memory_actual_size, Some(128 * MIB));
    assert!(serial.exists(), "serial output goes to its file");
    assert!(vsock.exists(), "the vsock socket is bound at boot");

    api.vm_pause().await.unwrap();
    assert_eq!(state(&api).await, VmState::Paused);
    api.vm_resume().await.unwrap();
    assert_eq!(state(&api).await, VmState::Running);

    api.vm_resize(&VmResize {
        desired_vcpus: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        api.vm_info().await.unwrap().config.cpus.unwrap().boot_vcpus,
        2
    );
    api.vm_resize(&VmResize {
        desired_ram: Some(256 * MIB),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        api.vm_info().await.unwrap().memory_actual_size,
        Some(256 * MIB)
    );
    let err = api
        .vm_resize(&VmResize {
            desired_vcpus: Some(3),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status_of(&err).1.contains("exceed maximum"), "{err}");

    let disk = raw_disk(d, "data.img", 4);
    let added = api
        .vm_add_disk(&DiskConfig {
            path: Some(disk.clone()),
            readonly: Some(false),
            id: Some("data1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .expect("a hot-plugged disk has a PCI address");
    assert_eq!(added.id, "data1");
    let disks = api
        .vm_info()
        .await
        .unwrap()
        .config
        .disks
        .unwrap_or_default();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].path.as_deref(), Some(disk.as_path()));
    let err = api
        .vm_add_disk(&DiskConfig {
            path: Some(disk),
            id: Some("data1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::CONFLICT, "{err}");
    // Removal is asked of the guest; the disk leaves the configuration at
    // once (this guest never acknowledges, so the device stays in the device
    // tree and a second removal of it is accepted again).
    api.vm_remove_device("data1").await.unwrap();
    let disks = api
        .vm_info()
        .await
        .unwrap()
        .config
        .disks
        .unwrap_or_default();
    assert!(disks.is_empty(), "{disks:?}");
    let err = api.vm_remove_device("nope").await.unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::NOT_FOUND, "{err}");

    // Snapshots fail on this nested host whatever we do; the error says why
    // and the VM carries on.
    api.vm_pause().await.unwrap();
    let snap_dir = d.join("snapshot");
    std::fs::create_dir(&snap_dir).unwrap();
    let err = api
        .vm_snapshot(&VmSnapshotConfig::to_dir(&snap_dir))
        .await
        .unwrap_err();
    let (status, message) = status_of(&err);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(message.contains("could not be snapshotted"), "{message}");
    assert!(!message.contains("backtrace"), "{message}");
    eprintln!("Cloud Hypervisor snapshot on this host: {message}");
    assert_eq!(state(&api).await, VmState::Paused);
    api.vm_resume().await.unwrap();
    assert_eq!(state(&api).await, VmState::Running);

    // The halting guest has no ACPI: the button press is delivered and
    // changes nothing.
    api.vm_power_button().await.unwrap();
    assert_eq!(state(&api).await, VmState::Running);
    api.vm_shutdown().await.unwrap();
    assert_eq!(state(&api).await, VmState::Created);
    assert!(!vsock.exists(), "shutdown removes the vsock socket");

    api.vmm_shutdown().await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), ch.vmm.wait())
        .await
        .expect("the VMM exits after vmm.shutdown")
        .unwrap();
    assert_eq!(exit, VmmExit::Code(0));
    let err = api.vmm_ping().await.unwrap_err();
    assert!(err.is_unreachable(), "{}", error_chain(&err));
}

#[tokio::test]
async fn configuration_errors_surface_at_boot() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let dir = runtime_dir();
    let d = dir.path();
    let (mut ch, api) = start_cloud_hypervisor(&bin, d).await;

    // (what is wrong, the config, status at boot, words of the message)
    let kernel = test_kernel();
    let cases: Vec<(&str, VmConfig, StatusCode, &str)> = vec![
        (
            "memory not a multiple of the page size",
            VmConfig {
                memory: Some(MemoryConfig {
                    size: 128 * MIB + 1,
                    ..Default::default()
                }),
                ..vm_config(&kernel)
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            "misaligned",
        ),
        (
            "more boot vCPUs than max",
            VmConfig {
                cpus: Some(CpusConfig {
                    boot_vcpus: 3,
                    max_vcpus: 2,
                    ..Default::default()
                }),
                ..vm_config(&kernel)
            },
            StatusCode::BAD_REQUEST,
            "lower than boot CPUs",
        ),
        (
            "missing kernel",
            vm_config(&d.join("no-such-kernel")),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot open kernel file",
        ),
        (
            "not a kernel",
            vm_config(&not_an_elf(d)),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid bzImage",
        ),
        (
            "reserved vsock CID",
            VmConfig {
                vsock: Some(VsockConfig {
                    cid: 2,
                    socket: d.join("v.sock"),
                    iommu: None,
                    id: None,
                }),
                ..vm_config(&kernel)
            },
            StatusCode::BAD_REQUEST,
            "special VSOCK CID",
        ),
    ];
    for (what, config, status, words) in cases {
        api.vm_create(&config)
            .await
            .unwrap_or_else(|e| panic!("{what}: create refused: {e}"));
        let err = api.vm_boot().await.unwrap_err();
        let (got, message) = status_of(&err);
        assert_eq!(got, status, "{what}: {message}");
        assert!(message.contains(words), "{what}: {message}");
        api.vm_delete().await.unwrap();
    }

    let err = api.vm_boot().await.unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::NOT_FOUND, "boot with no VM");
    let err = api
        .http()
        .request::<()>(Method::GET, "/api/v1/vm.nonsense", None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::NOT_FOUND);
    let err = api
        .http()
        .request::<()>(Method::GET, "/api/v1/vm.boot", None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&err).0, StatusCode::BAD_REQUEST, "wrong method");
    assert!(ch.vmm.handle().is_alive(), "errors leave the VMM running");
    // Cloud Hypervisor handles SIGTERM: a clean exit that removes its socket.
    assert_eq!(ch.vmm.terminate(GRACE).await.unwrap(), VmmExit::Code(0));
    assert!(!ch.api_socket.exists());
}

#[tokio::test]
async fn restarts_in_the_same_runtime_dir() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let dir = runtime_dir();
    let vsock = dir.path().join("vsock.sock");
    for round in 0..3 {
        for path in [dir.path().join("api.sock"), vsock.clone()] {
            if !path.exists() {
                drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            }
        }
        let cmd = cloud_hypervisor_command(&bin, dir.path()).socket(&vsock);
        let mut vmm = Vmm::spawn(&cmd).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let _guard = KillOnDrop(vmm.handle());
        let api = CloudHypervisorApi::new(&cmd.sockets[0]);
        vmm.wait_ready(&cmd.sockets[0], READY_TIMEOUT, || api.vmm_ping())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", error_chain(&e)));
        api.vm_create(&VmConfig {
            vsock: Some(VsockConfig {
                cid: 3,
                socket: vsock.clone(),
                iommu: None,
                id: None,
            }),
            ..vm_config(&test_kernel())
        })
        .await
        .unwrap();
        api.vm_boot()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", error_chain(&e)));
        assert_eq!(state(&api).await, VmState::Running);
        // SIGKILL, as a crash would: nothing is cleaned up.
        vmm.terminate(Duration::ZERO).await.unwrap();
    }
}

#[tokio::test]
async fn a_vmm_outlives_its_handles_and_is_re_adopted() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let dir = runtime_dir();
    let (ch, api) = start_cloud_hypervisor(&bin, dir.path()).await;
    api.vm_create(&vm_config(&test_kernel())).await.unwrap();
    api.vm_boot().await.unwrap();
    let Running {
        vmm,
        cmd,
        guard: _guard,
        ..
    } = ch;
    drop(vmm);
    drop(api);

    let recorded = ProcessHandle::read(&cmd.pid_file).unwrap().unwrap();
    assert!(recorded.is_alive());
    let mut adopted = Vmm::adopt(&cmd).unwrap().expect("still running");
    let api = CloudHypervisorApi::new(&cmd.sockets[0]);
    let ping = api.vmm_ping().await.unwrap();
    assert_eq!(
        ping.pid,
        Some(i64::from(recorded.pid)),
        "the socket is this VMM's"
    );
    assert_eq!(state(&api).await, VmState::Running);
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
    // Terminating what is gone is a no-op that says so.
    assert_eq!(adopted.terminate(GRACE).await.unwrap(), VmmExit::Unknown);
}
