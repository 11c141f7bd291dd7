//! The wire protocol between the host and the guest agent: the frames, the
//! messages they carry, and the version both sides check first.
//!
//! This module is pure (no I/O), shared by the agent (blocking std threads)
//! and the host client (tokio). `PROTOCOL.md` beside this directory is the
//! reference for anyone writing another implementation; keep them in step.
//!
//! In short: every frame is `u32 big-endian length | u8 type | payload`,
//! where the length counts the type byte and the payload and never exceeds
//! [`MAX_FRAME`]. Control messages are JSON, data is raw bytes. Both sides
//! send [`Hello`] first; then the host sends one [`Request`] and the
//! connection serves that request alone.

mod codec;
mod signal;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use codec::{encode, encode_to_vec, DecodeError, Decoder, EncodeError, FrameType};
pub use signal::{Signal, UnknownSignal};

/// The version this build speaks. Peers with another major version are
/// refused; a higher minor version only adds optional fields and messages.
/// 1.1 added [`StreamRequest::no_timeout`] and [`Request::Signal`].
pub const PROTOCOL_VERSION: Version = Version { major: 1, minor: 1 };

/// The name in every [`Hello`], so a peer that is not an agent at all (or
/// not ours) is told apart from one that merely speaks another version.
pub const PROTOCOL_NAME: &str = "hyperfleet-agent";

/// Largest frame (type byte plus payload) either side sends or accepts. A
/// peer announcing more is cut off before anything is allocated for it.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Size of the data chunks senders cut streams and files into: well under
/// [`MAX_FRAME`], small enough to keep per-connection memory low.
pub const DATA_CHUNK: usize = 64 * 1024;

/// How much of each output stream a one-shot exec returns; the rest is read
/// and dropped so the command never blocks, and the stream is flagged
/// truncated. Streaming execs have no cap.
pub const ONE_SHOT_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;

/// The agent's vsock port unless configured otherwise.
pub const DEFAULT_AGENT_PORT: u32 = 52;

/// A protocol version: `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    pub version: Version,
    /// The sender's software version, for logs only.
    pub software: String,
}

impl Hello {
    /// The hello this build sends.
    pub fn ours() -> Hello {
        Hello {
            protocol: PROTOCOL_NAME.to_string(),
            version: PROTOCOL_VERSION,
            software: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Whether a peer that sent `self` can be talked to.
    pub fn compatible(&self) -> bool {
        self.protocol == PROTOCOL_NAME && self.version.major == PROTOCOL_VERSION.major
    }
}

/// A command to run in the guest.
///
/// The timeout is a [`Duration`] (on the wire `{"secs":N,"nanos":N}`), never
/// a bare number, so seconds and milliseconds cannot be confused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in the command's PATH.
    pub argv: Vec<String>,
    /// Added to a minimal default environment (PATH, HOME, and TERM with a pty).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Defaults to `/`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `name`, `name:group`, `uid` or `uid:gid`; defaults to the agent's user.
    #[serde(default)]
    pub user: Option<String>,
    /// When the agent kills the command's process group and reports a timeout.
    pub timeout: Duration,
}

impl ExecRequest {
    /// Default command timeout, as for exec on every runtime.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// `argv` with an empty environment, the default directory and user, and
    /// [`Self::DEFAULT_TIMEOUT`].
    pub fn new<I, S>(argv: I) -> ExecRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            working_dir: None,
            user: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// A command whose stdin, stdout and stderr travel as frames while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRequest {
    #[serde(flatten)]
    pub exec: ExecRequest,
    /// Run on a pseudo-terminal of this size (stdout and stderr are then one
    /// stream, sent as stdout).
    #[serde(default)]
    pub pty: Option<WindowSize>,
    /// Since 1.1: the command has no time limit (an interactive shell may
    /// idle for days). `exec.timeout` is then only what a 1.0 agent, which
    /// ignores this field, applies; so the host still sends its longest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_timeout: bool,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// What the host asks for, once per connection, after the hellos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Answered with [`Response::Pong`].
    Ping,
    /// Output capped at [`ONE_SHOT_OUTPUT_LIMIT`] per stream; no stdin.
    Exec(ExecRequest),
    /// Stdin, output, signals and resizes as frames; no cap.
    ExecStream(StreamRequest),
    /// Write a file: the agent answers [`Response::Ready`], the host sends
    /// `Data` frames and `End`, the agent answers [`Response::Written`].
    PutFile { path: String, mode: u32 },
    /// Read a file: the agent answers [`Response::File`], then `Data` frames
    /// and `End`.
    GetFile { path: String },
    /// Sync and power the guest off; refused unless the agent is PID 1.
    PowerOff,
    /// Since 1.1: signal the running streaming exec whose command is `pid`
    /// (as its `Control::Signal` would), from a connection of its own, so
    /// it arrives even while the session's connection is backed up with
    /// stdin. Answered with [`Response::Signalled`].
    Signal { pid: u32, signal: i32 },
}

/// What the agent answers (errors travel in their own frame type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Pong {
        /// Whether the agent is the guest's init (and so can power it off).
        pid1: bool,
    },
    /// The command runs; output frames and then [`Response::Exit`] follow.
    Started { pid: u32 },
    /// The last frame of an exec.
    Exit(ExitInfo),
    /// The file is open for writing: send its data.
    Ready,
    /// The file is complete and in place.
    Written { bytes: u64 },
    /// The file is open for reading: its data follows.
    File { size: u64, mode: u32 },
    /// The guest is about to power off.
    PoweringOff,
    /// The signal was sent.
    Signalled,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub status: ExitStatus,
    /// The timeout passed and the agent killed the process group.
    pub timed_out: bool,
    /// One-shot only: stdout went past [`ONE_SHOT_OUTPUT_LIMIT`].
    pub stdout_truncated: bool,
    /// One-shot only: stderr went past [`ONE_SHOT_OUTPUT_LIMIT`].
    pub stderr_truncated: bool,
}

/// A command's exit code, or the signal that terminated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by {}", Signal(*s)),
        }
    }
}

/// Messages the host sends while a streaming exec runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Sent to the command's process group (with a pty: the terminal's
    /// foreground process group, as a keyboard's Ctrl-C would be).
    Signal { signal: i32 },
    /// Only meaningful with a pty.
    Resize(WindowSize),
    /// End of input, after any stdin already sent. With a pty: an EOF
    /// character (Ctrl-D), since a terminal has no other way to say it.
    CloseStdin,
}

/// Why a request failed, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
    /// The guest's errno when a system call failed.
    #[serde(default)]
    pub errno: Option<i32>,
}

/// A failure's category, so the host can map it without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// ENOENT: no such command, file or directory.
    NotFound,
    /// EACCES / EPERM.
    PermissionDenied,
    /// EISDIR.
    IsADirectory,
    /// ENOTDIR.
    NotADirectory,
    /// A malformed request: empty argv, unknown user, relative path...
    InvalidArgument,
    /// The agent cannot do this here (e.g. power off when not PID 1).
    Unsupported,
    /// The peer broke the protocol: bad frame, unexpected message.
    Protocol,
    /// The hellos' major versions differ.
    VersionMismatch,
    /// Any other system failure.
    Io,
    /// A kind this build does not know (sent by a newer peer).
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The kind an errno belongs to.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            libc::ENOENT => ErrorKind::NotFound,
            libc::EACCES | libc::EPERM => ErrorKind::PermissionDenied,
            libc::EISDIR => ErrorKind::IsADirectory,
            libc::ENOTDIR => ErrorKind::NotADirectory,
            libc::EINVAL | libc::ENAMETOOLONG => ErrorKind::InvalidArgument,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::IsADirectory => "is a directory",
            ErrorKind::NotADirectory => "not a directory",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::VersionMismatch => "version mismatch",
            ErrorKind::Io => "I/O error",
            ErrorKind::Other => "error",
        })
    }
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind,
            message: message.into(),
            errno: None,
        }
    }

    /// A failed system call: `context` says what was being done.
    pub fn from_io(context: impl fmt::Display, err: &std::io::Error) -> RemoteError {
        let errno = err.raw_os_error();
        RemoteError {
            kind: errno.map_or(ErrorKind::Io, ErrorKind::from_errno),
            message: format!("{context}: {err}"),
            errno,
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Request(Request),
    Response(Response),
    Error(RemoteError),
    Control(Control),
    /// Host to agent: bytes for the command's stdin.
    Stdin(Vec<u8>),
    /// Agent to host: the command's stdout (or its pty's output).
    Stdout(Vec<u8>),
    /// Agent to host: the command's stderr.
    Stderr(Vec<u8>),
    /// File contents, either way.
    Data(Vec<u8>),
    /// The end of a file's data.
    End,
}

impl Frame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Request(_) => FrameType::Request,
            Frame::Response(_) => FrameType::Response,
            Frame::Error(_) => FrameType::Error,
            Frame::Control(_) => FrameType::Control,
            Frame::Stdin(_) => FrameType::Stdin,
            Frame::Stdout(_) => FrameType::Stdout,
            Frame::Stderr(_) => FrameType::Stderr,
            Frame::Data(_) => FrameType::Data,
            Frame::End => FrameType::End,
        }
    }
}
