//! A streaming exec on the host side: the input half (stdin, signals,
//! resizes) and the output half (stdout, stderr, then the exit), usable
//! together or split between two tasks.
//!
//! Nothing here spawns a task or buffers: output is read off the connection
//! only when the caller asks for the next event, which is what makes the
//! agent (and in turn the command) wait for a slow consumer.

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::error::{Error, Result};
use super::protocol::{
    Control, Decoder, ExitInfo, Frame, Response, Signal, WindowSize, DATA_CHUNK,
};
use super::wire::{by, unexpected, write_frame, FrameReader};

#[cfg(test)]
mod tests;

/// What a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last event.
    Exit(ExitInfo),
}

/// A running command. Use it directly, or [`split`](Self::split) it to feed
/// stdin from one task while another receives output.
#[derive(Debug)]
pub struct ExecSession<S> {
    pid: u32,
    input: SessionInput<S>,
    output: SessionOutput<S>,
}

/// The sending half of a session. Its sends have no deadline: a command
/// that does not read its stdin holds them up for as long as it likes
/// (that is the backpressure), and a deadline could only give up part-way
/// through a frame, after which every later frame would be garbage to the
/// agent. A caller that must stop waiting drops the session instead.
#[derive(Debug)]
pub struct SessionInput<S> {
    conn: WriteHalf<S>,
    pty: bool,
}

/// The receiving half of a session.
#[derive(Debug)]
pub struct SessionOutput<S> {
    conn: FrameReader<ReadHalf<S>>,
    /// The agent reports the exit by the command's timeout, so waiting
    /// beyond this (plus the step timeout) means it is gone; none for a
    /// command without a time limit.
    deadline: Option<Instant>,
    done: bool,
}

pub(crate) fn open<S: AsyncRead + AsyncWrite>(
    stream: S,
    decoder: Decoder,
    pid: u32,
    pty: bool,
    deadline: Option<Instant>,
) -> ExecSession<S> {
    let (r, w) = tokio::io::split(stream);
    ExecSession {
        pid,
        input: SessionInput { conn: w, pty },
        output: SessionOutput {
            conn: FrameReader::with_decoder(r, decoder),
            deadline,
            done: false,
        },
    }
}

impl<S: AsyncRead + AsyncWrite> ExecSession<S> {
    /// The command's pid in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        self.input.send_stdin(data).await
    }

    pub async fn close_stdin(&mut self) -> Result<()> {
        self.input.close_stdin().await
    }

    pub async fn signal(&mut self, signal: Signal) -> Result<()> {
        self.input.signal(signal).await
    }

    pub async fn resize(&mut self, size: WindowSize) -> Result<()> {
        self.input.resize(size).await
    }

    /// The next event; `Ok(None)` after the exit.
    pub async fn recv(&mut self) -> Result<Option<ExecEvent>> {
        self.output.recv().await
    }

    pub fn split(self) -> (SessionInput<S>, SessionOutput<S>) {
        (self.input, self.output)
    }
}

impl<S: AsyncRead + AsyncWrite> SessionInput<S> {
    /// Sends bytes to the command's stdin. Waits while the command does
    /// not read them.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(DATA_CHUNK) {
            self.send(Frame::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Ends the command's input once what was sent is consumed (with a pty:
    /// types Ctrl-D).
    pub async fn close_stdin(&mut self) -> Result<()> {
        self.send(Frame::Control(Control::CloseStdin)).await
    }

    /// Signals the command's process group (with a pty: the terminal's
    /// foreground process group).
    pub async fn signal(&mut self, signal: Signal) -> Result<()> {
        self.send(Frame::Control(Control::Signal { signal: signal.0 }))
            .await
    }

    /// Changes the pty's window size; the command gets SIGWINCH.
    pub async fn resize(&mut self, size: WindowSize) -> Result<()> {
        if !self.pty {
            return Err(Error::InvalidRequest(
                "resize needs a session started with a pty".into(),
            ));
        }
        self.send(Frame::Control(Control::Resize(size))).await
    }

    async fn send(&mut self, frame: Frame) -> Result<()> {
        write_frame(&mut self.conn, &frame).await
    }
}

impl<S: AsyncRead + AsyncWrite> SessionOutput<S> {
    /// The next event; `Ok(None)` after the exit.
    pub async fn recv(&mut self) -> Result<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        let read = self.conn.read_frame("before the command's exit");
        let frame = match self.deadline {
            Some(deadline) => by(deadline, "the command's output", read).await?,
            None => read.await?,
        };
        let event = match frame {
            Frame::Stdout(d) => ExecEvent::Stdout(d),
            Frame::Stderr(d) => ExecEvent::Stderr(d),
            Frame::Response(Response::Exit(info)) => {
                self.done = true;
                ExecEvent::Exit(info)
            }
            other => {
                self.done = true;
                return Err(unexpected("output or exit", other));
            }
        };
        Ok(Some(event))
    }
}
