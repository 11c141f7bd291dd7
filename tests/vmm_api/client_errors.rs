//! The clients against the fake VMMs: every call's body passes the API's
//! schema, and each way a request can fail becomes the right typed error,
//! within its deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use hyperfleet::runtime::cloud_hypervisor::api::{
    CloudHypervisorApi, ConsoleConfig, CpusConfig, DiskConfig, MemoryConfig, PayloadConfig,
    RestoreConfig, VmConfig, VmResize, VmSnapshotConfig, VmState, MIB,
};
use hyperfleet::runtime::firecracker::api::{
    BootSource, Drive, FirecrackerApi, InstanceState, LogLevel, Logger, MachineConfiguration,
    MemoryBackend, Metrics, NetworkInterface, SnapshotCreateParams, SnapshotLoadParams, Vsock,
};
use hyperfleet::runtime::http::{HttpError, UnixHttp};

use crate::common::fake_vmm::{silent_socket, FakeVmm, Flavor};
use crate::common::kernel::test_kernel;
use crate::common::vmm::{error_chain, raw_disk, runtime_dir};

fn fake(flavor: Flavor, dir: &Path) -> FakeVmm {
    FakeVmm::start(flavor, &dir.join("api.sock"))
}

fn machine(mib: u64) -> MachineConfiguration {
    MachineConfiguration {
        vcpu_count: 2,
        mem_size_mib: mib,
        smt: Some(false),
        track_dirty_pages: Some(true),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_firecracker_call_passes_the_api_schema() {
    let dir = runtime_dir();
    let d = dir.path();
    let vmm = fake(Flavor::Firecracker, d);
    let api = FirecrackerApi::new(vmm.socket());

    api.put_logger(&Logger {
        log_path: Some(d.join("log")),
        level: Some(LogLevel::Debug),
        show_level: Some(true),
        show_log_origin: Some(true),
        module: None,
    })
    .await
    .unwrap();
    api.put_metrics(&Metrics {
        metrics_path: d.join("metrics"),
    })
    .await
    .unwrap();
    api.put_machine_config(&machine(256)).await.unwrap();
    api.put_boot_source(&BootSource {
        kernel_image_path: test_kernel(),
        boot_args: Some("console=ttyS0".into()),
        initrd_path: None,
    })
    .await
    .unwrap();
    api.put_drive(&Drive {
        drive_id: "rootfs".into(),
        path_on_host: Some(raw_disk(d, "root.img", 1)),
        is_root_device: true,
        is_read_only: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    api.put_network_interface(&NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "tap0".into(),
        guest_mac: Some("06:00:00:00:00:01".into()),
        mtu: Some(1500),
    })
    .await
    .unwrap();
    api.put_vsock(&Vsock {
        guest_cid: 3,
        uds_path: d.join("vsock.sock"),
    })
    .await
    .unwrap();
    api.instance_start().await.unwrap();
    api.pause().await.unwrap();
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    api.create_snapshot(&SnapshotCreateParams {
        snapshot_path: d.join("snap"),
        mem_file_path: d.join("mem"),
        snapshot_type: None,
    })
    .await
    .unwrap();
    api.resume().await.unwrap();
    api.send_ctrl_alt_del().await.unwrap();
    api.flush_metrics().await.unwrap();
    assert_eq!(
        api.vm_config()
            .await
            .unwrap()
            .machine_config
            .unwrap()
            .mem_size_mib,
        256
    );
    assert_eq!(
        api.version().await.unwrap().firecracker_version,
        "1.17.0-fake"
    );

    // A load goes to a fresh process.
    let dir2 = runtime_dir();
    let fresh = fake(Flavor::Firecracker, dir2.path());
    let api2 = FirecrackerApi::new(fresh.socket());
    api2.load_snapshot(&SnapshotLoadParams {
        snapshot_path: d.join("snap"),
        mem_backend: MemoryBackend::file(d.join("mem")),
        resume_vm: Some(true),
        track_dirty_pages: None,
        network_overrides: vec![],
        vsock_override: None,
    })
    .await
    .unwrap();
    assert_eq!(
        api2.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    let calls = vmm.calls();
    assert!(
        calls.contains(&(Method::PUT, "/drives/rootfs".into())),
        "{calls:?}"
    );
    assert!(calls.contains(&(Method::PATCH, "/vm".into())), "{calls:?}");
}

#[tokio::test]
async fn every_cloud_hypervisor_call_passes_the_api_schema() {
    let dir = runtime_dir();
    let d = dir.path();
    let vmm = fake(Flavor::CloudHypervisor, d);
    let api = CloudHypervisorApi::new(vmm.socket());

    api.vmm_ping().await.unwrap();
    api.vm_create(&VmConfig {
        cpus: Some(CpusConfig {
            boot_vcpus: 1,
            max_vcpus: 4,
            ..Default::default()
        }),
        memory: Some(MemoryConfig {
            size: 512 * MIB,
            hotplug_size: Some(512 * MIB),
            ..Default::default()
        }),
        payload: PayloadConfig {
            kernel: Some(test_kernel()),
            cmdline: Some("console=ttyS0".into()),
            ..Default::default()
        },
        serial: Some(ConsoleConfig::file(d.join("serial.log"))),
        console: Some(ConsoleConfig::off()),
        ..Default::default()
    })
    .await
    .unwrap();
    let cold = api
        .vm_add_disk(&DiskConfig {
            path: Some(raw_disk(d, "a.img", 1)),
            id: Some("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cold, None, "a cold add answers 204 without a body");
    api.vm_boot().await.unwrap();
    api.vm_pause().await.unwrap();
    api.vm_resume().await.unwrap();
    api.vm_resize(&VmResize {
        desired_vcpus: Some(4),
        desired_ram: Some(1024 * MIB),
        desired_balloon: None,
    })
    .await
    .unwrap();
    let hot = api
        .vm_add_disk(&DiskConfig {
            path: Some(raw_disk(d, "b.img", 1)),
            id: Some("b".into()),
            readonly: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .expect("a hot add answers with the device");
    assert_eq!(hot.id, "b");
    api.vm_remove_device("a").await.unwrap();
    let info = api.vm_info().await.unwrap();
    assert_eq!(info.config.cpus.unwrap().boot_vcpus, 4);
    let ids: Vec<_> = info
        .config
        .disks
        .unwrap()
        .into_iter()
        .filter_map(|disk| disk.id)
        .collect();
    assert_eq!(ids, ["b"]);

    api.vm_pause().await.unwrap();
    let snap = d.join("snap");
    std::fs::create_dir(&snap).unwrap();
    api.vm_snapshot(&VmSnapshotConfig::to_dir(&snap))
        .await
        .unwrap();
    api.vm_power_button().await.unwrap();
    api.vm_shutdown().await.unwrap();
    api.vm_delete().await.unwrap();
    api.vm_restore(&RestoreConfig::from_dir(&snap))
        .await
        .unwrap();
    assert_eq!(api.vm_info().await.unwrap().state, VmState::Paused);
    api.vmm_shutdown().await.unwrap();
    // The fake, like the real one, stops serving and removes its socket.
    let deadline = Instant::now() + Duration::from_secs(5);
    while vmm.socket().exists() {
        assert!(Instant::now() < deadline, "socket still there");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(api.vmm_ping().await.unwrap_err().is_unreachable());
}

#[tokio::test]
async fn an_error_status_carries_the_vmms_message() {
    let dir = runtime_dir();
    let fc = fake(Flavor::Firecracker, dir.path());
    fc.fail(
        Method::PUT,
        "/actions",
        500,
        r#"{"fault_message":"Start microvm error: boom"}"#,
    );
    let err = FirecrackerApi::new(fc.socket())
        .instance_start()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(err.vmm_message(), Some("Start microvm error: boom"));
    assert_eq!(
        err.to_string(),
        "PUT /actions: 500 Internal Server Error: Start microvm error: boom"
    );

    let dir2 = runtime_dir();
    let ch = fake(Flavor::CloudHypervisor, dir2.path());
    ch.fail(Method::PUT, "/api/v1/vm.boot", 500, "plain words\n");
    ch.fail(Method::PUT, "/api/v1/vm.pause", 503, "");
    let api = CloudHypervisorApi::new(ch.socket());
    let err = api.vm_boot().await.unwrap_err();
    assert_eq!(err.vmm_message(), Some("plain words"));
    let err = api.vm_pause().await.unwrap_err();
    assert_eq!(err.vmm_message(), Some("Service Unavailable"));
}

#[tokio::test]
async fn the_units_mistakes_are_caught() {
    let dir = runtime_dir();
    let fc = fake(Flavor::Firecracker, dir.path());
    let api = FirecrackerApi::new(fc.socket());
    // 128 MiB written in bytes where Firecracker wants MiB: 128 TiB.
    api.put_machine_config(&machine(128 * MIB)).await.unwrap();
    api.put_boot_source(&BootSource {
        kernel_image_path: test_kernel(),
        boot_args: None,
        initrd_path: None,
    })
    .await
    .unwrap();
    let err = api.instance_start().await.unwrap_err();
    assert!(
        err.vmm_message()
            .unwrap()
            .contains("Cannot allocate memory"),
        "{err}"
    );

    let dir2 = runtime_dir();
    let ch = fake(Flavor::CloudHypervisor, dir2.path());
    let api = CloudHypervisorApi::new(ch.socket());
    // 128 MiB plus a stray byte: not a whole number of pages.
    api.vm_create(&VmConfig {
        memory: Some(MemoryConfig {
            size: 128 * MIB + 1,
            ..Default::default()
        }),
        payload: PayloadConfig {
            kernel: Some(test_kernel()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let err = api.vm_boot().await.unwrap_err();
    assert!(err.vmm_message().unwrap().contains("misaligned"), "{err}");
}

#[tokio::test]
async fn a_hung_call_hits_the_deadline() {
    let dir = runtime_dir();
    let fc = fake(Flavor::Firecracker, dir.path());
    fc.hang(Method::PUT, "/actions");
    let timeout = Duration::from_millis(300);
    let api = FirecrackerApi::with_client(UnixHttp::new(fc.socket()).with_timeout(timeout));
    let started = Instant::now();
    let err = api.instance_start().await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, HttpError::Timeout { after, .. } if after == timeout),
        "{err}"
    );
    assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
    assert!(err.to_string().contains("PUT /actions"), "{err}");
    // Other calls are not held up by the hung one.
    api.describe_instance().await.unwrap();

    // A peer that accepts and never says a word.
    let dir2 = runtime_dir();
    let socket = dir2.path().join("silent.sock");
    let _listener = silent_socket(&socket);
    let http = UnixHttp::new(&socket).with_timeout(timeout);
    let err = http.get_json::<serde_json::Value>("/").await.unwrap_err();
    assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn no_socket_and_a_dead_socket_are_told_apart() {
    let dir = runtime_dir();
    let missing = dir.path().join("api.sock");
    let err = UnixHttp::new(&missing)
        .get_json::<serde_json::Value>("/")
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::SocketMissing { .. }), "{err}");
    assert!(err.is_unreachable());
    assert!(
        error_chain(&err).contains("No such file or directory"),
        "{}",
        error_chain(&err)
    );

    // The file a crashed VMM leaves: a socket nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&missing).unwrap());
    let err = UnixHttp::new(&missing)
        .get_json::<serde_json::Value>("/")
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("nothing is listening"), "{err}");
}

#[tokio::test]
async fn oversized_and_undecodable_answers_are_refused() {
    let dir = runtime_dir();
    let fc = fake(Flavor::Firecracker, dir.path());
    let http = UnixHttp::new(fc.socket()).with_max_body(1024);
    fc.fail(Method::GET, "/", 200, &"x".repeat(10_000));
    let err = http.get_json::<serde_json::Value>("/").await.unwrap_err();
    assert!(
        matches!(err, HttpError::BodyTooLarge { limit: 1024, .. }),
        "{err}"
    );

    fc.fail(Method::GET, "/", 200, r#"{"id": 1}"#);
    let err = FirecrackerApi::new(fc.socket())
        .describe_instance()
        .await
        .unwrap_err();
    match &err {
        HttpError::Decode { what, body, .. } => {
            assert_eq!(what, "GET /");
            assert_eq!(body, r#"{"id": 1}"#);
        }
        other => panic!("expected Decode, got {other}"),
    }
}

#[tokio::test]
async fn user_supplied_ids_and_paths_cannot_reshape_a_request() {
    let dir = runtime_dir();
    let fc = fake(Flavor::Firecracker, dir.path());
    let api = FirecrackerApi::new(fc.socket());
    let err = api
        .put_drive(&Drive {
            drive_id: "../actions".into(),
            path_on_host: Some(test_kernel()),
            is_root_device: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.vmm_message().unwrap().contains("does not match"),
        "{err}"
    );
    assert_eq!(
        fc.calls().last().unwrap(),
        &(Method::PUT, "/drives/%2E%2E%2Factions".to_owned())
    );

    let http = UnixHttp::new(fc.socket());
    for bad in ["relative", "/with space", ""] {
        let err = http
            .request::<()>(Method::GET, bad, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
    }
}
