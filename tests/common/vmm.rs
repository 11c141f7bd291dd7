//! Helpers for tests that run real VMM binaries: finding them, starting one
//! in a fresh runtime dir, and making sure every process and TAP device a
//! test made is gone when it ends, pass or fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hyperfleet::runtime::cloud_hypervisor::api::CloudHypervisorApi;
use hyperfleet::runtime::firecracker::api::FirecrackerApi;
use hyperfleet::runtime::http::UnixHttp;
use hyperfleet::runtime::pidfd::PidFd;
use hyperfleet::runtime::process::ProcessHandle;
use hyperfleet::runtime::vmm_process::{Vmm, VmmCommand};

/// How long a VMM may take to answer on its socket after a spawn.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-request deadline for the tests' API clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Firecracker binary: `HYPERFLEET_FIRECRACKER_BIN`, else the shared
/// build beside the repository. `None` (with a note on stderr) if neither
/// exists, so the caller can skip.
pub fn firecracker_bin() -> Option<PathBuf> {
    find_bin("HYPERFLEET_FIRECRACKER_BIN", "firecracker")
}

/// The Cloud Hypervisor binary, found like [`firecracker_bin`].
pub fn cloud_hypervisor_bin() -> Option<PathBuf> {
    find_bin("HYPERFLEET_CLOUD_HYPERVISOR_BIN", "cloud-hypervisor")
}

fn find_bin(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        // Set but wrong is a broken set-up, not a reason to skip quietly.
        assert!(path.is_file(), "{var}={} does not exist", path.display());
        return Some(path);
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/vmm")
        .join(name);
    if shared.is_file() {
        return Some(shared);
    }
    eprintln!("skipped: no {name} binary (set {var})");
    None
}

/// A fresh directory for one VMM's sockets and files. Under /tmp: a Unix
/// socket path must fit in 108 bytes.
pub fn runtime_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hf-vmm-")
        .tempdir()
        .expect("runtime dir")
}

/// SIGKILLs a process when dropped, and waits (bounded) until it is gone.
pub struct KillOnDrop(pub ProcessHandle);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(Some(fd)) = PidFd::open(self.0) {
            let _ = fd.send_signal(libc::SIGKILL);
            let _ = fd.wait_blocking(Duration::from_secs(5));
        }
    }
}

/// A spawned VMM with its cleanup attached: dropping it kills the VMM
/// (move `guard` out to keep the VMM past the `Vmm` handle).
pub struct Running {
    pub vmm: Vmm,
    pub api_socket: PathBuf,
    pub cmd: VmmCommand,
    pub guard: KillOnDrop,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.vmm.pid()
    }
}

fn http(socket: &Path) -> UnixHttp {
    UnixHttp::new(socket).with_timeout(REQUEST_TIMEOUT)
}

/// The command line of a Firecracker with its API socket in `dir`.
pub fn firecracker_command(bin: &Path, dir: &Path) -> VmmCommand {
    let socket = dir.join("api.sock");
    VmmCommand::new(bin, dir)
        .arg("--api-sock")
        .arg(&socket)
        .arg("--id")
        .arg("hyperfleet-test")
        .socket(socket)
}

/// The command line of a Cloud Hypervisor with its API socket in `dir`.
pub fn cloud_hypervisor_command(bin: &Path, dir: &Path) -> VmmCommand {
    let socket = dir.join("api.sock");
    let mut arg = std::ffi::OsString::from("path=");
    arg.push(&socket);
    VmmCommand::new(bin, dir)
        .arg("--api-socket")
        .arg(arg)
        .socket(socket)
}

/// Spawns `cmd` (whose first socket is the API socket) and waits until the
/// probe answers.
pub async fn start<T, F, Fut>(cmd: VmmCommand, probe: F) -> Running
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, hyperfleet::runtime::http::HttpError>>,
{
    let api_socket = cmd.sockets[0].clone();
    let mut vmm = Vmm::spawn(&cmd).unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let guard = KillOnDrop(vmm.handle());
    if let Err(e) = vmm.wait_ready(&api_socket, READY_TIMEOUT, probe).await {
        panic!("VMM not ready: {}", error_chain(&e));
    }
    Running {
        vmm,
        api_socket,
        cmd,
        guard,
    }
}

/// A Firecracker answering on `dir/api.sock`, and its client.
pub async fn start_firecracker(bin: &Path, dir: &Path) -> (Running, FirecrackerApi) {
    let cmd = firecracker_command(bin, dir);
    let api = FirecrackerApi::with_client(http(&cmd.sockets[0]));
    let probe = api.clone();
    let running = start(cmd, move || {
        let probe = probe.clone();
        async move { probe.describe_instance().await }
    })
    .await;
    (running, api)
}

/// A Cloud Hypervisor answering on `dir/api.sock`, and its client.
pub async fn start_cloud_hypervisor(bin: &Path, dir: &Path) -> (Running, CloudHypervisorApi) {
    let cmd = cloud_hypervisor_command(bin, dir);
    let api = CloudHypervisorApi::with_client(http(&cmd.sockets[0]));
    let probe = api.clone();
    let running = start(cmd, move || {
        let probe = probe.clone();
        async move { probe.vmm_ping().await }
    })
    .await;
    (running, api)
}

/// A sparse raw disk image of `mib` MiB.
pub fn raw_disk(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create disk image");
    f.set_len(mib << 20).expect("size disk image");
    path
}

/// A TAP device that exists for the life of the value. Names carry this
/// process's pid, so parallel test runs never collide.
pub struct Tap {
    pub name: String,
}

impl Tap {
    pub fn new() -> Tap {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // At most 15 bytes (IFNAMSIZ - 1).
        let name = format!(
            "hfvt{}x{}",
            std::process::id() % 1_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["tuntap", "add", "dev", &name, "mode", "tap"])
            .output()
            .expect("run ip (package iproute2)");
        assert!(
            out.status.success(),
            "ip tuntap add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tap { name }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &self.name])
            .output();
    }
}

/// An error and all its sources on one line, as a user would read it.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
