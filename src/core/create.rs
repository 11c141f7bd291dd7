//! Creating and deleting machines.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::machine::{read, write};
use super::{Core, LogFile, Machine};
use crate::error::{Error, Result, ResultExt};
use crate::model::{MachineName, MachineSpec, Status};

impl Core {
    /// Creates a pending machine. The name is reserved while the row is
    /// written, so two creators of one name cannot both win, yet nobody
    /// reading the registry waits for the disk.
    ///
    /// The write and the registration run on their own task: a caller that
    /// stops waiting (a REST client hung up) must not leave a row on disk
    /// that the registry never learns of, nor its name reserved forever.
    pub async fn create(
        self: &Arc<Self>,
        raw_name: &[u8],
        spec: MachineSpec,
    ) -> Result<Arc<Machine>> {
        let name = MachineName::parse(raw_name)?;
        spec.validate()?;
        {
            let mut reg = write(&self.registry);
            if reg.by_name.contains_key(&name) || !reg.reserved.insert(name.clone()) {
                return Err(Error::AlreadyExists(name.to_string()));
            }
        }
        let core = self.clone();
        let task = tokio::spawn(async move { core.register(name, spec).await });
        task.await
            .map_err(|e| Error::Runtime(format!("create aborted: {e}")))?
    }

    /// Writes the row of a reserved name and makes the machine visible; the
    /// reservation ends either way.
    async fn register(&self, name: MachineName, spec: MachineSpec) -> Result<Arc<Machine>> {
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = self
            .store_blocking({
                let (id, name) = (id.clone(), name.clone());
                move |store| store.insert(&id, &name, &spec)
            })
            .await;
        let mut reg = write(&self.registry);
        reg.reserved.remove(&name);
        let rec = inserted?;
        let m = Arc::new(Machine::new(rec.clone(), LogFile::new(&self.logs_dir, &id)));
        reg.by_seq.insert(rec.seq, m.clone());
        reg.by_name.insert(name.clone(), m.clone());
        drop(reg);
        tracing::info!(machine = %name, id = %id, "created");
        self.emit_about(&m, crate::model::Happening::Created);
        Ok(m)
    }

    /// Deletes a machine and everything it owns: its runtime's resources
    /// (a stopped container, a VMM's sockets), its runtime directory, its log.
    /// A machine that is `starting` has its start cancelled first.
    pub async fn delete(self: &Arc<Self>, m: &Arc<Machine>) -> Result<()> {
        m.cancel_pending_restart("rmdir");
        // Like a kill: nothing in progress holds up a delete for long.
        let cancelled =
            m.op.cancel_if(super::act::overtaken_by(crate::model::Verb::Kill), "rmdir");
        let wait = if cancelled {
            self.settings.cancel_wait
        } else {
            self.settings.busy_wait
        };
        self.detached(m, move |core, m| async move {
            let op = m.op.acquire("delete", wait).await?;
            core.delete_locked(&m, &op).await
        })
        .await
    }

    async fn delete_locked(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        op: &super::operation::OpGuard<'_>,
    ) -> Result<()> {
        if m.is_deleted() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        let mut rec = m.snapshot();
        // Left starting or stopping by a daemon that died (the slot is ours,
        // so nothing is in progress): whatever runs is put down first.
        if matches!(rec.status, Status::Starting | Status::Stopping) {
            self.halt_locked(m, op, super::halt::Halt::Kill).await?;
            rec = m.snapshot();
        }
        if rec.status.is_active() {
            return Err(Error::Busy(format!(
                "machine is {}; stop it before removing it",
                rec.status
            )));
        }
        // A machine that ran may still hold runtime resources (a stopped
        // container): they go first, so a failure here leaves the machine.
        // A pending one normally has none, but a start that timed out may
        // have left some: they are asked for too, and if the runtime cannot
        // be reached, the orphan sweep removes them once it can.
        let limit = self.settings.call_deadline;
        let removed = match self.runtime_for(m, &rec) {
            Ok(rt) => super::operation::deadline(limit, "remove", rt.remove())
                .await
                .context("remove its resources"),
            Err(e) => Err(e),
        };
        match removed {
            Err(e) if rec.status != Status::Pending || m.live().is_some() => return Err(e),
            Err(e) => tracing::info!(machine = %rec.name, "pending machine: {}", e.report()),
            Ok(()) => {}
        }
        let run_dir = self.machine_ref(&rec).runtime_dir;
        match std::fs::remove_dir_all(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", run_dir.display()), e)),
        }
        let seq = rec.seq;
        self.store_blocking(move |store| store.delete(seq)).await?;
        let subject = super::events::subject(&rec);
        self.changing(&subject);
        {
            let mut reg = write(&self.registry);
            reg.by_name.remove(&rec.name);
            reg.by_seq.remove(&rec.seq);
        }
        m.deleted.store(true, Ordering::SeqCst);
        m.next_generation();
        m.log_run.fetch_add(1, Ordering::SeqCst);
        m.set_live(None);
        m.wake_waiters();
        m.log.remove();
        tracing::info!(machine = %rec.name, id = %rec.id, "deleted");
        self.changed(
            subject,
            vec![crate::model::Happening::Deleted {
                status: rec.status,
                runtime: rec.spec.runtime_type(),
            }],
        );
        Ok(())
    }

    /// Every machine, for sweeps that visit them all.
    pub(super) fn machines(&self) -> Vec<Arc<Machine>> {
        read(&self.registry).by_seq.values().cloned().collect()
    }
}
