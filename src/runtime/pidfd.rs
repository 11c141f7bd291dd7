//! Linux pidfds: a file descriptor that names one process, so that signals
//! and exit notification reach that process even if its pid is reused, and
//! so that any process (not only our children) can be waited for.
//!
//! A VMM re-adopted after a daemon restart is not our child: `waitpid` cannot
//! see it, but its pidfd becomes readable when it exits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::process::{proc_stat, ProcessHandle};

/// An open pidfd for one process.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// Opens a pidfd for `process`, or `None` if that process is gone
    /// (its pid is free, or now belongs to a process with another start
    /// time). A zombie still gets one: it has not been reaped, and
    /// [`PidFd::has_exited`] says it exited.
    pub fn open(process: ProcessHandle) -> io::Result<Option<PidFd>> {
        let pid = libc::pid_t::try_from(process.pid)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
        // it touches no memory of ours.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: the syscall succeeded, so `raw` is a new fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // The fd now pins whichever process had the pid at open time. Check
        // it is ours: if the pid had been reused before the open, the start
        // time read now differs; if after, the pid's stat differs too.
        match proc_stat(process.pid) {
            Ok(stat) if stat.start_time == process.start_time => Ok(Some(PidFd {
                fd,
                pid: process.pid,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`; false if the process has already been reaped.
    pub fn send_signal(&self, signal: i32) -> io::Result<bool> {
        // SAFETY: pidfd_send_signal with a null siginfo behaves like kill(2)
        // on the process the fd names; it reads no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            _ => Err(err),
        }
    }

    /// True once the process has exited (zombie or reaped).
    pub fn has_exited(&self) -> io::Result<bool> {
        self.poll(Duration::ZERO)
    }

    /// Blocks the thread until the process exits or `timeout` passes; true
    /// if it exited. For places that cannot await (a `Drop`).
    pub fn wait_blocking(&self, timeout: Duration) -> io::Result<bool> {
        self.poll(timeout)
    }

    fn poll(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: one valid pollfd, count 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc >= 0 {
                return Ok(rc > 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Resolves when the process exits, without blocking a thread.
    pub async fn exited(&self) -> io::Result<()> {
        // A duplicate per waiter: the reactor registers each fd once, and
        // two waiters on one fd would collide.
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an open fd owned by the AsyncFd for its whole life.
        let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE)? };
        loop {
            let mut ready = fd.readable().await?;
            if self.has_exited()? {
                return Ok(());
            }
            ready.clear_ready();
        }
    }
}
