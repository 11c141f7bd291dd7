//! `stop`, `shutdown` and `kill`: running/paused → stopping → stopped.

use std::sync::Arc;
use std::time::Duration;

use super::operation::{deadline, OpGuard};
use super::{Core, Machine};
use crate::error::{Error, Result, ResultExt};
use crate::model::action::DEFAULT_SHUTDOWN_GRACE;
use crate::model::Status;

/// How a running machine is brought down.
#[derive(Debug, Clone, Copy)]
pub(super) enum Halt {
    Stop,
    Shutdown(Duration),
    Kill,
}

impl Halt {
    fn name(self) -> &'static str {
        match self {
            Halt::Stop => "stop",
            Halt::Shutdown(_) => "shutdown",
            Halt::Kill => "kill",
        }
    }
}

impl Core {
    pub(super) async fn halt_locked(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        op: &OpGuard<'_>,
        how: Halt,
    ) -> Result<()> {
        let rec = m.snapshot();
        let mut previous = rec.status;
        match previous {
            Status::Running | Status::Paused => {}
            // Holding the slot, these are left by a daemon that died mid-way
            // (reconcile has not settled them yet): whatever runs is stopped.
            Status::Starting | Status::Stopping => previous = Status::Running,
            Status::Stopped => return Err(Error::AlreadyInState(Status::Stopped.as_str())),
            s => {
                return Err(Error::InvalidState {
                    action: how.name(),
                    status: s.as_str(),
                })
            }
        }
        let runtime = self.runtime_for(m, &rec)?;
        self.commit(m, |r| r.status = Status::Stopping).await?;
        let call = self.settings.call_deadline;
        // A frozen workload cannot handle a stop signal; thaw it first.
        if previous == Status::Paused {
            match deadline(call, "resume", runtime.resume()).await {
                // Should the stop fail now, the machine is running, not paused.
                Ok(()) => previous = Status::Running,
                Err(e) => {
                    tracing::debug!(machine = %rec.name, "resume before stop: {}", e.report())
                }
            }
        }
        let graceful = async {
            match how {
                Halt::Stop => deadline(call + DEFAULT_SHUTDOWN_GRACE, "stop", runtime.stop()).await,
                Halt::Shutdown(grace) => {
                    deadline(call + grace, "shutdown", runtime.shutdown(grace)).await
                }
                Halt::Kill => deadline(call, "kill", runtime.kill()).await,
            }
        };
        let cancelled = op.cancelled();
        let res = tokio::select! {
            biased;
            res = graceful => res,
            // A kill overtook this stop: no more grace.
            by = cancelled => {
                tracing::info!(machine = %rec.name, "{} overtaken by {by}", how.name());
                deadline(call, "kill", runtime.kill()).await
            }
        };
        if let Err(e) = res {
            self.force(m, |r| r.status = previous).await;
            return Err(e).context(how.name());
        }
        // The run is over: its watcher must not report this exit a second time.
        m.next_generation();
        let exit = match deadline(call, "observe", runtime.observe()).await {
            Ok(crate::runtime::Observed::Exited { exit, .. }) => Some(exit),
            _ => None,
        };
        self.force(m, |r| {
            r.status = Status::Stopped;
            r.exit = exit;
            r.error.clear();
        })
        .await;
        Ok(())
    }

    pub(super) async fn pause_locked(&self, m: &Arc<Machine>, pause: bool) -> Result<()> {
        let rec = m.snapshot();
        let (from, to, action) = if pause {
            (Status::Running, Status::Paused, "pause")
        } else {
            (Status::Paused, Status::Running, "resume")
        };
        if rec.status == to {
            return Err(Error::AlreadyInState(to.as_str()));
        }
        if rec.status != from {
            return Err(Error::InvalidState {
                action,
                status: rec.status.as_str(),
            });
        }
        let runtime = self.runtime_for(m, &rec)?;
        let call = self.settings.call_deadline;
        if pause {
            deadline(call, action, runtime.pause()).await
        } else {
            deadline(call, action, runtime.resume()).await
        }
        .context(action)?;
        // The runtime has done it: a fact, recorded even if the store fails.
        self.force(m, |r| {
            r.status = to;
            r.error.clear();
        })
        .await;
        Ok(())
    }
}
