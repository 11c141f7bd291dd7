//! File attributes: types, modes, sizes and times, and how long the kernel
//! may cache them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::inode::{FileKind, Node};
use super::{content, MachineFs};

pub(super) const TTL_STABLE: Duration = Duration::from_secs(1);
/// Nodes whose attributes or existence follow machine state.
const TTL_LIVE: Duration = Duration::ZERO;

/// `ctl` and `exec` get an inode number of their own per process (the nonce
/// sits in these high bits). The kernel holds a file's inode lock for the
/// whole of a write and takes it exclusively to truncate on `>`: with one
/// shared inode, a `wait` blocked in `ctl` would hold up every
/// `echo stop > ctl` behind it. Within one process the number stays the
/// same, so `cp`, `tar` and `rsync`, which compare what they stat with what
/// they open, do not take the file for one replaced mid-copy.
const NONCE_SHIFT: u32 = 40;
const BASE_MASK: u64 = (1 << NONCE_SHIFT) - 1;
/// How long a process keeps its number for a file it stopped looking up.
const NONCE_LIFE: Duration = Duration::from_secs(10);
/// Past this many remembered numbers, the stale ones are forgotten.
const NONCES_KEPT: usize = 4096;

pub(super) fn node_of(ino: INodeNo) -> Option<Node> {
    if ino.0 >= super::inode::SESSIONS {
        return Node::from_ino(ino.0);
    }
    Node::from_ino(ino.0 & BASE_MASK)
}

pub(super) fn ms_to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl MachineFs {
    /// How long the kernel may keep a node's name and attributes.
    pub(super) fn ttl(&self, node: Node) -> Duration {
        match node {
            Node::StatusLink(_) | Node::RuntimeLink(_) => TTL_LIVE,
            Node::File(_, FileKind::Logs | FileKind::Ctl | FileKind::Exec | FileKind::ExecNew) => {
                TTL_LIVE
            }
            Node::File(_, FileKind::Events) | Node::Events => TTL_LIVE,
            Node::SessionsDir(_) | Node::Session(..) | Node::SessionFile(..) => TTL_LIVE,
            Node::File(_, FileKind::Info) => TTL_STABLE,
            // The mount point itself: kept briefly, so that `stat` of it
            // soon says ENOTCONN once the daemon is gone.
            Node::Root => TTL_STABLE,
            // Fixed for the mount's life.
            Node::Readme
            | Node::MachinesDir
            | Node::ByStatusDir
            | Node::ByRuntimeDir
            | Node::RuntimesDir
            | Node::StatusDir(_)
            | Node::RuntimeLinksDir(_)
            | Node::RuntimeDir(_) => super::cache::TTL_CACHED,
            // Cached, and invalidated whenever they change.
            Node::Machine(_) | Node::File(..) | Node::RuntimeStatus(_) => {
                self.cache.ttl(node, TTL_STABLE)
            }
        }
    }

    /// The inode number to hand out for `node` at a lookup by process `pid`.
    pub(super) fn lookup_ino(&self, node: Node, pid: u32) -> u64 {
        match node {
            Node::File(_, FileKind::Ctl | FileKind::Exec) => {
                let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if nonces.len() > NONCES_KEPT {
                    nonces.retain(|_, (_, at)| now.duration_since(*at) < NONCE_LIFE);
                }
                let fresh = || {
                    // 20 bits: the nonce stays below the session node numbers.
                    self.nonce.fetch_add(1, Ordering::Relaxed) % ((1 << 20) - 1) + 1
                };
                let entry = nonces
                    .entry((pid, node.ino()))
                    .or_insert_with(|| (fresh(), now));
                if now.duration_since(entry.1) >= NONCE_LIFE {
                    entry.0 = fresh();
                }
                entry.1 = now;
                node.ino() | (entry.0 << NONCE_SHIFT)
            }
            _ => node.ino(),
        }
    }

    /// `attr` with `info`'s real size, answered through `done` from a task
    /// once `info` is rendered (which may ask the runtime).
    pub(super) fn with_info_size(
        &self,
        seq: u64,
        mut attr: FileAttr,
        done: impl FnOnce(Result<FileAttr, Errno>) + Send + 'static,
    ) {
        let m = match self.machine(seq) {
            Ok(m) => m,
            Err(e) => return done(Err(e)),
        };
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.info_text(&m, super::INFO_FRESH).await {
                Ok(text) => {
                    attr.size = text.len() as u64;
                    attr.blocks = attr.size.div_ceil(512);
                    done(Ok(attr))
                }
                // A runtime that cannot say does not make the file vanish
                // from `ls -l`; opening it says why.
                Err(_) => done(Ok(attr)),
            }
        });
    }

    pub(super) fn attr(&self, node: Node, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, perm, size, mtime) = match node {
            Node::Readme => (
                FileType::RegularFile,
                0o444,
                content::README.len() as u64,
                self.mounted_at,
            ),
            // A stream: its size is whatever a read finds.
            Node::Events => (FileType::RegularFile, 0o444, 0, self.mounted_at),
            Node::RuntimeStatus(k) => {
                let len = content::runtime_status(&self.core.health(k)).len() as u64;
                (FileType::RegularFile, 0o444, len, self.mounted_at)
            }
            Node::Machine(seq) => {
                let m = self.machine(seq)?;
                (
                    FileType::Directory,
                    0o755,
                    0,
                    ms_to_time(m.with_record(|r| r.updated_ms)),
                )
            }
            Node::StatusLink(seq) | Node::RuntimeLink(seq) => {
                let m = self.machine(seq)?;
                let len = super::tree::link_target(&m).len() as u64;
                (FileType::Symlink, 0o777, len, self.mounted_at)
            }
            Node::SessionsDir(seq) => {
                self.machine(seq)?;
                (FileType::Directory, 0o700, 0, self.mounted_at)
            }
            Node::Session(seq, n) => {
                let m = self.machine(seq)?;
                self.core.session(&m, n).ok_or(Errno::ENOENT)?;
                (FileType::Directory, 0o700, 0, self.mounted_at)
            }
            Node::SessionFile(seq, n, f) => {
                let m = self.machine(seq)?;
                self.core.session(&m, n).ok_or(Errno::ENOENT)?;
                // Streams: their size is whatever a read finds.
                (FileType::RegularFile, f.perm(), 0, self.mounted_at)
            }
            Node::File(seq, kind) => {
                let m = self.machine(seq)?;
                let size = match kind {
                    FileKind::Logs => m.log().len(),
                    FileKind::Info | FileKind::Events => 0,
                    other => content::file_len(&self.core, &m, other),
                };
                (
                    FileType::RegularFile,
                    kind.perm(),
                    size,
                    ms_to_time(m.with_record(|r| r.updated_ms)),
                )
            }
            _ => (FileType::Directory, 0o755, 0, self.mounted_at),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

/// The attributes of a machine directory `mkdir` just made (answered from
/// a task, where there is no `MachineFs` to ask).
pub(super) fn new_machine_dir(m: &crate::core::Machine, uid: u32, gid: u32) -> FileAttr {
    let mtime = ms_to_time(m.with_record(|r| r.updated_ms));
    FileAttr {
        ino: INodeNo(Node::Machine(m.seq()).ino()),
        size: 0,
        blocks: 0,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}
