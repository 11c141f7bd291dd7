//! The local terminal of `hyperfleet exec -t`: raw mode while the remote
//! pty owns the keyboard, and its size.

use std::io;
use std::os::fd::RawFd;

use crate::model::WindowSize;

/// Puts a terminal in raw mode; the old mode comes back on drop (and must
/// be put back by hand before `process::exit`, which runs no destructors).
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on `fd`, if it is a terminal.
    pub fn enter(fd: RawFd) -> io::Result<Option<RawMode>> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: t is a valid termios buffer for tcgetattr to fill.
        if unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: tcgetattr succeeded, so t is initialised.
        let saved = unsafe { t.assume_init() };
        let mut raw = saved;
        // SAFETY: raw is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: raw is a valid termios for this descriptor.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawMode { fd, saved }))
    }

    pub fn restore(&self) {
        // SAFETY: saved is the termios tcgetattr gave for this descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The size of the terminal on `fd`, if it is one.
pub fn window_size(fd: RawFd) -> Option<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize, which ws is.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 || ws.ws_col == 0 {
        return None;
    }
    Some(WindowSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}
