//! One host connection on the agent side: a non-blocking socket, the frame
//! decoder, and a queue of encoded frames not yet written.
//!
//! Every wait is a poll(2) with a deadline, so a host that stops reading or
//! writing cannot hold a thread forever, and the exec loop can multiplex the
//! connection with the command's pipes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::sys;
use crate::agent::protocol::{encode, DecodeError, EncodeError, Frame, RemoteError, DATA_CHUNK};

/// How long a host may take with any single step outside a running command.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection I/O failed")]
    Io(#[from] io::Error),
    #[error("the host sent a bad frame")]
    Decode(#[from] DecodeError),
    #[error("cannot encode a frame")]
    Encode(#[from] EncodeError),
    #[error("the host closed the connection")]
    Closed,
    #[error("the host sent nothing for {0:?}")]
    Timeout(Duration),
}

pub struct Conn {
    sock: File,
    decoder: crate::agent::protocol::Decoder,
    read_buf: Box<[u8]>,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_pos: usize,
}

impl Conn {
    pub fn new(sock: OwnedFd) -> io::Result<Conn> {
        let sock = File::from(sock);
        sys::set_nonblocking(&sock)?;
        Ok(Conn {
            sock,
            decoder: Default::default(),
            read_buf: vec![0; DATA_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
        })
    }

    pub fn socket(&self) -> &File {
        &self.sock
    }

    /// Adds a frame to the output queue (see [`flush_some`](Self::flush_some)).
    pub fn queue(&mut self, frame: &Frame) -> Result<(), ConnError> {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        encode(frame, &mut self.out)?;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what the socket takes now.
    pub fn flush_some(&mut self) -> Result<(), ConnError> {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Writes the whole queue, waiting for the host up to `limit`.
    pub fn flush(&mut self, limit: Duration) -> Result<(), ConnError> {
        let deadline = Instant::now() + limit;
        loop {
            self.flush_some()?;
            if self.pending() == 0 {
                return Ok(());
            }
            self.wait(libc::POLLOUT, deadline, limit)?;
        }
    }

    /// Queues and sends one frame.
    pub fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        self.queue(frame)?;
        self.flush(IO_TIMEOUT)
    }

    /// Reads what the socket has now into the decoder; `Ok(false)` at end of
    /// stream.
    pub fn fill(&mut self) -> Result<bool, ConnError> {
        loop {
            match self.sock.read(&mut self.read_buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.decoder.feed(&self.read_buf[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A frame already received, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        Ok(self.decoder.next_frame()?)
    }

    /// Waits up to `limit` for the next frame.
    pub fn recv(&mut self, limit: Duration) -> Result<Frame, ConnError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            self.wait(libc::POLLIN, deadline, limit)?;
            if !self.fill()? {
                self.decoder.finish()?;
                return Err(ConnError::Closed);
            }
        }
    }

    fn wait(
        &self,
        events: libc::c_short,
        deadline: Instant,
        limit: Duration,
    ) -> Result<(), ConnError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnError::Timeout(limit));
        }
        let mut fds = [sys::pollfd(&self.sock, events)];
        sys::poll(&mut fds, Some(left))?;
        Ok(())
    }

    /// Reports `err` to the host and ends the connection gently: stop
    /// sending, then read and drop what the host still sends for a moment,
    /// so that it sees the error and a clean end rather than a reset.
    pub fn fail(mut self, err: RemoteError) {
        let _ = self.queue(&Frame::Error(err));
        let _ = self.flush(Duration::from_secs(2));
        let _ = sys::shutdown_write(&self.sock);
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut budget = 4 * 1024 * 1024usize;
        let mut sink = vec![0u8; DATA_CHUNK];
        while budget > 0 && Instant::now() < deadline {
            match self.sock.read(&mut sink) {
                Ok(0) => break,
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let mut fds = [sys::pollfd(&self.sock, libc::POLLIN)];
                    if sys::poll(&mut fds, Some(left)).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}
