//! Exec sessions: a command run with its streams attached, numbered under
//! its machine the way Plan 9's `/net/tcp/clone` hands out connections. A
//! session is made empty, then given its command; its stdout and stderr are
//! pipes a reader drains as bytes arrive; its input takes stdin bytes and
//! controls (a signal, a window size, the end of stdin). It lives while
//! anything holds it open and is removed, its command killed if still
//! running, when the last holder lets go.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::machine::lock;
use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{SessionCommand, Status, StreamControl};
use crate::runtime::{ExecControl, ExecStreams, StreamOutput};

/// Bytes a stream holds for a reader that is behind; past it the command
/// waits (its runtime stops reading its output).
const PIPE_CAP: usize = 1 << 20;
/// The exit code of a command its timeout ended.
pub const TIMED_OUT: i64 = 124;
/// Sessions one machine may have at once.
pub const MAX_SESSIONS: usize = 64;
/// Session numbers wrap here (they are part of inode numbers).
pub const SESSION_IDS: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

enum State {
    /// Made, no command yet.
    Idle,
    Running(Inputs),
    Done,
}

/// The ways into a running command, each its own path (see
/// `runtime::stream`): a stdin backlog never holds up a signal or the kill.
struct Inputs {
    /// None once closed.
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    control: mpsc::Sender<ExecControl>,
    /// Dropped along with the state when the command ends, which the
    /// runtime, done by then, ignores.
    kill: oneshot::Sender<()>,
}

pub struct Session {
    pub id: u64,
    state: Mutex<State>,
    stdout: Pipe,
    stderr: Pipe,
    /// The exit code (or 128 + signal) once the command ended.
    exit: watch::Sender<Option<(i64, bool)>>,
    holders: AtomicUsize,
}

#[derive(Default)]
struct Pipe {
    buf: Mutex<(VecDeque<u8>, bool)>,
    readable: Notify,
    writable: Notify,
}

impl Pipe {
    /// Appends, waiting while the reader is more than [`PIPE_CAP`] behind.
    async fn push(&self, bytes: &[u8]) {
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut b = lock(&self.buf);
                if b.1 {
                    // Nobody will read it any more.
                    return;
                }
                if b.0.len() < PIPE_CAP {
                    b.0.extend(bytes);
                    drop(b);
                    self.readable.notify_waiters();
                    return;
                }
            }
            room.await;
        }
    }

    fn close(&self) {
        lock(&self.buf).1 = true;
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    /// Up to `max` bytes, waiting for some; empty once the stream has ended.
    async fn read(&self, max: usize) -> Vec<u8> {
        loop {
            let data = self.readable.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            {
                let mut b = lock(&self.buf);
                if !b.0.is_empty() {
                    let n = max.min(b.0.len());
                    let out: Vec<u8> = b.0.drain(..n).collect();
                    drop(b);
                    self.writable.notify_waiters();
                    return out;
                }
                if b.1 {
                    return Vec::new();
                }
            }
            data.await;
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("started", &self.started())
            .field("exit", &self.exit())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(id: u64) -> Session {
        Session {
            id,
            state: Mutex::new(State::Idle),
            stdout: Pipe::default(),
            stderr: Pipe::default(),
            exit: watch::channel(None).0,
            holders: AtomicUsize::new(1),
        }
    }

    pub fn started(&self) -> bool {
        !matches!(*lock(&self.state), State::Idle)
    }

    pub fn exit(&self) -> Option<i64> {
        self.exit.borrow().map(|(c, _)| c)
    }

    /// Sends stdin bytes to the command (waiting while it does not read).
    pub async fn write_stdin(&self, bytes: &[u8]) -> Result<()> {
        let tx = self.with_inputs(|i| i.stdin.clone().ok_or_else(stdin_closed))?;
        tx.send(bytes.to_vec()).await.map_err(|_| ended())
    }

    /// Passes a control on. Closing stdin only lets go of the session's
    /// stdin sender, so the runtime sees the end after every byte already
    /// queued; signals and resizes take their own channel.
    pub async fn control(&self, c: StreamControl) -> Result<()> {
        let c = match c {
            StreamControl::CloseStdin => {
                return self.with_inputs(|i| {
                    i.stdin = None;
                    Ok(())
                })
            }
            StreamControl::Signal(sig) => ExecControl::Signal(sig),
            StreamControl::Resize(w) => ExecControl::Resize(w),
        };
        let tx = self.with_inputs(|i| Ok(i.control.clone()))?;
        tx.send(c).await.map_err(|_| ended())
    }

    fn with_inputs<T>(&self, f: impl FnOnce(&mut Inputs) -> Result<T>) -> Result<T> {
        match &mut *lock(&self.state) {
            State::Running(inputs) => f(inputs),
            State::Idle => Err(Error::InvalidCommand(
                "the session has no command yet: write one to its ctl first".into(),
            )),
            State::Done => Err(ended()),
        }
    }

    pub async fn read(&self, stream: Stream, max: usize) -> Vec<u8> {
        match stream {
            Stream::Stdout => self.stdout.read(max).await,
            Stream::Stderr => self.stderr.read(max).await,
        }
    }

    /// Waits for the command to end; its exit code, 128 + the signal that
    /// ended it, or 124 if its timeout did (as timeout(1) says).
    pub async fn wait_exit(&self) -> i64 {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some((code, timed_out)) = *rx.borrow_and_update() {
                return if timed_out { TIMED_OUT } else { code };
            }
            if rx.changed().await.is_err() {
                return -1;
            }
        }
    }

    fn finish(&self, code: i64, timed_out: bool) {
        *lock(&self.state) = State::Done;
        self.stdout.close();
        self.stderr.close();
        self.exit.send_replace(Some((code, timed_out)));
    }

    fn kill(&self) {
        let state = std::mem::replace(&mut *lock(&self.state), State::Done);
        if let State::Running(inputs) = state {
            // Cannot be lost to a full channel; Err means the runtime is
            // already done with the command.
            let _ = inputs.kill.send(());
        }
        self.stdout.close();
        self.stderr.close();
    }
}

fn ended() -> Error {
    Error::InvalidCommand("the session's command has ended".into())
}

fn stdin_closed() -> Error {
    Error::InvalidCommand("the session's stdin is closed".into())
}

impl Core {
    /// Makes an empty session on a machine, held once by the caller.
    pub fn open_session(&self, m: &Machine) -> Result<Arc<Session>> {
        if m.is_deleted() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        let mut sessions = lock(&m.sessions);
        if sessions.len() >= MAX_SESSIONS {
            return Err(Error::Busy(format!(
                "machine has {MAX_SESSIONS} exec sessions open; close some first"
            )));
        }
        let id = loop {
            let id = m.next_session.fetch_add(1, Ordering::Relaxed) % SESSION_IDS;
            if id != 0 && !sessions.contains_key(&id) {
                break id;
            }
        };
        let s = Arc::new(Session::new(id));
        sessions.insert(id, s.clone());
        Ok(s)
    }

    pub fn session(&self, m: &Machine, id: u64) -> Option<Arc<Session>> {
        lock(&m.sessions).get(&id).cloned()
    }

    pub fn sessions(&self, m: &Machine) -> Vec<u64> {
        lock(&m.sessions).keys().copied().collect()
    }

    /// One more holder (an open file of the session).
    pub fn hold_session(&self, s: &Session) {
        s.holders.fetch_add(1, Ordering::SeqCst);
    }

    /// One holder less; the last one removes the session, killing its
    /// command if it still runs.
    pub fn release_session(&self, m: &Machine, s: &Session) {
        if s.holders.fetch_sub(1, Ordering::SeqCst) == 1 {
            s.kill();
            lock(&m.sessions).remove(&s.id);
        }
    }

    /// Gives a session its command (or file copy) and starts it.
    pub async fn start_session(
        &self,
        m: &Arc<Machine>,
        s: &Arc<Session>,
        cmd: SessionCommand,
    ) -> Result<()> {
        if let SessionCommand::Run(req) = &cmd {
            req.validate()?;
        }
        if s.started() {
            return Err(Error::InvalidCommand(
                "the session's command is already given".into(),
            ));
        }
        let rec = m.snapshot();
        if rec.status != Status::Running {
            return Err(Error::InvalidState {
                action: "exec in",
                status: rec.status.as_str(),
            });
        }
        let rt = self.runtime_for(m, &rec)?;
        let attach = async {
            match &cmd {
                SessionCommand::Run(req) => rt.exec_stream(req).await,
                SessionCommand::CopyOut { path } => rt.copy_out(path).await,
                SessionCommand::CopyIn { path, mode } => rt.copy_in(path, *mode).await,
            }
        };
        let streams =
            super::operation::deadline(self.settings.call_deadline, "attach exec", attach).await?;
        let mut output = {
            let mut state = lock(&s.state);
            if !matches!(*state, State::Idle) {
                // Released (or raced by another ctl write) meanwhile.
                return Err(ended());
            }
            let ExecStreams {
                stdin,
                control,
                kill,
                output,
            } = streams;
            *state = State::Running(Inputs {
                stdin: Some(stdin),
                control,
                kill,
            });
            output
        };
        let session = s.clone();
        tokio::spawn(async move {
            while let Some(msg) = output.recv().await {
                match msg {
                    StreamOutput::Stdout(b) => session.stdout.push(&b).await,
                    StreamOutput::Stderr(b) => session.stderr.push(&b).await,
                    StreamOutput::Exit { code, timed_out } => {
                        session.finish(code, timed_out);
                        return;
                    }
                }
            }
            // The runtime went away without saying how the command ended.
            session.finish(-1, false);
        });
        Ok(())
    }
}
