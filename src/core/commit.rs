//! Recording changes: durably before they are visible, and never on a
//! filesystem thread or under the registry lock, so a slow disk delays only
//! the operation that writes, never a reader.

use std::future::Future;
use std::sync::Arc;

use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{now_ms, MachineRecord};

impl Core {
    /// A requested change: durable first, then visible.
    pub(super) async fn commit(
        &self,
        m: &Machine,
        change: impl FnOnce(&mut MachineRecord),
    ) -> Result<()> {
        self.apply(m, change, true).await
    }

    /// What a runtime has already made true (a workload exited, a start was
    /// undone): recorded in memory even if the store fails, since reality
    /// will not wait; the next commit or a restart's reconcile catches up.
    pub(super) async fn force(&self, m: &Machine, change: impl FnOnce(&mut MachineRecord)) {
        if let Err(e) = self.apply(m, change, false).await {
            tracing::warn!(machine = %m.name(), "cannot persist a change: {}", e.report());
        }
    }

    async fn apply(
        &self,
        m: &Machine,
        change: impl FnOnce(&mut MachineRecord),
        durable_first: bool,
    ) -> Result<()> {
        let _serial = m.commit_lock.lock().await;
        let mut next = m.snapshot();
        change(&mut next);
        next.updated_ms = now_ms();
        let stored = self.store_blocking({
            let rec = next.clone();
            move |store| store.update(&rec)
        });
        let stored = stored.await;
        if durable_first {
            stored.clone()?;
        }
        // Before the caller hears it is done: see `events`.
        let subject = super::events::subject(&next);
        self.changing(&subject);
        let new = next.clone();
        let old = m.publish(next);
        self.changed(subject, super::events::diff(&old, &new));
        m.announce_transitions();
        stored
    }

    /// Runs a store call on the blocking pool: SQLite's fsync must never
    /// occupy a thread that serves the filesystem or async tasks.
    pub(super) async fn store_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| Error::Store(format!("store task failed: {e}")))?
    }

    /// Records `err` as the machine's last failure: one line, whole chain.
    pub(super) async fn note_error(&self, m: &Machine, err: &Error) {
        self.note_line(m, err.report().to_string()).await
    }

    async fn note_line(&self, m: &Machine, line: String) {
        tracing::info!(machine = %m.name(), id = %m.id(), error = %line, "operation failed");
        if let Err(e) = self.commit(m, |r| r.push_error(line)).await {
            tracing::warn!(machine = %m.name(), "cannot record error: {}", e.report());
        }
    }

    /// Records a failure a front end detected itself (a write too large, a
    /// malformed command) in the machine's `error`, and hands it back. The
    /// record is written on its own task: a caller that stops waiting must
    /// not leave the store holding an error that memory does not.
    pub async fn report(self: &Arc<Self>, m: &Arc<Machine>, err: Error) -> Error {
        if m.is_deleted() {
            return err;
        }
        let (core, machine) = (self.clone(), m.clone());
        let line = err.report().to_string();
        let noted = tokio::spawn(async move { core.note_line(&machine, line).await });
        if let Err(e) = noted.await {
            tracing::warn!(machine = %m.name(), "cannot record error: {e}");
        }
        err
    }

    pub(super) async fn outcome<T>(&self, m: &Machine, res: Result<T>) -> Result<T> {
        if let Err(e) = &res {
            if !m.is_deleted() {
                self.note_error(m, e).await;
            }
        }
        res
    }

    /// Runs an operation on `m` to completion on its own task, so a front
    /// end that stops waiting (a REST client hung up, a writer killed)
    /// cannot cancel it half-way and leave a machine `starting` or
    /// `stopping` forever; its failure is recorded in `error` either way.
    pub(super) async fn detached<T, F, Fut>(self: &Arc<Self>, m: &Arc<Machine>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Core>, Arc<Machine>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let core = self.clone();
        let fut = op(core.clone(), m.clone());
        let machine = m.clone();
        let task = tokio::spawn(async move {
            let res = fut.await;
            core.outcome(&machine, res).await
        });
        match task.await {
            Ok(res) => res,
            Err(e) => {
                let err = Error::Runtime(format!("operation aborted: {e}"));
                self.note_error(m, &err).await;
                Err(err)
            }
        }
    }
}
