//! Firecracker's REST API (swagger `src/firecracker/swagger/firecracker.yaml`,
//! v1.17): the request and response bodies as Rust types, and
//! [`FirecrackerApi`], one method per call a runtime makes.
//!
//! This is the API only; it knows nothing of machine specs. Units follow the
//! API: memory in MiB. Most configuration calls are accepted only before
//! `InstanceStart`; Firecracker answers them afterwards with 400 "The
//! requested operation is not supported after starting the microVM.", and
//! answers the post-boot calls (pause, resume, snapshot create,
//! SendCtrlAltDel, FlushMetrics) before it with the "before starting" twin.
//! Every success is 204 with no body, except the GETs (200 with JSON).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::http::{path_segment, Result, UnixHttp};

/// `GET /`: who and in what state this Firecracker is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

/// `PUT /machine-config`. Fields left `None` take Firecracker's defaults
/// (a PUT replaces the whole configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// 1–32; 1 or even when `smt` is on.
    pub vcpu_count: u32,
    /// Guest memory in MiB (not bytes).
    pub mem_size_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Needed for diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
    /// Deprecated by Firecracker; kept as text so any value it reports
    /// back can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    #[serde(rename = "None")]
    Off,
    Transparent,
    /// hugetlbfs 2 MiB pages; `mem_size_mib` must then be even.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// `PUT /boot-source`. Firecracker opens the kernel file at this call, so a
/// missing kernel fails here (400 "Boot source error: The kernel file cannot
/// be opened: ..."); a file that is not a kernel fails at `InstanceStart`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

/// `PUT /drives/{drive_id}` (a virtio-block drive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Also the path segment; Firecracker refuses a body whose id differs.
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    pub is_root_device: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    Async,
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device on a host TAP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// Name of the host TAP device. Firecracker opens it with TUNSETIFF,
    /// which (as root) creates a transient TAP of that name if none exists.
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// `PUT /vsock`: a hybrid vsock device behind a Unix socket that
/// Firecracker binds at this call. A file already at `uds_path` fails it
/// with 400 "... Address already in use (os error 98)".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// 3 or more (0–2 are reserved).
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// `PUT /logger`. Firecracker logs to stdout until this is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `PUT /metrics`. Accepted once per process: a second call is a 400
/// ("Reinitialization of metrics not allowed").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

/// `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    FlushMetrics,
    InstanceStart,
    /// Presses Ctrl+Alt+Del on the guest's i8042 keyboard: a guest that
    /// listens reboots (which Firecracker turns into its own exit); one that
    /// does not keeps running, and the call still answers 204.
    SendCtrlAltDel,
}

/// `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub state: VmState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// `PUT /snapshot/create`. The VM must be paused first (else 400 "...
/// save/restore unavailable while running").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// `PUT /snapshot/load`. Only on a fresh process (nothing configured but
/// the logger and metrics). A load that fails makes Firecracker exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: PathBuf,
}

impl MemoryBackend {
    /// Guest memory read from a file written by a snapshot create.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: path.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    File,
    Uffd,
}

/// Points a restored network interface at another TAP device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// Restores the vsock device on another Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    pub uds_path: PathBuf,
}

/// `GET /vm/config`: every resource configured so far. Resources this
/// crate does not model are kept as raw JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    #[serde(rename = "machine-config", default)]
    pub machine_config: Option<MachineConfiguration>,
    #[serde(rename = "boot-source", default)]
    pub boot_source: Option<BootSource>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub drives: Vec<Drive>,
    #[serde(
        rename = "network-interfaces",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    pub vsock: Option<Vsock>,
    #[serde(default)]
    pub logger: Option<Logger>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub balloon: Option<serde_json::Value>,
    #[serde(rename = "mmds-config", default)]
    pub mmds_config: Option<serde_json::Value>,
    #[serde(rename = "cpu-config", default)]
    pub cpu_config: Option<serde_json::Value>,
    #[serde(default)]
    pub entropy: Option<serde_json::Value>,
}

fn null_as_empty<'de, D, T>(de: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}

/// A client of one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct FirecrackerApi {
    http: UnixHttp,
}

impl FirecrackerApi {
    /// A client for the API socket at `socket`, with the default deadline.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self::with_client(UnixHttp::new(socket))
    }

    /// A client over an HTTP client configured by the caller (deadline,
    /// body limit).
    pub fn with_client(http: UnixHttp) -> Self {
        FirecrackerApi { http }
    }

    pub fn http(&self) -> &UnixHttp {
        &self.http
    }

    pub fn socket(&self) -> &Path {
        self.http.socket()
    }

    /// `GET /`: identity and state; also the readiness probe.
    pub async fn describe_instance(&self) -> Result<InstanceInfo> {
        self.http.get_json("/").await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion> {
        self.http.get_json("/version").await
    }

    /// `PUT /machine-config`. Pre-boot only.
    pub async fn put_machine_config(&self, config: &MachineConfiguration) -> Result<()> {
        self.http
            .put_json("/machine-config", config)
            .await
            .map(drop)
    }

    /// `GET /machine-config`.
    pub async fn machine_config(&self) -> Result<MachineConfiguration> {
        self.http.get_json("/machine-config").await
    }

    /// `PUT /boot-source`. Pre-boot only.
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<()> {
        self.http.put_json("/boot-source", boot).await.map(drop)
    }

    /// `PUT /drives/{drive_id}`. Pre-boot only.
    pub async fn put_drive(&self, drive: &Drive) -> Result<()> {
        let path = format!("/drives/{}", path_segment(&drive.drive_id));
        self.http.put_json(&path, drive).await.map(drop)
    }

    /// `PUT /network-interfaces/{iface_id}`. Pre-boot only.
    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<()> {
        let path = format!("/network-interfaces/{}", path_segment(&iface.iface_id));
        self.http.put_json(&path, iface).await.map(drop)
    }

    /// `PUT /vsock`. Pre-boot only.
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<()> {
        self.http.put_json("/vsock", vsock).await.map(drop)
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, logger: &Logger) -> Result<()> {
        self.http.put_json("/logger", logger).await.map(drop)
    }

    /// `PUT /metrics`. Once per process.
    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<()> {
        self.http.put_json("/metrics", metrics).await.map(drop)
    }

    async fn action(&self, action_type: ActionType) -> Result<()> {
        self.http
            .put_json("/actions", &InstanceActionInfo { action_type })
            .await
            .map(drop)
    }

    /// Boots the configured VM. A kernel that cannot be loaded (not an ELF
    /// nor a bzImage) fails here with 400, and the process stays up with the
    /// VM "Not started".
    pub async fn instance_start(&self) -> Result<()> {
        self.action(ActionType::InstanceStart).await
    }

    /// Post-boot only. See [`ActionType::SendCtrlAltDel`].
    pub async fn send_ctrl_alt_del(&self) -> Result<()> {
        self.action(ActionType::SendCtrlAltDel).await
    }

    /// Post-boot only.
    pub async fn flush_metrics(&self) -> Result<()> {
        self.action(ActionType::FlushMetrics).await
    }

    /// `PATCH /vm` Paused. Post-boot only; pausing a paused VM is a 204.
    pub async fn pause(&self) -> Result<()> {
        self.set_vm_state(VmState::Paused).await
    }

    /// `PATCH /vm` Resumed. Post-boot only.
    pub async fn resume(&self) -> Result<()> {
        self.set_vm_state(VmState::Resumed).await
    }

    async fn set_vm_state(&self, state: VmState) -> Result<()> {
        self.http.patch_json("/vm", &Vm { state }).await.map(drop)
    }

    /// `PUT /snapshot/create`. Post-boot only, on a paused VM.
    pub async fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<()> {
        self.http
            .put_json("/snapshot/create", params)
            .await
            .map(drop)
    }

    /// `PUT /snapshot/load`. Fresh process only.
    pub async fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<()> {
        self.http.put_json("/snapshot/load", params).await.map(drop)
    }

    /// `GET /vm/config`.
    pub async fn vm_config(&self) -> Result<FullVmConfiguration> {
        self.http.get_json("/vm/config").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_left_out_of_requests() {
        let body = serde_json::to_value(MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 256,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256})
        );
    }

    #[test]
    fn instance_state_uses_the_api_spelling() {
        let info: InstanceInfo = serde_json::from_str(
            r#"{"id":"a","state":"Not started","vmm_version":"1.17.0-dev","app_name":"Firecracker"}"#,
        )
        .unwrap();
        assert_eq!(info.state, InstanceState::NotStarted);
    }

    #[test]
    fn full_config_as_firecracker_reports_it() {
        // What GET /vm/config answered on a v1.17 process after a boot.
        let text = r#"{"balloon":null,"drives":[],"boot-source":{"kernel_image_path":"/k","initrd_path":null,"boot_args":"console=ttyS0"},"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"pmem":[],"memory-hotplug":null}"#;
        let config: FullVmConfiguration = serde_json::from_str(text).unwrap();
        let machine = config.machine_config.unwrap();
        assert_eq!(machine.mem_size_mib, 128);
        assert_eq!(machine.huge_pages, Some(HugePages::Off));
        assert_eq!(
            config.boot_source.unwrap().kernel_image_path,
            PathBuf::from("/k")
        );
    }
}
