//! `start` (and `restore`, which starts from a snapshot): the transition
//! pending/stopped/failed → starting → running, cancellable at any point.

use std::path::PathBuf;
use std::sync::Arc;

use super::operation::{deadline, OpGuard};
use super::run::RunLog;
use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{now_ms, Status};
use crate::runtime::{Observed, Runtime};

/// What a start starts from.
pub(super) enum StartFrom {
    /// A fresh workload made from the spec.
    Spec,
    /// The same, by the restart policy: the log goes on.
    Policy,
    /// A VM snapshot in a directory.
    Snapshot(PathBuf),
}

impl Core {
    pub(super) async fn start_locked(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        op: &OpGuard<'_>,
        from: StartFrom,
    ) -> Result<()> {
        let rec = m.snapshot();
        let verb = match from {
            StartFrom::Spec | StartFrom::Policy => "start",
            StartFrom::Snapshot(_) => "restore",
        };
        match rec.status {
            s if s.can_start() => {}
            s @ (Status::Running | Status::Paused) => {
                return Err(Error::AlreadyInState(s.as_str()))
            }
            s => {
                return Err(Error::InvalidState {
                    action: verb,
                    status: s.as_str(),
                })
            }
        }
        if let StartFrom::Spec | StartFrom::Policy = from {
            rec.spec.check_complete()?;
            if let Some(vm) = rec.spec.vm_spec() {
                vm.check_host_files()?;
            }
        }
        let runtime = self.new_runtime(m, &rec)?;
        let previous = rec.status;
        self.commit(m, |r| r.status = Status::Starting).await?;
        let attempt = async {
            match &from {
                StartFrom::Spec | StartFrom::Policy => runtime.start().await,
                StartFrom::Snapshot(dir) => runtime.restore(dir).await,
            }
        };
        let cancelled = op.cancelled();
        tokio::select! {
            // A start that has finished wins over a cancel arriving with it.
            biased;
            res = deadline(self.settings.start_deadline, verb, attempt) => {
                if let Err(e) = res {
                    m.log.note(&format!("{verb} failed: {}", e.report()));
                    // A runtime cleans up after its own failures, but not
                    // after a start cut short by the deadline: what that
                    // start made must not run behind a status that says not.
                    if let Err(l) = self.undo_start(&runtime).await {
                        // The start's own failure is what the caller hears;
                        // the runtime's unavailability usually explains both.
                        tracing::warn!(machine = %m.name(), "cleaning up a failed start: {}", l.report());
                    }
                    self.force(m, |r| r.status = previous).await;
                    return Err(e.context(verb));
                }
            }
            by = cancelled => {
                // The start's future is dropped here; what it made goes too.
                let undone = self.undo_start(&runtime).await;
                let err = Error::Cancelled { operation: verb.into(), by };
                let mut line = err.report().to_string();
                if let Err(e) = undone {
                    line.push_str(&format!("; {}", e.report()));
                }
                m.log.note(&line);
                self.force(m, |r| {
                    r.status = Status::Stopped;
                    r.set_error(line);
                })
                .await;
                return Err(err);
            }
        }
        let log = match from {
            StartFrom::Policy => RunLog::Append,
            _ => RunLog::Fresh,
        };
        self.begin_run(m, runtime, previous, log).await
    }

    /// Makes sure nothing of an interrupted start runs: what the runtime
    /// knows it made goes, and if the start had taken effect after all (a
    /// cancel that landed as the engine finished), that workload is killed.
    async fn undo_start(&self, runtime: &Arc<dyn Runtime>) -> Result<()> {
        let call = self.settings.call_deadline;
        deadline(
            call,
            "cleaning up the interrupted start",
            runtime.abandon_start(),
        )
        .await?;
        match deadline(call, "observe", runtime.observe()).await? {
            Observed::Running
            | Observed::Paused
            | Observed::Restarting
            | Observed::Transitional(_) => {
                deadline(call, "kill", runtime.kill()).await?;
                match deadline(call, "observe", runtime.observe()).await? {
                    Observed::Exited { .. } | Observed::Missing => Ok(()),
                    o => Err(Error::Runtime(format!(
                        "the interrupted start's workload is still {o:?} after a kill"
                    ))),
                }
            }
            Observed::Exited { .. } | Observed::Missing => Ok(()),
        }
    }

    /// Records a workload that now runs as the machine's current run and
    /// starts following it.
    pub(super) async fn begin_run(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        runtime: Arc<dyn Runtime>,
        previous: Status,
        log: RunLog,
    ) -> Result<()> {
        let generation = m.next_generation();
        m.set_live(Some(runtime.clone()));
        let committed = self
            .commit(m, |r| {
                r.status = Status::Running;
                r.started_ms = Some(now_ms());
                r.exit = None;
                r.error.clear();
            })
            .await;
        if let Err(e) = committed {
            // A run the store does not know about must not survive.
            let _ = deadline(self.settings.call_deadline, "kill", runtime.kill()).await;
            m.next_generation();
            self.force(m, |r| r.status = previous).await;
            return Err(e.context("record the start"));
        }
        self.follow_run(m, runtime, generation, log);
        Ok(())
    }
}
