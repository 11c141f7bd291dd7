//! One machine in memory: its persisted record, mirrored, plus what only
//! lives while the daemon runs (the operation in progress, the runtime of
//! the current run, the statuses it recently passed through).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use super::logsink::LogFile;
use super::operation::{Cancel, OpSlot};
use crate::model::{ExecOutput, MachineName, MachineRecord, Status};
use crate::runtime::Runtime;

/// How many recent status changes a machine remembers for `wait`.
const TRANSITIONS_KEPT: usize = 64;

/// The statuses a machine passed through, numbered, so a `wait` that began
/// at change N sees every status after N even if several came at once.
#[derive(Debug)]
pub(super) struct Transitions {
    /// Number of the latest change.
    pub seq: u64,
    pub recent: VecDeque<(u64, Status)>,
}

pub struct Machine {
    record: RwLock<MachineRecord>,
    /// Serialises writers of `record`, so read-modify-write cannot lose an
    /// update. Held across the store write, so it is an async lock.
    pub(super) commit_lock: tokio::sync::Mutex<()>,
    /// Lifecycle operations, one at a time, cancellable.
    pub(super) op: OpSlot,
    /// The runtime of the current (or last) run, if any.
    pub(super) live: Mutex<Option<Arc<dyn Runtime>>>,
    /// Bumped whenever a run ends or begins, so background tasks of an old
    /// run recognise that they are stale.
    generation: AtomicU64,
    /// Bumped when `logs` starts afresh; output of an older run is dropped.
    pub(super) log_run: AtomicU64,
    pub(super) deleted: AtomicBool,
    pub(super) transitions: Mutex<Transitions>,
    /// Carries the number of the latest status change.
    pub(super) changed: watch::Sender<u64>,
    /// The result of the most recent `exec`.
    pub(super) last_exec: Mutex<Option<Arc<ExecOutput>>>,
    /// Consecutive restarts by the restart policy, for its back-off.
    pub(super) restarts: AtomicU32,
    /// The task copying the current run's output into `logs`.
    pub(super) follower: Mutex<Option<tokio::task::AbortHandle>>,
    /// A restart the restart policy has scheduled; a stop cancels it.
    pub(super) restart_pending: Mutex<Option<Cancel>>,
    /// The last `info` rendered, and when: `stat` and `open` of `info`
    /// within a moment of each other see the same bytes.
    pub(super) info_cache: Mutex<InfoCache>,
    /// Exec sessions, by number.
    pub(super) sessions: Mutex<std::collections::BTreeMap<u64, Arc<super::session::Session>>>,
    pub(super) next_session: AtomicU64,
    /// When reconcile first saw the workload in a transitional state.
    pub(super) transitional_since: Mutex<Option<Instant>>,
    pub(super) log: LogFile,
}

/// The last `info` rendered, and which version of the machine it shows.
#[derive(Default)]
pub(super) struct InfoCache {
    /// Counts the changes published: an `info` rendered from before one is
    /// not kept, even if it is done after the change cleared the cache.
    pub(super) epoch: u64,
    pub(super) entry: Option<(Instant, Arc<Vec<u8>>)>,
}

impl InfoCache {
    fn invalidate(&mut self) {
        self.epoch += 1;
        self.entry = None;
    }
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_record(|r| {
            f.debug_struct("Machine")
                .field("name", &r.name)
                .field("id", &r.id)
                .field("status", &r.status)
                .finish_non_exhaustive()
        })
    }
}

impl Machine {
    pub(super) fn new(rec: MachineRecord, log: LogFile) -> Machine {
        let status = rec.status;
        Machine {
            record: RwLock::new(rec),
            commit_lock: tokio::sync::Mutex::new(()),
            op: OpSlot::default(),
            live: Mutex::new(None),
            generation: AtomicU64::new(0),
            log_run: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            transitions: Mutex::new(Transitions {
                seq: 0,
                recent: VecDeque::from([(0, status)]),
            }),
            changed: watch::channel(0).0,
            last_exec: Mutex::new(None),
            restarts: AtomicU32::new(0),
            follower: Mutex::new(None),
            restart_pending: Mutex::new(None),
            info_cache: Mutex::default(),
            sessions: Mutex::default(),
            next_session: AtomicU64::new(1),
            transitional_since: Mutex::new(None),
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

    pub fn name(&self) -> MachineName {
        read(&self.record).name.clone()
    }

    pub fn id(&self) -> String {
        read(&self.record).id.clone()
    }

    pub fn seq(&self) -> u64 {
        read(&self.record).seq
    }

    /// Reads a part of the record without copying the rest.
    pub fn with_record<T>(&self, f: impl FnOnce(&MachineRecord) -> T) -> T {
        f(&read(&self.record))
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    pub fn last_exec(&self) -> Option<Arc<ExecOutput>> {
        lock(&self.last_exec).clone()
    }

    pub fn log(&self) -> &LogFile {
        &self.log
    }

    /// What the operation in progress is and how long it has run.
    pub fn operation(&self) -> Option<(&'static str, std::time::Duration)> {
        self.op.current()
    }

    /// The live facts its current runtime holds, without asking it anything.
    pub fn known(&self) -> crate::runtime::Known {
        self.live().map(|rt| rt.known()).unwrap_or_default()
    }

    pub(super) fn live(&self) -> Option<Arc<dyn Runtime>> {
        lock(&self.live).clone()
    }

    pub(super) fn set_live(&self, rt: Option<Arc<dyn Runtime>>) {
        *lock(&self.live) = rt;
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(super) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Makes `next` the record everyone reads and logs a status change for
    /// waiters, who hear of it at [`Machine::wake_waiters`]; hands back the
    /// record it replaced. Only the commit path calls this.
    pub(super) fn publish(&self, next: MachineRecord) -> MachineRecord {
        // What `info` rendered is out of date now, and so is whatever a
        // rendering in progress started from.
        lock(&self.info_cache).invalidate();
        let status = next.status;
        let old = {
            let mut r = write(&self.record);
            std::mem::replace(&mut *r, next)
        };
        if old.status != status {
            let mut t = lock(&self.transitions);
            t.seq += 1;
            let seq = t.seq;
            t.recent.push_back((seq, status));
            while t.recent.len() > TRANSITIONS_KEPT {
                t.recent.pop_front();
            }
        }
        old
    }

    /// Announces to `wait`ers the status transitions published so far.
    /// Called once the kernel has been told of the change, so that a waiter
    /// that returns and reads `status` through the filesystem sees it.
    pub(super) fn announce_transitions(&self) {
        let seq = lock(&self.transitions).seq;
        self.changed
            .send_if_modified(|s| std::mem::replace(s, seq) != seq);
    }

    /// Cancels a restart the restart policy scheduled; says if there was one.
    pub(super) fn cancel_pending_restart(&self, by: &str) -> bool {
        match lock(&self.restart_pending).take() {
            Some(c) => {
                c.cancel(by);
                true
            }
            None => false,
        }
    }

    /// Wakes waiters without a status change (the machine was deleted).
    pub(super) fn wake_waiters(&self) {
        self.changed.send_modify(|_| {});
    }
}

// Poisoning only follows a panic elsewhere; the data is still consistent
// because every writer replaces whole values.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub(super) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
pub(super) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
