//! A VM's guest agent as its runtime uses it: commands run through it, and
//! whether it has answered yet. Both VMMs expose the guest's vsock as a
//! Unix socket in the machine's runtime directory (hybrid vsock); the agent
//! listens on a vsock port in the guest (52 unless the spec says otherwise).
//!
//! This is the one place agent errors become crate errors, so `exec` in a
//! Firecracker and in a Cloud Hypervisor machine fails the same way: an
//! agent that never answers is EHOSTUNREACH with the port named, a command
//! that cannot start ends at once as in a shell: 127 when there is no such
//! command, 126 when it cannot be executed, whether it was run one-shot or
//! with its streams attached.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::{ExecStreams, StreamInput, StreamOutput, STREAM_DEPTH};
use crate::agent::{self, ErrorKind, ExitStatus, HybridVsock};
use crate::error::{Error, Result};
use crate::model::{ExecOutput, ExecRequest, StreamControl, StreamRequest};

/// How long an exec waits for an agent that has not answered yet (a guest
/// still booting).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// How long after a boot the agent is probed before it is called absent.
pub const BOOT_PROBE: Duration = Duration::from_secs(60);

/// The exit code of a command that could not be executed (a shell's).
pub const CANNOT_EXECUTE: i64 = 126;
/// The exit code of a command that does not exist (a shell's).
pub const NOT_FOUND: i64 = 127;

/// How a command that could not start ends, as a shell says it.
fn cannot_start_code(kind: ErrorKind) -> i64 {
    match kind {
        ErrorKind::NotFound => NOT_FOUND,
        _ => CANNOT_EXECUTE,
    }
}

/// The result of a one-shot command that could not start.
fn never_started(kind: ErrorKind, message: &str) -> ExecOutput {
    ExecOutput {
        stderr: format!("{message}\n").into_bytes(),
        exit_code: cannot_start_code(kind),
        ..Default::default()
    }
}

/// What is known of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Not answered yet; the guest may still be booting.
    Waiting,
    /// It answered.
    Ready,
    /// It did not answer within the boot probe (no agent in this guest?).
    Absent,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Waiting => "waiting",
            AgentState::Ready => "ready",
            AgentState::Absent => "absent",
        }
    }
}

/// The agent of one VM run.
#[derive(Clone)]
pub struct GuestAgent {
    socket: PathBuf,
    port: u32,
    state: Arc<watch::Sender<AgentState>>,
    probing: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

impl GuestAgent {
    /// The agent behind the hybrid-vsock socket `socket`, on `port`.
    pub fn new(socket: impl Into<PathBuf>, port: u32) -> GuestAgent {
        GuestAgent {
            socket: socket.into(),
            port,
            state: Arc::new(watch::channel(AgentState::Waiting).0),
            probing: Arc::default(),
        }
    }

    pub fn state(&self) -> AgentState {
        *self.state.borrow()
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    fn transport(&self, deadline: Duration) -> HybridVsock {
        HybridVsock::new(&self.socket, self.port).with_deadline(deadline)
    }

    fn set(&self, s: AgentState) {
        self.state.send_replace(s);
    }

    /// Probes the agent in the background after a boot: `ready` once it
    /// answers, `absent` if it has not within [`BOOT_PROBE`].
    pub fn watch_boot(&self) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            match me.ping(BOOT_PROBE).await {
                Ok(()) => {}
                Err(_) if me.state() != AgentState::Ready => me.set(AgentState::Absent),
                Err(_) => {}
            }
        });
        if let Some(old) = self
            .probing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task.abort_handle())
        {
            old.abort();
        }
    }

    /// Stops a boot probe (the VM is going away).
    pub fn stop_watching(&self) {
        if let Some(task) = self
            .probing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }

    async fn ping(&self, deadline: Duration) -> Result<()> {
        let client = self.transport(deadline).connect().await.map_err(to_error)?;
        client.ping().await.map_err(to_error)?;
        self.set(AgentState::Ready);
        Ok(())
    }

    /// Blocks until the agent answers (`ctl: wait agent`).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.ping(timeout).await
    }

    /// Runs a command to completion through the agent.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput> {
        let deadline = match self.state() {
            AgentState::Ready => Duration::from_secs(2),
            _ => CONNECT_DEADLINE,
        };
        let client = self.transport(deadline).connect().await.map_err(to_error)?;
        self.set(AgentState::Ready);
        let mut areq = agent::ExecRequest::new(req.cmd.clone());
        areq.env = req.env.clone();
        areq.working_dir = req.working_dir.clone();
        areq.user = req.user.clone();
        areq.timeout = req.timeout;
        match client.exec(areq).await {
            Ok(r) => {
                let mut out = ExecOutput {
                    stdout: r.stdout,
                    stderr: r.stderr,
                    exit_code: exit_code(r.status),
                    stdout_truncated: r.stdout_truncated,
                    stderr_truncated: r.stderr_truncated,
                    timed_out: r.timed_out,
                };
                out.stdout.truncate(crate::model::exec::MAX_EXEC_OUTPUT);
                out.stderr.truncate(crate::model::exec::MAX_EXEC_OUTPUT);
                Ok(out)
            }
            // A command that cannot start is a result, as in a shell.
            Err(agent::Error::Remote { kind, message, .. })
                if matches!(kind, ErrorKind::NotFound | ErrorKind::PermissionDenied) =>
            {
                Ok(never_started(kind, &message))
            }
            Err(e) => Err(to_error(e)),
        }
    }
}

impl GuestAgent {
    /// A command with its streams attached, through the agent's streaming
    /// exec (`hyperfleet exec -it` in a VM).
    pub async fn exec_stream(&self, req: &StreamRequest) -> Result<ExecStreams> {
        req.validate()?;
        let deadline = match self.state() {
            AgentState::Ready => Duration::from_secs(2),
            _ => CONNECT_DEADLINE,
        };
        let client = self.transport(deadline).connect().await.map_err(to_error)?;
        self.set(AgentState::Ready);
        let mut exec = agent::ExecRequest::new(req.cmd.clone());
        exec.env = req.env.clone();
        exec.working_dir = req.working_dir.clone();
        exec.user = req.user.clone();
        // The agent wants a limit; "none" is the longest a command may have.
        exec.timeout = req.timeout.unwrap_or(crate::model::action::MAX_TIMEOUT);
        let started = client
            .exec_stream(agent::StreamRequest {
                exec,
                pty: req.tty.map(|w| agent::WindowSize {
                    rows: w.rows,
                    cols: w.cols,
                }),
            })
            .await;
        let session = match started {
            Ok(s) => s,
            // As for a one-shot exec: a command that cannot start ends at
            // once with a shell's code and says why on stderr.
            Err(agent::Error::Remote { kind, message, .. })
                if matches!(kind, ErrorKind::NotFound | ErrorKind::PermissionDenied) =>
            {
                return Ok(ended_at_once(kind, &message))
            }
            Err(e) => return Err(to_error(e)),
        };
        let (mut input, mut output) = session.split();
        let (in_tx, mut in_rx) = mpsc::channel::<StreamInput>(STREAM_DEPTH);
        let (out_tx, out_rx) = mpsc::channel::<StreamOutput>(STREAM_DEPTH);
        let input_task = tokio::spawn(async move {
            while let Some(msg) = in_rx.recv().await {
                let sent = match msg {
                    StreamInput::Stdin(b) => input.send_stdin(&b).await,
                    StreamInput::Control(StreamControl::CloseStdin) => input.close_stdin().await,
                    StreamInput::Control(StreamControl::Signal(sig)) => {
                        input.signal(agent::Signal(sig)).await
                    }
                    StreamInput::Control(StreamControl::Resize(w)) => {
                        input
                            .resize(agent::WindowSize {
                                rows: w.rows,
                                cols: w.cols,
                            })
                            .await
                    }
                };
                if let Err(e) = sent {
                    tracing::debug!("agent session input: {}", e.report());
                }
            }
        });
        tokio::spawn(async move {
            let end = loop {
                match output.recv().await {
                    Ok(Some(agent::ExecEvent::Stdout(b))) => {
                        if out_tx.send(StreamOutput::Stdout(b)).await.is_err() {
                            break None;
                        }
                    }
                    Ok(Some(agent::ExecEvent::Stderr(b))) => {
                        if out_tx.send(StreamOutput::Stderr(b)).await.is_err() {
                            break None;
                        }
                    }
                    Ok(Some(agent::ExecEvent::Exit(info))) => {
                        break Some(StreamOutput::Exit {
                            code: exit_code(info.status),
                            timed_out: info.timed_out,
                        })
                    }
                    Ok(None) | Err(_) => {
                        break Some(StreamOutput::Exit {
                            code: -1,
                            timed_out: false,
                        })
                    }
                }
            };
            // Dropping the session's output half closes the connection,
            // which the agent takes as the end: it kills the command.
            input_task.abort();
            if let Some(last) = end {
                let _ = out_tx.send(last).await;
            }
        });
        Ok(ExecStreams {
            input: in_tx,
            output: out_rx,
        })
    }
}

impl GuestAgent {
    /// A file out of the guest through the agent's own transfer (no `cat`
    /// needed in the guest): its bytes as stdout, exit 0 once whole.
    pub async fn copy_out(&self, path: &str) -> Result<ExecStreams> {
        let client = self.connect().await?;
        let (in_tx, _) = mpsc::channel(1);
        let (out_tx, out_rx) = mpsc::channel(STREAM_DEPTH);
        let (writer, mut reader) = tokio::io::duplex(64 << 10);
        let path = path.to_owned();
        tokio::spawn(async move {
            let pump_tx = out_tx.clone();
            let pump = async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if pump_tx
                                .send(StreamOutput::Stdout(buf[..n].to_vec()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            };
            let (got, ()) = tokio::join!(client.get_file(&path, writer), pump);
            finish_transfer(&out_tx, got.map(|_| ())).await;
        });
        Ok(ExecStreams {
            input: in_tx,
            output: out_rx,
        })
    }

    /// A file into the guest through the agent: stdin's bytes, written
    /// whole when stdin closes; exit 0 once written.
    pub async fn copy_in(&self, path: &str, mode: u32) -> Result<ExecStreams> {
        let client = self.connect().await?;
        let (in_tx, mut in_rx) = mpsc::channel::<StreamInput>(STREAM_DEPTH);
        let (out_tx, out_rx) = mpsc::channel(STREAM_DEPTH);
        let (mut writer, reader) = tokio::io::duplex(64 << 10);
        let path = path.to_owned();
        tokio::spawn(async move {
            let feed = async move {
                while let Some(msg) = in_rx.recv().await {
                    match msg {
                        StreamInput::Stdin(b) => {
                            if writer.write_all(&b).await.is_err() {
                                return;
                            }
                        }
                        StreamInput::Control(StreamControl::CloseStdin) => return,
                        StreamInput::Control(_) => {}
                    }
                }
            };
            // The writer half is dropped when the feed ends: the agent sees
            // the end of the file.
            let (put, ()) = tokio::join!(client.put_file(reader, &path, mode), feed);
            finish_transfer(&out_tx, put.map(|_| ())).await;
        });
        Ok(ExecStreams {
            input: in_tx,
            output: out_rx,
        })
    }

    async fn connect(&self) -> Result<agent::AgentClient<tokio::net::UnixStream>> {
        let deadline = match self.state() {
            AgentState::Ready => Duration::from_secs(2),
            _ => CONNECT_DEADLINE,
        };
        let client = self.transport(deadline).connect().await.map_err(to_error)?;
        self.set(AgentState::Ready);
        Ok(client)
    }
}

/// How a transfer ended, as a session says it: exit 0, or the reason on
/// stderr and exit 1 (as `cp` does).
async fn finish_transfer(
    out: &mpsc::Sender<StreamOutput>,
    res: std::result::Result<(), agent::Error>,
) {
    let code = match res {
        Ok(()) => 0,
        Err(e) => {
            let _ = out
                .send(StreamOutput::Stderr(
                    format!("{}\n", e.report()).into_bytes(),
                ))
                .await;
            1
        }
    };
    let _ = out
        .send(StreamOutput::Exit {
            code,
            timed_out: false,
        })
        .await;
}

/// A session whose command could not start: what a one-shot exec of it
/// gives ([`never_started`]), as a stream.
fn ended_at_once(kind: ErrorKind, message: &str) -> ExecStreams {
    let out = never_started(kind, message);
    let (in_tx, _) = mpsc::channel(1);
    let (out_tx, out_rx) = mpsc::channel(2);
    let _ = out_tx.try_send(StreamOutput::Stderr(out.stderr));
    let _ = out_tx.try_send(StreamOutput::Exit {
        code: out.exit_code,
        timed_out: false,
    });
    ExecStreams {
        input: in_tx,
        output: out_rx,
    }
}

/// An exit code as a shell reports it: 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> i64 {
    match status {
        ExitStatus::Code(c) => i64::from(c),
        ExitStatus::Signal(s) => 128 + i64::from(s),
    }
}

/// The one mapping from agent errors to crate errors.
pub fn to_error(e: agent::Error) -> Error {
    let text = e.report();
    match e {
        agent::Error::NotAnswering { .. } => Error::Unreachable(text),
        agent::Error::Timeout { .. } => Error::Timeout(text),
        agent::Error::Remote {
            kind: ErrorKind::InvalidArgument,
            ..
        }
        | agent::Error::InvalidRequest(_) => Error::InvalidCommand(text),
        agent::Error::Remote {
            kind: ErrorKind::NotFound,
            ..
        } => Error::MissingFile {
            field: "path".into(),
            reason: text,
        },
        _ => Error::Runtime(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_that_cannot_start_ends_alike_one_shot_and_streamed() {
        for (kind, code) in [
            (ErrorKind::NotFound, 127),
            (ErrorKind::PermissionDenied, 126),
        ] {
            let one_shot = never_started(kind, "nope");
            assert_eq!(one_shot.exit_code, code, "{kind:?}");
            assert_eq!(one_shot.stderr, b"nope\n");
            let mut streamed = ended_at_once(kind, "nope");
            let mut stderr = Vec::new();
            let exit = loop {
                match streamed.output.recv().await {
                    Some(StreamOutput::Stderr(b)) => stderr.extend(b),
                    Some(StreamOutput::Exit { code, .. }) => break code,
                    Some(other) => panic!("unexpected {other:?}"),
                    None => panic!("no exit"),
                }
            };
            assert_eq!(exit, code, "{kind:?} streamed");
            assert_eq!(stderr, one_shot.stderr);
        }
    }

    #[tokio::test]
    async fn an_agent_that_never_answers_is_ehostunreach_naming_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let agent = GuestAgent::new(dir.path().join("vsock.sock"), 52);
        let err = agent
            .transport(Duration::from_millis(200))
            .connect()
            .await
            .map(|_| ())
            .map_err(to_error)
            .unwrap_err();
        assert_eq!(err.errno(), libc::EHOSTUNREACH);
        assert!(
            err.report().to_string().contains("port 52"),
            "{}",
            err.report()
        );
        assert_eq!(agent.state(), AgentState::Waiting);
        let err = agent
            .wait_ready(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.errno(), libc::EHOSTUNREACH);
    }
}
