//! The FUSE front end. It maps paths to core calls and nothing more: every
//! fact it shows comes from the core, every change goes through the core.
//!
//! Callbacks that may wait on a runtime (ctl, exec, info, rmdir, config) hand
//! their reply to a tokio task and return at once, so one slow start or exec
//! never stalls `ls` or `cat status` of other machines.

mod content;
pub mod inode;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::core::{Core, ExecCommand, Machine, RuntimeKind, Status, Verb, MAX_WRITE};
use crate::error::Error;
use inode::{FileKind, Node};

const TTL_STABLE: Duration = Duration::from_secs(1);
/// Nodes whose attributes or existence follow machine state.
const TTL_LIVE: Duration = Duration::ZERO;

/// `ctl` and `exec` get a fresh inode number at every lookup (the nonce sits
/// in these high bits). The kernel holds a file's inode lock for the whole of
/// a write and takes it exclusively to truncate on `>`: with one shared inode,
/// a `wait` blocked in `ctl` would hold up every `echo stop > ctl` behind it.
const NONCE_SHIFT: u32 = 40;
const BASE_MASK: u64 = (1 << NONCE_SHIFT) - 1;

fn node_of(ino: INodeNo) -> Option<Node> {
    Node::from_ino(ino.0 & BASE_MASK)
}

/// The largest command `ctl` or `exec` takes in one write.
pub const MAX_COMMAND: usize = 64 << 10;

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

struct OpenFile {
    node: Node,
    /// What reads return, rendered at open (or by the last exec through this handle).
    content: Vec<u8>,
    /// File offset at which `content` begins: after a command is written to
    /// `exec`, the file position sits past it, and reads continue from there.
    read_base: u64,
    /// `config` bytes that do not yet form a whole JSON document.
    pending: Vec<u8>,
    /// This handle already applied a config; later whitespace is harmless.
    applied: bool,
}

enum Handle {
    File(Mutex<OpenFile>),
    Dir(Vec<(u64, FileType, String)>),
}

/// Open files and directories, shared with the tasks that finish an open.
#[derive(Default)]
struct HandleTable {
    map: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    fn add(&self, h: Handle) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.map).insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    fn get(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.map).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn remove(&self, fh: FileHandle) {
        lock(&self.map).remove(&fh.0);
    }
}

pub struct MachineFs {
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    handles: Arc<HandleTable>,
    nonce: AtomicU64,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

impl MachineFs {
    pub fn new(core: Arc<Core>, rt: tokio::runtime::Handle) -> MachineFs {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MachineFs {
            core,
            rt,
            handles: Arc::default(),
            nonce: AtomicU64::new(0),
            uid,
            gid,
            mounted_at: SystemTime::now(),
        }
    }

    fn machine(&self, seq: u64) -> Result<Arc<Machine>, Errno> {
        self.core.get_by_seq(seq).ok_or(Errno::ENOENT)
    }

    fn ttl(node: Node) -> Duration {
        match node {
            Node::StatusLink(_) | Node::RuntimeLink(_) => TTL_LIVE,
            Node::File(_, FileKind::Logs | FileKind::Ctl | FileKind::Exec) => TTL_LIVE,
            _ => TTL_STABLE,
        }
    }

    /// The inode number to hand out for `node` at a lookup.
    fn lookup_ino(&self, node: Node) -> u64 {
        match node {
            Node::File(_, FileKind::Ctl | FileKind::Exec) => {
                let nonce = self.nonce.fetch_add(1, Ordering::Relaxed) % (1 << 23) + 1;
                node.ino() | (nonce << NONCE_SHIFT)
            }
            _ => node.ino(),
        }
    }

    fn attr(&self, node: Node, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, perm, size, mtime) = match node {
            Node::Readme => (
                FileType::RegularFile,
                0o444,
                content::README.len() as u64,
                self.mounted_at,
            ),
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
                    ms_to_time(m.snapshot().updated_ms),
                )
            }
            Node::StatusLink(seq) | Node::RuntimeLink(seq) => {
                let m = self.machine(seq)?;
                let len = link_target(&m).len() as u64;
                (FileType::Symlink, 0o777, len, self.mounted_at)
            }
            Node::File(seq, kind) => {
                let m = self.machine(seq)?;
                let perm = kind.perm();
                let size = match kind {
                    FileKind::Logs => m.log().len(),
                    FileKind::Info => 0,
                    other => content::file_len(&self.core, &m, other),
                };
                (
                    FileType::RegularFile,
                    perm,
                    size,
                    ms_to_time(m.snapshot().updated_ms),
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

    /// Resolves `name` inside directory `parent`.
    fn child(&self, parent: Node, name: &str) -> Result<Node, Errno> {
        let by_name = |name: &str| self.core.get(name).map_err(|_| Errno::ENOENT);
        let found = match parent {
            Node::Root => match name {
                "README" => Node::Readme,
                "machines" => Node::MachinesDir,
                "by-status" => Node::ByStatusDir,
                "by-runtime" => Node::ByRuntimeDir,
                "runtimes" => Node::RuntimesDir,
                _ => return Err(Errno::ENOENT),
            },
            Node::MachinesDir => Node::Machine(by_name(name)?.seq()),
            Node::Machine(seq) => {
                self.machine(seq)?;
                Node::File(seq, FileKind::from_name(name).ok_or(Errno::ENOENT)?)
            }
            Node::ByStatusDir => {
                Node::StatusDir(name.parse::<Status>().map_err(|_| Errno::ENOENT)?)
            }
            Node::ByRuntimeDir => Node::RuntimeLinksDir(runtime_named(name)?),
            Node::RuntimesDir => Node::RuntimeDir(runtime_named(name)?),
            Node::RuntimeDir(k) if name == "status" => Node::RuntimeStatus(k),
            Node::StatusDir(st) => {
                let m = by_name(name)?;
                if m.status() != st {
                    return Err(Errno::ENOENT);
                }
                Node::StatusLink(m.seq())
            }
            Node::RuntimeLinksDir(k) => {
                let m = by_name(name)?;
                if m.snapshot().spec.runtime_type != k {
                    return Err(Errno::ENOENT);
                }
                Node::RuntimeLink(m.seq())
            }
            _ => return Err(Errno::ENOENT),
        };
        Ok(found)
    }

    fn list(&self, dir: Node) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let d = FileType::Directory;
        let mut out = vec![
            (dir.ino(), d, ".".to_owned()),
            (Node::Root.ino(), d, "..".to_owned()),
        ];
        let mut push =
            |node: Node, kind: FileType, name: &str| out.push((node.ino(), kind, name.to_owned()));
        match dir {
            Node::Root => {
                push(Node::Readme, FileType::RegularFile, "README");
                push(Node::MachinesDir, d, "machines");
                push(Node::ByStatusDir, d, "by-status");
                push(Node::ByRuntimeDir, d, "by-runtime");
                push(Node::RuntimesDir, d, "runtimes");
            }
            Node::MachinesDir => {
                for e in self.core.list() {
                    push(Node::Machine(e.seq), d, e.name.as_str());
                }
            }
            Node::Machine(seq) => {
                self.machine(seq)?;
                for k in FileKind::ALL {
                    push(Node::File(seq, k), FileType::RegularFile, k.name());
                }
            }
            Node::ByStatusDir => {
                for s in Status::ALL {
                    push(Node::StatusDir(s), d, s.as_str());
                }
            }
            Node::ByRuntimeDir | Node::RuntimesDir => {
                for k in RuntimeKind::ALL {
                    let node = if dir == Node::ByRuntimeDir {
                        Node::RuntimeLinksDir(k)
                    } else {
                        Node::RuntimeDir(k)
                    };
                    push(node, d, k.as_str());
                }
            }
            Node::RuntimeDir(k) => push(Node::RuntimeStatus(k), FileType::RegularFile, "status"),
            Node::StatusDir(st) => {
                for e in self.core.list().into_iter().filter(|e| e.status == st) {
                    push(Node::StatusLink(e.seq), FileType::Symlink, e.name.as_str());
                }
            }
            Node::RuntimeLinksDir(k) => {
                for e in self.core.list().into_iter().filter(|e| e.runtime == k) {
                    push(Node::RuntimeLink(e.seq), FileType::Symlink, e.name.as_str());
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }

    /// Opens a file whose content needs no runtime.
    fn open_static(&self, node: Node) -> Result<Vec<u8>, Errno> {
        Ok(match node {
            Node::Readme => content::README.as_bytes().to_vec(),
            Node::RuntimeStatus(k) => content::runtime_status(&self.core.health(k)),
            Node::File(seq, kind) => content::machine_file(&self.core, &*self.machine(seq)?, kind),
            _ => return Err(Errno::EISDIR),
        })
    }

    fn new_open_file(node: Node, content: Vec<u8>) -> Handle {
        Handle::File(Mutex::new(OpenFile {
            node,
            content,
            read_base: 0,
            pending: Vec::new(),
            applied: false,
        }))
    }

    fn write_config(
        &self,
        name: String,
        file: Arc<Handle>,
        offset: u64,
        data: &[u8],
        reply: ReplyWrite,
    ) {
        let Handle::File(f) = &*file else {
            return reply.error(Errno::EBADF);
        };
        let len = data.len();
        let end = offset as usize + len;
        if end > MAX_WRITE {
            // Drop the partial document too: otherwise the close would try
            // to apply it and replace this error with a JSON parse error.
            lock(f).pending = Vec::new();
            let e = self
                .core
                .report(&name, Error::TooLarge { limit: MAX_WRITE });
            return reply.error(errno(&e));
        }
        let doc = {
            let mut f = lock(f);
            if f.pending.len() < end {
                f.pending.resize(end, b' ');
            }
            f.pending[offset as usize..end].copy_from_slice(data);
            if f.applied && f.pending.iter().all(u8::is_ascii_whitespace) {
                f.pending.clear();
                return reply.written(len as u32);
            }
            match serde_json::from_slice::<serde::de::IgnoredAny>(&f.pending) {
                // Not a whole document yet: a large config arrives in pieces.
                Err(e) if e.is_eof() => return reply.written(len as u32),
                _ => std::mem::take(&mut f.pending),
            }
        };
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.set_config(&name, &doc).await {
                Ok(()) => {
                    if let Handle::File(f) = &*file {
                        lock(f).applied = true;
                    }
                    reply.written(len as u32)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write_ctl(&self, name: String, data: &[u8], reply: ReplyWrite) {
        let verb = match Verb::parse(data) {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&self.core.report(&name, e))),
        };
        let len = data.len() as u32;
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.control(&name, verb).await {
                Ok(()) => reply.written(len),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write_exec(
        &self,
        name: String,
        file: Arc<Handle>,
        offset: u64,
        data: &[u8],
        reply: ReplyWrite,
    ) {
        let cmd = match ExecCommand::parse(data) {
            Ok(c) => c,
            Err(e) => return reply.error(errno(&self.core.report(&name, e))),
        };
        let len = data.len();
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.exec(&name, cmd.request).await {
                Ok(rec) => {
                    if let Handle::File(f) = &*file {
                        let mut f = lock(f);
                        f.content = content::exec_result(&rec, cmd.format);
                        f.read_base = offset + len as u64;
                    }
                    reply.written(len as u32)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime_named(name: &str) -> Result<RuntimeKind, Errno> {
    RuntimeKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .ok_or(Errno::ENOENT)
}

fn link_target(m: &Machine) -> String {
    format!("../../machines/{}", m.name())
}

fn ms_to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn utf8(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::ENOENT)
}

impl Filesystem for MachineFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Lookups and listings in machines/ need not queue behind each other.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = (|| {
            let parent = node_of(parent).ok_or(Errno::ENOENT)?;
            let node = self.child(parent, utf8(name)?)?;
            Ok((node, self.attr(node, self.lookup_ino(node))?))
        })();
        match res {
            Ok((node, attr)) => {
                let ttl = Self::ttl(node);
                reply.entry(&ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match node_of(ino)
            .ok_or(Errno::ENOENT)
            .and_then(|n| self.attr(n, ino.0).map(|a| (n, a)))
        {
            Ok((node, attr)) => reply.attr(&Self::ttl(node), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(node) = node_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        // `echo x > file` truncates before writing; for the writable files
        // that is a no-op, since each write carries a whole value.
        match (node, size) {
            (_, None) => {}
            (Node::File(_, k), Some(0)) if k.writable() => {}
            _ => return reply.error(Errno::EPERM),
        }
        match self.attr(node, ino.0) {
            Ok(attr) => reply.attr(&Self::ttl(node), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match node_of(ino) {
            Some(Node::StatusLink(seq) | Node::RuntimeLink(seq)) => match self.machine(seq) {
                Ok(m) => reply.data(link_target(&m).as_bytes()),
                Err(e) => reply.error(e),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        if node_of(parent) != Some(Node::MachinesDir) {
            return reply.error(Errno::EPERM);
        }
        use std::os::unix::ffi::OsStrExt;
        match self.core.create(name.as_bytes()) {
            Ok(rec) => match self.attr(Node::Machine(rec.seq), Node::Machine(rec.seq).ino()) {
                Ok(attr) => reply.entry(&TTL_STABLE, &attr, Generation(0)),
                Err(e) => reply.error(e),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if node_of(parent) != Some(Node::MachinesDir) {
            return reply.error(Errno::EPERM);
        }
        let name = match utf8(name) {
            Ok(n) => n.to_owned(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.delete(&name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    // The tree's shape is fixed: files cannot be added, removed or renamed,
    // only machines (directories) created and deleted.
    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(node) = node_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let writable = matches!(node, Node::File(_, k) if k.writable());
        if writing && !writable {
            return reply.error(Errno::EACCES);
        }
        let mut fopen = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        if !writing {
            // Only writers of config have anything to report at close.
            fopen |= FopenFlags::FOPEN_NOFLUSH;
        }
        if let Node::File(seq, FileKind::Info) = node {
            let m = match self.machine(seq) {
                Ok(m) => m,
                Err(e) => return reply.error(e),
            };
            let name = m.name();
            let core = self.core.clone();
            let handles = self.handles.clone();
            self.rt.spawn(async move {
                match core.info(&name).await {
                    Ok(v) => {
                        let mut text = serde_json::to_vec_pretty(&v).unwrap_or_default();
                        text.push(b'\n');
                        let fh = handles.add(Self::new_open_file(node, text));
                        reply.opened(fh, fopen)
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            });
            return;
        }
        let content = match node {
            // Logs are read straight from the log file at each read.
            Node::File(_, FileKind::Logs) => Vec::new(),
            // A writer of exec reads only its own command's result.
            Node::File(_, FileKind::Exec) if flags.0 & libc::O_ACCMODE == libc::O_WRONLY => {
                Vec::new()
            }
            // Writers of config see nothing stale; readers see the spec.
            _ => match self.open_static(node) {
                Ok(c) => c,
                Err(e) => return reply.error(e),
            },
        };
        let fh = self.handles.add(Self::new_open_file(node, content));
        reply.opened(fh, fopen)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handles.get(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EISDIR);
        };
        let f = lock(f);
        if let Node::File(seq, FileKind::Logs) = f.node {
            let res = self
                .machine(seq)
                .and_then(|m| m.log().read_at(offset, size as usize).map_err(Errno::from));
            return match res {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            };
        }
        let rel = if offset >= f.read_base {
            offset - f.read_base
        } else {
            offset
        };
        let start = (rel as usize).min(f.content.len());
        let end = start.saturating_add(size as usize).min(f.content.len());
        reply.data(&f.content[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let h = match self.handles.get(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let node = match &*h {
            Handle::File(f) => lock(f).node,
            Handle::Dir(_) => return reply.error(Errno::EISDIR),
        };
        let Node::File(seq, kind) = node else {
            return reply.error(Errno::EACCES);
        };
        let name = match self.machine(seq) {
            Ok(m) => m.name(),
            Err(e) => return reply.error(e),
        };
        // The kernel splits a large write into pieces of at least 124 KiB and
        // hands each over separately; a command must arrive whole, so a limit
        // below that size fails any oversized write at its first piece
        // instead of running its pieces as separate commands.
        let limit = match kind {
            FileKind::Ctl | FileKind::Exec => MAX_COMMAND,
            _ => MAX_WRITE,
        };
        if data.len() > limit {
            let e = self.core.report(&name, Error::TooLarge { limit });
            return reply.error(errno(&e));
        }
        match kind {
            FileKind::Config => self.write_config(name, h, offset, data, reply),
            FileKind::Ctl => self.write_ctl(name, data, reply),
            FileKind::Exec => self.write_exec(name, h, offset, data, reply),
            _ => reply.error(Errno::EACCES),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Ok(h) = self.handles.get(fh) else {
            return reply.ok();
        };
        let Handle::File(f) = &*h else {
            return reply.ok();
        };
        // A config write that never became a whole document fails at close,
        // so the writer still hears about it.
        let (node, doc) = {
            let mut f = lock(f);
            if f.pending.is_empty() || (f.applied && f.pending.iter().all(u8::is_ascii_whitespace))
            {
                return reply.ok();
            }
            (f.node, std::mem::take(&mut f.pending))
        };
        let Node::File(seq, FileKind::Config) = node else {
            return reply.ok();
        };
        let name = match self.machine(seq) {
            Ok(m) => m.name(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.set_config(&name, &doc).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(fh);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The listing is taken once per open so that paging through a large
        // directory sees one consistent view.
        match node_of(ino).ok_or(Errno::ENOENT).and_then(|n| self.list(n)) {
            Ok(entries) => {
                let fh = self.handles.add(Handle::Dir(entries));
                reply.opened(fh, FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.handles.get(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(entries) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(fh);
        reply.ok();
    }
}
