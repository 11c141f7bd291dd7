//! The fields only a microVM (Firecracker, Cloud Hypervisor) machine has.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{check, MachineSpec, MAX_MEM_MIB, MAX_VCPUS};
use crate::error::{Error, Result};

/// The vsock port the guest agent listens on unless the spec says otherwise.
pub const DEFAULT_AGENT_PORT: u32 = 52;
/// The drive id the root filesystem gets; extra disks may not take it.
pub const ROOTFS_DRIVE_ID: &str = "rootfs";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// The device id (`remove-device <id>`); `disk<N>` by position if absent.
    #[serde(default)]
    pub id: Option<String>,
}

/// The original's `network` object: an existing TAP device on the host and
/// the guest's side of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub tap_device: String,
    #[serde(default)]
    pub tap_ip: Option<String>,
    #[serde(default)]
    pub guest_ip: Option<String>,
    #[serde(default)]
    pub guest_mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Required to start: an uncompressed ELF kernel (vmlinux) with a PVH entry.
    pub kernel_image_path: Option<PathBuf>,
    pub kernel_args: Option<String>,
    pub initrd_path: Option<PathBuf>,
    pub rootfs_path: Option<PathBuf>,
    pub disks: Vec<DiskSpec>,
    pub network: Option<NetworkSpec>,
    /// Cloud Hypervisor: vCPUs the VM may be resized up to.
    pub max_vcpus: Option<u32>,
    /// Cloud Hypervisor: memory that may be hot-plugged beyond `mem_size_mib`.
    pub hotplug_mem_mib: Option<u64>,
    /// This machine's VMM binary, instead of the daemon's default.
    pub vmm_binary: Option<PathBuf>,
    /// The vsock port the guest agent listens on.
    pub agent_port: u32,
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            kernel_image_path: None,
            kernel_args: None,
            initrd_path: None,
            rootfs_path: None,
            disks: Vec::new(),
            network: None,
            max_vcpus: None,
            hotplug_mem_mib: None,
            vmm_binary: None,
            agent_port: DEFAULT_AGENT_PORT,
        }
    }
}

impl VmSpec {
    /// Each extra disk's device id.
    pub fn disk_ids(&self) -> Vec<String> {
        self.disks
            .iter()
            .enumerate()
            .map(|(i, d)| d.id.clone().unwrap_or_else(|| format!("disk{i}")))
            .collect()
    }

    pub(super) fn validate(&self, spec: &MachineSpec) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        for (field, p) in [
            ("kernel_image_path", &self.kernel_image_path),
            ("initrd_path", &self.initrd_path),
            ("rootfs_path", &self.rootfs_path),
            ("vmm_binary", &self.vmm_binary),
        ] {
            if let Some(p) = p {
                check::path(field, p)?;
            }
        }
        if let Some(args) = &self.kernel_args {
            if args.contains('\0') || args.contains('\n') || args.len() > 4096 {
                return bad("kernel_args must be one line under 4096 bytes, without NUL".into());
            }
        }
        let mut ids = HashSet::from([ROOTFS_DRIVE_ID.to_owned()]);
        for (i, (d, id)) in self.disks.iter().zip(self.disk_ids()).enumerate() {
            check::path(&format!("disks[{i}].path"), &d.path)?;
            check::ident(&format!("disks[{i}].id"), &id, 32)?;
            if !ids.insert(id.clone()) {
                return bad(format!(
                    "disks[{i}].id: {id:?} is used twice (or is reserved)"
                ));
            }
        }
        if let Some(net) = &self.network {
            // IFNAMSIZ is 16 with the NUL.
            check::ident("network.tap_device", &net.tap_device, 15)?;
            for (field, ip) in [
                ("network.tap_ip", &net.tap_ip),
                ("network.guest_ip", &net.guest_ip),
            ] {
                if let Some(ip) = ip.as_deref().filter(|s| !s.is_empty()) {
                    if ip.parse::<Ipv4Addr>().is_err() {
                        return bad(format!("{field}: {ip:?} is not an IPv4 address"));
                    }
                }
            }
            if let Some(mac) = net.guest_mac.as_deref().filter(|s| !s.is_empty()) {
                if !is_mac(mac) {
                    return bad(format!(
                        "network.guest_mac: {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
                    ));
                }
            }
        }
        if let Some(max) = self.max_vcpus {
            if max < spec.vcpu_count || max > MAX_VCPUS {
                return bad(format!(
                    "max_vcpus must be vcpu_count ({})..={MAX_VCPUS}",
                    spec.vcpu_count
                ));
            }
        }
        if let Some(h) = self.hotplug_mem_mib {
            // Any u64 can be written here: an overflowing sum is too large.
            if spec
                .mem_size_mib
                .checked_add(h)
                .is_none_or(|total| total > MAX_MEM_MIB)
            {
                return bad(format!(
                    "hotplug_mem_mib: mem_size_mib + hotplug_mem_mib must be at most {MAX_MEM_MIB}"
                ));
            }
        }
        // u32::MAX is VMADDR_PORT_ANY, which cannot be connected to.
        if self.agent_port == 0 || self.agent_port == u32::MAX {
            return bad("agent_port must be 1..4294967295".into());
        }
        Ok(())
    }

    /// The host files the spec names must be there, and be what they must
    /// be, when the machine starts. Checked at start, not at config time,
    /// so a config may be written before its kernel is built.
    pub fn check_host_files(&self) -> Result<()> {
        let missing = |field: &str, reason: String| Error::MissingFile {
            field: field.to_owned(),
            reason,
        };
        let regular = host_file;
        if let Some(k) = &self.kernel_image_path {
            regular("kernel_image_path", k, false)?;
        }
        if let Some(p) = &self.initrd_path {
            regular("initrd_path", p, false)?;
        }
        if let Some(p) = &self.rootfs_path {
            regular("rootfs_path", p, true)?;
        }
        for (i, d) in self.disks.iter().enumerate() {
            regular(&format!("disks[{i}].path"), &d.path, true)?;
        }
        if let Some(b) = &self.vmm_binary {
            regular("vmm_binary", b, false)?;
            let mode = std::fs::metadata(b)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o111 == 0 {
                return Err(missing(
                    "vmm_binary",
                    format!("{} is not executable", b.display()),
                ));
            }
        }
        Ok(())
    }
}

/// A host file a VM needs: there, and a regular file (or, for a disk,
/// `block_ok`, a block device). The error (ENOENT) names `field`.
pub fn host_file(field: &str, p: &Path, block_ok: bool) -> Result<()> {
    let missing = |reason: String| Error::MissingFile {
        field: field.to_owned(),
        reason,
    };
    let md = std::fs::metadata(p).map_err(|e| missing(format!("{}: {e}", p.display())))?;
    let ft = md.file_type();
    if ft.is_file() || (block_ok && ft.is_block_device()) {
        Ok(())
    } else {
        Err(missing(format!(
            "{} is not a {}",
            p.display(),
            if block_ok {
                "regular file or block device"
            } else {
                "regular file"
            }
        )))
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}
