//! Open files and directories. A file handle keeps what its reads return
//! (rendered at open, or by the last exec through it) and a config document
//! still arriving in pieces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{Errno, FileHandle, FileType};

use super::inode::Node;

pub(super) struct OpenFile {
    pub node: Node,
    /// What reads return, rendered at open (or by the last exec through this handle).
    pub content: Vec<u8>,
    /// File offset at which `content` begins: after a command is written to
    /// `exec`, the file position sits past it, and reads continue from there.
    pub read_base: u64,
    /// `config` bytes that do not yet form a whole JSON document.
    pub pending: Vec<u8>,
    /// This handle already applied a config; later whitespace is harmless.
    pub applied: bool,
    /// The exec session this handle keeps alive, if any.
    pub held: Option<super::session::Held>,
    /// Opened through the page cache: reads render the file afresh, and
    /// `content` is only what `poll` last reported.
    pub cached: bool,
}

impl OpenFile {
    pub fn new(node: Node, content: Vec<u8>) -> OpenFile {
        OpenFile {
            node,
            content,
            read_base: 0,
            pending: Vec::new(),
            applied: false,
            held: None,
            cached: false,
        }
    }

    /// `pending` holds nothing that still needs applying.
    pub fn nothing_pending(&self) -> bool {
        self.pending.is_empty()
            || (self.applied && self.pending.iter().all(u8::is_ascii_whitespace))
    }
}

pub(super) type DirEntries = Vec<(u64, FileType, String)>;

pub(super) enum Handle {
    File(Mutex<OpenFile>),
    Dir(DirEntries),
    Events(Arc<super::events::EventsFile>),
}

impl Handle {
    pub fn file(node: Node, content: Vec<u8>) -> Handle {
        Handle::File(Mutex::new(OpenFile::new(node, content)))
    }
}

/// Open files and directories, shared with the tasks that finish an open.
#[derive(Default)]
pub(super) struct HandleTable {
    map: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    pub fn add(&self, h: Handle) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.map).insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    pub fn get(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.map).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    pub fn remove(&self, fh: FileHandle) {
        lock(&self.map).remove(&fh.0);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
