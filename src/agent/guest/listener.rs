//! The agent's listening socket: AF_VSOCK in a guest, a Unix socket for
//! tests on the host. Both hand out plain connected fds, so everything past
//! `accept` is the same code.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use super::config::ListenAddr;

pub enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

impl Listener {
    pub fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Unix(path) => {
                // A socket file left by an earlier run would make bind fail.
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                Ok(Listener::Unix(UnixListener::bind(path)?))
            }
            ListenAddr::Vsock(port) => bind_vsock(*port).map(Listener::Vsock),
        }
    }

    /// The next connection (close-on-exec, blocking).
    pub fn accept(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
            Listener::Vsock(fd) => {
                use std::os::fd::AsRawFd;
                // SAFETY: accept4 on our listening fd; no peer address is asked for.
                let conn = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if conn == -1 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: accept4 returned a new fd nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(conn) })
            }
        }
    }
}

fn bind_vsock(port: u32) -> io::Result<OwnedFd> {
    let check = |ret: libc::c_int| {
        if ret == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    };
    // SAFETY: socket(2) with constant arguments.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket returned a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: the pointer and size describe `addr`.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen on our bound socket.
    check(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    Ok(fd)
}
