//! The core: the one owner of machines. It validates every request, runs the
//! lifecycle state machine, persists each change before reporting it done, and
//! drives runtimes. Front ends (the filesystem, REST) only translate their
//! requests into calls here and hold no state of their own.

pub mod command;
pub mod logfile;
pub mod name;
pub mod spec;
pub mod status;

mod lifecycle;
mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use command::{ExecCommand, ResultFormat, Verb};
pub use logfile::LogFile;
pub use name::MachineName;
pub use spec::{MachineSpec, RuntimeKind, MAX_WRITE};
pub use status::Status;

use crate::error::{Error, Result};
use crate::runtime::{Capability, Driver, ExecOutput, Health, MachineRef, Runtime};
use crate::store::{now_ms, MachineRecord, Store};

/// How long a config write waits for a lifecycle operation to finish.
const CONFIG_LOCK_WAIT: Duration = Duration::from_secs(2);

/// One machine: its persisted record plus what only lives while the daemon runs.
pub struct Machine {
    record: RwLock<MachineRecord>,
    /// Serialises writers of `record` so read-modify-write cannot lose an update.
    commit_lock: Mutex<()>,
    /// Serialises lifecycle operations: one start/stop/... at a time per machine.
    op: tokio::sync::Mutex<()>,
    /// The runtime of the current (or last) run, if any.
    live: Mutex<Option<Arc<dyn Runtime>>>,
    /// Bumped whenever a run ends or begins, so background tasks of an old
    /// run recognise that they are stale.
    generation: AtomicU64,
    /// Bumped when `logs` starts afresh; a log follower of an older run stops.
    log_run: AtomicU64,
    deleted: AtomicBool,
    status_tx: watch::Sender<Status>,
    /// The result of the most recent `exec`.
    last_exec: Mutex<Option<Arc<ExecOutput>>>,
    log: LogFile,
}

impl Machine {
    fn new(rec: MachineRecord, log: LogFile) -> Machine {
        let (status_tx, _) = watch::channel(rec.status);
        Machine {
            record: RwLock::new(rec),
            commit_lock: Mutex::new(()),
            op: tokio::sync::Mutex::new(()),
            live: Mutex::new(None),
            generation: AtomicU64::new(0),
            log_run: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            status_tx,
            last_exec: Mutex::new(None),
            log,
        }
    }

    /// A consistent copy of the persisted state. Never touches a runtime.
    pub fn snapshot(&self) -> MachineRecord {
        read(&self.record).clone()
    }

    pub fn status(&self) -> Status {
        read(&self.record).status
    }

    /// The name alone, without copying the rest of the record.
    pub fn name(&self) -> String {
        read(&self.record).name.to_string()
    }

    pub fn seq(&self) -> u64 {
        read(&self.record).seq
    }

    pub fn last_exec(&self) -> Option<Arc<ExecOutput>> {
        lock(&self.last_exec).clone()
    }

    pub fn log(&self) -> &LogFile {
        &self.log
    }

    fn live(&self) -> Option<Arc<dyn Runtime>> {
        lock(&self.live).clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

// Poisoning only follows a panic elsewhere; the data is still consistent
// because every writer replaces whole values.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Registry {
    by_name: BTreeMap<MachineName, Arc<Machine>>,
    by_seq: HashMap<u64, Arc<Machine>>,
}

/// The stored facts of a machine as JSON: what `info` starts from and what
/// REST returns for a machine.
pub fn describe(rec: &MachineRecord) -> serde_json::Value {
    serde_json::json!({
        "id": rec.id,
        "name": rec.name.as_str(),
        "runtime_type": rec.spec.runtime_type,
        "status": rec.status.as_str(),
        "error": rec.error,
        "exit_code": rec.exit_code,
        "config": rec.spec,
        "created_at_ms": rec.created_ms,
        "updated_at_ms": rec.updated_ms,
        "started_at_ms": rec.started_ms,
    })
}

/// What a directory listing needs of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEntry {
    pub seq: u64,
    pub name: MachineName,
    pub status: Status,
    pub runtime: RuntimeKind,
}

pub struct Core {
    store: Store,
    instance: String,
    drivers: BTreeMap<RuntimeKind, Arc<dyn Driver>>,
    health: RwLock<BTreeMap<RuntimeKind, Health>>,
    registry: RwLock<Registry>,
    logs_dir: PathBuf,
}

impl Core {
    /// Opens (or creates) the state in `state_dir` and loads every machine.
    /// Call [`Core::reconcile`] next to line the state up with the runtimes.
    pub fn open(state_dir: &Path, drivers: Vec<Arc<dyn Driver>>) -> Result<Arc<Core>> {
        let io = |e: std::io::Error| Error::Store(format!("{}: {e}", state_dir.display()));
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let logs_dir = state_dir.join("logs");
        std::fs::create_dir_all(&logs_dir).map_err(io)?;
        let store = Store::open(&state_dir.join("hyperfleet.db"))?;
        let instance = store.instance_id()?;
        let mut registry = Registry::default();
        for rec in store.load_all()? {
            let log = LogFile::new(&logs_dir, &rec.id);
            let m = Arc::new(Machine::new(rec.clone(), log));
            registry.by_seq.insert(rec.seq, m.clone());
            registry.by_name.insert(rec.name, m);
        }
        let health = RuntimeKind::ALL
            .into_iter()
            .map(|k| {
                (
                    k,
                    Health::Unavailable {
                        reason: "not probed yet".into(),
                    },
                )
            })
            .collect();
        Ok(Arc::new(Core {
            store,
            instance,
            drivers: drivers.into_iter().map(|d| (d.kind(), d)).collect(),
            health: RwLock::new(health),
            registry: RwLock::new(registry),
            logs_dir,
        }))
    }

    // ----- reads: served from memory, never from a runtime -----

    pub fn list(&self) -> Vec<MachineEntry> {
        read(&self.registry)
            .by_name
            .values()
            .map(|m| {
                let r = read(&m.record);
                MachineEntry {
                    seq: r.seq,
                    name: r.name.clone(),
                    status: r.status,
                    runtime: r.spec.runtime_type,
                }
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Machine>> {
        read(&self.registry)
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// A machine by name or by id (REST addresses machines either way).
    pub fn find(&self, key: &str) -> Result<Arc<Machine>> {
        if let Ok(m) = self.get(key) {
            return Ok(m);
        }
        read(&self.registry)
            .by_seq
            .values()
            .find(|m| read(&m.record).id == key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.to_owned()))
    }

    pub fn get_by_seq(&self, seq: u64) -> Option<Arc<Machine>> {
        read(&self.registry).by_seq.get(&seq).cloned()
    }

    pub fn health(&self, kind: RuntimeKind) -> Health {
        read(&self.health)
            .get(&kind)
            .cloned()
            .unwrap_or(Health::Unavailable {
                reason: "unknown runtime".into(),
            })
    }

    /// The verbs `ctl` accepts for a runtime kind.
    pub fn capabilities(&self, kind: RuntimeKind) -> &'static [Capability] {
        self.drivers
            .get(&kind)
            .map(|d| d.capabilities())
            .unwrap_or(&[])
    }

    // ----- writes -----

    pub fn create(&self, raw_name: &[u8]) -> Result<MachineRecord> {
        self.create_with_spec(raw_name, MachineSpec::default())
    }

    pub fn create_with_spec(&self, raw_name: &[u8], spec: MachineSpec) -> Result<MachineRecord> {
        let name = MachineName::parse(raw_name)?;
        spec.validate()?;
        // Held across the insert so two creators of one name cannot both win.
        let mut reg = write(&self.registry);
        if reg.by_name.contains_key(&name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let rec = self.store.insert(&id, &name, &spec)?;
        let m = Arc::new(Machine::new(rec.clone(), LogFile::new(&self.logs_dir, &id)));
        reg.by_seq.insert(rec.seq, m.clone());
        reg.by_name.insert(name, m);
        Ok(rec)
    }

    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<()> {
        let m = self.get(name)?;
        self.detached(m, |core, m| async move { core.delete_machine(&m).await })
            .await
    }

    /// Runs an operation on `m` to completion on its own task, so a front
    /// end that stops waiting (a REST client hung up) cannot cancel it
    /// half-way and leave a machine `starting` or `stopping` forever; its
    /// failure is recorded in the machine's `error` either way.
    async fn detached<T, F, Fut>(self: &Arc<Self>, m: Arc<Machine>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Core>, Arc<Machine>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let core = self.clone();
        let fut = op(core.clone(), m.clone());
        let machine = m.clone();
        let task = tokio::spawn(async move {
            let res = fut.await;
            core.outcome(&machine, res)
        });
        match task.await {
            Ok(res) => res,
            Err(e) => {
                let err = Error::Runtime(format!("operation aborted: {e}"));
                self.note_error(&m, &err);
                Err(err)
            }
        }
    }

    async fn delete_machine(&self, m: &Arc<Machine>) -> Result<()> {
        let _op = m.op.lock().await;
        let rec = m.snapshot();
        if rec.status.is_active() {
            return Err(Error::Busy(format!(
                "machine is {}; stop it before removing it",
                rec.status
            )));
        }
        if rec.status != Status::Pending {
            // A machine that ran may still hold runtime resources (a stopped
            // container): they go first, so a failure here leaves the machine.
            self.runtime_for(m, &rec)?.remove().await?;
        }
        self.store.delete(rec.seq)?;
        {
            let mut reg = write(&self.registry);
            reg.by_name.remove(&rec.name);
            reg.by_seq.remove(&rec.seq);
        }
        m.deleted.store(true, Ordering::SeqCst);
        m.next_generation();
        m.log_run.fetch_add(1, Ordering::SeqCst);
        m.status_tx.send_modify(|_| {});
        m.log.remove();
        Ok(())
    }

    /// Replaces a machine's spec. Only while it holds no running workload.
    pub async fn set_config(self: &Arc<Self>, name: &str, bytes: &[u8]) -> Result<()> {
        let m = self.get(name)?;
        let bytes = bytes.to_vec();
        self.detached(
            m,
            |core, m| async move { core.set_config_of(&m, &bytes).await },
        )
        .await
    }

    async fn set_config_of(&self, m: &Arc<Machine>, bytes: &[u8]) -> Result<()> {
        let spec = MachineSpec::parse(bytes)?;
        // Brief holders (an exit being recorded) are waited for; a start in
        // progress is not.
        let _op = tokio::time::timeout(CONFIG_LOCK_WAIT, m.op.lock())
            .await
            .map_err(|_| Error::Busy("another operation on this machine is in progress".into()))?;
        let rec = m.snapshot();
        if rec.status.is_active() {
            return Err(Error::Busy(format!(
                "machine is {}; stop it before changing its config",
                rec.status
            )));
        }
        let switching = rec.spec.runtime_type != spec.runtime_type;
        if switching && rec.status != Status::Pending {
            // The old runtime's leftovers would be unreachable under the new
            // one; with them gone the machine has nothing anywhere: pending.
            self.runtime_for(m, &rec)?.remove().await?;
            *lock(&m.live) = None;
        }
        self.commit(m, |r| {
            r.spec = spec;
            r.error.clear();
            if switching {
                r.status = Status::Pending;
                r.exit_code = None;
            }
        })
    }

    /// Records a failure that a front end detected itself (say, a write that
    /// was too large) in the machine's `error`, and hands the error back.
    pub fn report(&self, name: &str, err: Error) -> Error {
        if let Ok(m) = self.get(name) {
            self.note_error(&m, &err);
        }
        err
    }

    /// Runs one `ctl` verb to completion.
    pub async fn control(self: &Arc<Self>, name: &str, verb: Verb) -> Result<()> {
        let m = self.get(name)?;
        if let Verb::Wait { .. } = verb {
            // Changes nothing, so nothing to protect: an abandoned wait ends with its caller.
            let res = self.control_machine(&m, verb).await;
            return self.outcome(&m, res);
        }
        self.detached(
            m,
            |core, m| async move { core.control_machine(&m, verb).await },
        )
        .await
    }

    pub async fn exec(
        self: &Arc<Self>,
        name: &str,
        req: crate::runtime::ExecRequest,
    ) -> Result<Arc<ExecOutput>> {
        let m = self.get(name)?;
        self.detached(m, |core, m| async move { core.exec_in(&m, req).await })
            .await
    }

    async fn exec_in(
        &self,
        m: &Arc<Machine>,
        req: crate::runtime::ExecRequest,
    ) -> Result<Arc<ExecOutput>> {
        command::validate_exec(&req)?;
        let status = m.status();
        if status != Status::Running {
            return Err(Error::InvalidState {
                action: "exec in",
                status,
            });
        }
        let output = Arc::new(self.runtime_for(m, &m.snapshot())?.exec(&req).await?);
        *lock(&m.last_exec) = Some(output.clone());
        Ok(output)
    }

    /// Live facts from the runtime, as JSON.
    pub async fn info(&self, name: &str) -> Result<serde_json::Value> {
        let m = self.get(name)?;
        let rec = m.snapshot();
        let mut out = describe(&rec);
        if rec.status != Status::Pending {
            let rt = self.runtime_for(&m, &rec)?;
            let info = rt.info().await?;
            out["runtime_info"] =
                serde_json::to_value(info).map_err(|e| Error::Runtime(e.to_string()))?;
        }
        Ok(out)
    }

    // ----- helpers shared by the lifecycle and reconciliation -----

    fn machine_ref(&self, rec: &MachineRecord) -> MachineRef {
        MachineRef {
            id: rec.id.clone(),
            name: rec.name.to_string(),
            instance: self.instance.clone(),
        }
    }

    fn driver(&self, kind: RuntimeKind) -> Result<&Arc<dyn Driver>> {
        self.drivers
            .get(&kind)
            .ok_or_else(|| Error::RuntimeUnavailable {
                runtime: kind.to_string(),
                reason: "this build of hyperfleet has no driver for it yet".into(),
            })
    }

    fn new_runtime(&self, m: &Machine, rec: &MachineRecord) -> Result<Arc<dyn Runtime>> {
        let log = m.log.clone();
        let sink: crate::runtime::ProgressSink = Arc::new(move |line: &str| log.note(line));
        self.driver(rec.spec.runtime_type)?
            .runtime(&self.machine_ref(rec), &rec.spec, sink)
    }

    /// The runtime of the machine's last run, or one built from its spec.
    fn runtime_for(&self, m: &Machine, rec: &MachineRecord) -> Result<Arc<dyn Runtime>> {
        match m.live() {
            Some(rt) => Ok(rt),
            None => self.new_runtime(m, rec),
        }
    }

    /// Applies a change to a machine's record: durable in the store first,
    /// then visible in memory and to `wait`ers.
    fn commit(&self, m: &Machine, change: impl FnOnce(&mut MachineRecord)) -> Result<()> {
        self.apply(m, change, true)
    }

    /// Records what is already true of the workload (it exited, a start was
    /// undone) even if the store cannot take it right now: a status that
    /// contradicts reality would refuse every later verb. The store catches
    /// up at the next successful commit; after a crash, reconcile corrects it.
    fn force(&self, m: &Machine, change: impl FnOnce(&mut MachineRecord)) {
        if let Err(e) = self.apply(m, change, false) {
            tracing::error!("state of {} not persisted: {e}", m.name());
        }
    }

    fn apply(
        &self,
        m: &Machine,
        change: impl FnOnce(&mut MachineRecord),
        durable_first: bool,
    ) -> Result<()> {
        let _serial = lock(&m.commit_lock);
        let mut next = m.snapshot();
        change(&mut next);
        next.updated_ms = now_ms();
        let stored = self.store.update(&next);
        if durable_first {
            stored.clone()?;
        }
        let status = next.status;
        *write(&m.record) = next;
        m.status_tx.send_replace(status);
        stored
    }

    fn note_error(&self, m: &Machine, err: &Error) {
        let line = err.to_string().replace(['\n', '\r'], " ");
        if let Err(e) = self.commit(m, |r| r.error = line) {
            tracing::warn!("cannot record error: {e}");
        }
    }

    fn outcome<T>(&self, m: &Machine, res: Result<T>) -> Result<T> {
        if let Err(e) = &res {
            if !m.deleted.load(Ordering::SeqCst) {
                self.note_error(m, e);
            }
        }
        res
    }

    /// Re-probes every runtime now and then, so `runtimes/*/status` is fresh
    /// without a read ever waiting on a runtime.
    pub fn spawn_health_monitor(self: &Arc<Self>, every: Duration) {
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = core.upgrade() else { return };
                // A runtime that came back gets the full treatment; otherwise
                // only machines left without a runtime (a failed observe) are retried.
                let recovered = c.probe_health().await;
                c.reconcile(recovered).await;
                drop(c);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Refreshes every runtime's health; says whether one became available.
    pub async fn probe_health(&self) -> bool {
        let mut recovered = false;
        for kind in RuntimeKind::ALL {
            let h = match self.drivers.get(&kind) {
                Some(d) => d.health().await,
                None => Health::Unavailable {
                    reason: "this build of hyperfleet has no driver for it yet".into(),
                },
            };
            let was = write(&self.health).insert(kind, h.clone());
            recovered |= matches!(h, Health::Available { .. })
                && !matches!(was, Some(Health::Available { .. }));
        }
        recovered
    }
}
