//! What a Cloud Hypervisor machine is made of ([`Config`]), built by hand or
//! from a machine's spec, and how it is said to Cloud Hypervisor: the
//! command line and the `vm.create` body, in the API's units (memory in
//! BYTES, where the spec counts MiB).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::api::{
    ConsoleConfig, CpusConfig, DiskConfig, MemoryConfig, NetConfig, PayloadConfig, VmConfig,
    VsockConfig, MIB,
};
use crate::error::{Error, Result};
use crate::model::spec::ROOTFS_DRIVE_ID;
use crate::model::{MachineSpec, RuntimeKind};
use crate::runtime::vm::{network, VmFiles, VmmBinary};
use crate::runtime::vmm_process::VmmCommand;
use crate::runtime::MachineRef;

/// The environment variable naming the daemon's Cloud Hypervisor binary.
pub const BIN_ENV: &str = "HYPERFLEET_CLOUD_HYPERVISOR_BIN";
/// Kernel arguments when the spec gives none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// The guest's name of the (one) network interface a spec describes.
pub const GUEST_IFACE: &str = "eth0";
/// The guest's vsock context id (0-2 are reserved).
pub const GUEST_CID: u64 = 3;
/// How long Cloud Hypervisor may take to answer on its socket after a spawn.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a Cloud Hypervisor machine is started from.
#[derive(Debug, Clone)]
pub struct Config {
    pub binary: VmmBinary,
    /// Where the machine's files go (see `vm::files`).
    pub runtime_dir: PathBuf,
    /// The API socket; `<runtime_dir>/api.sock` unless set.
    pub socket_path: PathBuf,
    pub boot_vcpus: u32,
    /// What `resize vcpus=N` may grow to.
    pub max_vcpus: u32,
    /// Boot memory, MiB (sent in bytes).
    pub memory_mib: u64,
    /// Memory `resize mem=MiB` may add beyond `memory_mib`, MiB.
    pub hotplug_mib: Option<u64>,
    /// `None` only for a machine built to be removed or inspected.
    pub kernel: Option<PathBuf>,
    pub cmdline: String,
    pub initramfs: Option<PathBuf>,
    /// The root filesystem first (id `rootfs`), then extra disks.
    pub disks: Vec<DiskConfig>,
    pub net: Vec<NetConfig>,
    /// The vsock port the guest agent listens on (exec goes through it).
    pub agent_port: u32,
    pub vsock: Option<VsockConfig>,
    pub ready_timeout: Duration,
    /// Deadline of each API call.
    pub api_timeout: Duration,
    /// The guest's addresses, for `info`.
    pub guest_addresses: Vec<String>,
}

impl Config {
    /// A machine booting `kernel` with `binary`, its files in `runtime_dir`:
    /// 1 vCPU, 128 MiB, the default command line, a vsock device, no disks
    /// and no network.
    pub fn new(
        binary: impl Into<PathBuf>,
        runtime_dir: impl Into<PathBuf>,
        kernel: impl Into<PathBuf>,
    ) -> Config {
        let mut c = Self::bare(
            VmmBinary::new(RuntimeKind::CloudHypervisor, binary),
            runtime_dir.into(),
        );
        c.kernel = Some(kernel.into());
        c
    }

    fn bare(binary: VmmBinary, runtime_dir: PathBuf) -> Config {
        let files = VmFiles::new(&runtime_dir, RuntimeKind::CloudHypervisor);
        Config {
            binary,
            socket_path: files.api_socket().to_owned(),
            boot_vcpus: 1,
            max_vcpus: 1,
            memory_mib: 128,
            hotplug_mib: None,
            kernel: None,
            cmdline: DEFAULT_CMDLINE.into(),
            initramfs: None,
            disks: Vec::new(),
            net: Vec::new(),
            agent_port: crate::model::spec::DEFAULT_AGENT_PORT,
            vsock: Some(VsockConfig {
                cid: GUEST_CID,
                socket: files.vsock_socket().to_owned(),
                iommu: None,
                id: None,
            }),
            ready_timeout: READY_TIMEOUT,
            api_timeout: crate::runtime::http::DEFAULT_TIMEOUT,
            guest_addresses: Vec::new(),
            runtime_dir,
        }
    }

    /// The machine a spec describes (see `firecracker::Config::from_spec`).
    /// With a root filesystem and no `root=` argument, `root=/dev/vda rw`
    /// is added: it is the first disk.
    pub fn from_spec(
        machine: &MachineRef,
        spec: &MachineSpec,
        default_binary: Option<&Path>,
    ) -> Config {
        let vm = spec.vm_spec().cloned().unwrap_or_default();
        let binary = VmmBinary::resolve(
            RuntimeKind::CloudHypervisor,
            vm.vmm_binary.as_deref(),
            default_binary,
            BIN_ENV,
        );
        let mut c = Self::bare(binary, machine.runtime_dir.clone());
        c.agent_port = vm.agent_port;
        c.boot_vcpus = spec.vcpu_count;
        c.max_vcpus = vm.max_vcpus.unwrap_or(spec.vcpu_count).max(spec.vcpu_count);
        c.memory_mib = spec.mem_size_mib;
        c.hotplug_mib = vm.hotplug_mem_mib.filter(|m| *m > 0);
        c.kernel = vm.kernel_image_path.clone();
        let mut cmdline = vm
            .kernel_args
            .clone()
            .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned());
        if vm.rootfs_path.is_some() && !cmdline.split_whitespace().any(|a| a.starts_with("root=")) {
            cmdline.push_str(" root=/dev/vda rw");
        }
        c.cmdline = network::kernel_args(cmdline.trim(), vm.network.as_ref(), GUEST_IFACE);
        c.initramfs = vm.initrd_path.clone();
        if let Some(root) = &vm.rootfs_path {
            c.disks.push(disk(ROOTFS_DRIVE_ID, root, false));
        }
        for (d, id) in vm.disks.iter().zip(vm.disk_ids()) {
            c.disks.push(disk(&id, &d.path, d.read_only));
        }
        if let Some(net) = &vm.network {
            c.net.push(NetConfig {
                tap: Some(net.tap_device.clone()),
                mac: net.guest_mac.clone().filter(|m| !m.is_empty()),
                ..Default::default()
            });
            c.guest_addresses
                .extend(net.guest_ip.clone().filter(|ip| !ip.is_empty()));
        }
        c
    }

    pub fn with_cpus(mut self, boot: u32, max: u32) -> Self {
        self.boot_vcpus = boot;
        self.max_vcpus = max.max(boot);
        self
    }

    /// Boot memory and room to hot-plug more, in MiB.
    pub fn with_memory_mib(mut self, size: u64, hotplug: Option<u64>) -> Self {
        self.memory_mib = size;
        self.hotplug_mib = hotplug;
        self
    }

    pub fn with_cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    pub fn with_initramfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.initramfs = Some(path.into());
        self
    }

    /// A disk (the first one added is the guest's /dev/vda).
    pub fn with_disk(mut self, id: &str, path: impl AsRef<Path>, read_only: bool) -> Self {
        self.disks.push(disk(id, path.as_ref(), read_only));
        self
    }

    pub fn with_net(mut self, net: NetConfig) -> Self {
        self.net.push(net);
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
        let mut files = VmFiles::new(&self.runtime_dir, RuntimeKind::CloudHypervisor)
            .with_api_socket(&self.socket_path);
        if let Some(v) = &self.vsock {
            files = files.with_vsock_socket(&v.socket);
        }
        files
    }

    /// `cloud-hypervisor --api-socket path=... --log-file ...`: warnings and
    /// errors to the log (`-v` would add a line, often kilobytes long, per
    /// API request).
    pub fn command(&self) -> Result<VmmCommand> {
        let files = self.files();
        let binary = self.binary.check()?;
        let mut socket_arg = OsString::from("path=");
        socket_arg.push(&self.socket_path);
        let mut cmd = VmmCommand::new(binary, &self.runtime_dir)
            .arg("--api-socket")
            .arg(socket_arg)
            .arg("--log-file")
            .arg(files.vmm_log());
        for socket in files.sockets() {
            cmd = cmd.socket(socket);
        }
        cmd.stdout = files.stdout();
        cmd.stderr = files.stderr();
        cmd.pid_file = files.pid_file();
        Ok(cmd)
    }

    /// The `vm.create` body: memory in bytes, the serial port to the
    /// console file, the virtio console off (a detached VMM has no terminal).
    pub fn vm_config(&self) -> Result<VmConfig> {
        let files = self.files();
        // A spec's sizes are validated, but a library caller's are not.
        let bytes = |field: &str, mib: u64| {
            mib.checked_mul(MIB).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "{field}: {mib} MiB is more bytes than there can be"
                ))
            })
        };
        let size = bytes("mem_size_mib", self.memory_mib)?;
        let hotplug_size = match self.hotplug_mib {
            Some(m) => Some(bytes("hotplug_mem_mib", m)?),
            None => None,
        };
        Ok(VmConfig {
            cpus: Some(CpusConfig {
                boot_vcpus: self.boot_vcpus,
                max_vcpus: self.max_vcpus.max(self.boot_vcpus),
                ..Default::default()
            }),
            memory: Some(MemoryConfig {
                size,
                hotplug_size,
                ..Default::default()
            }),
            payload: PayloadConfig {
                kernel: self.kernel.clone(),
                cmdline: Some(self.cmdline.clone()).filter(|c| !c.is_empty()),
                initramfs: self.initramfs.clone(),
                firmware: None,
            },
            disks: Some(self.disks.clone()).filter(|d| !d.is_empty()),
            net: Some(self.net.clone()).filter(|n| !n.is_empty()),
            vsock: self.vsock.clone(),
            serial: Some(ConsoleConfig::file(files.console())),
            console: Some(ConsoleConfig::off()),
            ..Default::default()
        })
    }
}

fn disk(id: &str, path: &Path, read_only: bool) -> DiskConfig {
    DiskConfig {
        path: Some(path.to_owned()),
        readonly: Some(read_only),
        id: Some(id.to_owned()),
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
            id: "m1".into(),
            name: "vm".into(),
            instance: "i".into(),
            runtime_dir: "/var/lib/hf/run/m1".into(),
        }
    }

    #[test]
    fn a_spec_becomes_a_vm_create_body_in_bytes() {
        let vm = VmSpec {
            kernel_image_path: Some("/k/vmlinux".into()),
            rootfs_path: Some("/img/root.ext4".into()),
            disks: vec![DiskSpec {
                path: "/img/data.img".into(),
                read_only: true,
                id: Some("data".into()),
            }],
            network: Some(NetworkSpec {
                tap_device: "tap3".into(),
                tap_ip: None,
                guest_ip: Some("10.0.0.2".into()),
                guest_mac: Some("06:00:0a:00:00:02".into()),
            }),
            max_vcpus: Some(4),
            hotplug_mem_mib: Some(512),
            ..Default::default()
        };
        let spec = MachineSpec {
            vcpu_count: 2,
            mem_size_mib: 256,
            workload: Workload::CloudHypervisor(vm),
            ..Default::default()
        };
        let c = Config::from_spec(&machine(), &spec, Some(Path::new("/opt/ch")));
        let body = serde_json::to_value(c.vm_config().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "cpus": {"boot_vcpus": 2, "max_vcpus": 4},
                "memory": {"size": 268435456u64, "hotplug_size": 536870912u64},
                "payload": {
                    "kernel": "/k/vmlinux",
                    "cmdline": "console=ttyS0 reboot=k panic=1 root=/dev/vda rw ip=10.0.0.2:::255.255.255.0::eth0:off"
                },
                "disks": [
                    {"path": "/img/root.ext4", "readonly": false, "id": "rootfs"},
                    {"path": "/img/data.img", "readonly": true, "id": "data"}
                ],
                "net": [{"tap": "tap3", "mac": "06:00:0a:00:00:02"}],
                "vsock": {"cid": 3, "socket": "/var/lib/hf/run/m1/vsock.sock"},
                "serial": {"mode": "File", "file": "/var/lib/hf/run/m1/console.log"},
                "console": {"mode": "Off"}
            })
        );
        assert_eq!(c.guest_addresses, ["10.0.0.2"]);
    }

    #[test]
    fn without_max_vcpus_the_vm_cannot_grow_and_pages_stay_aligned() {
        let spec = MachineSpec {
            vcpu_count: 3,
            mem_size_mib: 7,
            workload: Workload::CloudHypervisor(VmSpec {
                kernel_image_path: Some("/k".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = Config::from_spec(&machine(), &spec, None)
            .vm_config()
            .unwrap();
        let cpus = body.cpus.unwrap();
        assert_eq!((cpus.boot_vcpus, cpus.max_vcpus), (3, 3));
        let memory = body.memory.unwrap();
        assert_eq!(memory.size, 7 * 1024 * 1024);
        assert_eq!(memory.size % 4096, 0);
        assert_eq!(memory.hotplug_size, None);
        assert_eq!(body.payload.cmdline.as_deref(), Some(DEFAULT_CMDLINE));
        assert!(body.disks.is_none());
    }

    #[test]
    fn the_command_line_names_the_socket_and_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("cloud-hypervisor");
        std::fs::write(&bin, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cmd = Config::new(&bin, dir.path(), "/k").command().unwrap();
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let d = dir.path().display();
        assert_eq!(
            args,
            [
                "--api-socket".to_owned(),
                format!("path={d}/api.sock"),
                "--log-file".into(),
                format!("{d}/vmm.log"),
            ]
        );
        assert_eq!(cmd.pid_file, dir.path().join("cloud-hypervisor.pid"));
    }

    #[test]
    fn memory_too_large_for_bytes_is_refused_naming_the_field() {
        let dir = std::path::Path::new("/nonexistent");
        let base = || Config::new("/bin/ch", dir, "/k");
        let err = base()
            .with_memory_mib(u64::MAX, None)
            .vm_config()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        assert!(err.to_string().contains("mem_size_mib"), "{err}");
        let err = base()
            .with_memory_mib(64, Some(u64::MAX / 2))
            .vm_config()
            .unwrap_err();
        assert!(err.to_string().contains("hotplug_mem_mib"), "{err}");
        let ok = base().with_memory_mib(64, Some(128)).vm_config().unwrap();
        assert_eq!(ok.memory.unwrap().hotplug_size, Some(128 * MIB));
    }
}
