//! Stopping a Cloud Hypervisor VM: the ACPI power button first (a guest
//! that listens powers off, and Cloud Hypervisor exits with it); after the
//! grace period the forced way, `vm.shutdown` then `vmm.shutdown` (the
//! process exits 0 and removes its socket); SIGTERM and SIGKILL if the API
//! is wedged.

use std::time::{Duration, Instant};

use super::api::VmState;
use super::Machine;
use crate::error::Result;
use crate::runtime::vm::VmmProcess;

/// How often the VM's state is looked at while the guest may power off.
const POLL: Duration = Duration::from_millis(100);
/// How long the VMM may take to exit after `vmm.shutdown`, then SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(5);

impl Machine {
    pub(super) async fn halt(&self, grace: Duration) -> Result<()> {
        if let Some(p) = self.process() {
            if !grace.is_zero() {
                if let Err(e) = self.api().vm_power_button().await {
                    tracing::debug!(pid = p.pid(), "vm.power-button: {e}");
                }
                if !self.powered_off(&p, grace).await {
                    tracing::debug!(
                        pid = p.pid(),
                        "the guest ignored the power button for {grace:?}; forcing"
                    );
                }
            }
            if p.ended().is_none() {
                if let Err(e) = self.api().vm_shutdown().await {
                    tracing::debug!(pid = p.pid(), "vm.shutdown: {e}");
                }
                if let Err(e) = self.api().vmm_shutdown().await {
                    tracing::debug!(pid = p.pid(), "vmm.shutdown: {e}");
                }
                if p.wait_for(EXIT_WAIT).await.is_none() {
                    p.terminate(EXIT_WAIT).await?;
                }
            }
        }
        self.supervisor().after_exit();
        Ok(())
    }

    /// Whether, within `grace`, the VMM exits or its VM stops running.
    async fn powered_off(&self, p: &VmmProcess, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            if p.ended().is_some() {
                return true;
            }
            if let Ok(info) = self.api().vm_info().await {
                if matches!(info.state, VmState::Shutdown | VmState::Created) {
                    return true;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL.min(left)) => {}
                _ = p.wait() => {}
            }
        }
    }
}
