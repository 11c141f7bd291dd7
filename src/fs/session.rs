//! Exec sessions in the tree, in the manner of Plan 9's `/net/tcp/clone`:
//!
//! ```text
//! machines/web/exec.new            open + read: a new session's number, "3\n"
//! machines/web/sessions/3/ctl      write the command (a line or JSON), or a file
//!                                  copy ({"get": PATH} / {"put": PATH, "mode": M}); then
//!                                  `signal INT`, `winsize COLS ROWS`, `close-stdin`
//! machines/web/sessions/3/stdin    write: bytes to the command
//! machines/web/sessions/3/stdout   read: bytes as they come; end of file when it ends
//! machines/web/sessions/3/stderr   likewise
//! machines/web/sessions/3/exit     read: blocks until the command ends; its code
//! ```
//!
//! A session lives while any of its files (or the `exec.new` that made it)
//! is open; the last close removes it, killing its command if it still runs.
//! Reads of the streams are answered from tasks, so one waiting for output
//! never holds a filesystem thread.

use std::sync::Arc;

use fuser::{Errno, FopenFlags, ReplyData, ReplyOpen, ReplyWrite};

use super::handles::{lock, Handle, OpenFile};
use super::inode::{FileKind, Node, SessionFile};
use super::requester::Requester;
use super::{errno, MachineFs, MAX_COMMAND};
use crate::core::{Machine, Session, Stream};
use crate::error::Error;
use crate::model::{SessionCommand, StreamControl};

/// What an open file of a session holds on to, released at close.
pub(super) type Held = (Arc<Machine>, Arc<Session>);

impl MachineFs {
    fn session_of(&self, seq: u64, n: u64) -> Result<Held, Errno> {
        let m = self.machine(seq)?;
        let s = self.core.session(&m, n).ok_or(Errno::ENOENT)?;
        Ok((m, s))
    }

    /// `exec.new`: makes a session; reading the handle says its number.
    pub(super) fn open_exec_new(&self, seq: u64, fopen: FopenFlags, reply: ReplyOpen) {
        let m = match self.machine(seq) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let s = match self.core.open_session(&m) {
            Ok(s) => s,
            Err(e) => return reply.error(errno(&e)),
        };
        let content = format!("{}\n", s.id).into_bytes();
        let mut file = OpenFile::new(Node::File(seq, FileKind::ExecNew), content);
        file.held = Some((m, s));
        let fh = self.handles.add(Handle::File(std::sync::Mutex::new(file)));
        reply.opened(fh, fopen)
    }

    pub(super) fn open_session_file(&self, node: Node, fopen: FopenFlags, reply: ReplyOpen) {
        let Node::SessionFile(seq, n, _) = node else {
            return reply.error(Errno::EISDIR);
        };
        let (m, s) = match self.session_of(seq, n) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        self.core.hold_session(&s);
        let mut file = OpenFile::new(node, Vec::new());
        file.held = Some((m, s));
        let fh = self.handles.add(Handle::File(std::sync::Mutex::new(file)));
        // The streams have no size and no seek: each read takes what came.
        reply.opened(fh, fopen | FopenFlags::FOPEN_NONSEEKABLE)
    }

    /// Lets go of what an open file held (its session).
    pub(super) fn release_held(&self, h: &Handle) {
        if let Handle::File(f) = h {
            if let Some((m, s)) = lock(f).held.take() {
                self.core.release_session(&m, &s);
            }
        }
    }

    pub(super) fn read_session(
        &self,
        who: Requester,
        file: SessionFile,
        held: Option<Held>,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) {
        let Some((_, s)) = held else {
            return reply.error(Errno::EBADF);
        };
        let max = size as usize;
        match file {
            SessionFile::Stdout | SessionFile::Stderr => {
                let stream = if file == SessionFile::Stdout {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                self.rt.spawn(async move {
                    match who.unless_killed(s.read(stream, max)).await {
                        Ok(data) => reply.data(&data),
                        Err(e) => reply.error(e),
                    }
                });
            }
            SessionFile::Exit => {
                self.rt.spawn(async move {
                    let code = match who.unless_killed(s.wait_exit()).await {
                        Ok(code) => code,
                        Err(e) => return reply.error(e),
                    };
                    let text = format!("{code}\n").into_bytes();
                    let start = (offset as usize).min(text.len());
                    let end = start.saturating_add(max).min(text.len());
                    reply.data(&text[start..end])
                });
            }
            // Reading ctl tells the session's number, as Plan 9's does.
            SessionFile::Ctl => {
                let text = format!("{}\n", s.id).into_bytes();
                let start = (offset as usize).min(text.len());
                let end = start.saturating_add(max).min(text.len());
                reply.data(&text[start..end])
            }
            SessionFile::Stdin => reply.error(Errno::EACCES),
        }
    }

    pub(super) fn write_session(
        &self,
        who: Requester,
        file: SessionFile,
        held: Option<Held>,
        data: &[u8],
        reply: ReplyWrite,
    ) {
        let Some((m, s)) = held else {
            return reply.error(Errno::EBADF);
        };
        let len = data.len() as u32;
        match file {
            SessionFile::Ctl => {
                if data.len() > MAX_COMMAND {
                    return self.refuse(m, Error::TooLarge { limit: MAX_COMMAND }, reply);
                }
                let data = data.to_vec();
                let core = self.core.clone();
                self.rt.spawn(async move {
                    let work = async {
                        if s.started() {
                            match StreamControl::parse(&data) {
                                Ok(c) => s.control(c).await,
                                Err(e) => Err(e),
                            }
                        } else {
                            match SessionCommand::parse(&data) {
                                Ok(cmd) => core.start_session(&m, &s, cmd).await,
                                Err(e) => Err(e),
                            }
                        }
                    };
                    match who.unless_killed(work).await {
                        Ok(Ok(())) => reply.written(len),
                        Ok(Err(e)) => reply.error(errno(&core.report(&m, e).await)),
                        Err(e) => reply.error(e),
                    }
                });
            }
            SessionFile::Stdin => {
                let data = data.to_vec();
                self.rt.spawn(async move {
                    match who.unless_killed(s.write_stdin(&data)).await {
                        Ok(Ok(())) => reply.written(len),
                        // The command no longer reads: as a closed pipe says.
                        Ok(Err(_)) => reply.error(Errno::EPIPE),
                        Err(e) => reply.error(e),
                    }
                });
            }
            _ => reply.error(Errno::EACCES),
        }
    }
}

/// The file handle whose `held` a caller needs (read and write take it).
pub(super) fn held_of(h: &Handle) -> Option<Held> {
    match h {
        Handle::File(f) => lock(f).held.clone(),
        Handle::Dir(_) | Handle::Events(_) => None,
    }
}
