//! Replacing a machine's spec.

use std::sync::Arc;

use super::{Core, Machine};
use crate::error::{Error, Result, ResultExt};
use crate::model::{MachineSpec, Status};

impl Core {
    /// Replaces a machine's spec. Only while it holds no running workload;
    /// it takes effect at the next start.
    pub async fn set_config(self: &Arc<Self>, m: &Arc<Machine>, bytes: &[u8]) -> Result<()> {
        let bytes = bytes.to_vec();
        self.detached(
            m,
            |core, m| async move { core.set_config_of(&m, &bytes).await },
        )
        .await
    }

    async fn set_config_of(&self, m: &Arc<Machine>, bytes: &[u8]) -> Result<()> {
        let spec = MachineSpec::parse(bytes)?;
        // Brief holders (an exit being recorded) are waited for; a start in
        // progress is not.
        let _op = m.op.acquire("config", self.settings.config_wait).await?;
        let rec = m.snapshot();
        if rec.status.is_active() {
            return Err(Error::Busy(format!(
                "machine is {}; stop it before changing its config",
                rec.status
            )));
        }
        let switching = rec.spec.runtime_type() != spec.runtime_type();
        if switching && (rec.status != Status::Pending || m.live().is_some()) {
            // The old runtime's leftovers would be unreachable under the new
            // one; with them gone the machine has nothing anywhere: pending.
            let limit = self.settings.call_deadline;
            let rt = self.runtime_for(m, &rec)?;
            super::operation::deadline(limit, "remove", rt.remove())
                .await
                .context("remove the old runtime's resources")?;
            m.set_live(None);
        }
        // `error` keeps the last failure: an editor that restores the old
        // text after a refused write must not wipe the reason away.
        self.commit(m, |r| {
            r.spec = spec;
            if switching {
                r.status = Status::Pending;
                r.exit = None;
            }
        })
        .await
    }
}
