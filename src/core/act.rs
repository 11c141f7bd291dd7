//! The entry point of every action: capability check, cancellation of a
//! start that a stop overtakes, the machine's operation slot, dispatch.

use std::sync::Arc;

use super::halt::Halt;
use super::operation::OpGuard;
use super::start::StartFrom;
use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{Action, Status, Verb};

impl Core {
    /// Runs one action on a machine to completion. Its failure is recorded
    /// in the machine's `error` as well as returned, except a wait's.
    pub async fn act(self: &Arc<Self>, m: &Arc<Machine>, action: Action) -> Result<()> {
        if m.is_deleted() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        let kind = m.with_record(|r| r.spec.runtime_type());
        let verb = action.verb();
        let unsupported = self.drivers.contains_key(&kind) && !self.verbs(kind).contains(&verb);
        if let Action::Wait { target, timeout } = action {
            // A wait only reads: what became of it is its caller's to hear,
            // not the machine's history. Recorded, a timeout would replace
            // the failure the user is waiting out, and any reader could make
            // the store write at will.
            if unsupported {
                return Err(unsupported_verb(kind, verb));
            }
            // Changes nothing, so nothing to protect: an abandoned wait ends
            // with its caller.
            tracing::debug!(machine = %m.name(), ?target, "waiting");
            return self.wait_for(m, target, timeout).await;
        }
        if unsupported {
            return Err(self.report(m, unsupported_verb(kind, verb)).await);
        }
        // A stop overtakes a start in progress instead of queueing behind a
        // pull that may never end; a kill overtakes a slow stop as well.
        let cancels = m.op.cancel_if(overtaken_by(verb), verb.name());
        let wait = if cancels {
            self.settings.cancel_wait
        } else {
            self.settings.busy_wait
        };
        self.detached(m, move |core, m| async move {
            let op = m.op.acquire(verb.name(), wait).await?;
            if m.is_deleted() {
                return Err(Error::NotFound(m.name().to_string()));
            }
            // A user's start or stop decides over a restart the restart
            // policy has scheduled; a stop is then done by cancelling it.
            if decides_restarts(verb) && m.cancel_pending_restart(verb.name()) && is_stop(verb) {
                let line = format!(
                    "a restart by the restart policy was cancelled by {}",
                    verb.name()
                );
                return core
                    .commit(&m, |r| {
                        r.status = Status::Stopped;
                        r.set_error(line);
                    })
                    .await;
            }
            let name = m.name();
            tracing::info!(machine = %name, id = %m.id(), op = %verb.name(), "begin");
            let res = core.act_locked(&m, action, &op, cancels).await;
            if res.is_ok() {
                tracing::info!(machine = %name, op = %verb.name(), status = %m.status(), "done");
            }
            res
        })
        .await
    }

    async fn act_locked(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        action: Action,
        op: &OpGuard<'_>,
        cancelled_a_start: bool,
    ) -> Result<()> {
        match action {
            Action::Start => self.start_locked(m, op, StartFrom::Spec).await,
            Action::Restore { dir } => self.start_locked(m, op, StartFrom::Snapshot(dir)).await,
            Action::Restart => {
                if matches!(m.status(), Status::Running | Status::Paused) {
                    self.halt_locked(m, op, Halt::Stop).await?;
                }
                self.start_locked(m, op, StartFrom::Spec).await
            }
            Action::Stop | Action::Kill | Action::Shutdown { .. }
                if cancelled_a_start && m.status() == Status::Stopped =>
            {
                // The start it cancelled left the machine stopped: done.
                Ok(())
            }
            Action::Stop => self.halt_locked(m, op, Halt::Stop).await,
            Action::Kill => self.halt_locked(m, op, Halt::Kill).await,
            Action::Shutdown { grace } => self.halt_locked(m, op, Halt::Shutdown(grace)).await,
            Action::Pause => self.pause_locked(m, true).await,
            Action::Resume => self.pause_locked(m, false).await,
            Action::Resize { .. }
            | Action::AddDisk { .. }
            | Action::RemoveDevice { .. }
            | Action::Snapshot { .. } => self.device_locked(m, action).await,
            // Handled before the slot is taken.
            Action::Wait { .. } => Ok(()),
        }
    }
}

fn unsupported_verb(kind: crate::model::RuntimeKind, verb: Verb) -> Error {
    Error::Unsupported {
        runtime: kind.to_string(),
        operation: verb.name().into(),
    }
}

/// The operations `verb` cancels rather than waits for.
pub(super) fn overtaken_by(verb: Verb) -> &'static [&'static str] {
    match verb {
        Verb::Kill => &["start", "restart", "restore", "stop", "shutdown"],
        Verb::Stop | Verb::Shutdown => &["start", "restart", "restore"],
        _ => &[],
    }
}

fn is_stop(verb: Verb) -> bool {
    matches!(verb, Verb::Stop | Verb::Kill | Verb::Shutdown)
}

/// Verbs by which a user decides whether the machine runs.
fn decides_restarts(verb: Verb) -> bool {
    is_stop(verb) || matches!(verb, Verb::Start | Verb::Restart | Verb::Restore)
}
