//! A running VM's own powers: hot-resize, disk hot-plug, snapshots.

use std::sync::Arc;

use super::operation::deadline;
use super::{Core, Machine};
use crate::error::{Error, Result, ResultExt};
use crate::model::{Action, Status};

impl Core {
    pub(super) async fn device_locked(&self, m: &Arc<Machine>, action: Action) -> Result<()> {
        let rec = m.snapshot();
        let name = action.name();
        let allowed = match action {
            // A snapshot is taken of a paused VM as well as of a running one.
            Action::Snapshot { .. } => matches!(rec.status, Status::Running | Status::Paused),
            _ => rec.status == Status::Running,
        };
        if !allowed {
            return Err(Error::InvalidState {
                action: name,
                status: rec.status.as_str(),
            });
        }
        let rt = self.runtime_for(m, &rec)?;
        let limit = self.settings.call_deadline;
        let res = match &action {
            Action::Resize { vcpus, mem_mib } => {
                deadline(limit, name, rt.resize(*vcpus, *mem_mib)).await
            }
            Action::AddDisk {
                path,
                id,
                read_only,
            } => {
                let id = id.clone().unwrap_or_else(next_disk_id);
                deadline(limit, name, rt.add_disk(path, &id, *read_only)).await
            }
            Action::RemoveDevice { id } => deadline(limit, name, rt.remove_device(id)).await,
            Action::Snapshot { dir } => deadline(limit, name, rt.snapshot(dir)).await,
            _ => Ok(()),
        };
        res.context(name)?;
        self.commit(m, |r| r.error.clear()).await
    }
}

/// An id for a hot-plugged disk the user did not name.
fn next_disk_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("hp{}", &id[..8])
}
