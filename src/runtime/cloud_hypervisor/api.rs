//! Cloud Hypervisor's REST API (openapi `vmm/src/api/openapi/cloud-hypervisor.yaml`,
//! v53): the bodies as Rust types, and [`CloudHypervisorApi`], one method per
//! call a runtime makes. All paths are under `/api/v1`.
//!
//! This is the API only; it knows nothing of machine specs. Units follow the
//! API: memory in BYTES (`memory.size`, `hotplug_size`, `desired_ram`); use
//! [`MIB`] to convert. Cloud Hypervisor checks little at `vm.create`
//! (unknown fields are ignored, a misaligned memory size or boot > max vCPUs
//! is accepted); the checks happen at `vm.boot`, which answers 400 for an
//! invalid configuration and 500 for a failure to build the VM. Errors come
//! as a JSON array of strings (see [`crate::runtime::http::error_message`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::http::{Result, UnixHttp};

/// Bytes in a MiB, for the byte-sized fields of this API.
pub const MIB: u64 = 1 << 20;

const PREFIX: &str = "/api/v1";

/// `GET /vmm.ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmPingResponse {
    pub version: String,
    #[serde(default)]
    pub build_version: Option<String>,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub features: Vec<String>,
}

/// `PUT /vm.create` body, and the `config` that `vm.info` reports back
/// (with every default filled in). Only what runtimes use is modelled;
/// unknown fields in answers are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpusConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
    pub payload: PayloadConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<NetConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// The legacy serial port (ttyS0): where a PVH kernel's early output goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<ConsoleConfig>,
    /// The virtio console (hvc0). Cloud Hypervisor's default is the VMM's
    /// terminal, which a detached VMM does not have: set it to `Off` or a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvpanic: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    pub boot_vcpus: u32,
    /// Upper bound for `vm.resize`; at least `boot_vcpus` (checked at boot).
    pub max_vcpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm_hyperv: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_phys_bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested: Option<bool>,
}

/// Guest memory. Every size is in BYTES, and must be a multiple of the page
/// size (else `vm.boot` fails with "Memory size is misaligned ...").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    pub size: u64,
    /// Room for `vm.resize` to grow the memory into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplugged_size: Option<u64>,
    /// "Acpi" (default) or "VirtioMem".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mergeable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefault: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp: Option<bool>,
}

/// What to boot. A kernel with a PVH entry note (vmlinux) or a firmware.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<PathBuf>,
}

/// A block device, in `VmConfig.disks` or as the `vm.add-disk` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<bool>,
    /// The handle for `vm.remove-device`; must be unique in the VM (a
    /// duplicate is a 409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// "Raw", "Qcow2", ... Cloud Hypervisor detects it when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_queues: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
}

/// A virtio-net device. With `tap` set, Cloud Hypervisor uses (or creates)
/// that TAP device; `ip` and `mask` are then given to the host side of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<IpAddr>,
    /// Guest MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_queues: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngConfig {
    pub src: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<bool>,
}

/// The serial port or the virtio console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    pub mode: ConsoleMode,
    /// Required with [`ConsoleMode::File`]. (This Cloud Hypervisor build
    /// crashes at boot when a File serial has no file.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Required with [`ConsoleMode::Socket`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<bool>,
}

impl ConsoleConfig {
    pub fn off() -> Self {
        Self::mode(ConsoleMode::Off)
    }

    pub fn null() -> Self {
        Self::mode(ConsoleMode::Null)
    }

    /// Output appended to `path` (created by Cloud Hypervisor).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        ConsoleConfig {
            file: Some(path.into()),
            ..Self::mode(ConsoleMode::File)
        }
    }

    fn mode(mode: ConsoleMode) -> Self {
        ConsoleConfig {
            mode,
            file: None,
            socket: None,
            iommu: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMode {
    Off,
    Pty,
    Tty,
    File,
    Socket,
    Null,
}

/// A hybrid vsock device: Cloud Hypervisor binds `socket` at boot (a file
/// already there fails the boot with "Address already in use") and removes
/// it when the VM shuts down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// 3 or more (boot refuses 2 as "a special VSOCK CID").
    pub cid: u64,
    pub socket: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `GET /vm.info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    pub config: VmConfig,
    pub state: VmState,
    /// Bytes of guest memory, hot-plugged memory included.
    #[serde(default)]
    pub memory_actual_size: Option<u64>,
    #[serde(default)]
    pub device_tree: Option<BTreeMap<String, DeviceNode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Created (or shut down): `vm.boot` starts it.
    Created,
    Running,
    Shutdown,
    Paused,
    BreakPoint,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub children: Vec<String>,
    #[serde(default)]
    pub pci_bdf: Option<String>,
}

/// `PUT /vm.resize`. Fields left `None` are unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmResize {
    /// At most `cpus.max_vcpus` (else 500 "Requested vCPUs exceed maximum").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_vcpus: Option<u32>,
    /// Guest memory in BYTES, within `size + hotplug_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_ram: Option<u64>,
    /// Balloon size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_balloon: Option<u64>,
}

/// `PUT /vm.remove-device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRemoveDevice {
    pub id: String,
}

/// A hot-plugged device's identity (answer to `vm.add-*` on a booted VM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDeviceInfo {
    pub id: String,
    pub bdf: String,
}

/// `PUT /vm.snapshot`. The VM must be paused first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSnapshotConfig {
    /// `file://` URL of an existing directory.
    pub destination_url: String,
}

impl VmSnapshotConfig {
    /// A snapshot written into directory `dir`.
    pub fn to_dir(dir: &Path) -> Self {
        VmSnapshotConfig {
            destination_url: file_url(dir),
        }
    }
}

/// `PUT /vm.restore`, on a VMM with no VM created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreConfig {
    /// `file://` URL of a snapshot directory.
    pub source_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefault: Option<bool>,
    /// Resume the VM once restored (else it is left paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}

impl RestoreConfig {
    /// A restore from the snapshot in directory `dir`.
    pub fn from_dir(dir: &Path) -> Self {
        RestoreConfig {
            source_url: file_url(dir),
            prefault: None,
            resume: None,
        }
    }
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A client of one Cloud Hypervisor process's API socket.
#[derive(Debug, Clone)]
pub struct CloudHypervisorApi {
    http: UnixHttp,
}

impl CloudHypervisorApi {
    /// A client for the API socket at `socket` (`--api-socket path=...`).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self::with_client(UnixHttp::new(socket))
    }

    pub fn with_client(http: UnixHttp) -> Self {
        CloudHypervisorApi { http }
    }

    pub fn http(&self) -> &UnixHttp {
        &self.http
    }

    pub fn socket(&self) -> &Path {
        self.http.socket()
    }

    async fn put(&self, endpoint: &str) -> Result<()> {
        self.http
            .put_empty(&format!("{PREFIX}/{endpoint}"))
            .await
            .map(drop)
    }

    async fn put_body<B: Serialize + ?Sized>(&self, endpoint: &str, body: &B) -> Result<()> {
        self.http
            .put_json(&format!("{PREFIX}/{endpoint}"), body)
            .await
            .map(drop)
    }

    /// `GET /vmm.ping`: the VMM's version; also the readiness probe.
    pub async fn vmm_ping(&self) -> Result<VmmPingResponse> {
        self.http.get_json(&format!("{PREFIX}/vmm.ping")).await
    }

    /// `PUT /vm.create`: records the configuration; nothing is checked or
    /// built until [`Self::vm_boot`]. 500 if a VM is already created.
    pub async fn vm_create(&self, config: &VmConfig) -> Result<()> {
        self.put_body("vm.create", config).await
    }

    /// `PUT /vm.boot`: 404 if no VM is created; 400 for an invalid
    /// configuration; 500 if the VM cannot be built (kernel not loadable,
    /// vsock socket path taken...). After a shutdown, boots it again.
    pub async fn vm_boot(&self) -> Result<()> {
        self.put("vm.boot").await
    }

    /// `GET /vm.info`: 404 if no VM is created.
    pub async fn vm_info(&self) -> Result<VmInfo> {
        self.http.get_json(&format!("{PREFIX}/vm.info")).await
    }

    /// `PUT /vm.pause`: 500 "VM is not running" unless running.
    pub async fn vm_pause(&self) -> Result<()> {
        self.put("vm.pause").await
    }

    /// `PUT /vm.resume`: 500 "VM is not running" unless paused.
    pub async fn vm_resume(&self) -> Result<()> {
        self.put("vm.resume").await
    }

    /// `PUT /vm.shutdown`: stops the guest at once (no guest cooperation);
    /// the VM returns to `Created` and can be booted again.
    pub async fn vm_shutdown(&self) -> Result<()> {
        self.put("vm.shutdown").await
    }

    /// `PUT /vm.reboot`.
    pub async fn vm_reboot(&self) -> Result<()> {
        self.put("vm.reboot").await
    }

    /// `PUT /vm.power-button`: an ACPI power-button press. The guest decides
    /// what to do; one without ACPI support keeps running.
    pub async fn vm_power_button(&self) -> Result<()> {
        self.put("vm.power-button").await
    }

    /// `PUT /vm.resize`.
    pub async fn vm_resize(&self, resize: &VmResize) -> Result<()> {
        self.put_body("vm.resize", resize).await
    }

    /// `PUT /vm.add-disk`: the new device's PCI identity when hot-plugged
    /// into a booted VM (200), `None` when cold-added before boot (204).
    pub async fn vm_add_disk(&self, disk: &DiskConfig) -> Result<Option<PciDeviceInfo>> {
        self.http
            .put_json(&format!("{PREFIX}/vm.add-disk"), disk)
            .await?
            .json_opt()
    }

    /// `PUT /vm.remove-device`: 404 for an unknown id. The device leaves
    /// `config` at once; leaving the device tree needs the guest's consent.
    pub async fn vm_remove_device(&self, id: &str) -> Result<()> {
        self.put_body("vm.remove-device", &VmRemoveDevice { id: id.to_owned() })
            .await
    }

    /// `PUT /vm.snapshot`, on a paused VM.
    pub async fn vm_snapshot(&self, config: &VmSnapshotConfig) -> Result<()> {
        self.put_body("vm.snapshot", config).await
    }

    /// `PUT /vm.restore`, on a VMM with no VM created.
    pub async fn vm_restore(&self, config: &RestoreConfig) -> Result<()> {
        self.put_body("vm.restore", config).await
    }

    /// `PUT /vm.delete`: removes the VM (shutting it down first); succeeds
    /// when there is none.
    pub async fn vm_delete(&self) -> Result<()> {
        self.put("vm.delete").await
    }

    /// `PUT /vmm.shutdown`: the VMM process exits, removing its API socket.
    /// (v53 answers 200 where the openapi file says 204; both are success.)
    pub async fn vmm_shutdown(&self) -> Result<()> {
        self.put("vmm.shutdown").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_sent_in_bytes() {
        let config = VmConfig {
            memory: Some(MemoryConfig {
                size: 128 * MIB,
                ..Default::default()
            }),
            payload: PayloadConfig {
                kernel: Some("/k".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let body = serde_json::to_value(&config).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"memory": {"size": 134217728}, "payload": {"kernel": "/k"}})
        );
    }

    #[test]
    fn snapshot_urls_are_file_urls() {
        assert_eq!(
            VmSnapshotConfig::to_dir(Path::new("/var/snap")).destination_url,
            "file:///var/snap"
        );
        assert_eq!(
            RestoreConfig::from_dir(Path::new("/var/snap")).source_url,
            "file:///var/snap"
        );
    }

    #[test]
    fn vm_info_as_cloud_hypervisor_reports_it() {
        let text = r#"{"config":{"cpus":{"boot_vcpus":2,"max_vcpus":2,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"},"memory":{"size":134217728,"hotplug_size":268435456,"mergeable":false,"hotplug_method":"Acpi","shared":false,"hugepages":false,"prefault":false,"reserve":false,"thp":true},"payload":{"kernel":"/k","cmdline":"console=ttyS0"},"disks":[{"id":"data1","pci_segment":0,"path":"/d","readonly":false,"direct":false,"num_queues":1,"queue_size":128,"vhost_user":false,"backing_files":false,"sparse":true,"image_type":"Raw","lock_granularity":"ByteRange"}],"serial":{"file":"/s","mode":"File","iommu":false},"console":{"mode":"Off","iommu":false},"vsock":{"cid":3,"socket":"/v","iommu":false,"id":"_vsock0","pci_segment":0}},"state":"Running","memory_actual_size":268435456,"device_tree":{"data1":{"id":"data1","resources":[],"children":[],"pci_bdf":"0000:00:03.0"}}}"#;
        let info: VmInfo = serde_json::from_str(text).unwrap();
        assert_eq!(info.state, VmState::Running);
        assert_eq!(info.config.cpus.unwrap().boot_vcpus, 2);
        assert_eq!(info.config.disks.unwrap()[0].id.as_deref(), Some("data1"));
        assert_eq!(info.memory_actual_size, Some(256 * MIB));
    }
}
