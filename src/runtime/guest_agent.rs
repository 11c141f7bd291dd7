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

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::{exec_channels, ExecControl, ExecEnds, ExecStreams, StreamOutput};
use crate::agent::{self, ErrorKind, ExitStatus, HybridVsock};
use crate::error::{Error, Result};
use crate::model::{ExecOutput, ExecRequest, StreamRequest};

/// How long an exec waits for an agent that has not answered yet (a guest
/// still booting).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// How long after a boot the agent is probed before it is called absent.
pub const BOOT_PROBE: Duration = Duration::from_secs(60);

/// How long the exit is still awaited after the session's input failed.
const INPUT_LOST_GRACE: Duration = Duration::from_secs(2);

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
        let out_of_band = client.signals_out_of_band();
        let started = client.exec_stream(agent_stream_request(req)).await;
        let session = match started {
            Ok(s) => s,
            // As for a one-shot exec: a command that cannot start ends at
            // once with a shell's code and says why on stderr.
            Err(agent::Error::Remote { kind, message, .. })
                if matches!(kind, ErrorKind::NotFound | ErrorKind::PermissionDenied) =>
            {
                return Ok(ended_at_once_with(kind, &message))
            }
            Err(e) => return Err(to_error(e)),
        };
        let pid = session.pid();
        let (input, output) = session.split();
        let (streams, ends) = exec_channels();
        let ExecEnds {
            stdin,
            control,
            kill,
            output: out_tx,
        } = ends;
        let (in_band, in_band_rx) = mpsc::channel(crate::runtime::CONTROL_DEPTH);
        let signaller = out_of_band.then(|| (self.clone(), pid));
        tokio::spawn(dispatch_controls(control, in_band, signaller));
        let writer = tokio::spawn(write_input(input, stdin, in_band_rx));
        tokio::spawn(read_output(output, out_tx, kill, writer));
        Ok(streams)
    }
}

/// The agent's form of a streaming exec. No timeout means none: agents
/// since protocol 1.1 honour `no_timeout`; a 1.0 agent ignores it and
/// applies the longest timeout a command may have.
fn agent_stream_request(req: &StreamRequest) -> agent::StreamRequest {
    let mut exec = agent::ExecRequest::new(req.cmd.clone());
    exec.env = req.env.clone();
    exec.working_dir = req.working_dir.clone();
    exec.user = req.user.clone();
    exec.timeout = req.timeout.unwrap_or(crate::model::action::MAX_TIMEOUT);
    agent::StreamRequest {
        exec,
        pty: req.tty.map(|w| agent::WindowSize {
            rows: w.rows,
            cols: w.cols,
        }),
        no_timeout: req.timeout.is_none(),
    }
}

/// Routes a session's controls. Signals go over a connection of their own
/// when the agent takes that (protocol 1.1): the session's connection may
/// be backed up with stdin the command does not read, and then nothing
/// more gets through it. The rest (and every signal to a 1.0 agent) goes
/// in band, ahead of the next stdin chunk.
async fn dispatch_controls(
    mut control: mpsc::Receiver<ExecControl>,
    in_band: mpsc::Sender<ExecControl>,
    signaller: Option<(GuestAgent, u32)>,
) {
    while let Some(c) = control.recv().await {
        match (c, &signaller) {
            (ExecControl::Signal(sig), Some((agent, pid))) => {
                if let Err(e) = agent.signal(*pid, sig).await {
                    tracing::debug!("cannot signal agent stream {pid}: {}", e.report());
                }
            }
            // A resize waiting behind a backlog is superseded by the next
            // one anyway; never let it hold up a signal.
            (c @ ExecControl::Resize(_), Some(_)) => {
                let _ = in_band.try_send(c);
            }
            (c, None) => {
                if in_band.send(c).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends the session's input to the agent, a pending control always ahead
/// of the next stdin chunk (it still waits for a chunk already on its way:
/// frames cannot interleave). Ends at the first failure: past a failed
/// write the connection may hold part of a frame, so nothing more may go.
async fn write_input<S: AsyncRead + AsyncWrite>(
    mut input: agent::SessionInput<S>,
    mut stdin: mpsc::Receiver<Vec<u8>>,
    mut control: mpsc::Receiver<ExecControl>,
) -> std::result::Result<(), agent::Error> {
    let (mut stdin_open, mut control_open) = (true, true);
    while stdin_open || control_open {
        tokio::select! {
            biased;
            c = control.recv(), if control_open => match c {
                Some(ExecControl::Signal(sig)) => input.signal(agent::Signal(sig)).await?,
                Some(ExecControl::Resize(w)) => {
                    let size = agent::WindowSize {
                        rows: w.rows,
                        cols: w.cols,
                    };
                    match input.resize(size).await {
                        // A resize without a pty is refused before anything
                        // is written: harmless.
                        Err(agent::Error::InvalidRequest(_)) => {}
                        other => other?,
                    }
                }
                None => control_open = false,
            },
            b = stdin.recv(), if stdin_open => match b {
                Some(b) => input.send_stdin(&b).await?,
                None => {
                    stdin_open = false;
                    input.close_stdin().await?;
                }
            },
        }
    }
    Ok(())
}

/// Passes the command's output on until its exit, or until the session
/// kills it.
async fn read_output<S: AsyncRead + AsyncWrite>(
    mut output: agent::SessionOutput<S>,
    out_tx: mpsc::Sender<StreamOutput>,
    mut kill: oneshot::Receiver<()>,
    mut writer: tokio::task::JoinHandle<std::result::Result<(), agent::Error>>,
) {
    let unknown = StreamOutput::Exit {
        code: -1,
        timed_out: false,
    };
    let mut writing = true;
    // Set when the input failed: what failed, and until when the exit is
    // still awaited.
    let mut lost: Option<(String, tokio::time::Instant)> = None;
    let end = loop {
        let until = lost.as_ref().map(|(_, until)| *until);
        let grace_over = async move {
            match until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            biased;
            // Closing the connection is the kill: the agent kills the
            // command's process group when its host goes away.
            _ = &mut kill => break Some(StreamOutput::Exit {
                code: 128 + i64::from(libc::SIGKILL),
                timed_out: false,
            }),
            w = &mut writer, if writing => {
                writing = false;
                let failure = match w {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.report(),
                    Err(e) => e.to_string(),
                };
                // Most often the agent closed the connection after sending
                // the exit, which is still to be read: give it a moment.
                lost = Some((failure, tokio::time::Instant::now() + INPUT_LOST_GRACE));
                continue;
            },
            () = grace_over => break None,
            e = output.recv() => e,
        };
        let msg = match event {
            Ok(Some(agent::ExecEvent::Stdout(b))) => StreamOutput::Stdout(b),
            Ok(Some(agent::ExecEvent::Stderr(b))) => StreamOutput::Stderr(b),
            Ok(Some(agent::ExecEvent::Exit(info))) => {
                break Some(StreamOutput::Exit {
                    code: exit_code(info.status),
                    timed_out: info.timed_out,
                })
            }
            Ok(None) | Err(_) => break None,
        };
        if out_tx.send(msg).await.is_err() {
            return end_session(writer, output);
        }
    };
    let last = match (end, lost) {
        (Some(exit), _) => exit,
        (None, Some((failure, _))) => {
            // The command's input is cut (stdin, signals): it must not run
            // on unattended, and its caller must hear why.
            tracing::warn!("agent session input failed: {failure}");
            let note = format!("hyperfleet: lost the command's input: {failure}\n");
            let _ = out_tx.send(StreamOutput::Stderr(note.into_bytes())).await;
            unknown
        }
        (None, None) => unknown,
    };
    end_session(writer, output);
    let _ = out_tx.send(last).await;
}

/// Drops both halves of the connection, which closes it: the agent then
/// kills the command's group if it still runs.
fn end_session<S>(
    writer: tokio::task::JoinHandle<std::result::Result<(), agent::Error>>,
    output: agent::SessionOutput<S>,
) {
    writer.abort();
    drop(output);
}

impl GuestAgent {
    /// Signals the streaming exec whose command is `pid` over a connection
    /// of its own.
    async fn signal(&self, pid: u32, sig: i32) -> Result<()> {
        let client = self.connect().await?;
        client
            .signal(pid, agent::Signal(sig))
            .await
            .map_err(to_error)
    }

    /// A file out of the guest through the agent's own transfer (no `cat`
    /// needed in the guest): its bytes as stdout, exit 0 once whole.
    pub async fn copy_out(&self, path: &str) -> Result<ExecStreams> {
        let client = self.connect().await?;
        let (streams, ends) = exec_channels();
        let out_tx = ends.output;
        let mut kill = ends.kill;
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
            let copy = async { tokio::join!(client.get_file(&path, writer), pump).0 };
            tokio::select! {
                biased;
                // Released: the transfer's connection goes with it.
                _ = &mut kill => {}
                got = copy => finish_transfer(&out_tx, got.map(|_| ())).await,
            }
        });
        Ok(streams)
    }

    /// A file into the guest through the agent: stdin's bytes, written
    /// whole when stdin closes; exit 0 once written.
    pub async fn copy_in(&self, path: &str, mode: u32) -> Result<ExecStreams> {
        let client = self.connect().await?;
        let (streams, ends) = exec_channels();
        let ExecEnds {
            mut stdin,
            output: out_tx,
            mut kill,
            ..
        } = ends;
        let (mut writer, reader) = tokio::io::duplex(64 << 10);
        let path = path.to_owned();
        tokio::spawn(async move {
            let feed = async move {
                while let Some(b) = stdin.recv().await {
                    if writer.write_all(&b).await.is_err() {
                        return;
                    }
                }
            };
            // The writer half is dropped when stdin ends: the agent sees
            // the end of the file.
            let copy = async { tokio::join!(client.put_file(reader, &path, mode), feed).0 };
            tokio::select! {
                biased;
                // Released: the transfer is cut short, and a put cut short
                // leaves nothing behind.
                _ = &mut kill => {}
                put = copy => finish_transfer(&out_tx, put.map(|_| ())).await,
            }
        });
        Ok(streams)
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
fn ended_at_once_with(kind: ErrorKind, message: &str) -> ExecStreams {
    let out = never_started(kind, message);
    crate::runtime::stream::ended_at_once(out.stderr, out.exit_code)
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

    /// A session whose agent said the command started, then goes silent
    /// with the connection open.
    async fn silent_session() -> agent::ExecSession<tokio::io::DuplexStream> {
        session_saying(None).await
    }

    /// A session whose agent said the command started, then sent `last`
    /// (if any), then goes silent with the connection open.
    async fn session_saying(
        last: Option<crate::agent::protocol::Frame>,
    ) -> agent::ExecSession<tokio::io::DuplexStream> {
        use crate::agent::protocol::{encode_to_vec, Frame, Hello, Response};
        let (host, mut guest) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let frames = [
                Frame::Hello(Hello::ours()),
                Frame::Response(Response::Started { pid: 7 }),
            ];
            for frame in frames.into_iter().chain(last) {
                let bytes = encode_to_vec(&frame).unwrap();
                guest.write_all(&bytes).await.unwrap();
            }
            let _ = tokio::io::copy(&mut guest, &mut tokio::io::sink()).await;
        });
        agent::AgentClient::handshake(host)
            .await
            .unwrap()
            .exec_stream(agent::StreamRequest {
                exec: agent::ExecRequest::new(["sh"]),
                pty: None,
                no_timeout: false,
            })
            .await
            .unwrap()
    }

    #[test]
    fn a_stream_with_no_timeout_asks_the_agent_for_none() {
        let mut req = StreamRequest::parse(b"sh").unwrap();
        req.timeout = None;
        let sent = agent_stream_request(&req);
        assert!(sent.no_timeout);
        // What a 1.0 agent, which ignores no_timeout, applies instead.
        assert_eq!(sent.exec.timeout, crate::model::action::MAX_TIMEOUT);
        req.timeout = Some(Duration::from_secs(5));
        let sent = agent_stream_request(&req);
        assert!(!sent.no_timeout);
        assert_eq!(sent.exec.timeout, Duration::from_secs(5));
    }

    // Paused time: the grace for a late exit passes at once.
    #[tokio::test(start_paused = true)]
    async fn a_failed_input_write_ends_the_session_and_says_why() {
        let (_input, output) = silent_session().await.split();
        let (out_tx, mut out_rx) = mpsc::channel(crate::runtime::STREAM_DEPTH);
        let (_kill, kill) = oneshot::channel();
        let writer = tokio::spawn(async {
            Err(agent::Error::Closed {
                during: "sending stdin",
            })
        });
        tokio::spawn(read_output(output, out_tx, kill, writer));
        let mut got = Vec::new();
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), out_rx.recv())
            .await
            .expect("the session went on without its input")
        {
            got.push(msg);
        }
        match got.as_slice() {
            [StreamOutput::Stderr(note), StreamOutput::Exit { code: -1, .. }] => {
                let note = String::from_utf8_lossy(note);
                assert!(note.contains("sending stdin"), "{note}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_exit_already_sent_beats_a_failed_input_write() {
        use crate::agent::protocol::{ExitInfo, Frame, Response};
        let exit = Frame::Response(Response::Exit(ExitInfo {
            status: ExitStatus::Code(5),
            timed_out: false,
            stdout_truncated: false,
            stderr_truncated: false,
        }));
        let (_input, output) = session_saying(Some(exit)).await.split();
        let (out_tx, mut out_rx) = mpsc::channel(crate::runtime::STREAM_DEPTH);
        let (_kill, kill) = oneshot::channel();
        // The agent closed after the exit, so the next write failed.
        let writer = tokio::spawn(async {
            Err(agent::Error::Closed {
                during: "sending stdin",
            })
        });
        tokio::spawn(read_output(output, out_tx, kill, writer));
        let mut got = Vec::new();
        while let Some(msg) = out_rx.recv().await {
            got.push(msg);
        }
        assert_eq!(
            got,
            [StreamOutput::Exit {
                code: 5,
                timed_out: false
            }]
        );
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_ends_alike_one_shot_and_streamed() {
        for (kind, code) in [
            (ErrorKind::NotFound, 127),
            (ErrorKind::PermissionDenied, 126),
        ] {
            let one_shot = never_started(kind, "nope");
            assert_eq!(one_shot.exit_code, code, "{kind:?}");
            assert_eq!(one_shot.stderr, b"nope\n");
            let mut streamed = ended_at_once_with(kind, "nope");
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
