//! The core: the one owner of machines. It validates every request, runs the
//! lifecycle state machine, persists each change before reporting it done,
//! and drives runtimes. Front ends (the filesystem, REST) hold a machine's
//! handle (`Arc<Machine>`) and submit typed [`Action`]s; they keep no state
//! of their own.
//!
//! A handle names one machine for its whole life: a machine deleted and
//! recreated under the same name is another handle, so an action meant for
//! the old one can never reach the new one.

mod act;
mod commit;
mod config;
mod create;
mod devices;
mod events;
mod exec;
mod halt;
mod info;
mod logsink;
mod machine;
mod operation;
mod reconcile;
mod run;
mod session;
mod start;
mod wait;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use events::{Observer, Subscription, BACKLOG};
pub use info::describe;
pub use logsink::{LogFile, LOG_CAP};
pub use machine::Machine;
pub use session::{Session, Stream, MAX_SESSIONS, SESSION_IDS};

use crate::error::{Error, Result};
use crate::model::{MachineName, MachineRecord, RuntimeKind, Status, Verb};
use crate::runtime::{Driver, Health, MachineRef, Runtime, Sink};
use crate::store::{SqliteStore, Store};
use machine::{read, write};

/// Limits that keep a machine from being wedged by a slow runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a lifecycle command waits for another to finish before EBUSY.
    pub busy_wait: Duration,
    /// How long a config write waits for an operation to finish.
    pub config_wait: Duration,
    /// How long a stop, kill or delete waits for a start it cancelled to
    /// clean up after itself.
    pub cancel_wait: Duration,
    /// Deadline of a start (an image pull has its own stall limit within it).
    pub start_deadline: Duration,
    /// Deadline of other runtime calls; a stop gets its grace on top.
    pub call_deadline: Duration,
    /// How long reconcile waits for a workload in a transitional state to
    /// settle before it records what it is.
    pub transitional_patience: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            busy_wait: Duration::from_secs(5),
            config_wait: Duration::from_secs(2),
            cancel_wait: Duration::from_secs(90),
            start_deadline: Duration::from_secs(900),
            call_deadline: Duration::from_secs(60),
            transitional_patience: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Defaults, with `HYPERFLEET_BUSY_WAIT_SECS` applied if set.
    pub fn from_env() -> Settings {
        let mut s = Settings::default();
        if let Some(w) = std::env::var("HYPERFLEET_BUSY_WAIT_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v >= 0.0)
        {
            s.busy_wait = Duration::from_secs_f64(w);
        }
        s
    }
}

/// Where the machines' runtime directories are, one per machine id.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

/// How soon reconcile looks again at a workload that has not settled.
const UNSETTLED_RETRY: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Registry {
    by_name: BTreeMap<MachineName, Arc<Machine>>,
    by_seq: HashMap<u64, Arc<Machine>>,
    /// Names being created: taken, though not yet in the store.
    reserved: BTreeSet<MachineName>,
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
    store: Arc<dyn Store>,
    instance: String,
    drivers: BTreeMap<RuntimeKind, Arc<dyn Driver>>,
    health: RwLock<BTreeMap<RuntimeKind, Health>>,
    registry: RwLock<Registry>,
    logs_dir: PathBuf,
    run_dir: PathBuf,
    settings: Settings,
    events: events::Events,
}

impl Core {
    /// Opens (or creates) the SQLite state in `state_dir` and loads every
    /// machine. Call [`Core::reconcile`] next to line the state up with the
    /// runtimes.
    pub fn open(state_dir: &Path, drivers: Vec<Arc<dyn Driver>>) -> Result<Arc<Core>> {
        let store = SqliteStore::open(&state_dir.join("hyperfleet.db"))?;
        Self::open_with(state_dir, Arc::new(store), drivers, Settings::from_env())
    }

    /// Like [`Core::open`] with a given store and settings.
    pub fn open_with(
        state_dir: &Path,
        store: Arc<dyn Store>,
        drivers: Vec<Arc<dyn Driver>>,
        settings: Settings,
    ) -> Result<Arc<Core>> {
        let logs_dir = state_dir.join("logs");
        let run_dir = run_dir(state_dir);
        for dir in [state_dir, &logs_dir, &run_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
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
            run_dir,
            settings,
            events: events::Events::default(),
        }))
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    // ----- reads: served from memory, never from a runtime or the store -----

    pub fn list(&self) -> Vec<MachineEntry> {
        read(&self.registry)
            .by_name
            .values()
            .map(|m| {
                m.with_record(|r| MachineEntry {
                    seq: r.seq,
                    name: r.name.clone(),
                    status: r.status,
                    runtime: r.spec.runtime_type(),
                })
            })
            .collect()
    }

    /// A machine by name.
    pub fn get(&self, name: &str) -> Result<Arc<Machine>> {
        read(&self.registry)
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// A machine by id or by name (REST addresses machines either way).
    /// The id comes first: a name may look like an id, and a machine named
    /// after another's id must not receive what was meant for that one.
    pub fn find(&self, key: &str) -> Result<Arc<Machine>> {
        let by_id = read(&self.registry)
            .by_seq
            .values()
            .find(|m| m.with_record(|r| r.id == key))
            .cloned();
        match by_id {
            Some(m) => Ok(m),
            None => self.get(key),
        }
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
    pub fn verbs(&self, kind: RuntimeKind) -> &'static [Verb] {
        self.drivers.get(&kind).map(|d| d.verbs()).unwrap_or(&[])
    }

    // ----- helpers shared by the operations -----

    fn machine_ref(&self, rec: &MachineRecord) -> MachineRef {
        MachineRef {
            id: rec.id.clone(),
            name: rec.name.to_string(),
            instance: self.instance.clone(),
            runtime_dir: self.run_dir.join(&rec.id),
        }
    }

    fn driver(&self, kind: RuntimeKind) -> Result<&Arc<dyn Driver>> {
        self.drivers
            .get(&kind)
            .ok_or_else(|| Error::RuntimeUnavailable {
                runtime: kind.to_string(),
                reason: "this build of hyperfleet has no driver for it".into(),
            })
    }

    /// A runtime for the machine's current spec, with its private directory.
    fn new_runtime(&self, m: &Arc<Machine>, rec: &MachineRecord) -> Result<Arc<dyn Runtime>> {
        let mref = self.machine_ref(rec);
        std::fs::create_dir_all(&mref.runtime_dir)
            .map_err(|e| Error::io(format!("create {}", mref.runtime_dir.display()), e))?;
        let notes: Sink = Arc::new(logsink::NotesSink(Arc::downgrade(m)));
        self.driver(rec.spec.runtime_type())?
            .runtime(&mref, &rec.spec, notes)
    }

    /// The runtime of the current run, or one built for the spec.
    fn runtime_for(&self, m: &Arc<Machine>, rec: &MachineRecord) -> Result<Arc<dyn Runtime>> {
        match m.live() {
            Some(rt) if rt.kind() == rec.spec.runtime_type() => Ok(rt),
            _ => self.new_runtime(m, rec),
        }
    }

    /// Re-probes every runtime now and then, so `runtimes/*/status` is fresh
    /// without a read ever waiting on a runtime.
    pub fn spawn_health_monitor(self: &Arc<Self>, every: Duration) {
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = core.upgrade() else { return };
                // A runtime that came back gets the full treatment; otherwise
                // only machines left without a runtime (a failed observe, a
                // workload still settling) are retried.
                let recovered = c.probe_health().await;
                let settled = c.reconcile(recovered).await;
                drop(c);
                // A workload still settling is looked at again soon.
                let pause = if settled {
                    every
                } else {
                    every.min(UNSETTLED_RETRY)
                };
                tokio::time::sleep(pause).await;
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
            let was = self.health(kind);
            recovered |= h.is_available() && !was.is_available();
            if was == h {
                continue;
            }
            let subject = crate::model::Subject::Runtime(kind);
            self.changing(&subject);
            write(&self.health).insert(kind, h.clone());
            let (available, text) = match h {
                Health::Available { detail } => (true, format!("available: {detail}")),
                Health::Unavailable { reason } => (false, format!("unavailable: {reason}")),
            };
            self.changed(
                subject,
                vec![crate::model::Happening::Runtime { available, text }],
            );
        }
        recovered
    }
}
