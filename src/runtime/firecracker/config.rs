//! What a Firecracker machine is made of ([`Config`]), built by hand or from
//! a machine's spec, and how each part is said to Firecracker: the command
//! line and the bodies of the configuration calls, in the API's units
//! (memory in MiB).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::api::{BootSource, Drive, LogLevel, MachineConfiguration, NetworkInterface, Vsock};
use crate::error::Result;
use crate::model::spec::ROOTFS_DRIVE_ID;
use crate::model::{MachineSpec, RuntimeKind};
use crate::runtime::vm::{network, VmFiles, VmmBinary};
use crate::runtime::vmm_process::VmmCommand;
use crate::runtime::MachineRef;

/// The environment variable naming the daemon's Firecracker binary.
pub const BIN_ENV: &str = "HYPERFLEET_FIRECRACKER_BIN";
/// Kernel arguments when the spec gives none: serial console, and a reboot
/// through the keyboard controller (which Firecracker turns into its exit).
pub const DEFAULT_KERNEL_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";
/// The id of the (one) network interface a spec describes.
pub const IFACE_ID: &str = "eth0";
/// The guest's vsock context id (0-2 are reserved).
pub const GUEST_CID: u32 = 3;
/// How long Firecracker may take to answer on its socket after a spawn.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a Firecracker machine is started from.
#[derive(Debug, Clone)]
pub struct Config {
    pub binary: VmmBinary,
    /// Where the machine's files go (see `vm::files`).
    pub runtime_dir: PathBuf,
    /// The API socket; `<runtime_dir>/api.sock` unless set.
    pub socket_path: PathBuf,
    /// Firecracker's `--id`, which its `GET /` reports back: how a
    /// re-adopted VMM is recognised as this machine's.
    pub vm_id: String,
    pub vcpu_count: u32,
    /// MiB, as Firecracker counts.
    pub mem_size_mib: u64,
    /// `None` only for a machine built to be removed or inspected.
    pub kernel_image_path: Option<PathBuf>,
    pub kernel_args: String,
    pub initrd_path: Option<PathBuf>,
    /// The root filesystem first; see [`DrivesBuilder`].
    pub drives: Vec<Drive>,
    pub network_interfaces: Vec<NetworkInterface>,
    /// The vsock port the guest agent listens on (exec goes through it).
    pub agent_port: u32,
    pub vsock: Option<Vsock>,
    pub log_level: LogLevel,
    pub ready_timeout: Duration,
    /// Deadline of each API call.
    pub api_timeout: Duration,
    /// The guest's addresses, for `info`.
    pub guest_addresses: Vec<String>,
}

impl Config {
    /// A machine booting `kernel` with `binary`, its files in `runtime_dir`:
    /// 1 vCPU, 128 MiB, the default kernel arguments, a vsock device, no
    /// drives and no network.
    pub fn new(
        binary: impl Into<PathBuf>,
        runtime_dir: impl Into<PathBuf>,
        kernel: impl Into<PathBuf>,
    ) -> Config {
        let mut c = Self::bare(
            VmmBinary::new(RuntimeKind::Firecracker, binary),
            runtime_dir.into(),
            uuid::Uuid::new_v4().to_string(),
        );
        c.kernel_image_path = Some(kernel.into());
        c
    }

    fn bare(binary: VmmBinary, runtime_dir: PathBuf, vm_id: String) -> Config {
        let files = VmFiles::new(&runtime_dir, RuntimeKind::Firecracker);
        Config {
            binary,
            socket_path: files.api_socket().to_owned(),
            vm_id,
            vcpu_count: 1,
            mem_size_mib: 128,
            kernel_image_path: None,
            kernel_args: DEFAULT_KERNEL_ARGS.into(),
            initrd_path: None,
            drives: Vec::new(),
            network_interfaces: Vec::new(),
            agent_port: crate::model::spec::DEFAULT_AGENT_PORT,
            vsock: Some(Vsock {
                guest_cid: GUEST_CID,
                uds_path: files.vsock_socket().to_owned(),
            }),
            log_level: LogLevel::Info,
            ready_timeout: READY_TIMEOUT,
            api_timeout: crate::runtime::http::DEFAULT_TIMEOUT,
            guest_addresses: Vec::new(),
            runtime_dir,
        }
    }

    /// The machine a spec describes. `default_binary` is the daemon's; the
    /// spec's `vmm_binary` wins over it. A spec of another kind (the core's
    /// sweep of leftovers has no spec) gives a machine that can only be
    /// inspected and removed.
    pub fn from_spec(
        machine: &MachineRef,
        spec: &MachineSpec,
        default_binary: Option<&Path>,
    ) -> Config {
        let vm = spec.vm_spec().cloned().unwrap_or_default();
        let binary = VmmBinary::resolve(
            RuntimeKind::Firecracker,
            vm.vmm_binary.as_deref(),
            default_binary,
            BIN_ENV,
        );
        let mut c = Self::bare(binary, machine.runtime_dir.clone(), machine.id.clone());
        c.agent_port = vm.agent_port;
        c.vcpu_count = spec.vcpu_count;
        c.mem_size_mib = spec.mem_size_mib;
        c.kernel_image_path = vm.kernel_image_path.clone();
        let args = vm.kernel_args.as_deref().unwrap_or(DEFAULT_KERNEL_ARGS);
        c.kernel_args = network::kernel_args(args, vm.network.as_ref(), IFACE_ID);
        c.initrd_path = vm.initrd_path.clone();
        let mut drives = match &vm.rootfs_path {
            Some(root) => DrivesBuilder::new(root),
            None => DrivesBuilder::without_root(),
        };
        for (disk, id) in vm.disks.iter().zip(vm.disk_ids()) {
            drives = drives.add_drive(id, &disk.path, disk.read_only);
        }
        c.drives = drives.build();
        if let Some(net) = &vm.network {
            c.network_interfaces.push(NetworkInterface {
                iface_id: IFACE_ID.into(),
                host_dev_name: net.tap_device.clone(),
                guest_mac: net.guest_mac.clone().filter(|m| !m.is_empty()),
                mtu: None,
            });
            c.guest_addresses
                .extend(net.guest_ip.clone().filter(|ip| !ip.is_empty()));
        }
        c
    }

    pub fn with_vcpus(mut self, n: u32) -> Self {
        self.vcpu_count = n;
        self
    }

    pub fn with_memory_mib(mut self, mib: u64) -> Self {
        self.mem_size_mib = mib;
        self
    }

    pub fn with_kernel_args(mut self, args: impl Into<String>) -> Self {
        self.kernel_args = args.into();
        self
    }

    pub fn with_initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd_path = Some(path.into());
        self
    }

    pub fn with_drives(mut self, drives: Vec<Drive>) -> Self {
        self.drives = drives;
        self
    }

    pub fn with_network_interface(mut self, iface: NetworkInterface) -> Self {
        self.network_interfaces.push(iface);
        self
    }

    /// A vsock device with `guest_cid`, its socket in the runtime dir.
    pub fn with_vsock(mut self, guest_cid: u32) -> Self {
        self.vsock = Some(Vsock {
            guest_cid,
            uds_path: self.files().vsock_socket().to_owned(),
        });
        self
    }

    /// The guest agent's vsock port (52 by default).
    pub fn with_agent_port(mut self, port: u32) -> Self {
        self.agent_port = port;
        self
    }

    pub fn without_vsock(mut self) -> Self {
        self.vsock = None;
        self
    }

    pub fn with_socket_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket_path = path.into();
        self
    }

    pub fn with_vm_id(mut self, id: impl Into<String>) -> Self {
        self.vm_id = id.into();
        self
    }

    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub fn with_api_timeout(mut self, timeout: Duration) -> Self {
        self.api_timeout = timeout;
        self
    }

    /// Where this machine's files are.
    pub fn files(&self) -> VmFiles {
        let mut files = VmFiles::new(&self.runtime_dir, RuntimeKind::Firecracker)
            .with_api_socket(&self.socket_path);
        if let Some(v) = &self.vsock {
            files = files.with_vsock_socket(&v.uds_path);
        }
        files
    }

    /// `firecracker --api-sock ... --id ...` with its log and metrics in the
    /// runtime dir and its stdout (the serial console) in `console.log`.
    pub fn command(&self) -> Result<VmmCommand> {
        let files = self.files();
        let binary = self.binary.check()?;
        let mut cmd = VmmCommand::new(binary, &self.runtime_dir)
            .arg("--api-sock")
            .arg(&self.socket_path)
            .arg("--id")
            .arg(&self.vm_id)
            .arg("--log-path")
            .arg(files.vmm_log())
            .arg("--level")
            .arg(level_name(self.log_level))
            .arg("--show-level")
            .arg("--metrics-path")
            .arg(files.metrics());
        for socket in files.sockets() {
            cmd = cmd.socket(socket);
        }
        cmd.stdout = files.console();
        cmd.stderr = files.stderr();
        cmd.pid_file = files.pid_file();
        Ok(cmd)
    }

    /// `PUT /machine-config`.
    pub fn machine_configuration(&self) -> MachineConfiguration {
        MachineConfiguration {
            vcpu_count: self.vcpu_count,
            mem_size_mib: self.mem_size_mib,
            ..Default::default()
        }
    }

    /// `PUT /boot-source`, if there is a kernel.
    pub fn boot_source(&self) -> Option<BootSource> {
        Some(BootSource {
            kernel_image_path: self.kernel_image_path.clone()?,
            boot_args: Some(self.kernel_args.clone()).filter(|a| !a.is_empty()),
            initrd_path: self.initrd_path.clone(),
        })
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "Error",
        LogLevel::Warning => "Warning",
        LogLevel::Info => "Info",
        LogLevel::Debug => "Debug",
        LogLevel::Trace => "Trace",
        LogLevel::Off => "Off",
    }
}

/// Builds a machine's drives: the root filesystem first (drive id
/// `rootfs`, the root device), then any number of extra disks.
///
/// ```
/// use hyperfleet::runtime::firecracker::DrivesBuilder;
///
/// let drives = DrivesBuilder::new("/images/rootfs.ext4")
///     .add_drive("data", "/images/data.img", false)
///     .add_drive("seed", "/images/seed.iso", true)
///     .build();
/// assert_eq!(drives.len(), 3);
/// assert!(drives[0].is_root_device);
/// assert_eq!(drives[2].is_read_only, Some(true));
/// ```
#[derive(Debug, Clone, Default)]
pub struct DrivesBuilder {
    root: Option<Drive>,
    extra: Vec<Drive>,
}

impl DrivesBuilder {
    /// Drives with `rootfs` as the writable root device.
    pub fn new(rootfs: impl Into<PathBuf>) -> Self {
        DrivesBuilder {
            root: Some(drive(ROOTFS_DRIVE_ID, rootfs.into(), false, true)),
            extra: Vec::new(),
        }
    }

    /// Drives with no root device (the guest boots from an initrd).
    pub fn without_root() -> Self {
        Self::default()
    }

    /// The root device read-only.
    pub fn with_read_only_root(mut self, read_only: bool) -> Self {
        if let Some(root) = &mut self.root {
            root.is_read_only = Some(read_only);
        }
        self
    }

    /// An extra disk. A drive of the same id is replaced.
    pub fn add_drive(
        mut self,
        id: impl Into<String>,
        path: impl AsRef<Path>,
        read_only: bool,
    ) -> Self {
        let id = id.into();
        self.extra.retain(|d| d.drive_id != id);
        self.extra
            .push(drive(&id, path.as_ref().to_owned(), read_only, false));
        self
    }

    pub fn build(self) -> Vec<Drive> {
        self.root.into_iter().chain(self.extra).collect()
    }
}

fn drive(id: &str, path: PathBuf, read_only: bool, root: bool) -> Drive {
    Drive {
        drive_id: id.to_owned(),
        path_on_host: Some(path),
        is_root_device: root,
        is_read_only: Some(read_only),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::{DiskSpec, NetworkSpec, VmSpec};
    use crate::model::Workload;

    fn machine() -> MachineRef {
        MachineRef {
            id: "0b7c1a2e-0000-4000-8000-000000000001".into(),
            name: "vm".into(),
            instance: "i".into(),
            runtime_dir: "/var/lib/hf/run/0b7c".into(),
        }
    }

    fn spec(vm: VmSpec) -> MachineSpec {
        MachineSpec {
            vcpu_count: 2,
            mem_size_mib: 256,
            workload: Workload::Firecracker(vm),
            ..Default::default()
        }
    }

    #[test]
    fn a_spec_becomes_firecracker_bodies_in_mib() {
        let vm = VmSpec {
            kernel_image_path: Some("/k/vmlinux".into()),
            rootfs_path: Some("/img/root.ext4".into()),
            disks: vec![
                DiskSpec {
                    path: "/img/data.img".into(),
                    read_only: true,
                    id: Some("data".into()),
                },
                DiskSpec {
                    path: "/img/scratch.img".into(),
                    read_only: false,
                    id: None,
                },
            ],
            network: Some(NetworkSpec {
                tap_device: "tap7".into(),
                tap_ip: Some("172.16.0.1".into()),
                guest_ip: Some("172.16.0.2".into()),
                guest_mac: Some("06:00:ac:10:00:02".into()),
            }),
            ..Default::default()
        };
        let c = Config::from_spec(&machine(), &spec(vm), Some(Path::new("/opt/firecracker")));
        let mc = serde_json::to_value(c.machine_configuration()).unwrap();
        assert_eq!(
            mc,
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256})
        );
        let boot = c.boot_source().unwrap();
        assert_eq!(boot.kernel_image_path, Path::new("/k/vmlinux"));
        assert_eq!(
            boot.boot_args.as_deref(),
            Some("console=ttyS0 reboot=k panic=1 pci=off ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off")
        );
        let ids: Vec<(&str, bool, Option<bool>)> = c
            .drives
            .iter()
            .map(|d| (d.drive_id.as_str(), d.is_root_device, d.is_read_only))
            .collect();
        assert_eq!(
            ids,
            [
                ("rootfs", true, Some(false)),
                ("data", false, Some(true)),
                ("disk1", false, Some(false))
            ]
        );
        assert_eq!(c.network_interfaces[0].host_dev_name, "tap7");
        assert_eq!(c.network_interfaces[0].iface_id, "eth0");
        assert_eq!(c.guest_addresses, ["172.16.0.2"]);
        let vsock = c.vsock.as_ref().unwrap();
        assert_eq!(vsock.guest_cid, 3);
        assert_eq!(vsock.uds_path, Path::new("/var/lib/hf/run/0b7c/vsock.sock"));
        assert_eq!(c.vm_id, machine().id);
    }

    #[test]
    fn the_command_line_puts_every_file_in_the_runtime_dir() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("firecracker");
        std::fs::write(&bin, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Config::new(&bin, dir.path(), "/k").with_vm_id("vm-1");
        let cmd = c.command().unwrap();
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let d = dir.path().display();
        assert_eq!(
            args,
            [
                "--api-sock".to_owned(),
                format!("{d}/api.sock"),
                "--id".into(),
                "vm-1".into(),
                "--log-path".into(),
                format!("{d}/vmm.log"),
                "--level".into(),
                "Info".into(),
                "--show-level".into(),
                "--metrics-path".into(),
                format!("{d}/metrics.json"),
            ]
        );
        assert_eq!(cmd.stdout, dir.path().join("console.log"));
        assert_eq!(cmd.pid_file, dir.path().join("firecracker.pid"));
        assert_eq!(
            cmd.sockets,
            [dir.path().join("api.sock"), dir.path().join("vsock.sock")]
        );
    }

    #[test]
    fn a_spec_without_a_binary_cannot_make_a_command() {
        let vm = VmSpec {
            kernel_image_path: Some("/k".into()),
            ..Default::default()
        };
        let c = Config::from_spec(&machine(), &spec(vm), None);
        let err = c.command().unwrap_err();
        assert_eq!(err.errno(), libc::ECONNREFUSED);
        assert!(err.to_string().contains(BIN_ENV), "{err}");
        // The sweep of leftovers builds machines from no VM spec at all.
        let c = Config::from_spec(&machine(), &MachineSpec::default(), None);
        assert!(c.boot_source().is_none());
    }
}
