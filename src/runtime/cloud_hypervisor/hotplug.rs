//! Cloud Hypervisor's hot-plug powers, reachable from `ctl`: `resize
//! vcpus=N`, `resize mem=MiB` (within the `max_vcpus` and `hotplug_mem_mib`
//! the VM was booted with), `add-disk <path> [id=ID] [ro]` and
//! `remove-device <id>`. What is hot-plugged lasts for the run: the next
//! start boots from the spec again.

use std::path::Path;

use super::api::{DiskConfig, PciDeviceInfo, VmResize, MIB};
use super::Machine;
use crate::error::{Error, Result};
use crate::model::spec::host_file;
use crate::runtime::vm::errors;

impl Machine {
    pub(super) async fn resize_vm(&self, vcpus: Option<u32>, mem_mib: Option<u64>) -> Result<()> {
        if vcpus.is_none() && mem_mib.is_none() {
            return Err(Error::InvalidCommand(
                "resize needs vcpus=N or mem=MiB".into(),
            ));
        }
        self.running()?;
        let desired_ram = match mem_mib {
            Some(m) => Some(m.checked_mul(MIB).ok_or_else(|| {
                Error::InvalidCommand(format!("mem: {m} MiB is more bytes than there can be"))
            })?),
            None => None,
        };
        let resize = VmResize {
            desired_vcpus: vcpus,
            desired_ram,
            desired_balloon: None,
        };
        self.api().vm_resize(&resize).await.map_err(errors::http)
    }

    /// Hot-plugs the disk at `path` as device `id`; its PCI address.
    pub async fn hot_plug_disk(
        &self,
        path: &Path,
        id: &str,
        read_only: bool,
    ) -> Result<Option<PciDeviceInfo>> {
        self.running()?;
        host_file("add-disk", path, true)?;
        let disk = DiskConfig {
            path: Some(path.to_owned()),
            readonly: Some(read_only),
            id: Some(id.to_owned()),
            ..Default::default()
        };
        self.api().vm_add_disk(&disk).await.map_err(errors::http)
    }

    pub(super) async fn unplug(&self, id: &str) -> Result<()> {
        self.running()?;
        self.api().vm_remove_device(id).await.map_err(errors::http)
    }
}
