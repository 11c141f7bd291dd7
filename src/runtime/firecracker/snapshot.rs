//! Firecracker snapshots: `snapshot <dir>` pauses the VM, writes a full
//! snapshot (the VM state and the guest memory) into `<dir>`, and resumes
//! it; `restore <dir>` (the restore chain in [`super::handlers`]) loads one
//! into a fresh Firecracker. A snapshot names the drives' host paths, which
//! must still be there when it is restored.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::api::{InstanceState, SnapshotCreateParams, SnapshotType};
use super::Machine;
use crate::error::{Error, Result};
use crate::runtime::vm::errors;

/// The VM state file in a snapshot directory.
pub const STATE_FILE: &str = "vmstate";
/// The guest memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

impl Machine {
    /// Writes a full snapshot into `dir` (created if missing). A running VM
    /// is paused for it and resumed after, whether the snapshot worked or
    /// not; a paused one stays paused.
    pub async fn create_snapshot(&self, dir: &Path) -> Result<()> {
        self.running()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("create snapshot directory {}", dir.display()), e))?;
        let api = self.api();
        let state = api.describe_instance().await.map_err(errors::http)?.state;
        let was_running = state == InstanceState::Running;
        if was_running {
            api.pause().await.map_err(errors::http)?;
        }
        let made = api
            .create_snapshot(&SnapshotCreateParams {
                snapshot_path: dir.join(STATE_FILE),
                mem_file_path: dir.join(MEMORY_FILE),
                snapshot_type: Some(SnapshotType::Full),
            })
            .await
            .map_err(errors::http);
        if was_running {
            let resumed = api.resume().await.map_err(errors::http);
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
