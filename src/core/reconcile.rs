//! After a restart (clean or `kill -9`), line the stored state up with what
//! the runtimes actually run: re-adopt live workloads, record those that
//! died meanwhile, finish or roll back what an earlier daemon left
//! half-done, and remove resources whose machine no longer exists.
//!
//! Two rules: nothing is ever started here, so nothing can run twice; and
//! a machine is recorded as not running only when no workload of it runs
//! (one that does is re-adopted, or, if it was being stopped, stopped).
//! A workload in a transitional state (created, removing) is not yet
//! known: it is looked at again until it settles. One its runtime's own
//! restart policy is restarting counts as running.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::machine::lock;
use super::operation::deadline;
use super::run::{exit_line, RunLog};
use super::{Core, Machine};
use crate::model::{Exit, Status};
use crate::runtime::{null_sink, MachineRef, Observed};

const DOWN: &str = " while hyperfleet was not running";

impl Core {
    /// Adopts or settles every active machine that has no runtime attached;
    /// with `sweep`, also removes orphaned resources. Cheap when all is well,
    /// so the health monitor runs it on every tick. Says whether every
    /// machine is settled (false: look again soon).
    pub async fn reconcile(self: &Arc<Self>, sweep: bool) -> bool {
        let mut settled = true;
        for m in self.machines() {
            settled &= self.reconcile_one(&m).await;
        }
        if sweep {
            self.remove_orphans().await;
        }
        settled
    }

    async fn reconcile_one(self: &Arc<Self>, m: &Arc<Machine>) -> bool {
        // A machine busy with an operation gets its runtime from that operation.
        let Some(_op) = m.op.try_acquire("reconcile") else {
            return true;
        };
        let rec = m.snapshot();
        // Machines whose run is already followed need nothing; the rest were
        // left by an earlier daemon or by a runtime that was down.
        if !rec.status.is_active() || m.live().is_some() || m.is_deleted() {
            return true;
        }
        if !self.health(rec.spec.runtime_type()).is_available() {
            return true;
        }
        let runtime = match self.new_runtime(m, &rec) {
            Ok(rt) => rt,
            Err(e) => {
                self.note_error(m, &e).await;
                return true;
            }
        };
        let call = self.settings.call_deadline;
        let observed = match deadline(call, "adopt", runtime.adopt()).await {
            Ok(o) => o,
            Err(e) => {
                // Leave the status alone: the workload may well be running.
                tracing::warn!(machine = %rec.name, "cannot reconcile: {}", e.report());
                let err = e.context("reconcile");
                // Once is enough: this runs every half second until it works.
                if m.with_record(|r| r.error != err.report().to_string()) {
                    self.note_error(m, &err).await;
                }
                return false;
            }
        };
        let observed = match observed {
            // Between two runs of the runtime's own restart policy (a
            // crash-looping container Docker backs off for up to a minute):
            // the policy owns it, so it is adopted as running, never put
            // down; the exit watcher follows it across its restarts.
            Observed::Restarting => Observed::Running,
            Observed::Transitional(what) => {
                let since = *lock(&m.transitional_since).get_or_insert_with(Instant::now);
                if since.elapsed() < self.settings.transitional_patience {
                    tracing::debug!(machine = %rec.name, "workload is {what}; looking again");
                    return false;
                }
                // It never settled. Whatever it is, it must not run behind a
                // status that says it does not: it is killed, and if it is
                // still not settled (a container that was created and never
                // started cannot be killed), removed.
                match self.put_down(&runtime).await {
                    Ok(()) => Observed::Exited {
                        exit: Exit::Unknown,
                        reason: Some(format!(
                            "its workload stayed {what} for {:.0}s after hyperfleet restarted, and was put down",
                            since.elapsed().as_secs_f64()
                        )),
                    },
                    Err(e) => {
                        tracing::warn!(machine = %rec.name, "cannot put down a {what} workload: {}", e.report());
                        return false;
                    }
                }
            }
            o => o,
        };
        lock(&m.transitional_since).take();
        // What the runtime reports is a fact: it is recorded even if the
        // store fails now (the next commit catches up).
        match observed {
            Observed::Running | Observed::Paused if rec.status == Status::Stopping => {
                // The user asked for a stop the earlier daemon did not finish.
                let stopped = deadline(
                    call + crate::model::action::DEFAULT_SHUTDOWN_GRACE,
                    "stop",
                    runtime.stop(),
                )
                .await;
                match deadline(call, "observe", runtime.observe()).await {
                    Ok(o @ (Observed::Exited { .. } | Observed::Missing)) => {
                        let exit = match o {
                            Observed::Exited { exit, .. } => Some(exit),
                            _ => None,
                        };
                        m.set_live(Some(runtime));
                        self.force(m, |r| {
                            r.status = Status::Stopped;
                            r.exit = exit;
                            r.set_error(
                                "hyperfleet stopped while stopping it; the stop was completed when it restarted"
                                    .into(),
                            );
                        })
                        .await;
                    }
                    still => {
                        // It runs on: it is followed as running, and the
                        // failed stop is said, so the user can stop it again.
                        let why = match (stopped, still) {
                            (Err(e), _) | (_, Err(e)) => e.report().to_string(),
                            (Ok(()), Ok(o)) => format!("the workload is still {o:?}"),
                        };
                        self.adopt_run(m, runtime, Status::Running).await;
                        self.force(m, |r| {
                            r.set_error(format!(
                                "hyperfleet stopped while stopping it; completing the stop failed: {why}"
                            ))
                        })
                        .await;
                    }
                }
            }
            Observed::Running | Observed::Paused => {
                let status = if observed == Observed::Running {
                    Status::Running
                } else {
                    Status::Paused
                };
                self.adopt_run(m, runtime, status).await;
                tracing::info!(machine = %rec.name, id = %rec.id, %status, "re-adopted");
            }
            Observed::Exited { exit, reason } => {
                let (status, error) = match rec.status {
                    Status::Stopping => (Status::Stopped, String::new()),
                    Status::Starting => (
                        exit.status(),
                        exit_line(
                            exit,
                            reason.as_deref(),
                            "; hyperfleet stopped while starting it",
                        ),
                    ),
                    _ => (exit.status(), exit_line(exit, reason.as_deref(), DOWN)),
                };
                m.set_live(Some(runtime));
                self.force(m, |r| {
                    r.status = status;
                    r.exit = Some(exit);
                    r.set_error(error);
                })
                .await;
            }
            Observed::Missing => {
                let kind = rec.spec.runtime_type();
                self.force(m, |r| {
                    r.status = Status::Failed;
                    r.set_error(if rec.status == Status::Starting {
                        format!("hyperfleet stopped while starting it; no {kind} workload was left")
                    } else {
                        format!("its {kind} workload disappeared{DOWN}")
                    });
                })
                .await
            }
            Observed::Transitional(_) | Observed::Restarting => {}
        }
        true
    }

    /// Makes a workload found running the machine's current, followed run.
    async fn adopt_run(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        runtime: Arc<dyn crate::runtime::Runtime>,
        status: Status,
    ) {
        let generation = m.next_generation();
        m.set_live(Some(runtime.clone()));
        self.force(m, |r| r.status = status).await;
        self.follow_run(m, runtime, generation, RunLog::Resume);
    }

    /// Ends a workload that never settled: kill, and remove what a kill
    /// cannot end; succeeds only once the runtime says nothing runs.
    async fn put_down(
        &self,
        runtime: &Arc<dyn crate::runtime::Runtime>,
    ) -> crate::error::Result<()> {
        let call = self.settings.call_deadline;
        deadline(call, "kill", runtime.kill()).await?;
        if let Observed::Exited { .. } | Observed::Missing =
            deadline(call, "observe", runtime.observe()).await?
        {
            return Ok(());
        }
        deadline(call, "remove", runtime.remove()).await?;
        match deadline(call, "observe", runtime.observe()).await? {
            Observed::Exited { .. } | Observed::Missing => Ok(()),
            o => Err(crate::error::Error::Runtime(format!(
                "it is still {o:?} after a kill and a removal"
            ))),
        }
    }

    /// Removes runtime resources labelled with this instance whose machine
    /// is gone (say, the daemon died between removing a container and the
    /// store row).
    async fn remove_orphans(&self) {
        for (kind, driver) in &self.drivers {
            if !self.health(*kind).is_available() {
                continue;
            }
            let call = self.settings.call_deadline;
            let owned = match deadline(
                call,
                "list resources",
                driver.owned_machine_ids(&self.instance),
            )
            .await
            {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!("cannot list {kind} resources: {}", e.report());
                    continue;
                }
            };
            // Taken after the listing, so a machine created meanwhile is known.
            let known: HashSet<String> = self.machines().iter().map(|m| m.id()).collect();
            for id in owned.into_iter().filter(|id| !known.contains(id)) {
                let mref = MachineRef {
                    id: id.clone(),
                    name: String::new(),
                    instance: self.instance.clone(),
                    runtime_dir: self.run_dir.join(&id),
                };
                let removed = match driver.runtime(&mref, &Default::default(), null_sink()) {
                    Ok(rt) => deadline(call, "remove", rt.remove()).await,
                    Err(e) => Err(e),
                };
                match removed {
                    Ok(()) => {
                        let _ = std::fs::remove_dir_all(&mref.runtime_dir);
                        tracing::info!("removed orphaned {kind} resources of machine {id}")
                    }
                    Err(e) => {
                        tracing::warn!(
                            "cannot remove orphaned {kind} resources of {id}: {}",
                            e.report()
                        )
                    }
                }
            }
        }
    }
}
