//! Cloud Hypervisor snapshots: `snapshot <dir>` pauses the VM, has Cloud
//! Hypervisor write its snapshot into `<dir>` and resumes the VM, whether
//! the snapshot worked or not (a failed `vm.snapshot` leaves the VM paused,
//! and on hosts whose nested KVM refuses `GetNestedState` it always fails);
//! `restore <dir>` (the restore chain in [`super::handlers`]) restores one
//! into a fresh Cloud Hypervisor.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::api::{VmSnapshotConfig, VmState};
use super::Machine;
use crate::error::{Error, Result};
use crate::runtime::vm::errors;

impl Machine {
    /// Writes a snapshot into `dir` (created if missing). A running VM is
    /// paused for it and resumed after; a paused one stays paused.
    pub async fn create_snapshot(&self, dir: &Path) -> Result<()> {
        self.running()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("create snapshot directory {}", dir.display()), e))?;
        let api = self.api();
        let state = api.vm_info().await.map_err(errors::http)?.state;
        let was_running = state == VmState::Running;
        if was_running {
            api.vm_pause().await.map_err(errors::http)?;
        }
        let made = api
            .vm_snapshot(&VmSnapshotConfig::to_dir(dir))
            .await
            .map_err(errors::http);
        if was_running {
            let resumed = api.vm_resume().await.map_err(errors::http);
            match (&made, resumed) {
                (Ok(()), resumed) => resumed?,
                (Err(_), Err(e)) => {
                    tracing::warn!("resume after a failed snapshot: {}", e.report())
                }
                (Err(_), Ok(())) => {}
            }
        }
        made
    }
}
