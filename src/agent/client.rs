//! The host's client of the guest agent, over any async byte stream.
//!
//! A connection serves one request: every call below consumes the client,
//! and the host opens a new connection for the next (concurrent commands are
//! concurrent connections). Each call has a deadline: `io_timeout` for any
//! single step, and for an exec the command's own timeout plus that, so a
//! dead guest never hangs a caller.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::error::{Error, ProtocolError, Result};
use super::protocol::{
    ErrorKind, ExecRequest, ExitStatus, Frame, Hello, Request, Response, Signal, StreamRequest,
    DATA_CHUNK, ONE_SHOT_OUTPUT_LIMIT, PROTOCOL_VERSION,
};
use super::session;
use super::wire::{by, unexpected, within, write_frame, FrameReader};

pub use super::session::{ExecEvent, ExecSession, SessionInput, SessionOutput};

#[cfg(test)]
mod tests;

/// A connection to the agent, past the hello exchange.
#[derive(Debug)]
pub struct AgentClient<S> {
    conn: FrameReader<S>,
    agent: Hello,
    io_timeout: Duration,
}

/// What a one-shot exec produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The command's pid in the guest.
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The timeout passed; the output is what came before the kill.
    pub timed_out: bool,
    /// Output past [`ONE_SHOT_OUTPUT_LIMIT`](super::protocol::ONE_SHOT_OUTPUT_LIMIT) was dropped.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// The agent's answer to a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The agent is the guest's init, so `power_off` works.
    pub pid1: bool,
}

/// A file read from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile {
    /// Bytes received (the file's size, unless it changed while read).
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AgentClient<S> {
    /// Any single read or write step not done by then fails.
    pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);

    /// Exchanges hellos on a fresh connection; fails with
    /// [`Error::VersionMismatch`] if the agent speaks another major version.
    pub async fn handshake(stream: S) -> Result<AgentClient<S>> {
        Self::handshake_with_timeout(stream, Self::DEFAULT_IO_TIMEOUT).await
    }

    /// [`handshake`](Self::handshake) with another step timeout, kept for
    /// every later call on this connection.
    pub async fn handshake_with_timeout(stream: S, io_timeout: Duration) -> Result<AgentClient<S>> {
        let mut conn = FrameReader::new(stream);
        within(io_timeout, "hello", async {
            write_frame(conn.get_mut(), &Frame::Hello(Hello::ours())).await?;
            match conn.read_frame("before its hello").await? {
                Frame::Hello(agent) => {
                    if agent.protocol != Hello::ours().protocol {
                        return Err(Error::Protocol(ProtocolError::NotAnAgent(agent.protocol)));
                    }
                    if !agent.compatible() {
                        return Err(Error::VersionMismatch {
                            ours: PROTOCOL_VERSION,
                            theirs: agent.version,
                        });
                    }
                    Ok(AgentClient {
                        conn,
                        agent,
                        io_timeout,
                    })
                }
                other => Err(unexpected("the agent's hello", other)),
            }
        })
        .await
    }

    /// What the agent said about itself.
    pub fn agent_hello(&self) -> &Hello {
        &self.agent
    }

    /// Checks the agent answers requests.
    pub async fn ping(mut self) -> Result<Pong> {
        self.send_request(Request::Ping).await?;
        match self.response("pong").await? {
            Response::Pong { pid1 } => Ok(Pong { pid1 }),
            other => Err(unexpected_response("pong", other)),
        }
    }

    /// Runs a command to completion and returns its output (at most
    /// [`ONE_SHOT_OUTPUT_LIMIT`](super::protocol::ONE_SHOT_OUTPUT_LIMIT)
    /// bytes of each stream). A non-zero exit or a timeout is a result, not
    /// an error; a command that cannot start is [`Error::Remote`].
    pub async fn exec(mut self, req: ExecRequest) -> Result<ExecResult> {
        check_exec(&req)?;
        let deadline = Instant::now() + req.timeout + self.io_timeout;
        self.send_request(Request::Exec(req)).await?;
        let pid = self.started().await?;
        let (mut stdout, mut stderr) = (Capped::default(), Capped::default());
        let info = by(deadline, "exec output", async {
            loop {
                match self.conn.read_frame("before the command's exit").await? {
                    Frame::Stdout(d) => stdout.append(&d),
                    Frame::Stderr(d) => stderr.append(&d),
                    Frame::Response(Response::Exit(info)) => return Ok(info),
                    other => return Err(self.mismatch("output or exit", other)),
                }
            }
        })
        .await?;
        Ok(ExecResult {
            pid,
            status: info.status,
            timed_out: info.timed_out,
            stdout_truncated: info.stdout_truncated || stdout.truncated,
            stderr_truncated: info.stderr_truncated || stderr.truncated,
            stdout: stdout.bytes,
            stderr: stderr.bytes,
        })
    }

    /// Starts a command whose stdin, output, signals and (with a pty)
    /// window size travel while it runs. Output is not capped; the session
    /// reads it only as fast as the caller receives it, and the agent stops
    /// reading the command's output meanwhile, so nothing buffers without
    /// bound.
    pub async fn exec_stream(mut self, req: StreamRequest) -> Result<ExecSession<S>> {
        check_exec(&req.exec)?;
        // The agent reports the exit by the command's timeout; with none,
        // the session waits as long as the command runs.
        let deadline =
            (!req.no_timeout).then(|| Instant::now() + req.exec.timeout + self.io_timeout);
        let pty = req.pty.is_some();
        self.send_request(Request::ExecStream(req)).await?;
        let pid = self.started().await?;
        let (stream, decoder) = self.conn.into_parts();
        Ok(session::open(stream, decoder, pid, pty, deadline))
    }

    /// Copies everything `local` yields into the guest file `remote_path`
    /// (absolute) with permission bits `mode`. The file appears whole or
    /// not at all. Returns the bytes written.
    pub async fn put_file<R: AsyncRead + Unpin>(
        mut self,
        mut local: R,
        remote_path: &str,
        mode: u32,
    ) -> Result<u64> {
        check_path(remote_path)?;
        self.send_request(Request::PutFile {
            path: remote_path.to_string(),
            mode,
        })
        .await?;
        match self.response("ready for the file").await? {
            Response::Ready => {}
            other => return Err(unexpected_response("ready", other)),
        }
        let mut chunk = vec![0; DATA_CHUNK];
        loop {
            let n = local.read(&mut chunk).await?;
            let frame = if n == 0 {
                Frame::End
            } else {
                Frame::Data(chunk[..n].to_vec())
            };
            // The agent answers only at the end, unless it fails: a write
            // that stalls for io_timeout means it stopped reading.
            let sent = within(self.io_timeout, "sending file data", async {
                write_frame(self.conn.get_mut(), &frame).await
            })
            .await;
            if let Err(e) = sent {
                // An agent that failed mid-file (disk full...) said why
                // before it stopped reading: that beats "broken pipe".
                return Err(self.reason_for(e).await);
            }
            if n == 0 {
                break;
            }
        }
        match self.response("the file written").await? {
            Response::Written { bytes } => Ok(bytes),
            other => Err(unexpected_response("written", other)),
        }
    }

    /// Copies the guest file `remote_path` (absolute) into `local`.
    pub async fn get_file<W: AsyncWrite + Unpin>(
        mut self,
        remote_path: &str,
        mut local: W,
    ) -> Result<RemoteFile> {
        check_path(remote_path)?;
        self.send_request(Request::GetFile {
            path: remote_path.to_string(),
        })
        .await?;
        let mode = match self.response("the file").await? {
            Response::File { mode, .. } => mode,
            other => return Err(unexpected_response("file", other)),
        };
        let mut size = 0u64;
        loop {
            let frame = within(self.io_timeout, "file data", async {
                self.conn.read_frame("inside the file's data").await
            })
            .await?;
            match frame {
                Frame::Data(d) => {
                    local.write_all(&d).await?;
                    size += d.len() as u64;
                }
                Frame::End => break,
                other => return Err(self.mismatch("file data", other)),
            }
        }
        local.flush().await?;
        Ok(RemoteFile { size, mode })
    }

    /// Whether the agent takes [`signal`](Self::signal) requests (protocol
    /// 1.1 and later).
    pub fn signals_out_of_band(&self) -> bool {
        self.agent.version.minor >= 1
    }

    /// Signals the running streaming exec whose command is `pid`, from
    /// this connection rather than the session's own, which may be backed
    /// up with stdin the command does not read.
    pub async fn signal(mut self, pid: u32, signal: Signal) -> Result<()> {
        self.send_request(Request::Signal {
            pid,
            signal: signal.0,
        })
        .await?;
        match self.response("the signal sent").await? {
            Response::Signalled => Ok(()),
            other => Err(unexpected_response("signalled", other)),
        }
    }

    /// Asks the agent to sync and power the guest off. Only an agent
    /// running as the guest's init does; others answer
    /// [`ErrorKind::Unsupported`].
    pub async fn power_off(mut self) -> Result<()> {
        self.send_request(Request::PowerOff).await?;
        match self.response("power off").await? {
            Response::PoweringOff => Ok(()),
            other => Err(unexpected_response("powering off", other)),
        }
    }

    async fn send_request(&mut self, request: Request) -> Result<()> {
        let conn = self.conn.get_mut();
        within(self.io_timeout, "sending the request", async {
            write_frame(conn, &Frame::Request(request)).await
        })
        .await
    }

    async fn response(&mut self, during: &'static str) -> Result<Response> {
        let frame = within(self.io_timeout, during, self.conn.read_frame(during)).await?;
        match frame {
            Frame::Response(r) => Ok(r),
            other => Err(self.mismatch("a response", other)),
        }
    }

    async fn started(&mut self) -> Result<u32> {
        match self.response("the command to start").await? {
            Response::Started { pid } => Ok(pid),
            other => Err(unexpected_response("started", other)),
        }
    }

    /// `err` (a failed send), or the agent's own report if it sent one.
    async fn reason_for(&mut self, err: Error) -> Error {
        let report = within(Duration::from_secs(1), "the agent's report", async {
            self.conn.read_frame("after a failed send").await
        })
        .await;
        match report {
            Ok(Frame::Error(e)) => unexpected("", Frame::Error(e)),
            _ => err,
        }
    }

    /// The error for an out-of-place frame; an agent that refused our hello
    /// says so in an `Error` frame, reported as the version mismatch it is.
    fn mismatch(&self, expected: &'static str, frame: Frame) -> Error {
        match unexpected(expected, frame) {
            Error::Remote {
                kind: ErrorKind::VersionMismatch,
                ..
            } => Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: self.agent.version,
            },
            e => e,
        }
    }
}

/// One output stream of a one-shot exec, kept to
/// [`ONE_SHOT_OUTPUT_LIMIT`] here whatever the agent does: the guest is
/// not trusted to keep to it, and its excess must not fill the host's
/// memory. What goes past is read and dropped.
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capped {
    fn append(&mut self, data: &[u8]) {
        let cap = usize::try_from(ONE_SHOT_OUTPUT_LIMIT).unwrap_or(usize::MAX);
        let room = cap.saturating_sub(self.bytes.len());
        let keep = data.len().min(room);
        self.bytes.extend_from_slice(&data[..keep]);
        if keep < data.len() {
            self.truncated = true;
        }
    }
}

fn unexpected_response(expected: &'static str, got: Response) -> Error {
    unexpected(expected, Frame::Response(got))
}

fn check_exec(req: &ExecRequest) -> Result<()> {
    if req.argv.is_empty() {
        return Err(Error::InvalidRequest("the command is empty".into()));
    }
    if req.timeout.is_zero() {
        return Err(Error::InvalidRequest("the timeout must be positive".into()));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::InvalidRequest(format!(
            "guest path {path:?} is not absolute"
        )));
    }
    Ok(())
}

impl ExecResult {
    /// The exit code, if the command exited rather than being killed.
    pub fn code(&self) -> Option<i32> {
        match self.status {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }
}
