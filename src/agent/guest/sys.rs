//! The system calls the agent makes that std does not wrap, each made safe
//! here once (with its SAFETY argument). Elsewhere only the fork and the
//! child's set-up (`spawn.rs`) and the vsock socket (`listener.rs`) are
//! `unsafe`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// Turns a -1 return into the errno as an `io::Error`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A pipe whose ends are closed on exec: (read end, write end).
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a valid fd with integer arguments has no memory effects.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Waits for events on `fds`; `None` waits without limit. EINTR counts as
/// "nothing happened": callers loop anyway.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Round up so a 0.4 ms wait does not become a busy loop of 0 ms polls.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: the pointer and length describe the caller's slice of pollfds.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// A pollfd asking for `events` on `fd`.
pub fn pollfd(fd: &impl AsRawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// Sends `signal` to every process in group `pgid`. A group that is gone
/// already is not an error: it is what a kill wants.
pub fn kill_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        // killpg(0) is our own group and killpg(1) init's: never meant here.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) with a negative pid > 1 in magnitude names one group.
    match check(unsafe { libc::kill(-pgid, signal) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other.map(drop),
    }
}

/// Waits for any child to end: (pid, raw wait status).
pub fn wait_any() -> io::Result<(i32, i32)> {
    let mut status = 0;
    // SAFETY: `status` is a valid int for waitpid to fill.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, 0) })?;
    Ok((pid, status))
}

pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

/// Ends our sending side of a socket; the peer reads EOF after what was sent.
pub fn shutdown_write(sock: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: shutdown on a caller-owned fd with a valid `how`.
    check(unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail and touches no memory.
    unsafe { libc::getpid() }
}

/// Makes orphans of our commands our children, so they are reaped here
/// rather than left to whoever is init.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// The foreground process group of the terminal `fd`.
pub fn foreground_group(fd: &impl AsRawFd) -> io::Result<i32> {
    // SAFETY: tcgetpgrp reads no caller memory.
    check(unsafe { libc::tcgetpgrp(fd.as_raw_fd()) })
}

pub fn set_window_size(fd: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// A new pseudo-terminal: (master, slave), both close-on-exec, the slave
/// not yet anyone's controlling terminal.
pub fn open_pty() -> io::Result<(File, File)> {
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int, which `unlock` is.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // TIOCGPTPEER opens the slave without a path lookup (and so without a
    // race on /dev/pts/N); the flags apply to the new fd.
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let slave = check(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    Ok((master, unsafe { File::from_raw_fd(slave) }))
}

/// Flushes every filesystem to disk.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// Powers the machine off (or reboots it); returns only if that failed. In
/// a child PID namespace the kernel instead ends the namespace's init.
pub fn power_off(by_reboot: bool) -> io::Error {
    let how = if by_reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: reboot with a valid command; it does not return on success.
    unsafe { libc::reboot(how) };
    io::Error::last_os_error()
}

pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let c =
        |s: &str| std::ffi::CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (source, target, fstype, data) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// Loads a kernel module from an open file; `compressed` lets the kernel
/// decompress it (MODULE_INIT_COMPRESSED_FILE).
pub fn finit_module(file: &File, params: &str, compressed: bool) -> io::Result<()> {
    const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;
    let params =
        std::ffi::CString::new(params).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module reads the fd and a NUL-terminated string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if nothing else), so
/// that no pipe or socket the agent opens later lands on them and is then
/// mistaken for a command's stdio.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any int is harmless.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
            });
        if let Ok(file) = opened {
            let raw = file.as_raw_fd();
            if raw != fd {
                // SAFETY: dup2 onto a closed fd we know nothing else owns.
                unsafe { libc::dup2(raw, fd) };
            } else {
                // It landed right where it was missing: keep it open.
                std::mem::forget(OwnedFd::from(file));
            }
        }
    }
}
