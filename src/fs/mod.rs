//! The FUSE front end. It maps paths to core calls and nothing more: every
//! fact it shows comes from the core, every change goes through the core.
//!
//! Callbacks that may wait on a runtime or on the disk (mkdir, rmdir, ctl,
//! exec, info, config) hand their reply to a tokio task and return at once,
//! so one slow start, exec or commit never stalls `ls` or `cat status` of
//! other machines. The module's files: `tree` (names to nodes, listings),
//! `attr` (attributes), `handles` (open files), `write` (what writes do),
//! `content` (what files say), `inode` (node numbering).

mod attr;
mod cache;
mod content;
mod events;
mod handles;
pub mod inode;
mod mkdir;
mod poll;
mod requester;
mod session;
mod tree;
mod write;

use std::ffi::OsStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, Request, WriteFlags,
};

use crate::core::{Core, Machine};
use crate::error::Error;
use crate::model::{MachineSpec, MAX_WRITE};
use attr::node_of;
use handles::{lock, Handle, HandleTable};
use inode::{FileKind, Node};
use requester::Requester;

/// How old an `info` may be to be served again rather than taken afresh:
/// long enough for a `stat` and the `open` after it to agree.
const INFO_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest command `ctl` or `exec` takes in one write.
pub const MAX_COMMAND: usize = 64 << 10;

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

pub struct MachineFs {
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    handles: Arc<HandleTable>,
    nonce: AtomicU64,
    /// (process, file) → the nonce that process sees for the file.
    nonces: std::sync::Mutex<std::collections::HashMap<(u32, u64), (u64, std::time::Instant)>>,
    /// Machines just made by `mkdir`, and by which process.
    made: Arc<mkdir::RecentMkdirs>,
    /// What the kernel caches, and who polls for changes.
    cache: Arc<cache::Coherence>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

impl MachineFs {
    pub fn new(core: Arc<Core>, rt: tokio::runtime::Handle) -> MachineFs {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let cache = Arc::new(cache::Coherence::default());
        if !core.set_observer(Box::new(cache.clone())) {
            tracing::warn!("the core already has an observer: the kernel will cache nothing");
        }
        // Readers of `events` poll for any event at all.
        let mut sub = core.subscribe();
        let waker = Arc::downgrade(&cache);
        rt.spawn(async move {
            while sub.next().await.is_some() {
                let Some(c) = waker.upgrade() else { return };
                c.wake(cache::Key::Fleet);
            }
        });
        MachineFs {
            core,
            rt,
            handles: Arc::default(),
            nonce: AtomicU64::new(0),
            nonces: Default::default(),
            made: Arc::default(),
            cache,
            uid,
            gid,
            mounted_at: SystemTime::now(),
        }
    }

    /// What connects the kernel's caches to this filesystem's changes, to
    /// be handed the session's notifier once the session exists.
    pub fn cache_link(&self) -> CacheLink {
        CacheLink(self.cache.clone())
    }

    fn machine(&self, seq: u64) -> Result<Arc<Machine>, Errno> {
        self.core.get_by_seq(seq).ok_or(Errno::ENOENT)
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
}

/// See [`MachineFs::cache_link`].
pub struct CacheLink(Arc<cache::Coherence>);

impl CacheLink {
    /// From now on, the kernel's caches are told of every change.
    pub fn connect(&self, notifier: fuser::Notifier) {
        self.0.connect(notifier)
    }
}

fn utf8(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::ENOENT)
}

impl Filesystem for MachineFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Lookups and listings in machines/ need not queue behind each other.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // `ls -l` gets names and attributes in one go.
        // Adaptive: the kernel asks for attributes with the names only when
        // the names are followed by lookups (`ls -l`), so that a plain `ls`
        // of 10,000 machines does not render 10,000 sets of attributes.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // FUSE_NO_OPEN_SUPPORT is not asked for: it would stop every open
        // for the whole mount, and `exec`, `config`, `info`, `exec.new` and
        // the sessions all need theirs.
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = (|| {
            let parent = node_of(parent).ok_or(Errno::ENOENT)?;
            let node = self.child(parent, utf8(name)?)?;
            Ok((node, self.attr(node, self.lookup_ino(node, req.pid()))?))
        })();
        // `info`'s size is that of its content, which asks the runtime: the
        // answer comes from a task.
        if let Ok((node @ Node::File(seq, FileKind::Info), attr)) = res {
            let ttl = self.ttl(node);
            return self.with_info_size(seq, attr, move |a| match a {
                Ok(a) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            });
        }
        match res {
            Ok((node, attr)) => {
                let ttl = self.ttl(node);
                reply.entry_with_ttls(&first_attr_ttl(ttl), &ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = node_of(ino)
            .ok_or(Errno::ENOENT)
            .and_then(|n| self.attr(n, ino.0).map(|a| (n, a)));
        if let Ok((node @ Node::File(seq, FileKind::Info), attr)) = res {
            let ttl = self.ttl(node);
            return self.with_info_size(seq, attr, move |a| match a {
                Ok(a) => reply.attr(&ttl, &a),
                Err(e) => reply.error(e),
            });
        }
        match res {
            Ok((node, attr)) => reply.attr(&self.ttl(node), &attr),
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
            (Node::SessionFile(_, _, f), Some(0)) if f.writable() => {}
            _ => return reply.error(Errno::EPERM),
        }
        match self.attr(node, ino.0) {
            Ok(attr) => reply.attr(&self.ttl(node), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match node_of(ino) {
            Some(Node::StatusLink(seq) | Node::RuntimeLink(seq)) => match self.machine(seq) {
                Ok(m) => reply.data(tree::link_target(&m).as_bytes()),
                Err(e) => reply.error(e),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match node_of(parent) {
            Some(Node::MachinesDir) => {}
            // `mkdir -p machines/x/y` made x a moment ago and now fails on y:
            // x goes again, so the command creates nothing rather than half.
            Some(Node::Machine(seq)) => {
                return self.undo_half_mkdir(seq, req.pid(), req.uid(), reply)
            }
            _ => return reply.error(Errno::EPERM),
        }
        use std::os::unix::ffi::OsStrExt;
        let name = name.as_bytes().to_vec();
        let core = self.core.clone();
        let (uid, gid) = (self.uid, self.gid);
        let made = self.made.clone();
        let (pid, req_uid) = (req.pid(), req.uid());
        // The row is written on a task: the disk never holds a FUSE thread.
        self.rt.spawn(async move {
            match core.create(&name, MachineSpec::default()).await {
                Ok(m) => {
                    made.note(m.seq(), pid, req_uid);
                    let attr = attr::new_machine_dir(&m, uid, gid);
                    reply.entry_with_ttls(
                        &first_attr_ttl(cache::TTL_CACHED),
                        &cache::TTL_CACHED,
                        &attr,
                        Generation(0),
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match node_of(parent) {
            Some(Node::MachinesDir) => {}
            // Inside a machine (its `sessions`): nothing to remove on its own,
            // see `unlink`.
            Some(Node::Machine(_) | Node::SessionsDir(_) | Node::Session(..)) => {
                return reply.error(Errno::ENOENT)
            }
            _ => return reply.error(Errno::EPERM),
        }
        let m = match utf8(name).and_then(|n| self.core.get(n).map_err(|_| Errno::ENOENT)) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let who = Requester::of(req);
        let cache = self.cache.clone();
        let seq = m.seq();
        cache.rmdir_begins(seq);
        self.rt.spawn(async move {
            let res = who.unless_killed(core.delete(&m)).await;
            cache.rmdir_ends(seq);
            match res {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(errno(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    // The tree's shape is fixed: files cannot be added, removed or renamed,
    // only machines (directories) created and deleted. A machine's files are
    // not links of their own that could be unlinked: they come and go with
    // the machine. Unlinking one says there is no such link (ENOENT), which
    // is also what lets `rm -rf machines/x` go on to the `rmdir` that
    // deletes the machine (rm gives up on a directory whose entries it could
    // not remove, unless they were missing).
    fn unlink(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        match node_of(parent) {
            Some(Node::Machine(_) | Node::SessionsDir(_) | Node::Session(..)) => {
                reply.error(Errno::ENOENT)
            }
            _ => reply.error(Errno::EPERM),
        }
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

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(node) = node_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let writable = match node {
            Node::File(_, k) => k.writable(),
            Node::SessionFile(_, _, f) => f.writable(),
            _ => false,
        };
        if writing && !writable {
            return reply.error(Errno::EACCES);
        }
        let mut fopen = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        if !writing {
            // Only writers of config have anything to report at close.
            fopen |= FopenFlags::FOPEN_NOFLUSH;
        }
        match node {
            Node::File(seq, FileKind::ExecNew) => return self.open_exec_new(seq, fopen, reply),
            Node::SessionFile(..) => return self.open_session_file(node, fopen, reply),
            Node::Events => return self.open_events(None, fopen, reply),
            Node::File(seq, FileKind::Events) => return self.open_events(Some(seq), fopen, reply),
            _ => {}
        }
        // Read through the kernel's page cache, which `cache` keeps true.
        // Writers of config go straight to us: each write is a command.
        let cached = !writing && cache::Key::of_node(node).is_some() || node == Node::Readme;
        if cached {
            fopen = FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH;
        }
        if let Node::File(seq, FileKind::Info) = node {
            let m = match self.machine(seq) {
                Ok(m) => m,
                Err(e) => return reply.error(e),
            };
            let core = self.core.clone();
            let handles = self.handles.clone();
            let who = Requester::of(req);
            self.rt.spawn(async move {
                match who.unless_killed(core.info_text(&m, INFO_FRESH)).await {
                    Ok(Ok(text)) => {
                        let fh = handles.add(Handle::file(node, text.to_vec()));
                        reply.opened(fh, fopen)
                    }
                    Ok(Err(e)) => reply.error(errno(&e)),
                    Err(e) => reply.error(e),
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
        let mut file = handles::OpenFile::new(node, content);
        file.cached = cached;
        let fh = self.handles.add(Handle::File(std::sync::Mutex::new(file)));
        reply.opened(fh, fopen)
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handles.get(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let f = match &*h {
            Handle::File(f) => f,
            Handle::Events(e) => {
                let nonblocking = flags.0 & libc::O_NONBLOCK != 0;
                return self.read_events(Requester::of(req), e.clone(), size, nonblocking, reply);
            }
            Handle::Dir(_) => return reply.error(Errno::EISDIR),
        };
        let f = lock(f);
        if f.cached {
            // What lands in the page cache is shared by every reader, so it
            // is what the file says now, not what it said at this open.
            let node = f.node;
            drop(f);
            let content = match self.open_static(node) {
                Ok(c) => c,
                Err(e) => return reply.error(e),
            };
            let start = (offset as usize).min(content.len());
            let end = start.saturating_add(size as usize).min(content.len());
            return reply.data(&content[start..end]);
        }
        if let Node::SessionFile(_, _, file) = f.node {
            let held = f.held.clone();
            drop(f);
            return self.read_session(Requester::of(req), file, held, offset, size, reply);
        }
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
        req: &Request,
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
            Handle::Events(_) => return reply.error(Errno::EACCES),
        };
        if let Node::SessionFile(_, _, file) = node {
            return self.write_session(Requester::of(req), file, session::held_of(&h), data, reply);
        }
        let Node::File(seq, kind) = node else {
            return reply.error(Errno::EACCES);
        };
        let m = match self.machine(seq) {
            Ok(m) => m,
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
            return self.refuse(m, Error::TooLarge { limit }, reply);
        }
        match kind {
            FileKind::Config => self.write_config(m, h, offset, data, reply),
            FileKind::Ctl => self.write_ctl(Requester::of(req), m, data, reply),
            FileKind::Exec => self.write_exec(Requester::of(req), m, h, offset, data, reply),
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
        let (node, doc) = {
            let mut f = lock(f);
            if f.nothing_pending() {
                return reply.ok();
            }
            (f.node, std::mem::take(&mut f.pending))
        };
        let Node::File(seq, FileKind::Config) = node else {
            return reply.ok();
        };
        match self.machine(seq) {
            Ok(m) => self.flush_config(m, doc, reply),
            Err(e) => reply.error(e),
        }
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
        if let Ok(h) = self.handles.get(fh) {
            self.release_held(&h);
            if let Handle::Events(e) = &*h {
                e.close();
            }
        }
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

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let h = match self.handles.get(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(entries) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, (ino, _, name)) in entries.iter().enumerate().skip(offset as usize) {
            let Some(node) = Node::from_ino(*ino) else {
                continue;
            };
            // An entry that went away since the listing was taken is left out.
            let Ok(attr) = self.attr(node, *ino) else {
                continue;
            };
            // `info`'s size needs the runtime, which a listing does not ask:
            // its attributes here are not to be kept, so that `stat` (tar's)
            // asks for the real size.
            let ttl = match node {
                Node::File(_, FileKind::Info) => std::time::Duration::ZERO,
                _ => first_attr_ttl(self.ttl(node)),
            };
            if reply.add(
                INodeNo(*ino),
                (i + 1) as u64,
                name,
                &ttl,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        match self.handles.get(fh) {
            Ok(h) => self.poll_handle(&h, ph, flags, reply),
            Err(e) => reply.error(e),
        }
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

/// How long attributes handed out with a name (LOOKUP, READDIRPLUS) may be
/// kept. The kernel guards the attributes of an inode it knows against a
/// reply that an invalidation overtook, but not those of an inode that
/// reply creates: a change landing while it is in flight would otherwise
/// leave a stale size cached for an hour. The first GETATTR after this
/// (guarded, since the inode is known by then) gets the long lifetime.
fn first_attr_ttl(ttl: std::time::Duration) -> std::time::Duration {
    ttl.min(attr::TTL_STABLE)
}
