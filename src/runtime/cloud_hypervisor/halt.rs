//! Stopping a Cloud Hypervisor VM: the ACPI power button first (a guest
//! that listens powers off, and Cloud Hypervisor exits with it); after the
//! grace period the forced way, `vm.shutdown` then `vmm.shutdown` (the
//! process exits 0 and removes its socket); SIGTERM and SIGKILL if the API
//! is wedged.
//!
//! Every API call here has its own short deadline, and a call that misses
//! it ends the polite part: a VMM that does not answer (stopped, deadlocked)
//! must reach the signals well within the core's deadline for a stop, not
//! spend it on the HTTP client's long per-call timeouts.

use std::future::Future;
use std::time::{Duration, Instant};

use super::api::VmState;
use super::Machine;
use crate::error::Result;
use crate::runtime::vm::VmmProcess;

/// How often the VM's state is looked at while the guest may power off.
const POLL: Duration = Duration::from_millis(100);
/// How long the VMM may take to exit after `vmm.shutdown`, then SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// How long one API call of a halt may take: a healthy VMM answers these
/// in milliseconds, so missing it means the API is wedged.
const CALL_LIMIT: Duration = Duration::from_secs(3);

/// What became of one API call of a halt.
enum Call<T> {
    Answered(T),
    Failed(String),
    /// No answer within [`CALL_LIMIT`]: the API is wedged.
    Wedged,
}

async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    call: impl Future<Output = std::result::Result<T, E>>,
) -> Call<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Call::Answered(v),
        Ok(Err(e)) => Call::Failed(e.to_string()),
        Err(_) => Call::Wedged,
    }
}

impl Machine {
    pub(super) async fn halt(&self, grace: Duration) -> Result<()> {
        if let Some(p) = self.process() {
            let mut wedged = self.ask_politely(&p, grace).await;
            if p.ended().is_none() && !wedged {
                let vm = bounded(CALL_LIMIT, self.api().vm_shutdown()).await;
                wedged = wedged_or_logged(&p, "vm.shutdown", vm);
                if !wedged {
                    let vmm = bounded(CALL_LIMIT, self.api().vmm_shutdown()).await;
                    wedged = wedged_or_logged(&p, "vmm.shutdown", vmm);
                }
            }
            // A VMM told to shut down gets a moment to exit by itself; one
            // that does not answer is signalled at once.
            let exited = p.ended().is_some() || (!wedged && p.wait_for(EXIT_WAIT).await.is_some());
            if !exited {
                p.terminate(EXIT_WAIT).await?;
            }
        }
        self.supervisor().after_exit();
        Ok(())
    }

    /// The power button, then `grace` for the guest to power off. Says
    /// whether the API turned out to be wedged (then nothing more is asked
    /// of it: signals are all that is left).
    async fn ask_politely(&self, p: &VmmProcess, grace: Duration) -> bool {
        if grace.is_zero() {
            return false;
        }
        if wedged_or_logged(
            p,
            "vm.power-button",
            bounded(CALL_LIMIT, self.api().vm_power_button()).await,
        ) {
            return true;
        }
        match self.powered_off(p, grace).await {
            Some(true) => false,
            Some(false) => {
                tracing::debug!(
                    pid = p.pid(),
                    "the guest ignored the power button for {grace:?}; forcing"
                );
                false
            }
            None => true,
        }
    }

    /// Whether, within `grace`, the VMM exits or its VM stops running;
    /// `None` if the API stopped answering meanwhile.
    async fn powered_off(&self, p: &VmmProcess, grace: Duration) -> Option<bool> {
        let deadline = Instant::now() + grace;
        loop {
            if p.ended().is_some() {
                return Some(true);
            }
            // Never past the grace, however slow the answer; only a call
            // that had its whole limit and missed it says the API is wedged.
            let limit = CALL_LIMIT.min(deadline.saturating_duration_since(Instant::now()));
            match bounded(limit, self.api().vm_info()).await {
                Call::Answered(info)
                    if matches!(info.state, VmState::Shutdown | VmState::Created) =>
                {
                    return Some(true)
                }
                Call::Wedged if limit == CALL_LIMIT && p.ended().is_none() => return None,
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL.min(left)) => {}
                _ = p.wait() => {}
            }
        }
    }
}

/// Logs a call that failed; says whether it found the API wedged.
fn wedged_or_logged<T>(p: &VmmProcess, what: &str, call: Call<T>) -> bool {
    match call {
        Call::Answered(_) => false,
        Call::Failed(e) => {
            tracing::debug!(pid = p.pid(), "{what}: {e}");
            false
        }
        Call::Wedged => {
            tracing::debug!(
                pid = p.pid(),
                "{what}: no answer within {CALL_LIMIT:?}; signalling"
            );
            true
        }
    }
}
