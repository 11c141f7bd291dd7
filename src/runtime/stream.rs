//! The channels between an exec session and the runtime running its
//! command. Stdin, the out-of-band controls and the kill each have their
//! own path: stdin is bounded so a command that does not read it makes its
//! writer wait, and nothing else may queue behind that backlog (a Ctrl-C
//! or the kill of a released session must reach a command that has
//! stopped reading).

use tokio::sync::{mpsc, oneshot};

use crate::model::WindowSize;

/// How many stdin chunks and output messages a streaming exec buffers.
pub const STREAM_DEPTH: usize = 64;
/// How many controls may wait for the runtime; they only ever wait behind
/// each other, never behind stdin.
pub const CONTROL_DEPTH: usize = 16;

/// What the caller sends a running command besides its stdin. The end of
/// stdin is not one of these: it is the stdin channel's end, so it stays
/// ordered after the bytes already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecControl {
    /// A signal for the command (with a pty: its foreground process group).
    Signal(i32),
    Resize(WindowSize),
}

/// What a streaming exec sends back, in order; `Exit` is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The exit code, or 128 + the signal that ended it (as a shell says);
    /// negative when the runtime cannot tell how the command ended.
    Exit {
        code: i64,
        timed_out: bool,
    },
}

/// The caller's side of a running streaming exec.
pub struct ExecStreams {
    /// Stdin bytes. Dropping it ends the command's stdin once what was
    /// queued is delivered.
    pub stdin: mpsc::Sender<Vec<u8>>,
    pub control: mpsc::Sender<ExecControl>,
    /// Sending on it, or dropping it, kills the command: a caller gone
    /// takes its command along.
    pub kill: oneshot::Sender<()>,
    /// Bounded, so a slow reader slows the command rather than filling
    /// memory.
    pub output: mpsc::Receiver<StreamOutput>,
}

/// The runtime's side of a streaming exec.
pub struct ExecEnds {
    pub stdin: mpsc::Receiver<Vec<u8>>,
    pub control: mpsc::Receiver<ExecControl>,
    /// Resolves once the command is to be killed.
    pub kill: oneshot::Receiver<()>,
    pub output: mpsc::Sender<StreamOutput>,
}

/// A connected pair of sides.
pub fn exec_channels() -> (ExecStreams, ExecEnds) {
    let (stdin_tx, stdin_rx) = mpsc::channel(STREAM_DEPTH);
    let (control_tx, control_rx) = mpsc::channel(CONTROL_DEPTH);
    let (kill_tx, kill_rx) = oneshot::channel();
    let (output_tx, output_rx) = mpsc::channel(STREAM_DEPTH);
    (
        ExecStreams {
            stdin: stdin_tx,
            control: control_tx,
            kill: kill_tx,
            output: output_rx,
        },
        ExecEnds {
            stdin: stdin_rx,
            control: control_rx,
            kill: kill_rx,
            output: output_tx,
        },
    )
}

/// A command that ended before it started: `stderr`, then `code`.
pub fn ended_at_once(stderr: Vec<u8>, code: i64) -> ExecStreams {
    let (streams, ends) = exec_channels();
    // The channel is fresh and deeper than two, so both fit.
    let _ = ends.output.try_send(StreamOutput::Stderr(stderr));
    let _ = ends.output.try_send(StreamOutput::Exit {
        code,
        timed_out: false,
    });
    streams
}
