//! After a restart (clean or `kill -9`), line the stored state up with what
//! the runtimes actually run: re-adopt live workloads, record those that died
//! meanwhile, and remove resources whose machine no longer exists. Nothing is
//! ever started here, so nothing can run twice.

use std::collections::HashSet;
use std::sync::Arc;

use super::lifecycle::exit_outcome;
use super::{lock, Core, Status};
use crate::runtime::{Health, Observed};

impl Core {
    /// Adopts or settles every active machine that has no runtime attached;
    /// with `sweep`, also removes orphaned resources. Cheap when all is well,
    /// so the health monitor runs it on every tick.
    pub async fn reconcile(self: &Arc<Self>, sweep: bool) {
        let machines: Vec<_> = super::read(&self.registry)
            .by_seq
            .values()
            .cloned()
            .collect();
        for m in &machines {
            // A machine busy with an operation gets its runtime from that operation.
            let Ok(_op) = m.op.try_lock() else { continue };
            let rec = m.snapshot();
            if !matches!(self.health(rec.spec.runtime_type), Health::Available { .. }) {
                continue;
            }
            // Machines whose run is already followed need nothing; the rest
            // were left by an earlier daemon or by a runtime that was down.
            if !rec.status.is_active() || m.live().is_some() {
                continue;
            }
            let runtime = match self.new_runtime(m, &rec) {
                Ok(rt) => rt,
                Err(e) => {
                    self.note_error(m, &e);
                    continue;
                }
            };
            let observed = match runtime.observe().await {
                Ok(o) => o,
                Err(e) => {
                    // Leave the status alone: the workload may well be running.
                    tracing::warn!("cannot reconcile {}: {e}", rec.name);
                    self.note_error(m, &e);
                    continue;
                }
            };
            let down = " while hyperfleet was not running";
            // What the runtime reports is a fact: it is recorded even if the
            // store fails now (the next commit catches up).
            match observed {
                Observed::Running | Observed::Paused => {
                    let status = if observed == Observed::Running {
                        Status::Running
                    } else {
                        Status::Paused
                    };
                    let generation = m.next_generation();
                    *lock(&m.live) = Some(runtime.clone());
                    self.force(m, |r| r.status = status);
                    self.follow_run(m, runtime, generation);
                    tracing::info!("re-adopted {} ({status})", rec.name);
                }
                Observed::Exited { exit_code, reason } => {
                    let (status, error) = if rec.status == Status::Stopping {
                        (Status::Stopped, String::new())
                    } else {
                        exit_outcome(exit_code, reason.as_deref(), down)
                    };
                    *lock(&m.live) = Some(runtime);
                    self.force(m, |r| {
                        r.status = status;
                        r.exit_code = Some(exit_code);
                        r.error = error;
                    });
                }
                Observed::Missing => self.force(m, |r| {
                    r.status = Status::Failed;
                    r.error = if rec.status == Status::Starting {
                        format!(
                            "hyperfleet stopped while starting it; no {} workload was left",
                            rec.spec.runtime_type
                        )
                    } else {
                        format!("its {} workload disappeared{down}", rec.spec.runtime_type)
                    };
                }),
            }
        }
        if sweep {
            self.remove_orphans().await;
        }
    }

    /// Removes runtime resources labelled with this instance whose machine is gone
    /// (say, the daemon died between removing a container and the store row).
    async fn remove_orphans(&self) {
        for (kind, driver) in &self.drivers {
            if !matches!(self.health(*kind), Health::Available { .. }) {
                continue;
            }
            let owned = match driver.owned_machine_ids(&self.instance).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!("cannot list {kind} resources: {e}");
                    continue;
                }
            };
            // Taken after the listing, so a machine created meanwhile is known.
            let known: HashSet<String> = super::read(&self.registry)
                .by_seq
                .values()
                .map(|m| m.snapshot().id)
                .collect();
            for id in owned.into_iter().filter(|id| !known.contains(id)) {
                let mref = crate::runtime::MachineRef {
                    id: id.clone(),
                    name: String::new(),
                    instance: self.instance.clone(),
                };
                let sink: crate::runtime::ProgressSink = Arc::new(|_: &str| {});
                let removed = match driver.runtime(&mref, &Default::default(), sink) {
                    Ok(rt) => rt.remove().await,
                    Err(e) => Err(e),
                };
                match removed {
                    Ok(()) => tracing::info!("removed orphaned {kind} resources of machine {id}"),
                    Err(e) => {
                        tracing::warn!("cannot remove orphaned {kind} resources of {id}: {e}")
                    }
                }
            }
        }
    }
}
