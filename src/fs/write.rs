//! Writes: a config document, a `ctl` command, an `exec` command. Each hands
//! its reply to a tokio task, so the FUSE thread returns at once whatever
//! the runtime or the disk does.

use std::sync::Arc;

use fuser::{Errno, ReplyEmpty, ReplyWrite};

use super::handles::{lock, Handle};
use super::requester::Requester;
use super::{content, errno, MachineFs};
use crate::core::Machine;
use crate::error::Error;
use crate::model::{Action, ExecCommand, MAX_WRITE};

impl MachineFs {
    /// Fails the write with `err` once it is recorded in the machine's `error`.
    pub(super) fn refuse(&self, m: Arc<Machine>, err: Error, reply: ReplyWrite) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            let e = core.report(&m, err).await;
            reply.error(errno(&e))
        });
    }

    pub(super) fn write_config(
        &self,
        m: Arc<Machine>,
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
            return self.refuse(m, Error::TooLarge { limit: MAX_WRITE }, reply);
        }
        let doc = {
            let mut f = lock(f);
            if f.pending.len() < end {
                f.pending.resize(end, b' ');
            }
            f.pending[offset as usize..end].copy_from_slice(data);
            if f.nothing_pending() {
                f.pending.clear();
                return reply.written(len as u32);
            }
            // A write that ends a line ends the document as the shell sees
            // it (`echo ... > config`): it is judged now, so a broken one
            // fails this write(2), not only the close nobody checks.
            let line_done = data.last() == Some(&b'\n');
            // Otherwise a whole object ends with '}': until one does, nothing
            // is parsed, so a config fed in small pieces is not re-parsed.
            let ends_whole = f
                .pending
                .iter()
                .rev()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'}');
            if !line_done && !ends_whole {
                return reply.written(len as u32);
            }
            match serde_json::from_slice::<serde::de::IgnoredAny>(&f.pending) {
                // Not a whole document yet: a large config arrives in pieces.
                Err(e) if e.is_eof() && !line_done => return reply.written(len as u32),
                _ => std::mem::take(&mut f.pending),
            }
        };
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.set_config(&m, &doc).await {
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

    /// A config document that never became whole fails at close, so the
    /// writer still hears about it.
    pub(super) fn flush_config(&self, m: Arc<Machine>, doc: Vec<u8>, reply: ReplyEmpty) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.set_config(&m, &doc).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    pub(super) fn write_ctl(
        &self,
        who: Requester,
        m: Arc<Machine>,
        data: &[u8],
        reply: ReplyWrite,
    ) {
        let action = match Action::parse_ctl(data) {
            Ok(a) => a,
            Err(e) => return self.refuse(m, e, reply),
        };
        let len = data.len() as u32;
        let core = self.core.clone();
        // A start or `wait` may take long; a killed writer must not wait
        // for it (the operation itself is detached and finishes).
        self.rt.spawn(async move {
            match who.unless_killed(core.act(&m, action)).await {
                Ok(Ok(())) => reply.written(len),
                Ok(Err(e)) => reply.error(errno(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    pub(super) fn write_exec(
        &self,
        who: Requester,
        m: Arc<Machine>,
        file: Arc<Handle>,
        offset: u64,
        data: &[u8],
        reply: ReplyWrite,
    ) {
        let cmd = match ExecCommand::parse(data) {
            Ok(c) => c,
            Err(e) => return self.refuse(m, e, reply),
        };
        let len = data.len();
        let core = self.core.clone();
        self.rt.spawn(async move {
            match who.unless_killed(core.exec(&m, cmd.request)).await {
                Ok(Ok(out)) => {
                    if let Handle::File(f) = &*file {
                        let mut f = lock(f);
                        f.content = content::exec_result(&out, cmd.format);
                        f.read_base = offset + len as u64;
                    }
                    reply.written(len as u32)
                }
                Ok(Err(e)) => reply.error(errno(&e)),
                Err(e) => reply.error(e),
            }
        });
    }
}
