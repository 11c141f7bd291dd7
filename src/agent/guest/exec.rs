//! Running a started command to its end: one poll(2) loop multiplexing the
//! command's output, its stdin, its exit notice and the host connection,
//! for both one-shot and streaming execs.
//!
//! Flow control: output is read from the command only while less than
//! [`OUT_HIGH`] bytes wait to go to the host, so a slow host makes the
//! command wait rather than the agent buffer (one-shot output past its cap
//! is read and dropped, so that never blocks). Host frames are read only
//! while less than [`IN_HIGH`] bytes of stdin wait for the command.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::conn::{Conn, ConnError, IO_TIMEOUT};
use super::reaper;
use super::sessions;
use super::spawn::Spawned;
use super::sys;
use crate::agent::protocol::{
    Control, ErrorKind, ExitInfo, ExitStatus, Frame, RemoteError, Response, DATA_CHUNK,
    ONE_SHOT_OUTPUT_LIMIT,
};

/// Queued output beyond which the command's output is not read.
const OUT_HIGH: usize = 256 * 1024;
/// Queued stdin beyond which host frames are not read.
const IN_HIGH: usize = 256 * 1024;
/// After the command exits, how long output is still awaited from
/// processes it left behind holding its stdout or stderr open.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// The most read from one stream in the final sweep after the grace.
const FINAL_SWEEP: usize = 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No stdin, output capped per stream.
    OneShot,
    /// Stdin and control frames from the host, output uncapped.
    Stream,
}

/// How the host side of an exec ended, when not with an exit frame.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("the host broke the protocol: {0}")]
    Protocol(String),
}

struct Output {
    file: Option<File>,
    stderr: bool,
    sent: u64,
    truncated: bool,
}

impl Output {
    fn new(file: Option<File>, stderr: bool) -> Output {
        Output {
            file,
            stderr,
            sent: 0,
            truncated: false,
        }
    }

    /// Queues what the command wrote, within the cap if there is one.
    fn emit(&mut self, conn: &mut Conn, data: &[u8], cap: Option<u64>) -> Result<(), ConnError> {
        let keep = match cap {
            Some(cap) => data.len().min(cap.saturating_sub(self.sent) as usize),
            None => data.len(),
        };
        if keep < data.len() {
            self.truncated = true;
        }
        if keep > 0 {
            let chunk = data[..keep].to_vec();
            conn.queue(&if self.stderr {
                Frame::Stderr(chunk)
            } else {
                Frame::Stdout(chunk)
            })?;
            self.sent += keep as u64;
        }
        Ok(())
    }

    /// Reads once; false when the stream ended (EOF, or EIO on a pty whose
    /// terminal side is closed).
    fn read_once(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        match file.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Runs `child` until it exits (or times out, if it has a timeout) and its output is drained,
/// then sends the exit frame. An error means the host is gone or broke the
/// protocol; the command's process group is killed then.
pub fn run(
    conn: &mut Conn,
    child: Spawned,
    timeout: Option<Duration>,
    mode: Mode,
) -> Result<(), ExecError> {
    let pid = child.pid;
    let _registered = (mode == Mode::Stream).then(|| {
        let master = match child.pty {
            true => child.stdout.try_clone().ok(),
            false => None,
        };
        sessions::register(pid, master)
    });
    let result = Loop::new(child, timeout, mode).run(conn);
    if result.is_err() {
        let _ = sys::kill_group(pid, libc::SIGKILL);
    }
    let info = result?;
    conn.queue(&Frame::Response(Response::Exit(info)))?;
    conn.flush(IO_TIMEOUT)?;
    Ok(())
}

struct Loop {
    pid: i32,
    pty: bool,
    mode: Mode,
    cap: Option<u64>,
    outputs: [Output; 2],
    stdin: Option<File>,
    stdin_queue: Vec<u8>,
    stdin_closing: bool,
    exit: reaper::ExitWatch,
    status: Option<ExitStatus>,
    deadline: Option<Instant>,
    timed_out: bool,
    drain_until: Option<Instant>,
    buf: Box<[u8]>,
}

impl Loop {
    fn new(child: Spawned, timeout: Option<Duration>, mode: Mode) -> Loop {
        for f in [
            Some(&child.stdout),
            child.stderr.as_ref(),
            child.stdin.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            // Failing this would only make the loop block on one fd; it
            // cannot fail on a pipe or pty we just opened.
            let _ = sys::set_nonblocking(f);
        }
        Loop {
            pid: child.pid,
            pty: child.pty,
            mode,
            cap: (mode == Mode::OneShot).then_some(ONE_SHOT_OUTPUT_LIMIT),
            outputs: [
                Output::new(Some(child.stdout), false),
                Output::new(child.stderr, true),
            ],
            stdin: child.stdin,
            stdin_queue: Vec::new(),
            stdin_closing: false,
            exit: child.exit,
            status: None,
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            timed_out: false,
            drain_until: None,
            buf: vec![0; DATA_CHUNK].into_boxed_slice(),
        }
    }

    fn run(mut self, conn: &mut Conn) -> Result<ExitInfo, ExecError> {
        loop {
            let outputs_open = self.outputs.iter().any(|o| o.file.is_some());
            if let Some(status) = self.status {
                let grace_over = self.drain_until.is_some_and(|t| Instant::now() >= t);
                if !outputs_open || grace_over {
                    self.final_sweep(conn)?;
                    return Ok(ExitInfo {
                        status,
                        timed_out: self.timed_out,
                        stdout_truncated: self.outputs[0].truncated,
                        stderr_truncated: self.outputs[1].truncated,
                    });
                }
            }
            self.step(conn)?;
        }
    }

    /// One poll and the work it allows.
    fn step(&mut self, conn: &mut Conn) -> Result<(), ExecError> {
        const OUT0: usize = 0;
        const OUT1: usize = 1;
        const STDIN: usize = 2;
        const EXIT: usize = 3;
        const HOST: usize = 4;
        let room = conn.pending() < OUT_HIGH;
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 5];
        for (i, o) in self.outputs.iter().enumerate() {
            if let Some(f) = &o.file {
                // Past the cap nothing is queued, so reading never waits.
                if room || o.truncated {
                    fds[i] = sys::pollfd(f, libc::POLLIN);
                }
            }
        }
        if let Some(f) = &self.stdin {
            if !self.stdin_queue.is_empty() {
                fds[STDIN] = sys::pollfd(f, libc::POLLOUT);
            }
        }
        if self.status.is_none() {
            fds[EXIT] = sys::pollfd(self.exit.fd(), libc::POLLIN);
        }
        let mut host_events = 0;
        if self.mode == Mode::OneShot || self.stdin_queue.len() < IN_HIGH {
            host_events |= libc::POLLIN;
        }
        if conn.pending() > 0 {
            host_events |= libc::POLLOUT;
        }
        fds[HOST] = sys::pollfd(conn.socket(), host_events);

        let now = Instant::now();
        let timer = [
            self.deadline
                .filter(|_| !self.timed_out && self.status.is_none()),
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min();
        sys::poll(&mut fds, timer.map(|t| t.saturating_duration_since(now)))
            .map_err(ConnError::Io)?;

        if !self.timed_out
            && self.status.is_none()
            && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            self.timed_out = true;
            let _ = sys::kill_group(self.pid, libc::SIGKILL);
        }
        let ready = |i: usize| fds[i].revents != 0;
        if ready(EXIT) {
            if let Some(raw) = self.exit.status() {
                self.status = Some(reaper::exit_status(raw));
                self.drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
        for i in [OUT0, OUT1] {
            if ready(i) {
                self.read_output(i, conn)?;
            }
        }
        if ready(STDIN) {
            self.write_stdin();
        }
        let host = fds[HOST].revents;
        if host & libc::POLLOUT != 0 {
            conn.flush_some()?;
        }
        if host & libc::POLLIN != 0 {
            if !conn.fill()? {
                return Err(ConnError::Closed.into());
            }
            while let Some(frame) = conn.next_frame()? {
                self.handle(frame)?;
            }
        } else if host & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Err(ConnError::Closed.into());
        }
        Ok(())
    }

    fn read_output(&mut self, i: usize, conn: &mut Conn) -> Result<(), ConnError> {
        match self.outputs[i].read_once(&mut self.buf) {
            Ok(Some(0)) => {}
            Ok(Some(n)) => self.outputs[i].emit(conn, &self.buf[..n], self.cap)?,
            Ok(None) | Err(_) => self.outputs[i].file = None,
        }
        Ok(())
    }

    /// After the exit and grace: what the pipes still hold, then stop.
    fn final_sweep(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        for i in 0..self.outputs.len() {
            let mut swept = 0;
            while swept < FINAL_SWEEP {
                match self.outputs[i].read_once(&mut self.buf) {
                    Ok(Some(n)) if n > 0 => {
                        self.outputs[i].emit(conn, &self.buf[..n], self.cap)?;
                        swept += n;
                    }
                    _ => break,
                }
            }
            self.outputs[i].file = None;
        }
        Ok(())
    }

    fn write_stdin(&mut self) {
        let Some(f) = self.stdin.as_mut() else { return };
        match f.write(&self.stdin_queue) {
            Ok(n) => {
                self.stdin_queue.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EPIPE: the command closed its stdin; what it did not read is
            // dropped, as a pipe would.
            Err(_) => {
                self.stdin = None;
                self.stdin_queue = Vec::new();
            }
        }
        if self.stdin_queue.is_empty() && self.stdin_closing {
            self.close_stdin();
        }
    }

    fn close_stdin(&mut self) {
        if self.pty {
            // A terminal's end of input is its EOF character, not a close
            // (closing the master would hang the terminal up).
            if let Some(f) = self.stdin.as_mut() {
                let _ = f.write(&[4]);
            }
            self.stdin_closing = false;
        } else {
            self.stdin = None;
        }
    }

    fn handle(&mut self, frame: Frame) -> Result<(), ExecError> {
        match (self.mode, frame) {
            (Mode::Stream, Frame::Stdin(data)) => {
                if self.stdin.is_some() && !self.stdin_closing {
                    self.stdin_queue.extend_from_slice(&data);
                }
            }
            (Mode::Stream, Frame::Control(Control::CloseStdin)) => {
                self.stdin_closing = true;
                if self.stdin_queue.is_empty() {
                    self.close_stdin();
                }
            }
            (Mode::Stream, Frame::Control(Control::Signal { signal })) => {
                let master = self.outputs[0].file.as_ref().filter(|_| self.pty);
                let group = sessions::target_group(self.pid, master);
                if let Err(e) = sys::kill_group(group, signal) {
                    super::log(format_args!("signal {signal} to group {group}: {e}"));
                }
            }
            (Mode::Stream, Frame::Control(Control::Resize(size))) => {
                if let (true, Some(master)) = (self.pty, &self.outputs[0].file) {
                    let _ = sys::set_window_size(master, size.rows, size.cols);
                }
            }
            (_, other) => {
                return Err(ExecError::Protocol(format!(
                    "a {:?} frame while a command runs",
                    other.frame_type()
                )))
            }
        }
        Ok(())
    }
}

/// The error the host gets for a protocol violation during an exec.
pub fn protocol_error(message: String) -> RemoteError {
    RemoteError::new(ErrorKind::Protocol, message)
}
