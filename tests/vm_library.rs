//! The VM runtimes as a library (no daemon): `firecracker::Machine` and
//! `cloud_hypervisor::Machine` against the real binaries, their handler
//! chains extended by the caller, and the failures the real VMMs cannot be
//! made to produce on demand, against the stand-in APIs of
//! `common::fake_vmm` served for a stand-in VMM process: every failed start
//! kills what it spawned, leaves no pid file or socket, and says why.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use hyperfleet::model::Exit;
use hyperfleet::runtime::cloud_hypervisor::{self, handlers as ch_steps};
use hyperfleet::runtime::firecracker::{self, handlers as fc_steps, DrivesBuilder};
use hyperfleet::runtime::process::ProcessHandle;
use hyperfleet::runtime::{LogSink, Observed, Runtime, Sink};
use hyperfleet::Error;

use common::fake_vmm::{FakeVmm, Flavor};
use common::kernel::{greeting_kernel, test_kernel, GREETING};
use common::vm::{alive, script, KillVmmsIn};
use common::vmm::{cloud_hypervisor_bin, firecracker_bin, raw_disk, runtime_dir};

/// Collects what a sink is given.
#[derive(Default)]
struct Collect(Mutex<Vec<u8>>);

impl LogSink for Collect {
    fn output(&self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
    fn note(&self, line: &str) {
        self.0
            .lock()
            .unwrap()
            .extend_from_slice(format!("[note] {line}\n").as_bytes());
    }
    fn restart(&self) {}
}

impl Collect {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Copies the console into a collector until `GREETING` shows (or 10 s).
async fn console_says(vm: &dyn Runtime, words: &str) -> String {
    let seen = Arc::new(Collect::default());
    let sink: Sink = seen.clone();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let follow = vm.follow_output(sink, false);
        tokio::pin!(follow);
        loop {
            tokio::select! {
                _ = &mut follow => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if seen.text().contains(words) { return }
                }
            }
        }
    })
    .await;
    seen.text()
}

fn pid_file(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("{kind}.pid"))
}

#[tokio::test]
async fn a_firecracker_machine_from_rust_with_its_chain_extended() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let images = tempfile::tempdir().unwrap();
    let root = raw_disk(images.path(), "root.img", 8);
    let data = raw_disk(images.path(), "data.img", 2);
    let config = firecracker::Config::new(&bin, dir.path(), greeting_kernel())
        .with_memory_mib(64)
        .with_drives(
            DrivesBuilder::new(&root)
                .add_drive("data", &data, true)
                .build(),
        );
    let mut vm = firecracker::Machine::new(config);
    let ran = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = ran.clone();
    // No vsock device, and a step of ours right before the boot.
    assert!(vm.handlers_mut().start.remove(fc_steps::VSOCK));
    vm.handlers_mut()
        .start
        .insert_before(
            fc_steps::INSTANCE_START,
            "record",
            move |m: firecracker::Machine| {
                let seen = seen.clone();
                async move {
                    let state = m.api().describe_instance().await.unwrap().state;
                    seen.lock().unwrap().push(format!("{state:?}"));
                    Ok(())
                }
            },
        )
        .unwrap();
    vm.start().await.unwrap();
    assert_eq!(
        *ran.lock().unwrap(),
        ["NotStarted"],
        "our step ran before the boot"
    );
    let pid = vm.process().expect("running").pid();
    let config = vm.api().vm_config().await.unwrap();
    assert!(config.vsock.is_none(), "the vsock step was removed");
    // Firecracker lists drives in no particular order.
    let drive = |id: &str| config.drives.iter().find(|d| d.drive_id == id).unwrap();
    assert_eq!(config.drives.len(), 2);
    assert!(drive("rootfs").is_root_device);
    assert_eq!(drive("data").is_read_only, Some(true));
    assert!(!drive("data").is_root_device);
    assert!(console_says(&vm, GREETING).await.contains(GREETING));

    vm.pause().await.unwrap();
    assert_eq!(vm.observe().await.unwrap(), Observed::Paused);
    vm.resume().await.unwrap();
    let snap = images.path().join("snap");
    vm.create_snapshot(&snap).await.unwrap();
    assert!(snap.join(firecracker::STATE_FILE).exists());
    assert_eq!(vm.observe().await.unwrap(), Observed::Running);

    vm.shutdown(Duration::from_millis(300)).await.unwrap();
    assert!(!alive(pid));
    assert_eq!(vm.wait().await.unwrap(), Exit::Signal(libc::SIGTERM));
    assert!(matches!(
        vm.observe().await.unwrap(),
        Observed::Exited {
            exit: Exit::Signal(libc::SIGTERM),
            ..
        }
    ));
    assert!(!dir.path().join("api.sock").exists());
    vm.remove().await.unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_failing_step_undoes_the_whole_start() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let config = firecracker::Config::new(&bin, dir.path(), test_kernel()).with_memory_mib(64);
    let mut vm = firecracker::Machine::new(config);
    let spawned = Arc::new(Mutex::new(None));
    let record = spawned.clone();
    vm.handlers_mut()
        .start
        .append("refuse", move |m: firecracker::Machine| {
            *record.lock().unwrap() = m.process().map(|p| p.handle());
            async { Err(Error::Runtime("refused by the caller's last step".into())) }
        });
    let err = vm.start().await.unwrap_err();
    assert_eq!(err.to_string(), "refused by the caller's last step");
    let handle: ProcessHandle = spawned.lock().unwrap().expect("a VMM had booted");
    assert!(!handle.is_alive(), "the booted VMM was killed");
    assert!(!pid_file(dir.path(), "firecracker").exists());
    assert!(!dir.path().join("api.sock").exists());
    assert!(!dir.path().join("vsock.sock").exists());
    assert!(vm.process().is_none());
    assert_eq!(vm.observe().await.unwrap(), Observed::Missing);
}

#[tokio::test]
async fn a_cloud_hypervisor_machine_from_rust() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let images = tempfile::tempdir().unwrap();
    let data = raw_disk(images.path(), "data.img", 2);
    let config = cloud_hypervisor::Config::new(&bin, dir.path(), greeting_kernel())
        .with_cpus(1, 2)
        .with_memory_mib(64, Some(128));
    let vm = cloud_hypervisor::Machine::new(config);
    vm.start().await.unwrap();
    assert!(console_says(&vm, GREETING).await.contains(GREETING));
    vm.resize(Some(2), Some(192)).await.unwrap();
    let info = vm.api().vm_info().await.unwrap();
    assert_eq!(info.config.cpus.unwrap().boot_vcpus, 2);
    assert_eq!(info.memory_actual_size, Some(192 << 20));
    let pci = vm.hot_plug_disk(&data, "data", false).await.unwrap();
    assert_eq!(pci.map(|p| p.id).as_deref(), Some("data"));
    vm.remove_device("data").await.unwrap();
    let err = vm
        .create_snapshot(&images.path().join("snap"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not be snapshotted"),
        "{err}"
    );
    assert_eq!(vm.observe().await.unwrap(), Observed::Running);
    let pid = vm.process().unwrap().pid();
    vm.shutdown(Duration::ZERO).await.unwrap();
    assert!(!alive(pid));
    // vmm.shutdown: a clean exit.
    assert_eq!(vm.wait().await.unwrap(), Exit::Code(0));
    vm.remove().await.unwrap();
}

#[tokio::test]
async fn a_cloud_hypervisor_stop_with_a_wedged_api_signals_the_vmm_in_time() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let config = cloud_hypervisor::Config::new(&bin, dir.path(), test_kernel())
        .with_cpus(1, 1)
        .with_memory_mib(64, None);
    let vm = cloud_hypervisor::Machine::new(config);
    vm.start().await.unwrap();
    let pid = vm.process().unwrap().pid();
    // Stopped, the VMM lives on but its API answers nothing, as a
    // deadlocked one's would.
    // SAFETY: kill(2) on the VMM this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    // What the core gives a stop before it gives up and says the machine
    // still runs: the stop must have signalled the VMM by then.
    let budget = hyperfleet::core::Settings::default().call_deadline
        + hyperfleet::model::action::DEFAULT_SHUTDOWN_GRACE;
    let began = std::time::Instant::now();
    match tokio::time::timeout(budget, vm.stop()).await {
        Ok(res) => res.unwrap(),
        Err(_) => panic!(
            "the stop was still talking to a wedged API after {:?}",
            began.elapsed()
        ),
    }
    assert!(!alive(pid), "the VMM outlived its stop");
    assert!(vm.process().is_none());
}

/// A stand-in VMM: a process that never serves anything itself.
fn idle_vmm(dir: &Path) -> PathBuf {
    script(dir, "idle-vmm", "exec sleep 60")
}

/// Starts `vm` whose VMM is [`idle_vmm`]; once it is spawned, serves the
/// `flavor` stand-in API on its socket, set up by `knobs`. Returns the
/// start's result and the stand-in VMM's process.
async fn start_against_fake(
    vm: &dyn Runtime,
    flavor: Flavor,
    dir: &Path,
    kind: &str,
    knobs: impl FnOnce(&FakeVmm),
) -> (hyperfleet::Result<()>, ProcessHandle, FakeVmm) {
    let start = vm.start();
    tokio::pin!(start);
    let pid_file = pid_file(dir, kind);
    // The pid file is written after stale sockets are removed: from then on
    // the socket is ours to bind.
    let handle = loop {
        tokio::select! {
            res = &mut start => panic!("the start ended before the VMM was spawned: {res:?}"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        if let Ok(Some(h)) = ProcessHandle::read(&pid_file) {
            break h;
        }
    };
    let fake = FakeVmm::start(flavor, &dir.join("api.sock"));
    knobs(&fake);
    (start.await, handle, fake)
}

/// What a failed start must leave: no VMM, no pid file, no socket.
fn nothing_left(dir: &Path, kind: &str, vmm: ProcessHandle) {
    assert!(!vmm.is_alive(), "the stand-in VMM was left running");
    assert!(!pid_file(dir, kind).exists(), "pid file left behind");
    assert!(!dir.join("api.sock").exists(), "API socket left behind");
}

fn fc_against_fake(dir: &Path, bin: &Path) -> firecracker::Config {
    firecracker::Config::new(bin, dir, test_kernel())
        .with_vm_id("fake")
        .with_memory_mib(64)
}

#[tokio::test]
async fn firecracker_api_errors_fail_the_start_cleanly() {
    let host = tempfile::tempdir().unwrap();
    let bin = idle_vmm(host.path());
    let root = raw_disk(host.path(), "root.img", 1);

    // A 400 on a call that normally succeeds: Firecracker's words.
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let config = fc_against_fake(dir.path(), &bin).with_drives(DrivesBuilder::new(&root).build());
    let vm = firecracker::Machine::new(config);
    let (res, vmm, fake) =
        start_against_fake(&vm, Flavor::Firecracker, dir.path(), "firecracker", |f| {
            f.fail(
                Method::PUT,
                "/drives/rootfs",
                400,
                r#"{"fault_message":"Drive config error: injected for the test"}"#,
            )
        })
        .await;
    let err = res.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let text = err.report().to_string();
    assert!(
        text.contains(
            "PUT /drives/rootfs: 400 Bad Request: Drive config error: injected for the test"
        ),
        "{text}"
    );
    nothing_left(dir.path(), "firecracker", vmm);
    let calls: Vec<String> = fake
        .calls()
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        calls[1..],
        [
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs"
        ],
        "the configuration stopped at the failed call"
    );

    // A call that never answers: ETIMEDOUT after the API deadline.
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let config = fc_against_fake(dir.path(), &bin).with_api_timeout(Duration::from_millis(300));
    let vm = firecracker::Machine::new(config);
    let (res, vmm, _fake) =
        start_against_fake(&vm, Flavor::Firecracker, dir.path(), "firecracker", |f| {
            f.hang(Method::PUT, "/actions")
        })
        .await;
    let err = res.unwrap_err();
    assert_eq!(err.errno(), libc::ETIMEDOUT, "{}", err.report());
    assert!(
        err.report().to_string().contains("PUT /actions"),
        "{}",
        err.report()
    );
    nothing_left(dir.path(), "firecracker", vmm);

    // A socket answered by another machine's Firecracker is not ours.
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let config = fc_against_fake(dir.path(), &bin).with_vm_id("someone-else");
    let vm = firecracker::Machine::new(config);
    let (res, vmm, _fake) =
        start_against_fake(&vm, Flavor::Firecracker, dir.path(), "firecracker", |_| {}).await;
    let text = res.unwrap_err().report().to_string();
    assert!(text.contains(r#"answers as Firecracker "fake""#), "{text}");
    nothing_left(dir.path(), "firecracker", vmm);
}

#[tokio::test]
async fn a_socket_that_never_appears_times_out_and_the_vmm_goes() {
    let host = tempfile::tempdir().unwrap();
    let bin = idle_vmm(host.path());
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let config = fc_against_fake(dir.path(), &bin).with_ready_timeout(Duration::from_millis(300));
    let vm = firecracker::Machine::new(config);
    let started = std::time::Instant::now();
    let err = vm.start().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.errno(), libc::ETIMEDOUT);
    let text = err.report().to_string();
    assert!(text.contains("did not answer within"), "{text}");
    assert!(!pid_file(dir.path(), "firecracker").exists());
    assert!(std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".sock")));
}

#[tokio::test]
async fn cloud_hypervisor_api_errors_fail_the_start_cleanly() {
    let host = tempfile::tempdir().unwrap();
    let bin = idle_vmm(host.path());

    // The stand-in answers vmm.ping with its own pid, not the spawned
    // process's: the socket is not this VMM's, and the start says so.
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let vm = cloud_hypervisor::Machine::new(cloud_hypervisor::Config::new(
        &bin,
        dir.path(),
        test_kernel(),
    ));
    let (res, vmm, _fake) = start_against_fake(
        &vm,
        Flavor::CloudHypervisor,
        dir.path(),
        "cloud-hypervisor",
        |_| {},
    )
    .await;
    let text = res.unwrap_err().report().to_string();
    assert!(text.contains("is answered by pid"), "{text}");
    nothing_left(dir.path(), "cloud-hypervisor", vmm);

    // With that check replaced by a step of ours, a 500 at vm.boot.
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let mut vm = cloud_hypervisor::Machine::new(cloud_hypervisor::Config::new(
        &bin,
        dir.path(),
        test_kernel(),
    ));
    vm.handlers_mut()
        .start
        .replace(
            ch_steps::WAIT_READY,
            |m: cloud_hypervisor::Machine| async move {
                for _ in 0..500 {
                    if m.api().vmm_ping().await.is_ok() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(Error::Timeout("no ping".into()))
            },
        )
        .unwrap();
    let (res, vmm, fake) = start_against_fake(
        &vm,
        Flavor::CloudHypervisor,
        dir.path(),
        "cloud-hypervisor",
        |f| {
            f.fail(
                Method::PUT,
                "/api/v1/vm.boot",
                500,
                r#"["Error from API","The VM could not boot","injected for the test"]"#,
            )
        },
    )
    .await;
    let err = res.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let text = err.report().to_string();
    assert!(
        text.contains("PUT /api/v1/vm.boot: 500 Internal Server Error: The VM could not boot: injected for the test"),
        "{text}"
    );
    assert!(fake
        .calls()
        .iter()
        .any(|(m, p)| *m == Method::PUT && p == "/api/v1/vm.create"));
    nothing_left(dir.path(), "cloud-hypervisor", vmm);
}

#[tokio::test]
async fn an_abandoned_start_leaves_nothing() {
    let host = tempfile::tempdir().unwrap();
    let bin = idle_vmm(host.path());
    let dir = runtime_dir();
    let _cleanup = KillVmmsIn(dir.path().to_owned());
    let vm = firecracker::Machine::new(fc_against_fake(dir.path(), &bin));
    let vmm = {
        // The start hangs on a call; then its caller gives up on it (as
        // the core does when a `kill` cancels a start).
        let start = async {
            let (res, vmm, _fake) =
                start_against_fake(&vm, Flavor::Firecracker, dir.path(), "firecracker", |f| {
                    f.hang(Method::PUT, "/machine-config")
                })
                .await;
            (res, vmm)
        };
        let pid_file = pid_file(dir.path(), "firecracker");
        let dropped = tokio::time::timeout(Duration::from_millis(500), start).await;
        assert!(dropped.is_err(), "the start should hang");
        ProcessHandle::read(&pid_file).unwrap().expect("spawned")
    };
    assert!(vmm.is_alive());
    vm.abandon_start().await.unwrap();
    nothing_left(dir.path(), "firecracker", vmm);
    // Abandoning again finds nothing to do.
    vm.abandon_start().await.unwrap();
}
