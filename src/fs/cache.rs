//! Keeping the kernel's caches true, so it can serve `cat status`, `stat`
//! and `ls -l` itself, as it does for sysfs, without ever showing a value
//! the machine no longer has.
//!
//! Small files (see [`FileKind::CACHED`]) are opened with `FOPEN_KEEP_CACHE`
//! and their names and attributes are given long lifetimes. The core tells
//! us of every change in two steps (see `core::events::Observer`):
//!
//! - `changing`, just before the new value is visible: the kernel forgets
//!   the attributes it holds (no lock is needed for that), and until the
//!   change is over, attributes are handed out with no lifetime at all. So
//!   no size taken before the change can outlive it: a read that fetches
//!   the new content always finds the size to go with it, and never shows
//!   a longer value cut to an older, shorter size.
//! - `changed`, once it is visible and before whoever caused it is told it
//!   is done: the kernel drops the pages and attributes, and `poll()`ers
//!   are woken.
//!
//! A machine deleted by our own `rmdir` needs nothing more: the kernel
//! drops the name itself when the rmdir succeeds (and holds the parent's
//! lock until then, so dropping it from here would deadlock). One deleted
//! any other way (REST) has its name dropped on a thread of its own, since
//! that takes the parent's lock, which a concurrent mkdir or rmdir may
//! hold; the deletion waits for it, a bounded time, before it is
//! acknowledged.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fuser::{INodeNo, Notifier, PollNotifier};

use super::handles::lock;
use super::inode::{FileKind, Node};
use crate::core::Observer;
use crate::model::{Happening, RuntimeKind, Subject};

/// How long the kernel may keep what it was told of a cached node. The
/// lifetime does not keep anything fresh (invalidation does); it only
/// bounds the harm if a change ever went untold.
pub(super) const TTL_CACHED: Duration = Duration::from_secs(3600);

/// What a change is about, as far as caches and pollers care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Machine(u64),
    Runtime(RuntimeKind),
    /// Any event at all (readers of `events` files wait on these).
    Fleet,
}

impl Key {
    fn of(subject: &Subject) -> Option<Key> {
        match subject {
            Subject::Machine { seq, .. } => Some(Key::Machine(*seq)),
            Subject::Runtime(k) => Some(Key::Runtime(*k)),
            Subject::Stream => None,
        }
    }

    /// The cached nodes a change of this subject can make stale.
    fn nodes(self) -> Vec<Node> {
        match self {
            Key::Machine(seq) => std::iter::once(Node::Machine(seq))
                .chain(FileKind::CACHED.map(|k| Node::File(seq, k)))
                .collect(),
            Key::Runtime(k) => vec![Node::RuntimeStatus(k)],
            Key::Fleet => Vec::new(),
        }
    }

    /// What a cached node's change is filed under.
    pub(super) fn of_node(node: Node) -> Option<Key> {
        match node {
            Node::Machine(seq) => Some(Key::Machine(seq)),
            Node::File(seq, k) if k.cached() => Some(Key::Machine(seq)),
            Node::RuntimeStatus(k) => Some(Key::Runtime(k)),
            _ => None,
        }
    }
}

/// A name to drop from the kernel's cache: (directory, name), and who to
/// tell once it is.
type Forget = (INodeNo, OsString, mpsc::SyncSender<()>);

/// How long a deletion waits for the kernel to drop the name: a concurrent
/// mkdir or rmdir holds the lock that takes, and an rmdir may take seconds.
const FORGET_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct Coherence {
    notifier: OnceLock<Notifier>,
    /// Changes under way, by subject (a delete may overlap an exec).
    flux: Mutex<HashMap<Key, u32>>,
    /// Who waits in `poll()` for a change of a subject, by the kernel's
    /// poll handle (one per open file: a file polled again and again
    /// replaces its registration rather than adding one each time).
    pollers: Mutex<HashMap<Key, HashMap<u64, PollNotifier>>>,
    forget: OnceLock<mpsc::Sender<Forget>>,
    /// Machines being deleted by our `rmdir`, whose names the kernel drops.
    rmdirs: Mutex<HashSet<u64>>,
}

impl Coherence {
    /// Starts telling the kernel; before this, nothing was cached.
    pub fn connect(&self, notifier: Notifier) {
        let (tx, rx) = mpsc::channel::<Forget>();
        let n = notifier.clone();
        let spawned = std::thread::Builder::new()
            .name("fs-forget".into())
            .spawn(move || {
                for (dir, name, done) in rx {
                    if let Err(e) = n.inval_entry(dir, &name) {
                        tracing::debug!("cannot drop {name:?} from the kernel's cache: {e}");
                    }
                    let _ = done.try_send(());
                }
            });
        match spawned {
            Ok(_) => {
                let _ = self.forget.set(tx);
            }
            // Without it, names of deleted machines live out their lifetime
            // in the kernel; every use of one still fails with ENOENT.
            Err(e) => tracing::warn!("cannot start the fs-forget thread: {e}"),
        }
        let _ = self.notifier.set(notifier);
    }

    /// The lifetime to give what the kernel is told of `node` now.
    pub fn ttl(&self, node: Node, otherwise: Duration) -> Duration {
        match Key::of_node(node) {
            Some(key) if lock(&self.flux).contains_key(&key) => Duration::ZERO,
            Some(_) => TTL_CACHED,
            None => otherwise,
        }
    }

    /// `p` wants to hear of the next change of `key`.
    pub fn watch(&self, key: Key, p: PollNotifier) {
        lock(&self.pollers)
            .entry(key)
            .or_default()
            .insert(p.handle().0, p);
    }

    /// Wakes whoever polls for `key`; each poll call registers anew.
    pub fn wake(&self, key: Key) {
        let waiting = lock(&self.pollers).remove(&key).unwrap_or_default();
        for p in waiting.into_values() {
            // The poller may be gone (its file closed): nothing to wake.
            let _ = p.notify();
        }
    }

    /// Our `rmdir` of machine `seq` is under way: see the module's doc.
    pub fn rmdir_begins(&self, seq: u64) {
        lock(&self.rmdirs).insert(seq);
    }

    pub fn rmdir_ends(&self, seq: u64) {
        lock(&self.rmdirs).remove(&seq);
    }

    /// Drops `machines/<name>` from the kernel's cache, waiting (bounded)
    /// until it is done.
    fn forget_name(&self, name: &str) {
        let Some(tx) = self.forget.get() else { return };
        let (done, forgotten) = mpsc::sync_channel(1);
        let dir = INodeNo(Node::MachinesDir.ino());
        if tx.send((dir, name.into(), done)).is_ok() && forgotten.recv_timeout(FORGET_WAIT).is_err()
        {
            tracing::debug!("{name:?} not yet dropped from the kernel's cache");
        }
    }

    fn inval(&self, nodes: &[Node], pages: bool) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        for node in nodes {
            // Offset -1: the attributes only, which needs no page lock.
            let offset = if pages { 0 } else { -1 };
            if let Err(e) = n.inval_inode(INodeNo(node.ino()), offset, 0) {
                tracing::debug!("cannot invalidate {node:?}: {e}");
            }
        }
    }
}

impl Observer for Coherence {
    fn changing(&self, subject: &Subject) {
        let Some(key) = Key::of(subject) else { return };
        *lock(&self.flux).entry(key).or_default() += 1;
        self.inval(&key.nodes(), false);
    }

    fn changed(&self, subject: &Subject, what: &[Happening]) {
        let Some(key) = Key::of(subject) else { return };
        // A new machine: nothing of it can be cached yet.
        if !matches!(what, [Happening::Created]) {
            self.inval(&key.nodes(), true);
        }
        if let (Subject::Machine { seq, name, .. }, true) = (
            subject,
            what.iter().any(|w| matches!(w, Happening::Deleted { .. })),
        ) {
            if !lock(&self.rmdirs).contains(seq) {
                self.forget_name(name.as_str());
            }
        }
        {
            let mut flux = lock(&self.flux);
            if let Some(n) = flux.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    flux.remove(&key);
                }
            }
        }
        self.wake(key);
    }
}
