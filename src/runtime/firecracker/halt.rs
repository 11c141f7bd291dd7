//! Stopping a Firecracker VM. Firecracker has no shutdown call and no
//! SIGTERM handler: a graceful stop presses Ctrl+Alt+Del on the guest's
//! keyboard controller (a Linux guest booted with `reboot=k` then reboots,
//! which Firecracker turns into its own clean exit); a guest that ignores it
//! gets SIGTERM after the grace period, which Firecracker dies of at once,
//! and SIGKILL if even that fails. Firecracker never removes its sockets;
//! they go once it is gone.

use std::time::Duration;

use super::Machine;
use crate::error::Result;

/// How long Firecracker may take to die of SIGTERM before SIGKILL.
const TERM_WAIT: Duration = Duration::from_secs(5);

impl Machine {
    pub(super) async fn halt(&self, grace: Duration) -> Result<()> {
        if let Some(p) = self.process() {
            // No grace, no guest to ask; before InstanceStart (or with the
            // API wedged) neither: the signals below do it.
            if !grace.is_zero() {
                if let Err(e) = self.api().send_ctrl_alt_del().await {
                    tracing::debug!(pid = p.pid(), "SendCtrlAltDel: {e}");
                }
            }
            if p.wait_for(grace).await.is_none() {
                tracing::debug!(
                    pid = p.pid(),
                    "the guest ignored Ctrl+Alt+Del for {grace:?}; SIGTERM"
                );
                p.terminate(TERM_WAIT).await?;
            }
        }
        self.supervisor().after_exit();
        Ok(())
    }
}
