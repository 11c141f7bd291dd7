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
//! Names that go away (a deleted machine) are dropped on a thread of their
//! own: the kernel takes the parent directory's lock to drop a name, and
//! an `rmdir` holds that lock while it waits for the deletion, whose
//! `changed` this is.

use std::collections::HashMap;
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

/// A name to drop from the kernel's cache: (directory, name).
type Forget = (INodeNo, OsString);

#[derive(Default)]
pub(super) struct Coherence {
    notifier: OnceLock<Notifier>,
    /// Changes under way, by subject (a delete may overlap an exec).
    flux: Mutex<HashMap<Key, u32>>,
    /// Who waits in `poll()` for a change of a subject.
    pollers: Mutex<HashMap<Key, Vec<PollNotifier>>>,
    forget: OnceLock<mpsc::Sender<Forget>>,
}

impl Coherence {
    /// Starts telling the kernel; before this, nothing was cached.
    pub fn connect(&self, notifier: Notifier) {
        let (tx, rx) = mpsc::channel::<Forget>();
        let n = notifier.clone();
        let spawned = std::thread::Builder::new()
            .name("fs-forget".into())
            .spawn(move || {
                for (dir, name) in rx {
                    if let Err(e) = n.inval_entry(dir, &name) {
                        tracing::debug!("cannot drop {name:?} from the kernel's cache: {e}");
                    }
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
        lock(&self.pollers).entry(key).or_default().push(p);
    }

    /// Wakes whoever polls for `key`; each poll call registers anew.
    pub fn wake(&self, key: Key) {
        let waiting = lock(&self.pollers).remove(&key).unwrap_or_default();
        for p in waiting {
            // The poller may be gone (its file closed): nothing to wake.
            let _ = p.notify();
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
        if let (Subject::Machine { name, .. }, true) = (
            subject,
            what.iter().any(|w| matches!(w, Happening::Deleted { .. })),
        ) {
            if let Some(tx) = self.forget.get() {
                let _ = tx.send((INodeNo(Node::MachinesDir.ino()), name.as_str().into()));
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
